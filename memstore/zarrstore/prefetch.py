"""Background threads of the Zarr store: one reader (prefetches whole windows) and one writer (write-behind of
whole blocks, and the ring-state updates in their order). Their errors are kept and re-raised in the caller's
thread at its next store call."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_STOP = object()


@dataclass
class _Call:
    """A function the writer runs once every job queued before it is written; `done` holds its outcome."""

    fn: Callable[[], None]
    done: Future[None] = field(default_factory=Future)


class BackgroundWriter(Generic[T]):
    """Runs `write(jobs)` on one thread for the submitted jobs, in submission order, up to `batch` queued jobs at a
    time (the callee may write them concurrently: the commit's drain then uses every core for compression).

    At most `maxsize` jobs are held, queued or being written (submit blocks when full, which bounds memory). After
    the first failure the remaining jobs are discarded and `error` holds the exception until the store reports it.
    """

    def __init__(self, write: Callable[[list[T]], None], maxsize: int, name: str, batch: int = 1) -> None:
        self._write = write
        self._batch = max(1, min(int(batch), int(maxsize)))
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, int(maxsize) - self._batch + 1))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def error(self) -> BaseException | None:
        return self._error

    def submit(self, job: T) -> None:
        self._queue.put(job)

    def call(self, fn: Callable[[], None]) -> Future[None]:
        """Runs `fn` on the writer thread after every job submitted before it (e.g. the ring state that points at
        them). The future completes then, with `fn`'s error or an earlier write's; either also sets `error`."""
        item = _Call(fn)
        self._queue.put(item)
        return item.done

    def drain(self) -> None:
        """Blocks until every submitted job has been written (or discarded after a failure)."""
        self._queue.join()

    def close(self) -> None:
        """Drains the queue and stops the thread; idempotent."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def _take(self) -> list[Any]:
        """The next job (blocking) plus whatever else is queued, up to `batch` items."""
        items = [self._queue.get()]
        while len(items) < self._batch and items[-1] is not _STOP:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _run(self) -> None:
        while True:
            items = self._take()
            pending: list[Any] = []
            for item in items:
                if isinstance(item, _Call) or item is _STOP:
                    self._write_guarded(pending)
                    pending = []
                    if isinstance(item, _Call):
                        self._run_call(item)
                else:
                    pending.append(item)
            self._write_guarded(pending)
            for _ in items:
                self._queue.task_done()
            if items[-1] is _STOP:
                return

    def _write_guarded(self, jobs: list[Any]) -> None:
        try:
            if jobs and self._error is None:
                self._write(jobs)
        except BaseException as exc:  # reported to the caller's thread by the store
            self._error = exc

    def _run_call(self, item: _Call) -> None:
        if self._error is None:
            try:
                item.fn()
            except BaseException as exc:
                self._error = exc
        if self._error is not None:
            item.done.set_exception(self._error)
        else:
            item.done.set_result(None)


class BackgroundReader:
    """One reader thread; `submit(fn)` returns a Future whose exception is re-raised by `result()`."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        return self._pool.submit(fn)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
