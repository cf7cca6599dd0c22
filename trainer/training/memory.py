"""Glue between the memory store and the training step: rebuilding memory examples on the device, and writing the
current epoch's perturbations back without a per-step host sync."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from memloss.memstore.quant import dequantize, quantize
from memloss.trainer.training.augment import ViewParams, align_delta, apply_view


@dataclass(frozen=True)
class MemoryExamples:
    """Memory examples of one batch for the slots that hold any memory.

    x: float [S,B,C,H,W] in [0,1] on the device; valid: bool [S,B] on the device; slots: the S slot numbers
    (0 = epoch n−1, k−1 = epoch n−k) that `x` holds, in order; valid_counts: host-side count of valid entries per
    slot (known without a device sync because the store's masks live on the host).
    """

    x: torch.Tensor
    valid: torch.Tensor
    slots: tuple[int, ...]
    valid_counts: tuple[int, ...]


def build_memory_examples(x: torch.Tensor, memory: Any, current: ViewParams, pad: int, view_mode: str,
                          num_slots: int) -> MemoryExamples | None:
    """Rebuilds x″_k = clamp(view_k(x) + δ_k, 0, 1) for the first `num_slots` slots of a store MemoryBatch.

    x: float [B,C,H,W] in [0,1], the un-augmented images on the device. view_mode "recorded" uses the view each δ_k
    was made on (the very adversarial image of that epoch, up to quantization); "aligned" moves δ_k into the current
    view instead. Returns None when no slot holds memory for this batch.
    """
    counts = memory.valid[:num_slots].sum(dim=1).tolist()  # host tensor: no device sync
    slots = tuple(k for k in range(num_slots) if counts[k] > 0)
    if not slots:
        return None
    device = x.device
    examples = []
    for k in slots:
        delta = dequantize(memory.codes[k].to(device, non_blocking=True), memory.scale[k].to(device, non_blocking=True))
        made_on = ViewParams(memory.offset[k].to(device).long(), memory.flip[k].to(device))
        if view_mode == "aligned":
            base, delta = apply_view(x, current, pad), align_delta(delta, made_on, current, pad)
        else:
            base = apply_view(x, made_on, pad)
        examples.append((base + delta).clamp_(0.0, 1.0))
    valid = memory.valid[list(slots)].to(device, non_blocking=True)
    return MemoryExamples(torch.stack(examples), valid, slots, tuple(counts[k] for k in slots))


class DeferredWriter:
    """Quantizes δ on the device and hands it to the store one step later.

    On CUDA the codes are copied into pinned host buffers with non_blocking copies and an event; the store gets them
    at the next push (by then the copy is long done), so the step never waits for the device. On CPU it writes
    at once.
    """

    def __init__(self, store: Any, device: torch.device) -> None:
        self._store = store
        self._cuda = device.type == "cuda"
        self._pending: tuple[Any, ...] | None = None

    def push(self, idx: np.ndarray, delta: torch.Tensor, views: ViewParams) -> None:
        """Queues the write of δ [B,C,H,W] (float, on the device) made on `views` for samples `idx` (host int64)."""
        codes, scale = quantize(delta.detach().float())
        tensors = (codes, scale, views.offset.to(torch.int16), views.flip)
        if not self._cuda:
            self._store.write(idx, *tensors)
            return
        host = tuple(torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors)
        for dst, src in zip(host, tensors):
            dst.copy_(src, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
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
