"""Write buffers of the Zarr store's windowed blocks: the rows of the slot being written, one buffer per window of
the epoch's plan (the window's blocks' rows in storage order).

A batch's rows mostly fall in one window, so a write is one fancy assignment per field, and a complete block is a
contiguous slice of its window's buffer, handed to the writer as views (no copy). Once every block of a window was
handed over, its buffer goes back to a pool of one and is reused for a later window after the writer has written
those views (a fresh 200 MB buffer per window would cost its page faults again: about 4 ms per step measured at
batch 512). Buffers are not cleared: rows never written are set to "no memory" when their block is handed over.
The memory budget counts two windows of write buffers (memstore/layout/order.py `window_blocks_for_budget`).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from memloss.memstore.zarrstore.tracker import WriteTracker
from memloss.memstore.entries import ENTRY_FIELDS, NO_EPOCH, Entries
from memloss.memstore.layout.mixing import block_rows
from memloss.memstore.layout.order import BlockLayout, EpochPlan

POOL = 1  # free buffers kept for reuse (a window uses the one its predecessor but one freed)


class WindowBuffers:
    """Rows written this epoch into windowed blocks, by window of `plan` (the full plan of the epoch)."""

    def __init__(self, layout: BlockLayout, shape: tuple[int, ...], barrier: Callable[[], Future[None]]) -> None:
        """barrier(): a future that completes once the writer has written every job submitted before the call."""
        self._layout, self._shape, self._barrier = layout, shape, barrier
        self._plan: EpochPlan | None = None
        self._buffers: dict[int, tuple[np.ndarray, Entries]] = {}  # window -> (sorted storage rows, rows)
        self._open: dict[int, int] = {}  # window -> blocks not handed to the writer yet
        self._free: list[tuple[Entries, Future[None]]] = []  # buffers to reuse once their future completed

    def start(self, plan: EpochPlan | None) -> None:
        """A new epoch (None: none). Buffers still in use are dropped (queued writes keep them alive)."""
        self._plan, self._buffers, self._open = plan, {}, {}

    def put(self, pos: np.ndarray, entries: Entries) -> None:
        """Stores rows at storage positions pos int64 [B] (all in windowed blocks of the plan)."""
        assert self._plan is not None
        wins = self._plan.window_of_block[pos // self._layout.block_size]
        first = int(wins[0])
        if (wins == first).all():  # the common case: one window
            self._assign(first, pos, entries, None)
            return
        for w in np.unique(wins):
            self._assign(int(w), pos, entries, wins == w)

    def _assign(self, w: int, pos: np.ndarray, entries: Entries, sel: np.ndarray | None) -> None:
        rows, buf = self._buffer(w)
        local = np.searchsorted(rows, pos if sel is None else pos[sel])
        for name in ENTRY_FIELDS:
            value = getattr(entries, name)
            getattr(buf, name)[local] = value if sel is None else value[sel]

    def _buffer(self, w: int) -> tuple[np.ndarray, Entries]:
        got = self._buffers.get(w)
        if got is None:
            assert self._plan is not None
            blocks = np.sort(self._plan.windows[w])
            rows = block_rows(self._layout, blocks)
            got = self._buffers[w] = (rows, self._allocate(rows.shape[0]))
            self._open[w] = blocks.shape[0]
        return got

    def _allocate(self, rows: int) -> Entries:
        """Rows [rows] of a pooled buffer (its writes landed) or of a new one; contents undefined."""
        for i, (buf, landed) in enumerate(self._free):
            if buf.epoch.shape[0] >= rows:
                del self._free[i]
                landed.exception()  # the writer's views of it are written (a failure is reported elsewhere)
                return Entries(*(getattr(buf, name)[:rows] for name in ENTRY_FIELDS))
        return Entries.uninitialized(max(rows, self._capacity()), self._shape)

    def _capacity(self) -> int:
        """Rows of the largest window of the plan (a pooled buffer then fits every window)."""
        assert self._plan is not None
        return max(min(len(w) * self._layout.block_size, self._layout.rows) for w in self._plan.windows)

    def block(self, block: int, tracker: WriteTracker) -> Entries | None:
        """Views of a block's rows, those never written set to no memory; None if no row of it was written."""
        assert self._plan is not None
        got = self._buffers.get(int(self._plan.window_of_block[block]))
        start, stop = self._layout.block_rows(block)
        if got is None or not tracker.any_written(start, stop):
            return None
        rows, buf = got
        i = int(np.searchsorted(rows, start))
        view = Entries(*(getattr(buf, name)[i:i + stop - start] for name in ENTRY_FIELDS))
        unwritten = tracker.unwritten(start, stop)
        if unwritten.any():
            view.codes[unwritten], view.scale[unwritten], view.offset[unwritten] = 128, 0, 0
            view.flip[unwritten], view.epoch[unwritten] = False, NO_EPOCH
        return view

    def handed_over(self, block: int) -> None:
        """The block's chunk went to the writer: its window's buffer is dropped after its last block."""
        assert self._plan is not None
        w = int(self._plan.window_of_block[block])
        if w in self._open:
            self._open[w] -= 1
            if self._open[w] == 0:
                del self._open[w]
                _, buf = self._buffers.pop(w)
                if len(self._free) < POOL:
                    self._free.append((buf, self._barrier()))
