"""Chunk I/O of the Zarr backend: whole chunks of the codes, scale and info arrays read and written concurrently on
zarr's event loop, and the packing of (epoch, dy, dx, flip) into the int32 "info" array."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from zarr.core.sync import sync

from memloss.memstore.entries import NO_EPOCH, Entries
from memloss.memstore.order import DECODE_GROUP_BLOCKS


def pack_info(entries: Entries) -> np.ndarray:
    """int32 [R, 4] columns (epoch, dy, dx, flip) of the on-disk "info" array."""
    return np.column_stack([entries.epoch, entries.offset[:, 0], entries.offset[:, 1], entries.flip]).astype(np.int32)


def unpack_info(info: np.ndarray, out: Entries, where: tuple[Any, ...]) -> None:
    """Writes info int32 [..., 4] into out.epoch/offset/flip at index `where`."""
    out.epoch[where] = info[..., 0]
    out.offset[where] = info[..., 1:3]
    out.flip[where] = info[..., 3] > 0


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


def read_chunks(arrays: dict[str, zarr.Array], spans: list[tuple[int, int]], slots: list[int], out: Entries,
                 where: Callable[[int, int], tuple[int, slice]]) -> None:
    """Reads the chunks of row spans [start, stop) × ring `slots` (DECODE_GROUP_BLOCKS blocks per slot at a time, which
    bounds the decode temporaries) into `out` at where(slot index, span index)."""
    a = {name: arrays[name].async_array for name in ("codes", "scale", "info")}
    names = ("codes", "scale", "info")
    for g in range(0, len(spans), DECODE_GROUP_BLOCKS):
        jobs = [(si, j) for j in range(g, min(g + DECODE_GROUP_BLOCKS, len(spans))) for si in range(len(slots))]
        coros = [a[name].getitem((slots[si], slice(*spans[j]))) for si, j in jobs for name in names]
        got = run_all(coros)
        for n, (si, j) in enumerate(jobs):
            dest = where(si, j)
            out.codes[dest], out.scale[dest] = got[3 * n], got[3 * n + 1]
            unpack_info(got[3 * n + 2], out, dest)


def write_chunks(arrays: dict[str, zarr.Array], jobs: list[WriteJob]) -> None:
    """Whole-chunk writes only (slot, rows [start, stop) = exactly one chunk), all
    jobs at once so that zarr encodes their chunks concurrently."""
    a = {name: arrays[name].async_array for name in ("codes", "scale", "info")}
    coros = []
    for job in jobs:
        where = (job.slot, slice(job.start, job.stop))
        if job.entries is None:  # all -1 equals the fill value, so zarr just deletes the chunk
            coros.append(a["info"].setitem(where, np.full((job.stop - job.start, 4), NO_EPOCH, dtype=np.int32)))
            continue
        e = job.entries
        coros += [a["codes"].setitem(where, e.codes), a["scale"].setitem(where, e.scale),
                  a["info"].setitem(where, pack_info(e))]
    run_all(coros)
