"""Batches of a prepared split read from its `.beton` with numpy alone: the loader where ffcv cannot be imported.

Same file, same order, same batches as the FFCV loader (loader.py): the caller's `order(epoch)` is checked the same
way and cut into batches of `batch_size` (the last partial one kept); batch b holds the images, labels and index
column of the samples order[b·B:(b+1)·B], as uint8 [B, C, H, W] (C-contiguous), int64 [B] and int64 [B] on the
device. The images are gathered from a read-only `np.memmap` of the file (beton_format.py gives every sample's
place), so the bytes are those the FFCV loader decodes with its memcpy: training is bit-identical
(tests/test_numpy_loader.py).

One thread per epoch reads `read_ahead` batches ahead of the training loop (numpy's gather releases the GIL while
it copies); on CUDA it pins each batch, and the main thread copies it to the device without blocking.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from memloss.trainer.data.beton import PreparedSplit
from memloss.trainer.data.beton_format import BetonFile, Layout, read_beton
from memloss.trainer.data.loader import OrderFn, check_order

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class BetonImages:
    """Images of a `.beton` by sample index: `take(idx int64 [B])` → uint8 [B, C, H, W] (a fresh array)."""

    def __init__(self, found: BetonFile) -> None:
        self.shape = found.shape
        self._size = int(np.prod(found.shape))
        self._file = np.memmap(found.path, dtype=np.uint8, mode="r")
        lay = Layout(found.n, found.shape, found.page_size)
        self._per_page = lay.per_page
        self._pages = None
        if found.regular and found.n:
            # pages × slots × bytes: sample i at [i // per_page, i % per_page], one strided view of the whole file
            self._pages = np.ndarray((lay.pages, lay.per_page, self._size), np.uint8, self._file, lay.data_start,
                                     (lay.page_size, self._size, 1))
        self._ptrs = found.metadata["f0"].astype(np.int64)

    def take(self, idx: np.ndarray) -> np.ndarray:
        if self._pages is not None:
            flat = self._pages[idx // self._per_page, idx % self._per_page]
        else:  # a file FFCV wrote with several processes: pages in any order, one slice per sample
            flat = np.empty((len(idx), self._size), dtype=np.uint8)
            for row, ptr in zip(flat, self._ptrs[idx]):
                row[:] = self._file[ptr:ptr + self._size]
        return flat.reshape(len(idx), *self.shape)


class NumpyBatchLoader:
    """Iterates a PreparedSplit as (x uint8 [B,C,H,W], y int64 [B], idx int64 [B]) on `device`, owned tensors;
    the interface of loader.BatchLoader (len, epoch, set_epoch, close, context manager)."""

    backend = "numpy"

    def __init__(self, split: PreparedSplit, batch_size: int, device: torch.device, order: OrderFn,
                 samples: int | None = None, length: int | None = None, read_ahead: int = 2) -> None:
        found = read_beton(split.beton)
        self.split, self.batch_size, self.device = split, batch_size, device
        self.samples = int(length) if length is not None else split.n if samples is None else samples
        self._order, self._n, self._subset, self._length = order, split.n, samples, length
        self._images = BetonImages(found)
        self._labels = np.array(found.labels, dtype=np.int64)
        self._index = np.array(found.index, dtype=np.int64)
        self._read_ahead = max(1, read_ahead)
        self._next_epoch = 0
        self._active: _Reader | None = None

    def __len__(self) -> int:
        return -(-self.samples // self.batch_size)

    @property
    def epoch(self) -> int:
        """The epoch the next iteration will use."""
        return self._next_epoch

    def set_epoch(self, epoch: int) -> None:
        """Makes the next iteration use `order(epoch)` (then epoch+1, ...); used on resume."""
        if epoch < 0:
            raise ValueError(f"epoch must be ≥ 0, got {epoch}")
        self._next_epoch = int(epoch)

    def __iter__(self) -> Iterator[Batch]:
        self.close()
        epoch = self._next_epoch
        order = check_order(self._order(epoch), self._n, epoch, self._subset, self._length)
        self._next_epoch += 1
        reader = _Reader(self, order)
        self._active = reader
        return self._batches(reader)

    def _batches(self, reader: _Reader) -> Iterator[Batch]:
        try:
            for x, y, idx in reader:
                yield self._to_device(x), self._to_device(y), self._to_device(idx)
        finally:
            if self._active is reader:
                self.close()

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device, non_blocking=True) if self.device.type != "cpu" else t

    def host_batch(self, idx: np.ndarray) -> Batch:
        """The batch of samples `idx` on the host (pinned for a CUDA device)."""
        x, y, i = (torch.from_numpy(a) for a in (self._images.take(idx), self._labels[idx], self._index[idx]))
        if self.device.type == "cuda":
            x, y, i = x.pin_memory(), y.pin_memory(), i.pin_memory()
        return x, y, i

    def close(self) -> None:
        """Stops and joins the epoch's read-ahead thread, if any (safe to call twice)."""
        reader, self._active = self._active, None
        if reader is not None:
            reader.stop()

    def __enter__(self) -> NumpyBatchLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Reader:
    """One epoch: a thread puts the host batches of `order` into a bounded queue, then None (or its exception)."""

    def __init__(self, loader: NumpyBatchLoader, order: np.ndarray) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=loader._read_ahead)
        self._stop = threading.Event()
        bs = loader.batch_size
        batches = (order[a:a + bs] for a in range(0, len(order), bs))
        self._thread = threading.Thread(target=self._run, args=(loader, batches), daemon=True,
                                        name="memloss-numpy-loader")
        self._thread.start()

    def _run(self, loader: NumpyBatchLoader, batches: Iterator[np.ndarray]) -> None:
        try:
            for idx in batches:
                if not self._put(loader.host_batch(idx)):
                    return
            self._put(None)
        except BaseException as err:  # handed to the training loop, which raises it
            self._put(err)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Batch]:
        while (item := self._queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def is_alive(self) -> bool:
        """True while the read-ahead thread runs (as FFCV's epoch iterator, a thread, answers)."""
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
