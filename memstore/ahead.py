"""Store calls off the training loop's critical path: the memory of the next batches is gathered on a worker thread
while the current step runs, and writes are handed to the same thread.

One thread runs every queued call in order (a read of batch i+d after the write of batch i−1, as the loop issued
them), so the store itself never sees two calls at once. The loop only waits when it takes a batch whose gather is
not done yet. Errors of queued calls are raised by the next call of the loop.

`follow` keeps d batches gathered ahead, as many as the store's memory budget counts rows for (at least one;
memstore/layout/order.py `read_ahead_rows`): a window load that runs late (the reader thread starved of CPU for a
moment, a slow chunk) is absorbed by the batches already gathered instead of showing as a wait.
The store's reads never see the epoch's own writes (they read the K previous epochs' slots), so gathering a batch
before the writes of the batches ahead of it gives the same rows, bit for bit.

With `pin=True` (the run's device is CUDA) the worker also copies each gathered batch into page-locked (pinned)
host memory, so the loop's non_blocking copies to the GPU are true asynchronous transfers: from ordinary pageable
memory the driver stages a non_blocking copy through its own pinned buffer and may make the loop wait for the GPU.
The extra memcpy happens here, on the worker thread, while the step runs.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from memloss.memstore.base import MemStore
from memloss.memstore.entries import MemoryBatch


class ReadAhead:
    """Wraps a store for one training loop: `follow(order, position, batch)` (or `prefetch(idx)`) for the next
    batches, `read(idx)` for the current one, `write(...)` as the store's, `drain()` before `commit_epoch` or
    `begin_epoch`, `close()` at the end."""

    def __init__(self, store: MemStore, pin: bool = False, rows: int | None = None) -> None:
        """pin: hand out batches in pinned host memory (True when the training device is CUDA). rows: sample rows
        `follow` keeps gathered ahead (whole batches, at least one); None: what the store's memory budget counts
        (`read_ahead_rows` of the Zarr store; one batch for a store without it, e.g. the in-RAM one)."""
        self.store, self.pin = store, pin
        self.rows = int(getattr(store, "read_ahead_rows", 0) if rows is None else rows)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="memstore-ahead")
        self._reads: deque[tuple[np.ndarray, Future[MemoryBatch]]] = deque()
        self._writes: deque[Future[None]] = deque()
        self._order: np.ndarray | None = None  # the order `follow` walks, and the end of what it queued
        self._queued_to = 0

    def depth(self, batch: int) -> int:
        """Batches of `batch` samples gathered ahead by `follow`: as many as `rows` holds, at least one."""
        return max(1, self.rows // max(1, int(batch)))

    def follow(self, order: np.ndarray, position: int, batch: int) -> None:
        """Keeps the gathers of the batches order[position:position + batch], the next one, … queued, `depth(batch)`
        of them (the loop calls it with the position of its next batch, each step). order: host int64 [L]."""
        if order is not self._order or position > self._queued_to:
            self._order, self._queued_to = order, int(position)
        stop = min(int(order.shape[0]), int(position) + self.depth(batch) * int(batch))
        while self._queued_to < stop:
            self.prefetch(order[self._queued_to:self._queued_to + batch])
            self._queued_to += int(batch)

    def prefetch(self, idx: np.ndarray) -> None:
        """Starts gathering the memory of samples idx (host int64 [B]) in the background."""
        self._raise_failed_writes()
        idx = np.array(idx, dtype=np.int64)  # the caller's slice may be a view of an array it reuses
        self._reads.append((idx, self._pool.submit(self._gather, idx)))

    def read(self, idx: np.ndarray) -> MemoryBatch:
        """The memory of samples idx: the prefetched batch when it is the next one queued, else read now (in
        order after the queued calls). Prefetched batches for other indices are dropped."""
        self._raise_failed_writes()
        while self._reads:
            want, fut = self._reads.popleft()
            if np.array_equal(want, idx):
                return fut.result()
            fut.result()  # a batch the loop skipped: its errors still count
        self._order = None  # nothing queued any more: `follow` starts again from the loop's position
        return self._pool.submit(self._gather, idx).result()

    def _gather(self, idx: np.ndarray) -> MemoryBatch:
        """The store's batch, in pinned memory when `pin` (on the worker thread)."""
        batch = self.store.read(idx)
        if not self.pin:
            return batch
        return MemoryBatch(*(t.pin_memory() for t in (batch.codes, batch.scale, batch.offset, batch.flip,
                                                       batch.valid)))

    def write(self, idx: Any, codes: Any, scale: Any, offset: Any, flip: Any) -> None:
        """Queues `store.write` with these arrays; the caller must not modify them afterwards."""
        self._raise_failed_writes()
        self._writes.append(self._pool.submit(self.store.write, idx, codes, scale, offset, flip))

    def mirror(self, idx: Any, codes: Any, scale: Any, offset: Any, flip: Any) -> None:
        """Queues `store.mirror` (a read-only store keeping the writer's rows in RAM) as `write` queues writes."""
        self._raise_failed_writes()
        self._writes.append(self._pool.submit(self.store.mirror, idx, codes, scale, offset, flip))

    def drain(self) -> None:
        """Waits for every queued call and raises the first error; unread prefetched batches are dropped."""
        self._order = None
        while self._reads:
            self._reads.popleft()[1].result()
        while self._writes:
            self._writes.popleft().result()

    def close(self) -> None:
        """Waits for the queued calls (their errors are dropped: close runs on the way out) and stops the thread."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._order = None
        self._reads.clear()
        self._writes.clear()

    def _raise_failed_writes(self) -> None:
        while self._writes and self._writes[0].done():
            self._writes.popleft().result()
