"""Choosing the compute device from a user's `--device` value."""

from __future__ import annotations

import torch

from memloss.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """'auto' → cuda if available else cpu; otherwise the named device, which must exist here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown --device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} asked for, but no CUDA device is available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s); use "
                          f"cuda:0 … cuda:{torch.cuda.device_count() - 1}")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name}: memloss runs on cpu or cuda; use auto, cpu, cuda or cuda:N")
    return device
