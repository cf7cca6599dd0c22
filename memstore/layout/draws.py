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


def check_window_draws(drawn: np.ndarray | None, first: int, window_ages: int, k: int) -> None:
    """Refuses (StoreError, one line) draws `drawn` (bool [windows, K], None: every age) under which a window from
    `first` on (those read from storage) would decode more than `window_ages` ages: the windows' RAM was sized for
    that many (the store's `window_slots`), so the store would exceed its memory budget."""
    if window_ages >= k:
        return
    per_window = drawn[first:].sum(axis=1) if drawn is not None else np.array([k])
    if per_window.size and int(per_window.max()) > window_ages:
        got = "every age (no ages=)" if drawn is None else f"{int(per_window.max())} ages in a window"
        raise StoreError(
            f"this store's windows are sized for {window_ages} of the K={k} memory ages (window_slots={window_ages}) "
            f"but the epoch draws {got}; pass begin_epoch(ages=...) drawing at most {window_ages} ages per window "
            f"(ages=lambda w: [] for an epoch that only writes), or open the store without window_slots")
