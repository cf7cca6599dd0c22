"""Sums over ranks, once per epoch: the training metrics, the forgetting monitor's counts and bits, the evaluation
counts, and the BN running statistics (averaged, so every rank evaluates and saves the same model)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from memloss.trainer.distributed.context import current


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """`values` summed over ranks (in place; returned for chaining)."""
    if current().active:
        dist.all_reduce(values)
    return values


def sum_metrics(sums: dict[str, torch.Tensor], samples: int) -> tuple[dict[str, torch.Tensor], int]:
    """Per-rank metric sums (scalar tensors on this rank's device) and sample counts → their sums over ranks. A
    metric some rank never produced (e.g. no memory in its batches) counts as 0 there."""
    if not current().active:
        return sums, samples
    names: list[Any] = [None] * current().world
    dist.all_gather_object(names, sorted(sums))
    union = sorted(set().union(*names))
    device = next(iter(sums.values())).device if sums else _device()
    stacked = torch.stack([sums[n].float() if n in sums else torch.zeros((), device=device) for n in union]
                          + [torch.tensor(float(samples), device=device)])
    dist.all_reduce(stacked)
    *values, total = stacked.unbind()
    return dict(zip(union, values)), int(total.item())


def sum_counts(counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Host-side integer counts (name → int64 array) summed over ranks, name by name (one collective). A name some
    rank lacks counts as zeros there."""
    if not current().active:
        return counts
    every = share_all(counts)
    out: dict[str, np.ndarray] = {}
    for part in every:
        for name, value in part.items():
            out[name] = out[name] + value if name in out else np.asarray(value).copy()
    return out


def merge_monitor(event_sums: torch.Tensor, bits: torch.Tensor, stamps: torch.Tensor) -> None:
    """The forgetting monitor's epoch, combined in place: event counts [4,K] add up; each sample's bit (int8 [rows],
    −1 = not judged here) comes from the rank that judged its last visit of the epoch (`stamps` int32 [rows]: the
    step of the epoch that set the bit, 0 = none; no two ranks visit a sample in the same step)."""
    if not current().active:
        return
    dist.all_reduce(event_sums)
    key = latest_key(bits, stamps)
    dist.all_reduce(key, op=dist.ReduceOp.MAX)
    bits.copy_(key_bit(key))


def latest_key(bits: torch.Tensor, stamps: torch.Tensor) -> torch.Tensor:
    """int64 [rows] that orders a rank's bits by the step that set them: stamp · 4 + bit + 1 (bit in {−1, 0, 1})."""
    return stamps.to(torch.int64) * 4 + bits.to(torch.int64) + 1


def key_bit(key: torch.Tensor) -> torch.Tensor:
    """The bit (int8, −1 = not judged) of a `latest_key`."""
    return (key % 4 - 1).to(torch.int8)


def average_buffers(model: nn.Module) -> None:
    """Averages the floating-point buffers (BN running mean/var) over ranks: each rank's statistics come from its
    own part of the batches (per-rank BN); the average is what every rank evaluates and saves."""
    ctx = current()
    if not ctx.active or ctx.world == 1:
        return
    buffers = [b for b in model.buffers() if b.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([b.detach().reshape(-1).float() for b in buffers])
    dist.all_reduce(flat)
    flat /= ctx.world
    start = 0
    for b in buffers:
        b.copy_(flat[start:start + b.numel()].view_as(b))
        start += b.numel()


def gather_to_main(value: Any) -> list[Any] | None:
    """Every rank's `value` (picklable, CPU tensors) as a list on rank 0, None elsewhere."""
    ctx = current()
    if not ctx.active:
        return [value]
    out: list[Any] | None = [None] * ctx.world if ctx.main else None
    dist.gather_object(value, out, dst=0)
    return out


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def share_all(value: Any) -> list[Any]:
    """Every rank's `value` (picklable, CPU tensors), in rank order, on every rank."""
    ctx = current()
    if not ctx.active:
        return [value]
    out: list[Any] = [None] * ctx.world
    dist.all_gather_object(out, value)
    return out
