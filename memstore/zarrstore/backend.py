"""Zarr backend: the memory lives in a Zarr v3 group (local path or any fsspec URL zarr accepts).

Every array has the ring slot as its first dim and storage rows as its second; a chunk is one block of one slot.
The store never read-modify-writes a chunk: rows of a block are buffered until the block got every write the
epoch's plan visits it with (tracker.py), then the whole chunk is written by a background thread (write-behind),
once an epoch. Reads load whole windows of blocks for the K read slots, one window ahead (prefetch). When the
memory budget holds every slot of the dataset, the slots stay in RAM across epochs instead (resident.py) and only
the first epoch after opening reads from disk; a two-part store (base set + generated images) keeps its base part
so and reads its generated part in windows. Format details: docs/store-format.md.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import replace
from typing import Any

import numpy as np
import zarr

from memloss.memstore.zarrstore.early import NextWindow, first_window_slots
from memloss.memstore.zarrstore.prefetch import BackgroundReader, BackgroundWriter
from memloss.memstore.zarrstore.resident import ResidentPart
from memloss.memstore.zarrstore.tracker import WriteTracker
from memloss.memstore.zarrstore.wbuffers import WindowBuffers
from memloss.memstore.zarrstore.windows import WindowReader, window_leads
from memloss.memstore.zarrstore.chunks import WriteJob, write_chunks
from memloss.memstore.zarrstore.meta import (
    ZarrHandle, read_failure, reload_ring_state, save_ring_state, verify_read_slots,
)
from memloss.memstore.base import MemStore
from memloss.memstore.entries import Entries, assign_rows, subset_rows
from memloss.memstore.errors import StoreError
from memloss.memstore.layout.budget import WRITE_BATCH_BLOCKS
from memloss.memstore.layout.order import EpochPlan
from memloss.memstore.layout.ring import RingState


class ZarrMemStore(MemStore):
    """MemStore on a Zarr group; create it with `create_store`, `open_store` or `open_or_create`.

    The first `resident_blocks` blocks stay in RAM across epochs (memstore/zarrstore/resident.py): every block when the
    budget holds them all, the base part of a two-part store, or none. The others are read in windows."""

    def __init__(self, handle: ZarrHandle, window_blocks: int, read_only: bool, resident_blocks: int = 0,
                 read_ahead_rows: int = 0, window_ages: int | None = None) -> None:
        """read_ahead_rows: rows of batches a read-ahead may gather ahead within the budget (memstore/ahead.py);
        window_ages: the memory ages a window was sized to decode (m of per-window draws; None: all K)."""
        super().__init__(handle.spec, handle.layout, handle.seed, handle.state, window_blocks, read_only)
        if window_ages is not None and resident_blocks < handle.layout.num_blocks:
            self._window_ages = max(1, min(int(window_ages), handle.spec.k))
        self.read_ahead_rows = int(read_ahead_rows)
        self._handle, self._arrays = handle, handle.arrays
        self._reader = BackgroundReader(name="memstore-read")
        self._writer: BackgroundWriter[WriteJob] | None = None
        self._resident_blocks = int(resident_blocks)
        self._resident_rows = min(self._resident_blocks * self._layout.block_size, self._layout.rows)
        if not read_only:
            # Resident jobs are views of the resident rows (no memory of their own): they never block the queue.
            queued = self._resident_blocks + (0 if self.resident else window_blocks)
            self._writer = BackgroundWriter(lambda jobs: write_chunks(self._arrays, jobs), maxsize=queued,
                                            name="memstore-write", batch=WRITE_BATCH_BLOCKS)
        self._windows = WindowReader(handle.layout, handle.spec.fingerprint.shape, handle.arrays, self._reader)
        self._landed: Future[None] | None = None  # the last ring-state save (a commit may still be landing)
        self._reads_after: Future[None] | None = None  # set by write_after: what the next epoch's reads wait for
        self._next_prepared = False  # the next epoch's early work started (windowed path)
        self._read_slot_ids: list[int] = []
        self._wbuf = WindowBuffers(self._layout, self._spec.fingerprint.shape, self._write_barrier)
        self._tracker = WriteTracker(self._layout, None)
        self._resident: ResidentPart | None = None  # allocated at the first epoch (an inspector never pays for it)

    @property
    def resident(self) -> bool:
        """True when every slot of every row stays in RAM across epochs (the budget holds them all)."""
        return self._resident_blocks >= self._layout.num_blocks

    @property
    def mirrors(self) -> bool:
        """A read-only opener of a fully resident store (torchrun's ranks ≠ 0): see MemStore.mirrors."""
        return self._read_only and self.resident

    @property
    def resident_blocks(self) -> int:
        """Blocks (the first ones) kept in RAM across epochs; the others are read in windows."""
        return self._resident_blocks

    @property
    def url(self) -> str:
        return self._handle.url

    @property
    def group(self) -> zarr.Group:
        return self._handle.group

    # ---- state ------------------------------------------------------------------------------------------------
    def _save_state(self, state: RingState) -> Future[None]:
        assert self._writer is not None
        self._landed = self._writer.call(lambda: save_ring_state(self._handle, state))  # after the rows it points at
        return self._landed

    def write_after(self, done: Future[Any]) -> None:
        if self._writer is not None:
            self._reads_after = self._landed  # the next epoch's reads need the commits so far, not `done`
            self._writer.call(done.result)  # an error of `done` becomes the writer's: nothing more is written

    def _write_barrier(self) -> Future[None]:
        """Completes once every chunk queued so far is written."""
        return self._writer.call(lambda: None)  # type: ignore[union-attr]  # (a writer's: only writes call it)

    # ---- epochs -----------------------------------------------------------------------------------------------
    @property
    def _first_windowed(self) -> int:
        """The plan's first window read in windows: 0, or 1 after the resident base part's (`plan.from_window`)."""
        return 1 if self._resident_blocks else 0

    def _start_epoch(self, plan: EpochPlan, read_slots: list[tuple[int, int]]) -> None:
        self._read_slot_ids = [slot for _, slot in read_slots]
        ahead = self._windows.checked_ahead(self._state.slot_epochs)  # during the last epoch's last window (early.py)
        verify_read_slots(self._handle, self._state, [s for s in self._slots_from_storage() if s not in ahead])
        self._tracker = WriteTracker(self._layout, plan.visits)
        self._wbuf.start(plan)
        self._next_prepared = False
        after, self._reads_after = self._reads_after or self._landed, None
        if self._resident_blocks:
            if self._resident is None:
                self._resident = ResidentPart(self._layout, self._spec.fingerprint.shape, self.num_slots,
                                              self._resident_rows, self._arrays, self._reader)
            keeps = not self._read_only or self.mirrors  # a mirror rotates its slots as the writer does
            write_slot = plan.epoch % self.num_slots if keeps else None
            self._resident.start(write_slot, self._state, self._read_slot_ids)
        if not self.resident:
            self._windows.start(plan.from_window(self._first_windowed), self._read_slot_ids, after,
                                window_leads(self._drawn, read_slots, self._first_windowed))

    def _slots_from_storage(self) -> list[int]:
        """The read slots this epoch reads from storage: all of them, except, in a fully resident writer, the ones
        its RAM already holds at their committed epoch (its own writes, or loaded and verified before)."""
        if self.resident and self._resident is not None and (not self._read_only or self.mirrors):
            return self._resident.slots.missing(self._state, self._read_slot_ids)
        return self._read_slot_ids

    def _abandon_epoch(self) -> None:
        self._wbuf.start(None)
        self._windows.drop(keep_from=None)
        if self._resident is not None:
            self._resident.drop_load()  # the new epoch may write into a slot the load is filling
        if self._epoch is not None and self._writer is not None:
            # An epoch in progress is dropped: its queued chunks (resident ones are views of rows the new epoch may
            # reset) are written first. After a commit nothing is in progress, and a landing commit is not waited.
            self._writer.drain()

    def _finish_epoch(self, epoch: int) -> None:
        """Queues the epoch's remaining blocks; the commit's state save lands after them (see `_save_state`)."""
        assert self._writer is not None
        slot = epoch % self.num_slots
        for block in np.flatnonzero(~self._tracker.flushed):
            self._flush(slot, int(block), self._block_entries(slot, int(block)))
        self._windows.drop(keep_from=None)
        if self._resident is not None:
            self._resident.slots.held[slot] = epoch  # the slot's rows are final; storage gets them in the background

    def _block_entries(self, slot: int, block: int) -> Entries | None:
        """The rows of a block as written this epoch (None: no row was written)."""
        if block >= self._resident_blocks:
            return self._wbuf.block(block, self._tracker)
        return self._resident.slots.block(slot, block, self._tracker)  # type: ignore[union-attr]

    def _flush(self, slot: int, block: int, entries: Entries | None) -> None:
        """Hands a block's chunk to the writer (once per epoch)."""
        assert self._writer is not None
        start, stop = self._layout.block_rows(block)
        self._tracker.flushed[block] = True
        if block >= self._resident_blocks:
            self._windows.carry(block, entries)
        self._writer.submit(WriteJob(slot, start, stop, entries))
        if block >= self._resident_blocks:
            self._wbuf.handed_over(block)

    # ---- reads ------------------------------------------------------------------------------------------------
    def _read_error(self, exc: BaseException) -> StoreError:
        return read_failure(self._handle, self._state, self._read_slot_ids, exc)  # names the damaged epoch/chunk

    def _read_entries(self, idx: np.ndarray, slots: list[int]) -> Entries:
        if slots != self._read_slot_ids:
            raise StoreError("internal error: read slots changed during the epoch")
        pos = self._layout.rows_of(idx)
        resident = pos < self._resident_rows
        if resident.all():
            return self._read_resident(pos, slots)
        out = Entries.uninitialized(idx.shape[0], self._spec.fingerprint.shape, lead=(len(slots),))
        m = int(resident.sum())
        if m and resident[:m].all():  # a mixed batch, base rows first: each part straight into its rows
            self._read_resident(pos[:0], slots)  # waits for a running load
            assert self._resident is not None
            self._resident.slots.gather_into(slots, pos[:m], out, 0)
            self._gather_windows(pos[m:], out, at=m)
        elif m:  # base rows anywhere in the batch
            assign_rows(out, resident, self._read_resident(pos[resident], slots))
            part = Entries.uninitialized(idx.shape[0] - m, self._spec.fingerprint.shape, lead=(len(slots),))
            self._gather_windows(pos[~resident], part)
            assign_rows(out, ~resident, part)
        else:
            self._gather_windows(pos, out)
        if self._windows.at_last_window and not self._next_prepared:
            self._prepare_next()
        return out

    def _read_resident(self, pos: np.ndarray, slots: list[int]) -> Entries:
        assert self._resident is not None
        if (failed := self._resident.settle()) is not None:
            raise self._read_error(failed) from failed
        return self._resident.slots.gather(slots, pos)

    def _gather_windows(self, pos: np.ndarray, out: Entries, at: int = 0) -> None:
        try:
            self._windows.gather(pos, out, at)
        except Exception as exc:
            self._raise_background_error()  # a failed commit is the cause a window load reports
            raise self._read_error(exc) from exc

    def _prepare_next(self) -> None:
        """Starts checking epoch e+1's committed read slots and loading its first window (for the read slots it will
        have once e is committed; with draws, those its first window draws, when the caller gave `next_ages`)."""
        self._next_prepared, epoch = True, self._require_epoch()
        if self._writer is None:  # read-only: nothing is committed by this store
            return
        state = self._state.after_commit(epoch).for_new_epoch(epoch + 1)
        read = state.read_slots(epoch + 1, self.k)
        plan = self._plans.peek(epoch + 1, self._mix).from_window(self._first_windowed)  # built on the plan thread
        loaded, load = first_window_slots(read, self._next_ages, self._first_windowed, self._drawn is not None,
                                          self._window_ages)
        early = NextWindow(replace(plan, order=plan.order[:0]), loaded, epoch % self.num_slots, self._layout,
                           self._spec.fingerprint.shape, self._tracker.flushed.copy())
        early.check_ahead(lambda ready: verify_read_slots(self._handle, state, ready), state.slot_epochs,
                          [slot for _, slot in read])
        self._windows.prepare_next(early, self._writer.call(lambda: None), load)  # after the blocks written so far

    # ---- writes -----------------------------------------------------------------------------------------------
    def _write_entries(self, idx: np.ndarray, entries: Entries) -> None:
        assert self._writer is not None
        pos = self._layout.rows_of(idx)
        self._tracker.check(pos, idx, self._epoch)
        resident = pos < self._resident_rows
        slot = self._write_slot()
        if resident.any():
            assert self._resident is not None
            self._resident.slots.put(slot, pos[resident], subset_rows(entries, resident))
        if not resident.all():
            self._wbuf.put(pos[~resident], subset_rows(entries, ~resident))
        for block in self._tracker.record(pos):
            self._flush(slot, int(block), self._block_entries(slot, int(block)))

    # ---- mirrors (read-only, every slot resident) --------------------------------------------------------------
    def _mirror_entries(self, idx: np.ndarray, entries: Entries) -> None:
        assert self._resident is not None
        pos = self._layout.rows_of(idx)
        self._tracker.check(pos, idx, self._epoch)
        self._resident.slots.put(self._write_slot(), pos, entries)
        self._tracker.record(pos)

    def _reload_state(self) -> RingState:
        return reload_ring_state(self._handle)  # the handle's manifests follow: the next start check uses them

    def _mirror_committed(self, epoch: int) -> RingState:
        assert self._resident is not None
        stored = reload_ring_state(self._handle)
        # Equal: the writer's RAM and this one agree with storage row for row. Else storage says otherwise (a repair,
        # another writer): the slot is read from storage.
        self._resident.slots.held[epoch % self.num_slots] = epoch if stored == self._state.after_commit(epoch) else None
        return stored

    # ---- errors and closing -----------------------------------------------------------------------------------
    def _raise_writer_error(self) -> None:
        if (exc := None if self._writer is None else self._writer.error) is not None:
            text = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
            raise StoreError(f"writing memory to {self.url} failed in the background ({text})") from exc

    def _raise_background_error(self) -> None:
        self._raise_writer_error()
        failed = self._windows.failed()
        if failed is None and self._resident is not None:
            failed = self._resident.failed()
        if failed is not None:
            raise self._read_error(failed) from failed

    def _close_backend(self) -> None:
        self._wbuf.start(None)
        try:
            self._windows.drop(keep_from=None)
            self._windows.drop_next()
            if self._resident is not None:
                self._resident.drop_load()
            self._resident = None
        finally:
            self._reader.close()
            if self._writer is not None:
                self._writer.close()
            self._handle.release()  # the writer lock, after the last write
        self._raise_writer_error()

