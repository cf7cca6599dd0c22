"""Glue between the memory store and the training step: rebuilding memory examples on the device, and writing the
current epoch's perturbations back without a per-step host sync."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from memloss.memstore.quant import check_finite, dequantize, quantize
from memloss.trainer.common.devices import to_device
from memloss.trainer.training.augment import ViewParams, align_delta, apply_view


@dataclass(frozen=True)
class MemoryExamples:
    """Memory examples of one batch for the slots that hold any memory.

    x: float [S,B,C,H,W] in [0,1] on the device; valid: bool [S,B] on the device; slots: the S slot numbers
    (0 = epoch n−1, k−1 = epoch n−k) that `x` holds, in order; valid_counts: host-side count of valid entries per
    slot (known without a device sync because the store's masks live on the host); weight: the importance weight of
    every slot held (S/m when m of the S slots holding memory were drawn; 1 when all are used).
    """

    x: torch.Tensor
    valid: torch.Tensor
    slots: tuple[int, ...]
    valid_counts: tuple[int, ...]
    weight: float = 1.0


def valid_counts(memory: Any, num_slots: int) -> list[int]:
    """Valid rows per slot of a store MemoryBatch (host tensors: no device sync), for the first `num_slots` slots."""
    return memory.valid[:num_slots].sum(dim=1).tolist()


def batch_rows(memory: Any, rows: np.ndarray) -> Any:
    """The store MemoryBatch restricted to batch positions `rows` (int64 [R], host): a MemoryBatch of R rows."""
    index = torch.from_numpy(rows)
    return type(memory)(*(t.index_select(1, index) for t in (memory.codes, memory.scale, memory.offset,
                                                              memory.flip, memory.valid)))


def build_memory_examples(x: torch.Tensor, memory: Any, current: ViewParams, pad: int, view_mode: str,
                          num_slots: int, slots: Sequence[int] | None = None,
                          weight: float = 1.0) -> MemoryExamples | None:
    """Rebuilds x″_k = clamp(view_k(x) + δ_k, 0, 1) for the slots of a store MemoryBatch that hold memory: the
    first `num_slots` slots, or those listed in `slots` (slot sampling: only the drawn slots are rebuilt).

    x: float [B,C,H,W] in [0,1], the un-augmented images on the device. view_mode "recorded" uses the view each δ_k
    was made on (the very adversarial image of that epoch, up to quantization); "aligned" moves δ_k into the current
    view instead. `weight` is passed through to `MemoryExamples.weight`. Returns None when no slot holds memory.
    """
    counts = valid_counts(memory, num_slots)
    slots = tuple(k for k in (range(num_slots) if slots is None else slots) if counts[k] > 0)
    if not slots:
        return None
    device = x.device
    examples = []
    # to_device: non_blocking copies from pinned memory (the read-ahead pins its batches when the device is CUDA;
    # anything else is pinned first), so the loop never waits for the GPU here.
    for k in slots:
        delta = dequantize(to_device(memory.codes[k], device), to_device(memory.scale[k], device))
        made_on = ViewParams(to_device(memory.offset[k], device).long(), to_device(memory.flip[k], device))
        if view_mode == "aligned":
            base, delta = apply_view(x, current, pad), align_delta(delta, made_on, current, pad)
        else:
            base = apply_view(x, made_on, pad)
        examples.append((base + delta).clamp_(0.0, 1.0))
    valid = to_device(memory.valid[list(slots)], device)
    return MemoryExamples(torch.stack(examples), valid, slots, tuple(counts[k] for k in slots), weight)


class DeferredWriter:
    """Quantizes δ on the device and hands it to the store one step later.

    On CUDA the codes are copied into pinned host buffers with non_blocking copies and an event recorded on the
    run's device's current stream (the stream those copies were queued on); the store gets them at the next push (by
    then the copy is long done), so the step never waits for the device. On CPU it writes at once.

    NaN/Inf in δ: checked without a host sync (a device-side flag, memstore/quant.py); `check()` reads the flag (one
    sync) and raises the same one-line error `quantize` raises; the epoch loop calls it every few dozen steps and at
    the end of the epoch, before the store commits, as it does for the loss.
    """

    def __init__(self, store: Any, device: torch.device) -> None:
        self._store = store
        self._device = device
        self._cuda = device.type == "cuda"
        self._pending: tuple[Any, ...] | None = None
        self.nonfinite: torch.Tensor | None = None  # bool, on δ's device: some δ held NaN/Inf (made at first push)

    def push(self, idx: np.ndarray, delta: torch.Tensor, views: ViewParams) -> tuple[torch.Tensor, torch.Tensor]:
        """Queues the write of δ [B,C,H,W] (float, on the device) made on `views` for samples `idx` (host int64);
        returns the quantized δ as stored, (codes uint8 [B,C,H,W], scale float32 [B]) on the device."""
        if self.nonfinite is None:
            self.nonfinite = torch.zeros((), dtype=torch.bool, device=delta.device)
        codes, scale = quantize(delta.detach().float(), nonfinite=self.nonfinite)
        self.queue(idx, (codes, scale, views.offset.to(torch.int16), views.flip))
        return codes, scale

    def queue(self, idx: np.ndarray, tensors: tuple[torch.Tensor, ...]) -> None:
        """Queues the write of quantized rows (codes uint8 [B,C,H,W], scale float32 [B], offset int16 [B,2], flip
        bool [B], on the device) for samples `idx` (host int64 [B])."""
        if not self._cuda:
            self._store.write(idx, *tensors)
            return
        host = tuple(pinned_like(t) for t in tensors)
        for dst, src in zip(host, tensors):
            dst.copy_(src, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self._device))  # the copies above were queued on this stream
        self.flush()
        self._pending = (idx, host, event)

    def flush(self) -> None:
        """Writes the pending batch (waits for its copy, which finished long ago in steady state)."""
        if self._pending is None:
            return
        idx, host, event = self._pending
        event.synchronize()
        self._store.write(idx, *host)
        self._pending = None

    def check(self) -> None:
        """Raises NonFiniteDelta when a δ pushed since the run started held NaN/Inf (one host sync)."""
        if self.nonfinite is not None:
            check_finite(self.nonfinite)


def pinned_like(t: torch.Tensor) -> torch.Tensor:
    """An empty page-locked host tensor of t's shape and dtype (the target of a non_blocking device-to-host copy:
    into pageable memory such a copy would not be asynchronous and the data could be read before it landed)."""
    return torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
