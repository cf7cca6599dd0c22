"""In-RAM backend: the same interface and semantics as the Zarr store, with S numpy arrays of N rows.

Used in tests and as the "memory in RAM" baseline of the benchmarks. It holds (K+1)·N rows regardless of the
memory budget, so its order covers the whole dataset in one window (a uniform random permutation).
"""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np

from memloss.memstore.base import MemStore
from memloss.memstore.entries import ENTRY_FIELDS, Entries, take_rows
from memloss.memstore.layout.order import BlockLayout, EpochPlan, default_block_size, layout_members
from memloss.memstore.layout.ring import RingState
from memloss.memstore.spec import StoreSpec


class InMemoryStore(MemStore):
    """A MemStore whose slots are numpy arrays; nothing persists after close()."""

    def __init__(self, spec: StoreSpec, *, seed: int = 0, block_size: int | None = None) -> None:
        n, shape = spec.fingerprint.n, spec.fingerprint.shape
        b = block_size or default_block_size(min(spec.fingerprint.parts), spec.sample_bytes)
        parts = spec.fingerprint.parts
        layout = BlockLayout.from_members(layout_members(parts, b, seed), b, parts)
        state = RingState([None] * (spec.k + 1), [])
        super().__init__(spec, layout, seed, state, window_blocks=layout.num_blocks, read_only=False)
        self._rows = Entries.empty(n, shape, lead=(spec.k + 1,))

    @property
    def _reads_any_slots(self) -> bool:
        return True  # rows are gathered per slot from RAM: undrawn ages are never copied

    def _save_state(self, state: RingState) -> Future[None]:
        self._state = state
        done: Future[None] = Future()
        done.set_result(None)
        return done

    def _start_epoch(self, plan: EpochPlan, read_slots: list[tuple[int, int]]) -> None:
        slot = plan.epoch % self.num_slots
        self._rows.epoch[slot] = -1  # the slot's previous epoch is gone even for rows this epoch never writes

    def _abandon_epoch(self) -> None:
        """Nothing is buffered: rows are written in place."""

    def _read_entries(self, idx: np.ndarray, slots: list[int]) -> Entries:
        return take_rows(self._rows, slots, idx)

    def _write_entries(self, idx: np.ndarray, entries: Entries) -> None:
        slot = self._write_slot()
        for name in ENTRY_FIELDS:
            getattr(self._rows, name)[slot, idx] = getattr(entries, name)

    def _finish_epoch(self, epoch: int) -> None:
        """Rows are already in place."""

    def _close_backend(self) -> None:
        self._rows = Entries.empty(0, self._spec.fingerprint.shape, lead=(self.num_slots,))
