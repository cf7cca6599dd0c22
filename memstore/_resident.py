"""Resident fast path of the Zarr store: all S = K+1 ring slots of the whole dataset kept in RAM across epochs.

When the memory budget covers S slots of N rows, epoch e+1 needs no disk read: its read slots are epoch e (the
rows this process just wrote, which stay here after their chunks went to storage) and epochs e−1 … e−K+1, already
resident for epoch e. Only the first epoch after opening a store loads its read slots from disk. Rows are kept in
storage-row order, so a block is a contiguous row range and the write-behind of its chunk takes views (no copy).

`held[s]` is the committed epoch whose rows slot s holds exactly as they are on storage (None: unknown). A slot is
read from RAM only when `held[s]` equals the ring state's epoch for s, so validity is decided exactly as on disk
(the ring state, then each row's epoch stamp).
"""

from __future__ import annotations

import numpy as np

from memloss.memstore.entries import ENTRY_FIELDS, NO_EPOCH, Entries, take_rows
from memloss.memstore.order import BlockLayout
from memloss.memstore.ring import RingState


class ResidentSlots:
    """Rows of every ring slot, Entries with lead [S] over storage rows [N], plus the progress of the epoch being
    written (which rows it wrote, how many per block) so that complete blocks can be flushed whole."""

    def __init__(self, layout: BlockLayout, shape: tuple[int, ...], num_slots: int) -> None:
        # Uninitialized: a row is only ever read after a load or a write set it, or masked by its NO_EPOCH stamp.
        self.rows = Entries.uninitialized(layout.n, shape, lead=(num_slots,))
        self.rows.epoch.fill(NO_EPOCH)
        self.held: list[int | None] = [None] * num_slots
        self._touched = [False] * num_slots
        self._layout = layout
        starts = np.arange(layout.num_blocks, dtype=np.int64) * layout.block_size
        self._block_len = np.minimum(starts + layout.block_size, layout.n) - starts
        self._written = np.zeros(layout.n, dtype=bool)
        self._filled = np.zeros(layout.num_blocks, dtype=np.int64)

    def missing(self, state: RingState, slots: list[int]) -> list[int]:
        """Read slots whose committed epoch is not in RAM (they must be loaded from storage)."""
        return [s for s in slots if self.held[s] is None or self.held[s] != state.slot_epochs[s]]

    def forget(self) -> None:
        """Treats every slot as unknown (a read-only opener reloads each epoch: another process may write)."""
        self.held = [None] * len(self.held)

    def start_writing(self, slot: int) -> None:
        """The slot's previous epoch is gone, even for rows the new epoch never writes."""
        if not self._touched[slot]:
            # One memset now instead of a page fault per row at the first writes (~2 ms per batch of 128).
            for name, empty in (("codes", 128), ("scale", 0), ("offset", 0), ("flip", False)):
                getattr(self.rows, name)[slot].fill(empty)
            self._touched[slot] = True
        self.held[slot] = None
        self.rows.epoch[slot] = NO_EPOCH
        self._written[:] = False
        self._filled[:] = 0

    def gather(self, slots: list[int], pos: np.ndarray) -> Entries:
        """Rows at storage positions pos int64 [B] of ring `slots`: Entries with lead [len(slots)] (copies)."""
        return take_rows(self.rows, slots, pos)

    def put(self, slot: int, pos: np.ndarray, entries: Entries) -> np.ndarray:
        """Stores rows at storage positions pos int64 [B] into `slot`; returns the blocks this write completed."""
        for name in ENTRY_FIELDS:
            getattr(self.rows, name)[slot, pos] = getattr(entries, name)
        new = pos[~self._written[pos]]  # a sample written again before its block is flushed counts once
        self._written[new] = True
        blocks = new // self._layout.block_size
        self._filled += np.bincount(blocks, minlength=self._layout.num_blocks)
        touched = np.unique(blocks)
        return touched[self._filled[touched] == self._block_len[touched]]

    def block(self, slot: int, block: int) -> Entries | None:
        """Views of one block's rows in `slot` for a whole-chunk write; None if the epoch wrote none of them.
        Rows of a partly written block that were not written get the empty values (as on disk, codes 128)."""
        start, stop = self._layout.block_rows(block)
        if self._filled[block] == 0:
            return None
        view = Entries(*(getattr(self.rows, name)[slot, start:stop] for name in ENTRY_FIELDS))
        unwritten = ~self._written[start:stop]
        if unwritten.any():
            view.codes[unwritten], view.scale[unwritten], view.offset[unwritten] = 128, 0, 0
            view.flip[unwritten], view.epoch[unwritten] = False, NO_EPOCH
        return view
