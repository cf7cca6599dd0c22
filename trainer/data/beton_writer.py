"""Writing a `.beton` in FFCV's format (beton_format.py) with numpy alone, in bounded memory, in parallel.

Every sample's place in the file is known before anything is written (fixed-size images: sample i at slot
i mod p of page i div p, as FFCV's allocator puts them with one writer process), so:

- the main process sizes the file (sparse until written), writes the header, the field descriptors and the
  allocation table (computed, 24 B a sample, written in slices);
- worker processes (fork: they inherit `samples`) take chunk ranges (a few bytes each) from a queue; for each
  chunk they write its metadata rows (pointer, label, index) with one `pwrite` and its images with one `pwrite`
  per page the chunk touches, straight into their final places.

No temporary tables, no per-sample bookkeeping in RAM (FFCV's `DatasetWriter` keeps about 0.8 KB a sample:
1.2 GB at 800 000 samples, bench/convert_generated.py), no ffcv import: a machine without ffcv writes the same
file. RAM: one chunk of samples per worker. The bytes are those of FFCV's `DatasetWriter` with one writer process
whatever `workers` is (tests/test_generated_data.py). A worker's error stops the conversion with its one-line
message instead of waiting forever.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_module
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from memloss.trainer.data.beton_format import METADATA, Layout, alloc_rows, head_bytes, layout, metadata_rows
from memloss.trainer.data.registry import DatasetError

_TABLE_ROWS = 1 << 20  # allocation-table rows written at a time (24 MiB)


class Samples(Protocol):
    """What the writer reads: sample i as (image uint8 [C, H, W], label int, i)."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> Sequence[Any]: ...


class BetonWriteError(DatasetError):
    """A writer process failed (its message is kept)."""


def write_bounded(samples: Samples, shape: tuple[int, ...], path: Path, *, chunk: int, workers: int,
                  label: str = "writing .beton") -> None:
    """Writes samples 0..len(samples)−1 (images uint8 of `shape` (C, H, W)) to the .beton `path`, `workers`
    processes taking `chunk` samples at a time; progress is shown as the task `label`
    (a bar on a terminal, plain lines otherwise: trainer/common/progress.py)."""
    lay = layout(len(samples), shape)
    with open(path, "wb") as fh:
        fh.truncate(lay.file_bytes)
        fh.write(head_bytes(lay))
        fh.seek(lay.alloc_start)
        for start in range(0, lay.n, _TABLE_ROWS):
            fh.write(alloc_rows(lay, start, min(start + _TABLE_ROWS, lay.n)).tobytes())
    if lay.n:
        _run_workers(samples, lay, Path(path), chunk, max(1, workers), label)


def _chunks(n: int, chunk: int) -> Iterator[tuple[int, int]]:
    return ((a, min(a + chunk, n)) for a in range(0, n, chunk))


def _run_workers(samples: Samples, lay: Layout, path: Path, chunk: int, workers: int, label: str) -> None:
    """Starts the worker processes, feeds them chunk ranges, shows progress, waits, re-raises."""
    from memloss.trainer.common.progress import progress_display

    ctx = mp.get_context("fork")
    work, errors, done = ctx.Queue(), ctx.Queue(), ctx.Value("Q", 0)
    # If the workers stop early, chunk ranges stay queued; without this the exit of this process would wait forever
    # for them to be read. On success the workers have read every item (and the sentinels) before they exit.
    work.cancel_join_thread()
    for item in _chunks(lay.n, chunk):
        work.put(item)
    for _ in range(workers):
        work.put(None)
    procs = [ctx.Process(target=_worker, args=(work, errors, done, samples, lay, path), daemon=True)
             for _ in range(workers)]
    for proc in procs:
        proc.start()
    with progress_display() as sink:
        sink.begin(label, lay.n, unit="samples")
        shown = 0
        try:
            while not _finished(errors, procs, path):
                shown = _show(sink, label, done.value, shown)
                time.sleep(0.05)
            _show(sink, label, done.value, shown)
        finally:
            sink.end(label)
    if done.value != lay.n:
        raise BetonWriteError(f"the .beton writer processes wrote {done.value} of {lay.n} samples to {path}; "
                              f"the output was discarded")


def _show(sink: Any, label: str, done: int, shown: int) -> int:
    """Advances the task to `done` samples (from `shown`); returns `done`."""
    if done > shown:
        sink.advance(label, done - shown)
    return max(done, shown)


def _finished(errors: Any, procs: list[Any], path: Path) -> bool:
    """True once every worker exited cleanly; raises (after stopping the others) when one failed or died: the
    survivors could otherwise wait forever for the failed one's page."""
    try:
        message = errors.get(timeout=0.01)
    except queue_module.Empty:
        message = None
    codes = [p.exitcode for p in procs]
    if message is None and not any(c not in (None, 0) for c in codes):
        return all(c == 0 for c in codes)
    for proc in procs:
        proc.terminate()
    raise BetonWriteError(message or f"a .beton writer process died (exit codes {codes}) while writing {path}; "
                                     f"the output was discarded")


def _worker(work: Any, errors: Any, done: Any, samples: Samples, lay: Layout, path: Path) -> None:
    """Writes chunks until the None sentinel; any error goes to `errors` as one line."""
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            while (item := work.get()) is not None:
                _write_chunk(fd, samples, lay, *item)
                with done.get_lock():
                    done.value += item[1] - item[0]
        finally:
            os.close(fd)
    except Exception as err:  # reported to the main process, which stops the conversion
        errors.put(" ".join(str(err).split()) or type(err).__name__)
        raise SystemExit(1) from None


def _write_chunk(fd: int, samples: Samples, lay: Layout, start: int, stop: int) -> None:
    """Metadata rows of samples [start, stop) in one write, their images in one write per page they fill."""
    images = np.empty((stop - start, lay.image_bytes), dtype=np.uint8)
    labels = np.empty(stop - start, dtype=np.int64)
    for i in range(start, stop):
        image, labels[i - start], _ = samples[i]
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.shape != lay.shape:
            raise BetonWriteError(f"sample {i} is {image.dtype} {image.shape}, expected uint8 {lay.shape}")
        images[i - start] = image.reshape(-1)
    os.pwrite(fd, metadata_rows(lay, start, labels).tobytes(), lay.metadata_start + start * METADATA.itemsize)
    first = start
    while first < stop:
        last = min(stop, (first // lay.per_page + 1) * lay.per_page)  # the end of first's page
        os.pwrite(fd, images[first - start:last - start].tobytes(), int(lay.ptrs(first, first + 1)[0]))
        first = last
