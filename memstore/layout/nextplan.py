"""The next epoch's plan, built on a background thread while the current epoch trains.

`MemStore.begin_epoch(e, mix)` starts building epoch e+1's plan (same batch mix, same windows) on one daemon
thread; `begin_epoch(e+1, mix)` takes it, waiting only if it is still being built, and builds the plan on the
calling thread when the epoch or the mix differs. A plan is a pure function of (layout, window size, seed, epoch,
mix), so what a caller gets never depends on the timing. Plans are compact (`epoch_plan(..., compact=True)`: the
order in the layout's index dtype); the RAM they hold is counted in the memory budget (order.py `index_bytes`).
"""

from __future__ import annotations

from concurrent.futures import CancelledError, Future, ThreadPoolExecutor

from memloss.memstore.layout.mixing import BatchMix, epoch_plan
from memloss.memstore.layout.order import BlockLayout, EpochPlan


class NextPlan:
    """Plans of a store's epochs: at most one being built ahead; see the module docstring."""

    def __init__(self, layout: BlockLayout, window_blocks: int, seed: int) -> None:
        self._layout, self._window_blocks, self._seed = layout, int(window_blocks), int(seed)
        self._pool: ThreadPoolExecutor | None = None
        self._key: tuple[int, BatchMix | None] | None = None
        self._future: Future[EpochPlan] | None = None

    def start(self, epoch: int, mix: BatchMix | None) -> None:
        """Starts building the plan of `epoch` with `mix` in the background (nothing if it already is)."""
        if self._key == (epoch, mix):
            return
        self.drop()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="memstore-plan")
        self._key = (epoch, mix)
        self._future = self._pool.submit(self._build, epoch, mix)

    def peek(self, epoch: int, mix: BatchMix | None) -> EpochPlan:
        """The compact plan of `epoch` with `mix`: the one built ahead (waiting for it), else built here. Raises
        what building it raises (StoreError for a mix the layout cannot serve). Safe from another thread (the
        store's reader asks for the next epoch's first window)."""
        key, future = self._key, self._future  # one read: the training thread may drop them meanwhile
        if key == (epoch, mix) and future is not None:
            try:
                return future.result()
            except CancelledError:  # dropped before it started: build it here
                pass
        return self._build(epoch, mix)

    def take(self, epoch: int, mix: BatchMix | None) -> EpochPlan:
        """`peek`, then forgets the plan built ahead (its RAM goes with the caller's copy)."""
        try:
            return self.peek(epoch, mix)
        finally:
            self.drop()

    def drop(self) -> None:
        """Forgets the plan built ahead (one still being built finishes on its thread and is dropped)."""
        if self._future is not None:
            self._future.cancel()
        self._key, self._future = None, None

    def close(self) -> None:
        """Drops the plan and stops the thread (waits for a plan being built)."""
        self.drop()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _build(self, epoch: int, mix: BatchMix | None) -> EpochPlan:
        return epoch_plan(self._layout, self._window_blocks, self._seed, epoch, mix, compact=True)
