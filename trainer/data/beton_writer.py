"""Writing a `.beton` with FFCV's own format pieces (header, field encoders, page allocator) but bounded memory.

`ffcv.writer.DatasetWriter.from_indexed_dataset` keeps per-sample bookkeeping in RAM: a queue of (destination,
source) Python tuples, a Python tuple per allocation in every worker, sent back through a queue and turned into one
numpy scalar each in `finalize`, plus the metadata table in shared memory: about 0.8 KB a sample measured
(bench/convert_generated.py: 1.2 GB peak at 800 000 samples; some 40 GB at 50M). This writer does the same work with
the bookkeeping on disk (611 MiB peak at 800 000, flat in N):

- work items are chunk ranges (a few bytes each), not lists of tuples;
- each worker encodes a chunk's metadata rows and allocation rows into small arrays and writes them with one
  `pwrite` each into two temporary tables beside the output (sample i's rows at position i);
- the main process copies both tables into the `.beton` in 64 MiB slices (metadata after the field descriptors,
  the allocation table at the end) and writes the header, as `finalize` does.

Pages, their order and the file layout are FFCV's (`MemoryAllocator`, `DatasetWriter.prepare`), so `ffcv.Reader`
and the loader read the result unchanged. RAM: one chunk of samples and one page per worker. A worker's error stops
the conversion with its one-line message instead of leaving FFCV's progress loop waiting forever.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_module
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from memloss.trainer.data.registry import DatasetError

_COPY_BYTES = 64 << 20


class Samples(Protocol):
    """What the writer reads: sample i as a tuple of field values, in field order."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> Sequence[Any]: ...


class BetonWriteError(DatasetError):
    """A writer process failed (its message is kept)."""


def write_bounded(samples: Samples, fields: Mapping[str, Any], path: Path, *, chunk: int, workers: int,
                  label: str = "writing .beton") -> None:
    """Writes samples 0..len(samples)−1 to the .beton `path` with `fields` (name → ffcv Field), `workers` processes
    taking `chunk` samples at a time. Progress is shown as the task `label` (a bar on a terminal, plain lines
    otherwise: trainer/common/progress.py)."""
    from ffcv.memory_allocator import MemoryAllocator
    from ffcv.writer import DatasetWriter

    n = len(samples)
    writer = DatasetWriter(str(path), dict(fields), num_workers=workers)
    writer.num_samples = n
    writer.prepare()  # header and field descriptors; its shared-memory metadata table is never touched
    writer.metadata_sm.close()
    writer.metadata_sm.unlink()
    tables = _tables(path, n, writer.metadata_type.itemsize)
    try:
        allocator = MemoryAllocator(str(path), writer.data_region_start, writer.page_size)
        _run_workers(samples, writer, allocator, tables, chunk, workers, label)
        _finalize(path, writer, tables)
    finally:
        for table in tables:
            table.unlink(missing_ok=True)


def _tables(path: Path, n: int, meta_itemsize: int) -> tuple[Path, Path]:
    from ffcv.types import ALLOC_TABLE_TYPE

    meta, alloc = path.with_name(path.name + ".meta.tmp"), path.with_name(path.name + ".alloc.tmp")
    for table, size in ((meta, n * meta_itemsize), (alloc, n * ALLOC_TABLE_TYPE.itemsize)):
        with open(table, "wb") as fh:
            fh.truncate(size)  # sparse until written
    return meta, alloc


def _chunks(n: int, chunk: int) -> Iterator[tuple[int, int]]:
    return ((a, min(a + chunk, n)) for a in range(0, n, chunk))


def _run_workers(samples: Samples, writer: Any, allocator: Any, tables: tuple[Path, Path], chunk: int,
                 workers: int, label: str) -> None:
    """Starts the worker processes (fork: they inherit `samples`), feeds them chunk ranges, waits, re-raises."""
    from memloss.trainer.common.progress import progress_display

    ctx = mp.get_context("fork")
    work, errors, done = ctx.Queue(), ctx.Queue(), ctx.Value("Q", 0)
    # If the workers stop early, chunk ranges stay queued; without this the exit of this process would wait forever
    # for them to be read. On success the workers have read every item (and the sentinels) before they exit.
    work.cancel_join_thread()
    for item in _chunks(len(samples), chunk):
        work.put(item)
    for _ in range(workers):
        work.put(None)
    args = (work, errors, done, samples, writer.fields, writer.metadata_type, allocator, tables)
    procs = [ctx.Process(target=_worker, args=args, daemon=True) for _ in range(workers)]
    for proc in procs:
        proc.start()
    with progress_display() as sink:
        sink.begin(label, len(samples), unit="samples")
        shown = 0
        try:
            while not _finished(errors, procs, writer.fname):
                shown = _show(sink, label, done.value, shown)
                time.sleep(0.05)
            _show(sink, label, done.value, shown)
        finally:
            sink.end(label)
    if done.value != len(samples):
        raise BetonWriteError(f"the .beton writer processes wrote {done.value} of {len(samples)} samples to "
                              f"{writer.fname}; the output was discarded")


def _show(sink: Any, label: str, done: int, shown: int) -> int:
    """Advances the task to `done` samples (from `shown`); returns `done`."""
    if done > shown:
        sink.advance(label, done - shown)
    return max(done, shown)


def _finished(errors: Any, procs: list[Any], fname: str) -> bool:
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
    raise BetonWriteError(message or f"a .beton writer process died (exit codes {codes}) while writing {fname}; "
                                     f"the output was discarded")


def _worker(work: Any, errors: Any, done: Any, samples: Samples, fields: Mapping[str, Any], metadata_type: np.dtype,
            allocator: Any, tables: tuple[Path, Path]) -> None:
    """Encodes chunks until the None sentinel; any error goes to `errors` as one line."""
    try:
        meta_fd, alloc_fd = (os.open(t, os.O_WRONLY) for t in tables)
        with allocator:
            while (item := work.get()) is not None:
                meta, alloc = _encode_chunk(samples, fields, metadata_type, allocator, *item)
                os.pwrite(meta_fd, meta.tobytes(), item[0] * metadata_type.itemsize)
                os.pwrite(alloc_fd, alloc.tobytes(), item[0] * alloc.dtype.itemsize)
                with done.get_lock():
                    done.value += item[1] - item[0]
        os.close(meta_fd)
        os.close(alloc_fd)
    except Exception as err:  # reported to the main process, which stops the conversion
        errors.put(" ".join(str(err).split()) or type(err).__name__)
        raise SystemExit(1) from None


def _encode_chunk(samples: Samples, fields: Mapping[str, Any], metadata_type: np.dtype, allocator: Any,
                  start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Metadata rows and allocation rows (sample_id, ptr, size) of samples [start, stop), as ffcv's handle_sample
    writes them: a sample that does not fit the rest of a page is redone on a fresh page."""
    from ffcv.types import ALLOC_TABLE_TYPE

    meta = np.zeros(stop - start, dtype=metadata_type)
    allocator.allocations = []
    for i in range(start, stop):
        sample = samples[i]
        for attempt in range(2):
            try:
                allocator.set_current_sample(i)
                for name, field, value in zip(metadata_type.names, fields.values(), sample):
                    field.encode(meta[name][i - start:i - start + 1], value, allocator.malloc)
                break
            except MemoryError:
                if attempt == 1:
                    raise
    alloc = np.array(allocator.allocations, dtype=ALLOC_TABLE_TYPE)
    if len(alloc) != stop - start or not np.array_equal(alloc["sample_id"], np.arange(start, stop)):
        raise BetonWriteError("the bounded .beton writer needs exactly one allocation per sample (one array field)")
    return meta, alloc


def _finalize(path: Path, writer: Any, tables: tuple[Path, Path]) -> None:
    """Metadata table after the field descriptors, allocation table at the end, then the header (ffcv finalize)."""
    meta, alloc = tables
    with open(path, "r+b") as out:
        out.seek(writer.metadata_start)
        _copy(meta, out)
        writer.header["alloc_table_ptr"] = out.seek(0, os.SEEK_END)
        _copy(alloc, out)
        out.seek(0)
        out.write(writer.header.tobytes())


def _copy(source: Path, out: Any) -> None:
    with open(source, "rb") as fh:
        while block := fh.read(_COPY_BYTES):
            out.write(block)
