"""Zarr backend: the memory lives in a Zarr v3 group (local path or any fsspec URL zarr accepts).

Every array has the ring slot as its first dim and storage rows as its second; a chunk is one block of one slot.
The store never read-modify-writes a chunk: rows of a block are buffered until every sample of the block has
been written this epoch, then the whole chunk is written by a background thread (write-behind). Reads load whole
windows of blocks for the K read slots, one window ahead (prefetch). When the memory budget holds every slot of the
dataset, the slots stay in RAM across epochs instead (memstore/_resident.py) and only the first epoch after opening
reads from disk. Format details: docs/store-format.md.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from memloss.memstore._early import NextWindow
from memloss.memstore._prefetch import BackgroundReader, BackgroundWriter
from memloss.memstore._resident import ResidentSlots
from memloss.memstore._windows import WindowReader
from memloss.memstore._zarr_chunks import WriteJob, read_rows, write_chunks
from memloss.memstore._zarr_meta import ZarrHandle, read_failure, save_ring_state, verify_read_slots
from memloss.memstore.base import MemStore
from memloss.memstore.entries import ENTRY_FIELDS, Entries
from memloss.memstore.errors import StoreError
from memloss.memstore.order import WRITE_BATCH_BLOCKS, EpochPlan, plan_epoch
from memloss.memstore.ring import RingState


@dataclass
class _BlockBuffer:
    """Rows of one block being filled during the epoch; `written` marks rows already set."""

    entries: Entries
    written: np.ndarray

    @property
    def complete(self) -> bool:
        return bool(self.written.all())


class ZarrMemStore(MemStore):
    """MemStore on a Zarr group; create it with `create_store`, `open_store` or `open_or_create`."""

    def __init__(self, handle: ZarrHandle, window_blocks: int, read_only: bool, resident: bool = False) -> None:
        super().__init__(handle.spec, handle.layout, handle.seed, handle.state, window_blocks, read_only)
        self._handle = handle
        self._arrays: dict[str, zarr.Array] = handle.arrays
        self._reader = BackgroundReader(name="memstore-read")
        self._writer: BackgroundWriter[WriteJob] | None = None
        if not read_only:
            # Resident jobs are views of the resident rows (no memory of their own): never block on the queue.
            queued = handle.layout.num_blocks if resident else window_blocks
            self._writer = BackgroundWriter(lambda jobs: write_chunks(self._arrays, jobs), maxsize=queued, name="memstore-write",
                                            batch=WRITE_BATCH_BLOCKS)
        self._windows = WindowReader(handle.layout, handle.spec.fingerprint.shape, handle.arrays, self._reader)
        self._landed: Future[None] | None = None  # the last ring-state save (a commit may still be landing)
        self._reads_after: Future[None] | None = None  # set by write_after: what the next epoch's reads wait for
        self._next_prepared = False  # the next epoch's first window is loading (windowed path)
        self._read_slot_ids: list[int] = []
        self._buffers: dict[int, _BlockBuffer] = {}
        self._flushed = np.zeros(self._layout.num_blocks, dtype=bool)
        self._use_resident = resident
        self._resident: ResidentSlots | None = None  # allocated at the first epoch (an inspector never pays for it)
        self._load: tuple[Future[None], dict[int, int]] | None = None  # resident load running: (future, slot->epoch)

    @property
    def resident(self) -> bool:
        """True when the slots stay in RAM across epochs (the budget holds every slot of the dataset)."""
        return self._use_resident

    @property
    def url(self) -> str:
        return self._handle.url

    @property
    def group(self) -> zarr.Group:
        return self._handle.group

    # ---- state ------------------------------------------------------------------------------------------------
    def _save_state(self, state: RingState) -> Future[None]:
        assert self._writer is not None
        handle = self._handle
        self._landed = self._writer.call(lambda: save_ring_state(handle, state))  # after the rows it points at
        return self._landed

    def write_after(self, done: Future[Any]) -> None:
        if self._writer is not None:
            self._reads_after = self._landed  # the next epoch's reads need the commits so far, not `done`
            self._writer.call(done.result)  # an error of `done` becomes the writer's: nothing more is written

    # ---- epochs -----------------------------------------------------------------------------------------------
    def _start_epoch(self, plan: EpochPlan, read_slots: list[tuple[int, int]]) -> None:
        self._read_slot_ids = [slot for _, slot in read_slots]
        verify_read_slots(self._handle, self._state, self._read_slot_ids)  # missing chunks: one line, before reading
        self._flushed = np.zeros(self._layout.num_blocks, dtype=bool)
        self._buffers = {}
        self._next_prepared = False
        after, self._reads_after = self._reads_after or self._landed, None
        if self._use_resident:
            self._start_resident(plan.epoch)
            return
        self._windows.start(plan, self._read_slot_ids, after)

    def _abandon_epoch(self) -> None:
        self._buffers = {}
        self._windows.drop(keep_from=None)
        self._settle_load(raise_error=False)  # the new epoch may write into a slot the load is filling
        if self._epoch is not None and self._writer is not None:
            # An epoch in progress is dropped: its queued chunks (resident ones are views of rows the new epoch may
            # reset) are written first. After a commit nothing is in progress, and a landing commit is not waited.
            self._writer.drain()

    def _finish_epoch(self, epoch: int) -> None:
        """Queues the epoch's remaining blocks; the commit's state save lands after them (see `_save_state`)."""
        assert self._writer is not None
        slot = epoch % self.num_slots
        for block in np.flatnonzero(~self._flushed):
            start, stop = self._layout.block_rows(int(block))
            if self._resident is not None:
                entries = self._resident.block(slot, int(block))
            else:
                buf = self._buffers.pop(int(block), None)
                entries = buf.entries if buf is not None else None
                self._windows.carry(int(block), entries)
            self._writer.submit(WriteJob(slot, start, stop, entries))
            self._flushed[block] = True
        self._windows.drop(keep_from=None)
        if self._resident is not None:
            self._resident.held[slot] = epoch  # the slot's rows are final; storage gets them in the background

    # ---- resident fast path -------------------------------------------------------------------------------------
    def _start_resident(self, epoch: int) -> None:
        """Rotates the resident slots: the epoch's write slot starts empty, and read slots not in RAM (the first
        epoch after opening) are loaded from disk in the background."""
        if self._resident is None:
            self._resident = ResidentSlots(self._layout, self._spec.fingerprint.shape, self.num_slots)
        if self._read_only:
            self._resident.forget()
        else:
            self._resident.start_writing(epoch % self.num_slots)
        missing = self._resident.missing(self._state, self._read_slot_ids)
        if missing:
            epochs = {slot: int(self._state.slot_epochs[slot]) for slot in missing}  # type: ignore[arg-type]
            self._load = (self._reader.submit(lambda: self._load_resident(missing)), epochs)

    def _load_resident(self, slots: list[int]) -> None:
        """Runs on the reader thread: every chunk of ring `slots`, decoded straight into the resident rows."""
        assert self._resident is not None
        read_rows(self._arrays, slots, slice(None), self._resident.rows, slots)

    def _settle_load(self, raise_error: bool) -> None:
        """Waits for a running resident load; on success its slots count as held (RAM equals disk)."""
        if self._load is None:
            return
        fut, epochs = self._load
        exc = fut.exception()
        if exc is not None and raise_error:
            raise self._read_error(exc) from exc  # `_load` stays set: every later read of this epoch fails too
        self._load = None
        if exc is None:
            assert self._resident is not None
            for slot, epoch in epochs.items():
                self._resident.held[slot] = epoch

    def _read_resident(self, idx: np.ndarray, slots: list[int]) -> Entries:
        self._settle_load(raise_error=True)
        assert self._resident is not None
        return self._resident.gather(slots, self._layout.position[idx])

    def _write_resident(self, pos: np.ndarray, entries: Entries) -> None:
        """Rows go into the write slot in RAM; each block completed by this write is flushed whole (views)."""
        assert self._resident is not None and self._writer is not None
        slot = self._write_slot()
        for block in self._resident.put(slot, pos, entries):
            start, stop = self._layout.block_rows(int(block))
            self._flushed[block] = True
            self._writer.submit(WriteJob(slot, start, stop, self._resident.block(slot, int(block))))

    # ---- reads ------------------------------------------------------------------------------------------------
    def _read_error(self, exc: BaseException) -> StoreError:
        return read_failure(self._handle, self._state, self._read_slot_ids, exc)  # names the damaged epoch/chunk

    def _read_entries(self, idx: np.ndarray, slots: list[int]) -> Entries:
        if slots != self._read_slot_ids:
            raise StoreError("internal error: read slots changed during the epoch")
        if self._use_resident:
            return self._read_resident(idx, slots)
        out = Entries.uninitialized(idx.shape[0], self._spec.fingerprint.shape, lead=(len(slots),))
        try:
            self._windows.gather(self._layout.position[idx], out)
        except Exception as exc:
            self._raise_background_error()  # a failed commit is the cause a window load reports
            raise self._read_error(exc) from exc
        if self._windows.at_last_window and not self._next_prepared:
            self._prepare_next()
        return out

    def _prepare_next(self) -> None:
        """Starts loading epoch e+1's first window, for the read slots it will have once e is committed."""
        self._next_prepared = True
        epoch = self._require_epoch()
        if self._writer is None:  # read-only: nothing is committed by this store
            return
        state, nxt = self._state.after_commit(epoch).for_new_epoch(epoch + 1), epoch + 1
        slots = [(nxt - 1 - k) % self.num_slots for k in range(self.k)
                 if nxt - 1 - k >= 0 and state.slot_epochs[(nxt - 1 - k) % self.num_slots] == nxt - 1 - k]
        plan = plan_epoch(self._layout, self._window_blocks, self._seed, nxt)
        early = NextWindow(plan, slots, epoch % self.num_slots, self._layout, self._spec.fingerprint.shape,
                           self._flushed.copy())
        self._windows.prepare_next(early, self._writer.call(lambda: None))  # after the blocks written so far

    # ---- writes -----------------------------------------------------------------------------------------------
    def _write_entries(self, idx: np.ndarray, entries: Entries) -> None:
        assert self._writer is not None
        pos = self._layout.position[idx]
        blocks = pos // self._layout.block_size
        if self._flushed[blocks].any():
            sample = int(idx[np.flatnonzero(self._flushed[blocks])[0]])
            raise StoreError(
                f"sample {sample} was written again in epoch {self._epoch} after its block was stored; "
                "write each sample once per epoch"
            )
        if self._resident is not None:
            self._write_resident(pos, entries)
            return
        order = np.argsort(blocks, kind="stable")
        uniq, first = np.unique(blocks[order], return_index=True)
        for block, rows in zip(uniq, np.split(order, first[1:])):
            self._fill_block(int(block), pos[rows], entries, rows)

    def _fill_block(self, block: int, pos: np.ndarray, entries: Entries, rows: np.ndarray) -> None:
        start, stop = self._layout.block_rows(block)
        buf = self._buffers.get(block)
        if buf is None:
            buf = _BlockBuffer(Entries.empty(stop - start, self._spec.fingerprint.shape), np.zeros(stop - start, bool))
            self._buffers[block] = buf
        local = pos - start
        for name in ENTRY_FIELDS:
            getattr(buf.entries, name)[local] = getattr(entries, name)[rows]
        buf.written[local] = True
        if buf.complete:
            del self._buffers[block]
            self._flushed[block] = True
            self._windows.carry(block, buf.entries)
            assert self._writer is not None
            self._writer.submit(WriteJob(self._write_slot(), start, stop, buf.entries))

    # ---- errors and closing -----------------------------------------------------------------------------------
    def _raise_background_error(self) -> None:
        if self._writer is not None and self._writer.error is not None:
            exc = self._writer.error
            text = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
            raise StoreError(f"writing memory to {self.url} failed in the background ({text})") from exc
        failed = self._windows.failed()
        if failed is None and self._load is not None and self._load[0].done():
            failed = self._load[0].exception()
        if failed is not None:
            raise self._read_error(failed) from failed

    def _close_backend(self) -> None:
        self._buffers = {}
        try:
            self._windows.drop(keep_from=None)
            self._windows.drop_next()
            self._settle_load(raise_error=False)
            self._resident = None
        finally:
            self._reader.close()
            if self._writer is not None:
                self._writer.close()
            self._handle.release()  # the writer lock, after the last write
        if self._writer is not None and self._writer.error is not None:
            exc = self._writer.error
            raise StoreError(f"writing memory to {self.url} failed in the background ({exc})") from exc
