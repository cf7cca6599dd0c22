"""Chunk I/O of the Zarr backend: whole chunks of the codes, scale and info arrays read and written concurrently on
zarr's event loop, the codec pipeline that decodes them, and the packing of (epoch, dy, dx, flip) into the int32
"info" array.

zarr-python's own codec pipeline spends about 2-4 ms of Python and thread hand-offs per 512 KB chunk (three arrays)
where Zstandard alone decodes it in 0.6 ms (docs/benchmarks.md). On a local path the store's arrays therefore use
the `zarrs` pipeline (Rust, chunks decoded in parallel on `decode_threads()` threads, CRC-32C checked), which
reads and writes the very same files; so does an object store (s3://, gs://, az://: zarr's ObjectStore on obstore,
whose client zarrs rebuilds from the store's configuration), where each of zarrs's threads waits on one request at a
time: it gets at least OBJECT_STORE_THREADS of them (`_widen_rayon_pool`), and as many chunks in flight. Other locations
(fsspec URLs: memory://, ...) keep zarr's pipeline. Read whole chunks only: zarrs 0.2.3 builds the decoder of a
part of a chunk (a HEAD on an object store) while it holds the GIL, which stalls every other thread for a round
trip (and deadlocks a test whose S3 server runs in the same process).
"""

from __future__ import annotations

import asyncio
import os
import warnings
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from zarr.core.array import AsyncArray
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore, ObjectStore

from memloss.memstore.entries import NO_EPOCH, Entries


def pack_info(entries: Entries) -> np.ndarray:
    """int32 [R, 4] columns (epoch, dy, dx, flip) of the on-disk "info" array."""
    return np.column_stack([entries.epoch, entries.offset[:, 0], entries.offset[:, 1], entries.flip]).astype(np.int32)


def unpack_info(info: np.ndarray, out: Entries, where: tuple[Any, ...]) -> None:
    """Writes info int32 [..., 4] into out.epoch/offset/flip at index `where`."""
    out.epoch[where] = info[..., 0]
    out.offset[where] = info[..., 1:3]
    out.flip[where] = info[..., 3] > 0


ZARRS_PIPELINE = "zarrs.ZarrsCodecPipeline"
PYTHON_PIPELINE = "zarr.core.codec_pipeline.BatchedCodecPipeline"  # zarr's own
OBJECT_STORE_THREADS = 16  # requests in flight on an object store (each costs a round trip, not CPU)


def decode_threads() -> int:
    """Threads that decode and encode chunks: the cores this process may run on."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def open_arrays(group: zarr.Group, names: tuple[str, ...]) -> dict[str, zarr.Array]:
    """The group's arrays `names`, with the zarrs codec pipeline when the group is on a local path or an object store
    (see module doc). The setting is scoped to these array objects: zarr's global configuration is left as it was.
    A subclass of LocalStore or ObjectStore keeps zarr's pipeline (zarrs reads the objects itself, bypassing the
    subclass's methods)."""
    kind = type(group.store)
    if kind not in (LocalStore, ObjectStore) or not zarrs_available():
        return {name: group[name] for name in names}
    settings = {"codec_pipeline.path": ZARRS_PIPELINE, "codec_pipeline.strict": False,
                "codec_pipeline.validate_checksums": True, "threading.max_workers": decode_threads()}
    if kind is ObjectStore:
        _widen_rayon_pool()
        settings |= {"threading.max_workers": max(decode_threads(), OBJECT_STORE_THREADS),
                     "codec_pipeline.chunk_concurrent_minimum": OBJECT_STORE_THREADS}
    with zarr.config.set(settings), warnings.catch_warnings():
        # zarrs rebuilds an obstore client from the store's configuration (its own build of obstore) and says so
        # once per array; expected here, not a problem worth a warning to the user
        warnings.filterwarnings("ignore", "Successfully reconstructed a store", RuntimeWarning)
        return {name: group[name] for name in names}


def _widen_rayon_pool() -> None:
    """zarrs fetches and decodes chunks on rayon's global pool (one thread per core unless RAYON_NUM_THREADS says
    otherwise), each thread blocked on its request: on an object store that many requests are in flight, 2 on a
    2-core machine (a window of 36 chunks at +20 ms latency: 0.9 s; with 16 threads 0.25 s). The pool is built at
    zarrs's first use in the process, so this only helps when no local store was read before; a value the user set
    is kept."""
    os.environ.setdefault("RAYON_NUM_THREADS", str(max(decode_threads(), OBJECT_STORE_THREADS)))


def zarrs_available() -> bool:
    try:
        import zarrs  # noqa: F401
    except ImportError:
        return False
    return True


def run_all(coros: list[Coroutine[Any, Any, Any]]) -> list[Any]:
    """Runs zarr coroutines concurrently on zarr's event loop (one round trip instead of one per chunk)."""

    async def gather() -> list[Any]:
        return list(await asyncio.gather(*coros))

    return sync(gather())


@dataclass
class WriteJob:
    """A whole block of one slot to write; entries None writes only NO_EPOCH stamps (a block nobody wrote)."""

    slot: int
    start: int
    stop: int
    entries: Entries | None


def read_rows(arrays: dict[str, zarr.Array], slots: list[int], rows: np.ndarray | slice, out: Entries,
              dest: list[int]) -> None:
    """Decodes storage `rows` (sorted int64 [R] made of whole blocks, or a slice) of ring `slots` straight into
    `out` at lead index dest[i] for slots[i] (out.codes[dest[i]] is [R, C, H, W]): one orthogonal selection per slot
    and array, so the codec pipeline gets every chunk of a window in one call and decodes them in parallel. On an
    object store the rows of a last chunk cut at the array's end are a selection of their own, through zarr's
    pipeline: zarrs takes them for a part of a chunk, whose decoder it builds with a HEAD while it holds the GIL
    (every Python thread, the training loop's included, stalls for that round trip)."""
    buf = default_buffer_prototype().nd_buffer
    coros, where = [], []
    for part, lo, hi, a in _parts(arrays, rows):
        for slot, d in zip(slots, dest):
            sel = (slice(slot, slot + 1), part)  # a slice keeps the slot axis: zarrs decodes in place only without drops
            coros += [a["codes"].get_orthogonal_selection(sel, out=buf.from_ndarray_like(out.codes[d:d + 1, lo:hi])),
                      a["scale"].get_orthogonal_selection(sel, out=buf.from_ndarray_like(out.scale[d:d + 1, lo:hi])),
                      a["info"].get_orthogonal_selection(sel)]
            where.append((d, slice(lo, hi)))
    got = run_all(coros)
    for i, at in enumerate(where):
        unpack_info(got[3 * i + 2][0], out, at)


def _parts(arrays: dict[str, zarr.Array], rows: np.ndarray | slice
           ) -> list[tuple[np.ndarray | slice, int, int, dict[str, AsyncArray]]]:
    """(rows, first and last+1 position in the output, arrays to read them with) of `read_rows`: all rows with the
    store's pipeline, or, on an object store whose last chunk is cut at the array's end, the rows before it and
    those in it (zarr's pipeline; see `read_rows`)."""
    whole = {name: arrays[name].async_array for name in ("codes", "scale", "info")}
    n, per_chunk = arrays["info"].shape[1], arrays["info"].chunks[1]
    count = rows.shape[0] if isinstance(rows, np.ndarray) else len(range(*rows.indices(n)))
    if type(arrays["info"].store) is not ObjectStore or n % per_chunk == 0:
        return [(rows, 0, count, whole)]
    cut = n - n % per_chunk  # first row of the short last chunk
    if isinstance(rows, np.ndarray):
        m = int(np.searchsorted(rows, cut))
        before, inside = rows[:m], rows[m:]
    else:
        start, stop, _ = rows.indices(n)
        m = max(0, min(stop, cut) - start)
        before, inside = slice(start, start + m), slice(start + m, stop)
    parts = [(before, 0, m, whole), (inside, m, count, _python_pipeline(whole))]
    return [part for part in parts if part[2] > part[1]]


def write_chunks(arrays: dict[str, zarr.Array], jobs: list[WriteJob]) -> None:
    """Whole-chunk writes only (slot, rows [start, stop) = exactly one chunk, the last one cut at the array's end),
    all jobs at once so that zarr encodes their chunks concurrently."""
    whole = {name: arrays[name].async_array for name in ("codes", "scale", "info")}
    rows = arrays["info"].chunks[1]  # rows of a chunk (every array has the same)
    object_store, edge = type(arrays["info"].store) is ObjectStore, None
    coros = []
    for job in jobs:
        a = whole
        if object_store and job.stop - job.start < rows:
            a = edge = edge or _python_pipeline(whole)
        where = (job.slot, slice(job.start, job.stop))
        if job.entries is None:  # all -1 equals the fill value, so zarr just deletes the chunk
            coros.append(a["info"].setitem(where, np.full((job.stop - job.start, 4), NO_EPOCH, dtype=np.int32)))
            continue
        e = job.entries
        coros += [a["codes"].setitem(where, e.codes), a["scale"].setitem(where, e.scale),
                  a["info"].setitem(where, pack_info(e))]
    run_all(coros)


def _python_pipeline(arrays: dict[str, AsyncArray]) -> dict[str, AsyncArray]:
    """The same arrays with zarr's own codec pipeline, for the last block of an object store when it is shorter than
    a chunk: zarrs 0.2.3 takes a chunk written up to the array's end for a partial write and reads it first (a HEAD
    and a GET before the PUT: two more round trips on the writer's chain each epoch), zarr's pipeline writes it whole
    (same codecs, same bytes; ~5 ms of CPU for a 170-row codes chunk, once an epoch)."""
    with zarr.config.set({"codec_pipeline.path": PYTHON_PIPELINE}):
        return {name: AsyncArray(metadata=a.metadata, store_path=a.store_path, config=a.config)
                for name, a in arrays.items()}
