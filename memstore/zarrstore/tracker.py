"""Which rows of the epoch being written have been written, against the visits the epoch's plan makes.

A block is complete (its chunk is written whole, once, behind the training) when every row of it got all the writes
the plan visits it with: one for a sample of a one-part store; for a two-part store as many as the epoch visits the
sample (`EpochPlan.visits`: a base sample several times, a generated one 0, 1 or more times when the generated
rows are drawn again or with replacement, memstore/layout/mixing.py), none for a padding row. The last write of a row
replaces the earlier ones: the δ kept as the row's memory of the epoch is its last visit's, made by the most recent
model (a row visited twice with replacement keeps its second δ). All visits of a generated row fall in one store
window (its block's), so its block completes within that window. Rows of a complete block that were never written
hold no memory (NO_EPOCH).
"""

from __future__ import annotations

import numpy as np

from memloss.memstore.errors import StoreError
from memloss.memstore.layout.order import BlockLayout


class WriteTracker:
    """Per storage row: writes still expected this epoch and whether any write came; per block: writes still
    expected and whether its chunk was handed to the writer (`flushed`)."""

    def __init__(self, layout: BlockLayout, visits: np.ndarray | None) -> None:
        self._b = layout.block_size
        self._left = (layout.members >= 0).astype(np.uint16) if visits is None else visits.astype(np.uint16)
        self._written = np.zeros(layout.rows, dtype=bool)
        starts = np.arange(layout.num_blocks, dtype=np.int64) * self._b  # per-block sums: no per-row temporaries
        self._block_left = np.add.reduceat(self._left, starts, dtype=np.int64)
        self.flushed = np.zeros(layout.num_blocks, dtype=bool)

    def check(self, pos: np.ndarray, idx: np.ndarray, epoch: int | None) -> None:
        """StoreError if a row at storage positions `pos` (samples `idx`) is in a block already written."""
        stored = self.flushed[pos // self._b]
        if stored.any():
            sample = int(idx[np.flatnonzero(stored)[0]])
            raise StoreError(f"sample {sample} was written again in epoch {epoch} after its block was stored; "
                             "write each sample once per visit of the epoch's order")

    def record(self, pos: np.ndarray) -> np.ndarray:
        """Counts one write of each row at `pos` (unique); returns the blocks this completed (not yet flushed).
        A write beyond a row's planned visits replaces the row without counting."""
        counted = pos[self._left[pos] > 0]
        self._left[counted] -= 1
        self._written[pos] = True
        if counted.size == 0:
            return counted
        blocks, counts = np.unique(counted // self._b, return_counts=True)
        self._block_left[blocks] -= counts
        return blocks[(self._block_left[blocks] == 0) & ~self.flushed[blocks]]

    def unwritten(self, start: int, stop: int) -> np.ndarray:
        """bool [stop − start]: rows [start, stop) no write reached this epoch."""
        return ~self._written[start:stop]

    def any_written(self, start: int, stop: int) -> bool:
        return bool(self._written[start:stop].any())
