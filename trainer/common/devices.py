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
    return device
