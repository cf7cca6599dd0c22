"""Accumulating per-step metrics on the device, read back once per epoch (no per-step host sync)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
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


class MemoryShares:
    """Per memory age (1 … K), the share of an epoch's batch rows that held memory of that age, counted from the
    store's host-side valid masks (no device sync): over all rows and, with generated data, over the base rows (the
    first `base_rows` of every batch) and the generated rows apart. A sample an epoch did not visit has no memory
    from it, so generated rows hold memory about as often as an epoch visits a generated sample."""

    def __init__(self, base_rows: int | None = None) -> None:
        self.base_rows = base_rows
        self._held: dict[str, np.ndarray] = {}
        self._rows: dict[str, int] = {}

    def add(self, valid: torch.Tensor) -> None:
        """valid: bool [K, B] on the host (a store MemoryBatch's)."""
        v = valid.numpy()
        self._count("mem_held_by_age", v)
        if self.base_rows is not None:
            self._count("mem_held_base_by_age", v[:, : self.base_rows])
            self._count("mem_held_aux_by_age", v[:, self.base_rows :])

    def _count(self, key: str, v: np.ndarray) -> None:
        held = v.sum(axis=1)
        self._held[key] = self._held[key] + held if key in self._held else held
        self._rows[key] = self._rows.get(key, 0) + v.shape[1]

    def reduce(self, combine: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> None:
        """Replaces the counts by `combine(counts)` (e.g. their sums over ranks; held per age and rows per key)."""
        counts = {**self._held, **{f"{key}/rows": np.array([rows]) for key, rows in self._rows.items()}}
        counts = combine(counts)
        self._held = {key: value for key, value in counts.items() if not key.endswith("/rows")}
        self._rows = {key[: -len("/rows")]: int(value[0]) for key, value in counts.items() if key.endswith("/rows")}

    def read(self) -> dict[str, list[float]]:
        """{key: [share for age 1, …, age K]} (empty without a store)."""
        return {key: [round(float(h) / max(self._rows[key], 1), 6) for h in held] for key, held in self._held.items()}
