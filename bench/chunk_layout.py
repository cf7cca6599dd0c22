"""Benchmark: would one chunk per block and slot (a format change) cut the store's CPU? Prints figures; not a test.

Today a block of one slot is three chunks: codes (uint8 [b, C, H, W], zstd-1), scale (float32 [b], zstd-3) and
info (int32 [b, 4], zstd-3), each with a CRC-32C. The alternative packs a row's codes, scale and info into one
uint8 row of C·H·W + 20 bytes, one chunk per block (zstd-1). Both are written and read whole through the zarrs
pipeline on a local path, as the store does: every block of every slot written in groups of WRITE_BATCH_BLOCKS
concurrent chunks, then all blocks of every slot read as one selection per slot (and array), into preallocated
windows. The packed read is timed twice: decode only, and decode plus the copies that split its rows into the
store's three fields. Process CPU (all threads) per block of one slot, median of `--repeats`.

Usage: python bench/chunk_layout.py [--k 16] [--blocks 64] [--repeats 5] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from memloss.memstore.layout.budget import WRITE_BATCH_BLOCKS
from memloss.memstore.zarrstore.codecs import AUX_CODEC, DEFAULT_CODES_CODEC, make_codecs
from store_setup import real_perturbations

BLOCK, SHAPE = 170, (3, 32, 32)
ROW = int(np.prod(SHAPE))  # bytes of a row's codes


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_all(coros: list[Coroutine[Any, Any, Any]]) -> None:
    async def gather() -> None:
        await asyncio.gather(*coros)

    sync(gather())


def arrays(root: Path, k: int, n: int, packed: bool) -> dict[str, Any]:
    """The async arrays of one layout in a fresh group at `root` (zarrs pipeline, CRC checked)."""
    group = zarr.open_group(root, mode="w")
    codes, small = make_codecs(DEFAULT_CODES_CODEC), make_codecs(AUX_CODEC)
    if packed:
        specs = {"packed": ((k, n, ROW + 20), (1, BLOCK, ROW + 20), "u1", codes, 0)}
    else:
        specs = {"codes": ((k, n, *SHAPE), (1, BLOCK, *SHAPE), "u1", codes, 0),
                 "scale": ((k, n), (1, BLOCK), "f4", small, 0),
                 "info": ((k, n, 4), (1, BLOCK, 4), "i4", small, -1)}
    return {name: group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, compressors=comp,
                                     fill_value=fill).async_array
            for name, (shape, chunks, dtype, comp, fill) in specs.items()}


def rows_of(codes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(codes [n, C, H, W], scale [n], info [n, 4], packed [n, ROW + 20]) tiled from real codes."""
    c = codes[np.arange(n) % codes.shape[0]]
    scale = np.full(n, 8 / 255 / 127, np.float32)
    info = np.column_stack([np.full(n, 7), np.zeros((n, 2)), np.arange(n) % 2]).astype(np.int32)
    packed = np.concatenate([c.reshape(n, ROW), scale.view(np.uint8).reshape(n, 4),
                             info.view(np.uint8).reshape(n, 16)], axis=1)
    return c, scale, info, packed


def write_all(a: dict[str, Any], k: int, blocks: int, data: tuple[np.ndarray, ...]) -> None:
    c, scale, info, packed = data
    jobs = [(s, b) for s in range(k) for b in range(blocks)]
    for g in range(0, len(jobs), WRITE_BATCH_BLOCKS):
        coros = []
        for s, b in jobs[g:g + WRITE_BATCH_BLOCKS]:
            rows = slice(b * BLOCK, (b + 1) * BLOCK)
            if "packed" in a:
                coros.append(a["packed"].setitem((s, rows), packed[rows]))
            else:
                coros += [a["codes"].setitem((s, rows), c[rows]), a["scale"].setitem((s, rows), scale[rows]),
                          a["info"].setitem((s, rows), info[rows])]
        run_all(coros)


def read_all(a: dict[str, Any], k: int, n: int, split: bool) -> None:
    """Every block of every slot, one selection per slot and array (as a window load of all blocks)."""
    buf = default_buffer_prototype().nd_buffer
    if "packed" in a:
        win = np.empty((k, n, ROW + 20), np.uint8)
        run_all([a["packed"].get_orthogonal_selection((slice(s, s + 1), slice(0, n)),
                                                      out=buf.from_ndarray_like(win[s:s + 1])) for s in range(k)])
        if split:  # the store's fields as today's windows hold them
            codes = np.ascontiguousarray(win[:, :, :ROW]).reshape(k, n, *SHAPE)
            scale = np.ascontiguousarray(win[:, :, ROW:ROW + 4]).view(np.float32)
            info = np.ascontiguousarray(win[:, :, ROW + 4:]).view(np.int32)
            del codes, scale, info
        return
    codes, scale = np.empty((k, n, *SHAPE), np.uint8), np.empty((k, n), np.float32)
    coros = []
    for s in range(k):
        sel = (slice(s, s + 1), slice(0, n))
        coros += [a["codes"].get_orthogonal_selection(sel, out=buf.from_ndarray_like(codes[s:s + 1])),
                  a["scale"].get_orthogonal_selection(sel, out=buf.from_ndarray_like(scale[s:s + 1])),
                  a["info"].get_orthogonal_selection(sel)]
    run_all(coros)


def timed(fn: Callable[[], None], repeats: int, per: int) -> tuple[float, float]:
    """(median CPU ms, median wall ms) per block of `fn` over `repeats` calls that each handle `per` blocks."""
    cpu, wall = [], []
    for _ in range(repeats):
        c0, t0 = cpu_s(), time.perf_counter()
        fn()
        cpu.append((cpu_s() - c0) * 1000 / per)
        wall.append((time.perf_counter() - t0) * 1000 / per)
    return round(statistics.median(cpu), 3), round(statistics.median(wall), 3)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, default=16, help="slots")
    p.add_argument("--blocks", type=int, default=64, help="blocks per slot")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--m", type=int, default=1024, help="real perturbations computed (tiled)")
    p.add_argument("--dir", default=None)
    args = p.parse_args(argv)
    zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline", "codec_pipeline.validate_checksums": True,
                     "threading.max_workers": os.cpu_count() or 1})
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()}")
    n, per = args.blocks * BLOCK, args.k * args.blocks
    print("| layout | write CPU / wall ms per block | read CPU / wall ms per block | stored bytes per row |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        real_perturbations(args.m, Path(tmp) / "deltas.npz")
        data = rows_of(np.load(Path(tmp) / "deltas.npz")["codes"], n)
        for packed in (False, True, False, True):  # twice, alternating: the box is shared
            root = Path(tmp) / ("packed" if packed else "three")
            a = arrays(root, args.k, n, packed)
            w = timed(lambda: write_all(a, args.k, args.blocks, data), max(1, args.repeats // 2), per)
            stored = sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and f.name != "zarr.json")
            reads = [("", False)] if not packed else [(" (decode only)", False), (" (decode + split)", True)]
            for label, split in reads:
                r = timed(lambda: read_all(a, args.k, n, split), args.repeats, per)
                name = "one packed array" if packed else "codes + scale + info"
                print(f"| {name}{label} | {w[0]} / {w[1]} | {r[0]} / {r[1]} | {stored / (args.k * n):.0f} |",
                      flush=True)


if __name__ == "__main__":
    main()
