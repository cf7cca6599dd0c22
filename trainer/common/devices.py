"""Choosing the compute device from a user's `--device` value, making it the current one, and moving host tensors
to it without waiting for it."""

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


def bind_device(device: torch.device) -> torch.device:
    """The run's device made current (`torch.cuda.set_device`) and returned with its index (cuda → cuda:<current>).

    Why: everything torch or a library creates "on the current device" — `torch.cuda.Event()`, the current stream,
    FFCV's loader streams, pinned allocations' home device, `torch.cuda.synchronize()` — would otherwise land on
    GPU 0 while the run computes on cuda:N. A CPU device is returned as is and CUDA is not touched."""
    if device.type != "cuda":
        return device
    index = device.index if device.index is not None else torch.cuda.current_device()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def pinned_for(device: torch.device, tensor: torch.Tensor) -> bool:
    """Whether a host tensor bound for `device` must be pinned before its non_blocking copy: only a CPU tensor going
    to CUDA that is not pinned yet. A non_blocking copy from ordinary (pageable) host memory is staged by the driver
    through its own pinned buffer and may wait for the device; from pinned memory it is a true asynchronous DMA."""
    return device.type == "cuda" and tensor.device.type == "cpu" and not tensor.is_pinned()


def pin_host_buffers(device: torch.device) -> bool:
    """Whether host buffers feeding `device` (the read-ahead's batches) are pinned: on CUDA only (pinning needs a
    CUDA context, and on CPU there is no copy to make asynchronous)."""
    return device.type == "cuda"


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device` without a host wait: a CPU tensor going to CUDA is pinned first (a no-op when it
    already is, e.g. the read-ahead's batches), then copied with non_blocking=True. On CPU it is returned as is."""
    if pinned_for(device, tensor):
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)
