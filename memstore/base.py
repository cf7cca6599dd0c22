"""The memory store interface (`MemStore`) shared by the Zarr and in-RAM backends, and the batch it returns.

A store keeps S = K+1 ring slots; epoch e is written into slot e mod S. During epoch n, `read` returns slot 0 =
epoch n−1, ..., slot K−1 = epoch n−K. The ring state (which epoch each slot holds, which epochs are committed) is
shared logic here; the backends only move rows (`_read_entries`, `_write_entries`) and persist the state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import replace
from concurrent.futures import Future
from typing import Any

import numpy as np

from memloss.memstore.entries import ENTRY_FIELDS, Entries, MemoryBatch, as_index, valid_memory, validate_write
from memloss.memstore.errors import StoreError
from memloss.memstore.layout.draws import AgesOfWindow, check_window_draws, draw_table, drawn_rows
from memloss.memstore.layout.mixing import BatchMix, check_visited
from memloss.memstore.layout.nextplan import NextPlan
from memloss.memstore.layout.order import BlockLayout, EpochPlan
from memloss.memstore.layout.ring import RingState
from memloss.memstore.mirroring import Mirroring
from memloss.memstore.spec import StoreSpec

DEFAULT_MEMORY_BUDGET = 2 * 1024**3



class MemStore(Mirroring, ABC):
    """Memory of the last K epochs; see the module docstring. Use as a context manager or call close()."""

    def __init__(
        self, spec: StoreSpec, layout: BlockLayout, seed: int, state: RingState, window_blocks: int, read_only: bool
    ) -> None:
        self._spec, self._layout, self._seed = spec, layout, int(seed)
        self._state, self._window_blocks, self._read_only = state, int(window_blocks), read_only
        self._epoch: int | None = None
        self._plan: EpochPlan | None = None
        self._drawn: np.ndarray | None = None  # bool [windows, K]: ages each window reads (None = all)
        self._window_ages = spec.k  # ages a window of the windowed part may decode (its RAM is sized for them)
        self._next_ages: AgesOfWindow | None = None  # the next epoch's draws, when the caller gave them
        self._mix: BatchMix | None = None  # the batches of a two-part store's epochs (memstore/layout/mixing.py)
        self._plans = NextPlan(layout, window_blocks, seed)  # the next epoch's plan, built during this one
        self._closed = False

    # ---- properties -------------------------------------------------------------------------------------------
    @property
    def spec(self) -> StoreSpec:
        return self._spec

    @property
    def k(self) -> int:
        return self._spec.k

    @property
    def n(self) -> int:
        return self._spec.fingerprint.n

    @property
    def num_slots(self) -> int:
        return self._spec.k + 1

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def block_size(self) -> int:
        return self._layout.block_size

    @property
    def window_blocks(self) -> int:
        return self._window_blocks

    @property
    def layout(self) -> BlockLayout:
        return self._layout

    @property
    def slot_epochs(self) -> list[int | None]:
        return list(self._state.slot_epochs)

    @property
    def committed_epochs(self) -> list[int]:
        return list(self._state.committed)

    @property
    def last_committed_epoch(self) -> int | None:
        return self._state.committed[-1] if self._state.committed else None

    @property
    def current_epoch(self) -> int | None:
        return self._epoch

    @property
    def read_only(self) -> bool:
        return self._read_only

    # ---- public API ---------------------------------------------------------------------------------------------
    def begin_epoch(self, epoch: int, ages: AgesOfWindow | None = None, mix: BatchMix | None = None,
                    next_ages: AgesOfWindow | None = None) -> np.ndarray:
        """Starts epoch `epoch` (>= 0): returns its order (int64 permutation of range(N), deterministic in (seed,
        epoch) and the memory budget) and starts prefetching. A previous uncommitted epoch is abandoned; epochs >=
        `epoch` and the epoch in slot epoch mod S stop counting as memory (persisted before any row is written).

        `mix`: required by (only by) a store of two parts; the order is then the epoch's batches
        (memstore/layout/mixing.py). The next epoch's plan (same mix) is then built on a background thread.

        `ages`: None (every memory age is read) or a callable `ages(window) -> Sequence[int]` giving the memory
        ages (0 = epoch n−1, …, K−1) that window `window` of the epoch's plan reads (windows numbered as in
        `EpochPlan.windows`; a store that keeps everything in RAM has one window). It is called once per window
        here; during the epoch, rows of ages not drawn for their sample's window come back with valid False.

        `next_ages`: the `ages` that `begin_epoch(epoch + 1)` will be given, when the caller knows them now; a
        windowed store with draws then loads that epoch's first window during this epoch's last one (as it does
        without draws). If epoch + 1 draws otherwise, that early load is dropped and nothing else changes."""
        self._check_usable()
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise StoreError(f"epoch must be an integer >= 0, got {epoch!r}")
        epoch = int(epoch)
        plan = self._plans.take(epoch, mix)  # built during the previous epoch when it had the same mix
        order = plan.order.astype(np.int64)  # the caller's; the store keeps the plan's windows and visits
        plan = replace(plan, order=order[:0])
        drawn = None if ages is None else draw_table(ages, len(plan.windows), self.k)
        check_window_draws(drawn, self._first_windowed, self._window_ages, self.k)
        self._abandon_epoch()
        if not self._read_only:
            self._state = self._state.for_new_epoch(epoch)
            self._save_state(self._state)
        elif self.mirrors:  # as the writer's, without saving it (the writer does)
            self._state = self._state.for_new_epoch(epoch)
        self._plan, self._drawn, self._epoch, self._mix, self._next_ages = plan, drawn, epoch, mix, next_ages
        self._start_epoch(self._plan, self._read_slots(epoch))
        self._plans.start(epoch + 1, mix)
        return order

    def read(self, idx: Any) -> MemoryBatch:
        """Memory of samples idx (int [B]) for the current epoch n: see `MemoryBatch`."""
        self._check_usable()
        epoch = self._require_epoch()
        idx_np = as_index(idx, self.n)
        check_visited(self._plan, self._layout, idx_np)
        wanted = self._read_slots(epoch)
        drawn = self._drawn_rows(idx_np)
        if drawn is not None and self._reads_any_slots:  # read only the ages some window of the batch drew
            needed = drawn.any(axis=1)
            wanted = [(k, slot) for k, slot in wanted if needed[k]]
        if len(wanted) == self.k:  # every memory slot committed: the backend's fresh arrays are the batch
            out = self._read_entries(idx_np, [slot for _, slot in wanted])
        else:
            out = Entries.empty(idx_np.shape[0], self._spec.fingerprint.shape, lead=(self.k,))
            if wanted:
                got = self._read_entries(idx_np, [slot for _, slot in wanted])
                ks = [k for k, _ in wanted]
                for name in ENTRY_FIELDS:
                    getattr(out, name)[ks] = getattr(got, name)
        return MemoryBatch.of(out, valid_memory(out, epoch, drawn, [k for k, _ in wanted]))

    def write(self, idx: Any, codes: Any, scale: Any, offset: Any, flip: Any) -> None:
        """Stores the memory of samples idx (int [B]) for the current epoch: codes uint8 [B,C,H,W], scale float32
        [B] (finite, >= 0), offset int [B,2] (crop dy, dx), flip bool [B]. Torch tensors or numpy arrays."""
        self._check_usable()
        epoch = self._require_epoch()
        if self._read_only:
            raise StoreError("store is open read-only; open it with read_only=False to write")
        idx_np = as_index(idx, self.n)
        entries = validate_write(self._spec, idx_np.shape[0], codes, scale, offset, flip, epoch)
        self._write_entries(idx_np, entries)

    def commit_epoch(self, wait: bool = True) -> Future[None]:
        """Makes the current epoch memory: once all its rows are on storage, records it atomically.

        wait=False returns at once and the rest runs in the background: the returned future completes when the
        epoch is committed on storage (a failure is also raised by the store's next call). The next epoch may begin
        right away; its reads see this epoch as memory and wait for its rows where they come from storage. Anything
        that must only exist once the epoch is durable (a training resume point) waits for the future."""
        self._check_usable()
        epoch = self._require_epoch()
        if self._read_only:
            raise StoreError("store is open read-only; open it with read_only=False to commit")
        self._finish_epoch(epoch)
        self._state = self._state.after_commit(epoch)
        landed = self._save_state(self._state)
        self._epoch, self._plan, self._drawn = None, None, None
        if wait:
            landed.exception()  # blocks until the epoch is on storage
            self._raise_background_error()
        return landed

    def write_after(self, done: Future[Any]) -> None:
        """Orders every write queued from now on (rows, and the ring state of the next `begin_epoch`, which drops the
        oldest epoch) after `done`, e.g. a trainer's resume point reaching the disk: a run killed at any moment then
        finds in the store every epoch its resume point reads. A failure of `done` stops the store's writes.
        Backends that write synchronously need nothing."""

    def close(self) -> None:
        """Drains background work (raising its error, if any) and releases the store; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._plans.close()
        finally:
            self._close_backend()

    def __enter__(self) -> MemStore:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.close()
        except Exception:
            if exc_type is None:  # otherwise the body's exception is the one the user needs to see
                raise

    # ---- helpers --------------------------------------------------------------------------------------------------
    def _drawn_rows(self, idx: np.ndarray) -> np.ndarray | None:
        """bool [K, B]: whether each sample's window drew each age (None when every age is read)."""
        if self._drawn is None:
            return None
        assert self._plan is not None
        return drawn_rows(self._drawn, self._plan, self._layout, idx)

    @property
    def _first_windowed(self) -> int:
        """The first window of an epoch's plan that the backend reads from storage in windows (0: all)."""
        return 0

    @property
    def _reads_any_slots(self) -> bool:
        """True when `_read_entries` serves any subset of the read slots (then undrawn ages are not read at all);
        backends that load whole windows of every read slot keep False and the rows are masked after reading."""
        return False

    def _read_slots(self, epoch: int) -> list[tuple[int, int]]:
        """(k, ring slot) for each memory slot k whose epoch n−1−k is committed."""
        return self._state.read_slots(epoch, self.k)

    def _write_slot(self) -> int:
        return self._require_epoch() % self.num_slots

    def _require_epoch(self) -> int:
        if self._epoch is None:
            raise StoreError("no epoch in progress; call store.begin_epoch(epoch) first")
        return self._epoch

    def _check_usable(self) -> None:
        if self._closed:
            raise StoreError("store is closed; open it again with open_store()")
        self._raise_background_error()

    # ---- backend hooks --------------------------------------------------------------------------------------------
    @abstractmethod
    def _save_state(self, state: RingState) -> Future[None]:
        """Persists the ring state atomically, after every row written before this call is on storage and before
        any row written after it; may run in the background (the future completes once it is persisted)."""

    @abstractmethod
    def _start_epoch(self, plan: EpochPlan, read_slots: list[tuple[int, int]]) -> None:
        """Prepares reads of `read_slots` and writes into the epoch's slot."""

    @abstractmethod
    def _abandon_epoch(self) -> None:
        """Drops buffers of an epoch that will not be committed (already queued writes still drain)."""

    @abstractmethod
    def _read_entries(self, idx: np.ndarray, slots: list[int]) -> Entries:
        """Rows of samples idx in ring `slots`: Entries with a leading [len(slots)] dim, in fresh arrays the
        caller owns (they become the returned batch)."""

    @abstractmethod
    def _write_entries(self, idx: np.ndarray, entries: Entries) -> None:
        """Stores rows of samples idx into the current epoch's slot."""

    @abstractmethod
    def _finish_epoch(self, epoch: int) -> None:
        """Sends every row of the epoch to storage (rows never written become NO_EPOCH); a backend may finish the
        writes in the background (the next `_save_state` lands after them)."""

    @abstractmethod
    def _close_backend(self) -> None:
        """Drains and stops background work and raises its error, if any."""

    def _raise_background_error(self) -> None:
        """Raises StoreError if a background thread failed (backends with threads override)."""

