"""Mirroring: a read-only store that keeps the memory in RAM as its writer does receives the writer's rows
(torchrun's ranks ≠ 0, distributed/writes.py) instead of rereading them from storage. The public half of
`MemStore`'s mirror API; the backends that can mirror implement `_mirror_entries` and `_mirror_committed`.
A read-only store that does not mirror follows its writer's commits with `follow_commit` (`_reload_state`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from memloss.memstore.entries import Entries, as_index, validate_write
from memloss.memstore.errors import StoreError
from memloss.memstore.layout.ring import RingState

if TYPE_CHECKING:
    from memloss.memstore.layout.order import EpochPlan
    from memloss.memstore.spec import StoreSpec


class Mirroring:
    """Mixed into MemStore (which provides the attributes and checks declared below)."""

    if TYPE_CHECKING:
        _spec: StoreSpec
        _state: RingState
        _epoch: int | None
        _plan: EpochPlan | None
        _drawn: np.ndarray | None
        _read_only: bool
        n: int

        def _check_usable(self) -> None: ...

        def _require_epoch(self) -> int: ...

        def _abandon_epoch(self) -> None: ...

    @property
    def mirrors(self) -> bool:
        """True for a read-only store that keeps the memory in RAM as its writer does (every ring slot resident):
        it receives the writer's rows through `mirror` and, after `mirror_commit`, never reads them back from
        storage. Backends that keep nothing across epochs are False (their readers reread committed epochs)."""
        return False

    def mirror(self, idx: Any, codes: Any, scale: Any, offset: Any, flip: Any) -> None:
        """Keeps in RAM (never on storage) the rows another process writes to this store in the current epoch, as
        `write` takes them; only for a store that `mirrors` (torchrun's ranks ≠ 0, distributed/writes.py)."""
        self._check_usable()
        epoch = self._require_epoch()
        if not self.mirrors:
            raise StoreError("mirror() needs a read-only store that keeps every slot in RAM (see MemStore.mirrors)")
        idx_np = as_index(idx, self.n)
        self._mirror_entries(idx_np, validate_write(self._spec, idx_np.shape[0], codes, scale, offset, flip, epoch))

    def mirror_commit(self) -> None:
        """The writer's commit of the current epoch has landed: the mirrored rows count as that epoch's memory
        (checked against the ring state on storage; on any difference the slot is read from storage instead)."""
        self._check_usable()
        epoch = self._require_epoch()
        if not self.mirrors:
            raise StoreError("mirror_commit() needs a store that mirrors (see MemStore.mirrors)")
        self._state = self._mirror_committed(epoch)
        self._epoch, self._plan, self._drawn = None, None, None

    def follow_commit(self) -> None:
        """A read-only store, once its writer (another process) committed: takes the ring state, i.e. the committed
        epochs and their manifests, from storage again, and ends the current epoch. The next `begin_epoch` then
        reads the epochs committed since, as a store opened anew would, but the layout, the next epoch's plan and
        the threads are kept (opening builds the layout: 4.4 minutes at 300M rows)."""
        self._check_usable()
        if not self._read_only:
            raise StoreError("follow_commit() is for a read-only store; the writer commits with commit_epoch()")
        self._abandon_epoch()
        self._state = self._reload_state()
        self._epoch, self._plan, self._drawn = None, None, None

    def _reload_state(self) -> RingState:
        """The ring state as storage holds it now; backends that can be shared between processes implement it."""
        raise StoreError(f"{type(self).__name__} lives in one process: there is no other writer to follow")

    def _mirror_entries(self, idx: np.ndarray, entries: Entries) -> None:
        """Backends whose `mirrors` can be True keep the rows; `mirror` never calls the others."""
        raise StoreError(f"{type(self).__name__} keeps no memory in RAM to mirror into")

    def _mirror_committed(self, epoch: int) -> RingState:
        raise StoreError(f"{type(self).__name__} keeps no memory in RAM to mirror into")
