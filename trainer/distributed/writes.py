"""The store writes of several ranks, made by one: each step every rank sends its rows of the global batch to
rank 0 (one `gather` of one uint8 tensor, no host sync), and rank 0 queues the whole global batch to the store.
So every sample's row of an epoch is written once, by rank 0, and no chunk is ever written by two processes.

When the store keeps every slot in RAM (resident), the rows go to every rank instead (`all_gather`): ranks ≠ 0
keep them in their own RAM copy (`MemStore.mirror`), so no rank rereads committed epochs from storage. The rows
are uint8 codes and a few bytes of scale and view per sample (3 KiB for CIFAR), small beside the gradients'
all-reduce of the same step."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from memloss.memstore.quant import check_finite, quantize
from memloss.trainer.distributed.context import current
from memloss.trainer.distributed.reduce import all_sum
from memloss.trainer.distributed.shards import Shards


def _pack(tensors: tuple[torch.Tensor, ...], rows: int) -> torch.Tensor:
    """The tensors' rows side by side as bytes: uint8 [rows, row bytes]; rows beyond the batch are zeros."""
    flat = [t.reshape(len(t), -1).contiguous() for t in tensors]
    parts = [f.view(torch.uint8) if f.dtype != torch.bool else f.to(torch.uint8) for f in flat]
    packed = torch.cat(parts, dim=1)
    if len(packed) < rows:
        packed = torch.cat([packed, packed.new_zeros(rows - len(packed), packed.shape[1])])
    return packed


def _unpack(packed: torch.Tensor, like: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The inverse of `_pack` for rows shaped and typed as `like`'s."""
    out, start = [], 0
    for t in like:
        width = t[:1].reshape(1, -1).shape[1] * (1 if t.dtype == torch.bool else t.element_size())
        block = packed[:, start:start + width].contiguous()
        start += width
        value = block.to(torch.bool) if t.dtype == torch.bool else block.view(t.dtype)
        out.append(value.reshape(len(packed), *t.shape[1:]))
    return tuple(out)


class GatheringWriter:
    """Takes the place of the session's DeferredWriter on every rank of a multi-process run. `inner`: rank 0's
    DeferredWriter over the store (None on the other ranks, which write nothing)."""

    def __init__(self, inner: Any | None, shards: Shards, everyone: bool = False) -> None:
        # everyone: every rank gets the global batch's rows (all_gather) and queues them to its `inner`; it must be
        # the same on every rank (it picks the collective), so it follows the store's residency, which is.
        self.inner, self.shards, self.everyone = inner, shards, everyone
        self._order: np.ndarray | None = None
        self._step = 0
        self.nonfinite: torch.Tensor | None = None  # this rank's NaN/Inf flag (device-side, see DeferredWriter)

    def begin_epoch(self, order: np.ndarray) -> None:
        """The epoch's global order (int64 [n]): global batch g's indices are its g-th slice of the batch size."""
        self._order, self._step = order, 0

    def push(self, idx: np.ndarray, delta: torch.Tensor, views: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """As DeferredWriter.push for this rank's part of the batch (idx: host int64 [b]); returns its quantized δ
        (codes uint8 [b,C,H,W], scale float32 [b]) on the device. A collective: every rank calls it every step."""
        if self.nonfinite is None:
            self.nonfinite = torch.zeros((), dtype=torch.bool, device=delta.device)
        codes, scale = quantize(delta.detach().float(), nonfinite=self.nonfinite)
        tensors = (codes, scale, views.offset.to(torch.int16), views.flip)
        parts = self.shards.batch_parts(self._step)
        packed = _pack(tensors, self.shards.local_batch)
        if self.everyone:
            gathered: list[torch.Tensor] | None = [torch.empty_like(packed) for _ in parts]
            dist.all_gather(gathered, packed)
        else:
            gathered = [torch.empty_like(packed) for _ in parts] if current().main else None
            dist.gather(packed, gather_list=gathered, dst=0)
        if gathered is not None and self.inner is not None and self._order is not None:
            rows = torch.cat([g[:size] for g, size in zip(gathered, parts)])
            self.inner.queue(self.shards.global_batch(self._order, self._step), _unpack(rows, tensors))
        self._step += 1
        return codes, scale

    def flush(self) -> None:
        if self.inner is not None:
            self.inner.flush()

    def check(self) -> None:
        """Raises NonFiniteDelta on every rank when any rank's δ held NaN/Inf (a collective: every rank calls it at
        the same steps; one host sync)."""
        if self.nonfinite is not None:
            check_finite(all_sum(self.nonfinite.to(torch.int32)) > 0)
