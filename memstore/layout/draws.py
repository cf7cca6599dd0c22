"""Per-window memory-age draws: which ages (0 = epoch n−1, …, K−1) each window of an epoch's plan reads
(`MemStore.begin_epoch(..., ages=...)`), and the table of them a batch's samples get."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from memloss.memstore.errors import StoreError
from memloss.memstore.layout.order import BlockLayout, EpochPlan

# Which memory ages (0 = epoch n−1, …, K−1) window w of the epoch's plan reads (per-window slot draws).
AgesOfWindow = Callable[[int], Sequence[int]]


def draw_table(ages: AgesOfWindow, windows: int, k: int) -> np.ndarray:
    """bool [windows, K]: the ages each window reads, from the caller's `ages(window)`."""
    table = np.zeros((windows, k), dtype=bool)
    for w in range(windows):
        got = np.asarray(list(ages(w)))
        if got.size and (got.dtype.kind not in "iu" or got.min() < 0 or got.max() >= k):
            raise StoreError(f"ages({w}) must give memory ages in [0, {k}) (0 = epoch n−1), got {got.tolist()}")
        table[w, got.astype(np.int64)] = True
    return table


def drawn_rows(drawn: np.ndarray, plan: EpochPlan, layout: BlockLayout, idx: np.ndarray) -> np.ndarray:
    """bool [K, B]: whether the window of each sample of idx [B] drew each age (`drawn` from `draw_table`)."""
    window = plan.window_of_block[layout.rows_of(idx) // layout.block_size]
    return drawn[window].T
