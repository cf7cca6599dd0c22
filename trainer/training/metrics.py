"""Accumulating per-step metrics on the device, read back once per epoch (no per-step host sync)."""

from __future__ import annotations

from collections.abc import Callable

import torch

# Metrics that are sums over samples (counts), not per-batch means to be weighted by batch size.
COUNT_METRICS = ("mem_correct", "mem_count")


class MetricSums:
    """Sums of batch-size-weighted means and of counts, kept as device tensors."""

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self.samples = 0

    def add(self, metrics: dict[str, torch.Tensor], batch: int) -> None:
        """Adds one step's detached scalar metrics; `batch` is the step's sample count (host int)."""
        self.samples += batch
        for name, value in metrics.items():
            weighted = value.detach().float() if name in COUNT_METRICS else value.detach().float() * batch
            self._sums[name] = self._sums[name] + weighted if name in self._sums else weighted

    def reduce(self, combine: Callable[[dict[str, torch.Tensor], int], tuple[dict[str, torch.Tensor], int]]) -> None:
        """Replaces the sums and the sample count by `combine(sums, samples)` (e.g. their sums over ranks)."""
        self._sums, self.samples = combine(self._sums, self.samples)

    def read(self) -> dict[str, float]:
        """Per-sample means (and ratios for counts) as floats: the epoch's one host sync."""
        if not self._sums:
            return {}
        names = list(self._sums)
        values = torch.stack([self._sums[n] for n in names]).cpu().tolist()
        sums = dict(zip(names, values))
        out = {n: v / max(self.samples, 1) for n, v in sums.items() if n not in COUNT_METRICS}
        if sums.get("mem_count"):
            out["mem_acc"] = sums["mem_correct"] / sums["mem_count"]
        return out
