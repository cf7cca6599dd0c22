"""Resident rows of the Zarr store: all S = K+1 ring slots of a prefix of the storage rows kept in RAM across epochs.

The prefix is every row when the memory budget covers S slots of the whole dataset (the resident fast path), or the
base part of a two-part store (a base set plus generated images, memstore/layout/mixing.py), whose samples an epoch visits
several times in any order. Epoch e+1 then needs no disk read for these rows: its read slots are epoch e (the rows
this process just wrote, which stay here after their chunks went to storage) and epochs e−1 … e−K+1, already
resident for epoch e. Only the first epoch after opening loads them from disk. Rows are kept in storage-row order,
so a block is a contiguous row range and the write-behind of its chunk takes views (no copy).

`held[s]` is the committed epoch whose rows slot s holds exactly as they are on storage (None: unknown). A slot is
read from RAM only when `held[s]` equals the ring state's epoch for s, so validity is decided exactly as on disk
(the ring state, then each row's epoch stamp).
"""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np
import zarr

from memloss.memstore.zarrstore.prefetch import BackgroundReader
from memloss.memstore.zarrstore.tracker import WriteTracker
from memloss.memstore.zarrstore.chunks import read_rows
from memloss.memstore.entries import ENTRY_FIELDS, NO_EPOCH, Entries, take_rows
from memloss.memstore.layout.order import BlockLayout
from memloss.memstore.layout.ring import RingState


class ResidentSlots:
    """Rows [0, rows) of every ring slot: Entries with lead [S] over those storage rows."""

    def __init__(self, layout: BlockLayout, shape: tuple[int, ...], num_slots: int, rows: int) -> None:
        # Uninitialized: a row is only ever read after a load or a write set it, or masked by its NO_EPOCH stamp.
        self.rows = Entries.uninitialized(rows, shape, lead=(num_slots,))
        self.rows.epoch.fill(NO_EPOCH)
        self.held: list[int | None] = [None] * num_slots
        self._touched = [False] * num_slots
        self._layout = layout

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

    def gather(self, slots: list[int], pos: np.ndarray) -> Entries:
        """Rows at storage positions pos int64 [B] of ring `slots`: Entries with lead [len(slots)] (copies)."""
        return take_rows(self.rows, slots, pos)

    def gather_into(self, slots: list[int], pos: np.ndarray, out: Entries, at: int) -> None:
        """Rows at storage positions pos int64 [B] of ring `slots` into rows [at, at + B) of out (lead [len(slots)])."""
        for name in ENTRY_FIELDS:
            src, dst = getattr(self.rows, name), getattr(out, name)
            for k, slot in enumerate(slots):
                np.take(src[slot], pos, axis=0, out=dst[k, at:at + pos.shape[0]], mode="clip")

    def put(self, slot: int, pos: np.ndarray, entries: Entries) -> None:
        """Stores rows at storage positions pos int64 [B] into `slot` (a later write of a row replaces it)."""
        for name in ENTRY_FIELDS:
            getattr(self.rows, name)[slot, pos] = getattr(entries, name)

    def block(self, slot: int, block: int, tracker: WriteTracker) -> Entries | None:
        """Views of one block's rows in `slot` for a whole-chunk write; None if the epoch wrote none of them.
        Rows of a partly written block that were not written get the empty values (as on disk, codes 128)."""
        start, stop = self._layout.block_rows(block)
        if not tracker.any_written(start, stop):
            return None
        view = Entries(*(getattr(self.rows, name)[slot, start:stop] for name in ENTRY_FIELDS))
        unwritten = tracker.unwritten(start, stop)
        if unwritten.any():
            view.codes[unwritten], view.scale[unwritten], view.offset[unwritten] = 128, 0, 0
            view.flip[unwritten], view.epoch[unwritten] = False, NO_EPOCH
        return view


class ResidentPart:
    """The resident rows with their background load from storage (on the store's reader thread)."""

    def __init__(self, layout: BlockLayout, shape: tuple[int, ...], num_slots: int, rows: int,
                 arrays: dict[str, zarr.Array], reader: BackgroundReader) -> None:
        self.slots = ResidentSlots(layout, shape, num_slots, rows)
        self._rows, self._arrays, self._reader = rows, arrays, reader
        self._load: tuple[Future[None], dict[int, int]] | None = None  # load running: (future, slot -> epoch)

    def start(self, write_slot: int | None, state: RingState, read_slots: list[int]) -> None:
        """Rotates the slots (write_slot None: a read-only opener) and loads the read slots not in RAM."""
        if write_slot is None:
            self.slots.forget()
        else:
            self.slots.start_writing(write_slot)
        missing = self.slots.missing(state, read_slots)
        if missing:
            epochs = {slot: int(state.slot_epochs[slot]) for slot in missing}  # type: ignore[arg-type]
            self._load = (self._reader.submit(lambda: self._load_slots(missing)), epochs)

    def _load_slots(self, slots: list[int]) -> None:
        """Runs on the reader thread: every chunk of the resident rows of ring `slots`, decoded in place."""
        read_rows(self._arrays, slots, slice(0, self._rows), self.slots.rows, slots)

    def settle(self) -> BaseException | None:
        """Waits for a running load and returns its error; on success its slots count as held (RAM equals disk).
        After a failure the load stays recorded: every later read of the epoch fails too."""
        if self._load is None:
            return None
        fut, epochs = self._load
        exc = fut.exception()
        if exc is not None:
            return exc
        self._load = None
        for slot, epoch in epochs.items():
            self.slots.held[slot] = epoch
        return None

    def drop_load(self) -> None:
        """Waits for a running load and forgets it, whatever its outcome."""
        self.settle()
        self._load = None

    def failed(self) -> BaseException | None:
        """The error of a finished load, without waiting."""
        if self._load is not None and self._load[0].done():
            return self._load[0].exception()
        return None
