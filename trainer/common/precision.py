"""Numeric modes of a run on CUDA: IEEE fp32 (no TF32, no autocast) for everything that judges a model, and the
deterministic-algorithms mode of `--deterministic`. On CPU they change nothing (CPU kernels neither use TF32 nor
differ between runs)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from memloss.errors import ConfigError

# cuBLAS needs a fixed workspace to give bit-identical matmuls (torch's "Reproducibility" notes); it is read when
# the first cuBLAS handle is made, so it must be set before the first CUDA matmul of the process.
CUBLAS_WORKSPACE = ":4096:8"


def _new_api() -> bool:
    """torch ≥ 2.9's per-backend `fp32_precision` switches; older torch (≥ 2.4 is supported) has only allow_tf32.
    The two must not be mixed (torch then refuses to read allow_tf32), so one of them is used throughout."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    return conv is not None and hasattr(conv, "fp32_precision") and hasattr(torch.backends.cuda.matmul,
                                                                              "fp32_precision")


def tf32_enabled() -> tuple[bool, bool]:
    """(matmul, convolution) TF32 currently allowed on CUDA."""
    if _new_api():
        return (torch.backends.cuda.matmul.fp32_precision == "tf32",
                torch.backends.cudnn.conv.fp32_precision == "tf32")
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def _set_tf32(matmul: bool, conv: bool) -> None:
    if _new_api():
        torch.backends.cuda.matmul.fp32_precision = "tf32" if matmul else "ieee"
        torch.backends.cudnn.conv.fp32_precision = "tf32" if conv else "ieee"
    else:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, conv


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 for CUDA matmuls and convolutions on (`enabled`) or off (IEEE fp32) inside the block; the previous
    switches are restored after it. (In this torch cuDNN convolutions default to TF32 on Ampere and later GPUs.)"""
    before = _saved()
    _set_tf32(enabled, enabled)
    try:
        yield
    finally:
        _restore(before)


def _saved() -> tuple[object, object]:
    if _new_api():
        return torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def _restore(saved: tuple[object, object]) -> None:
    if _new_api():
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = saved
    else:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@contextlib.contextmanager
def fp32_exact(device: torch.device) -> Iterator[None]:
    """IEEE fp32 forwards on `device`: autocast off (an outer bf16 autocast is suspended) and, on CUDA, TF32 off,
    so an argmax reads the logits `memloss evaluate` would compute."""
    with torch.autocast(device.type, enabled=False):
        if device.type != "cuda":
            yield
            return
        with tf32(False):
            yield


def check_precision(precision: str, device: torch.device) -> None:
    """Refuses --precision bf16 off CUDA (one line): bf16 autocast is the CUDA path; on CPU it would be slower than
    fp32 on most machines and is not what a GPU run would compute."""
    if precision == "bf16" and device.type != "cuda":
        raise ConfigError(f"--precision bf16 trains under CUDA bf16 autocast, but this run's device is {device}; use "
                          "--precision fp32 (the default) or a CUDA --device")


@contextlib.contextmanager
def deterministic_mode(enabled: bool) -> Iterator[None]:
    """`--deterministic`: torch.use_deterministic_algorithms(True), cuDNN autotuning off and deterministic cuDNN
    kernels, CUBLAS_WORKSPACE_CONFIG=:4096:8 (set before the first CUDA matmul when not set already); restored after
    the block. Without `enabled` nothing changes."""
    if not enabled:
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2], before[3]
