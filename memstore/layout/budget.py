"""The store's RAM budget: what the index arrays, the batches gathered ahead, the resident slots and the windows of
a store take, and the window size and resident blocks (`memory_plan`) that fit a budget. Pure arithmetic on sizes
(bytes, rows, blocks); no I/O, no torch, no zarr."""

from __future__ import annotations

import numpy as np

from memloss.memstore.errors import StoreError
from memloss.memstore.layout.order import index_dtype, part_row_ranges

DECODE_GROUP_BLOCKS = 4  # decode temporaries budgeted per read slot while loading a window (chunks in flight)
WRITE_BATCH_BLOCKS = 8  # chunks the writer encodes concurrently (zarr compresses each on its own thread)
READ_AHEAD_ROWS = 1024  # sample rows of batches gathered ahead of the loop (memstore/ahead.py): 8 batches of 128
READ_AHEAD_SHARE = 8  # ... but at most 1/8 of the memory budget (a batch of K = 64 ages is 25 MB at 32x32)


def read_ahead_rows(budget_bytes: int, k: int, row_bytes: int, n: int) -> int:
    """Sample rows of batches the read-ahead (memstore/ahead.py) may hold gathered beyond the loop's own batch:
    READ_AHEAD_ROWS, at most the dataset's n and 1/READ_AHEAD_SHARE of the budget. Each row holds all K ages (a
    batch has every age; those a window did not draw are masked)."""
    return int(min(READ_AHEAD_ROWS, int(n), int(budget_bytes) // (READ_AHEAD_SHARE * int(k) * int(row_bytes))))


def read_ahead_bytes(budget_bytes: int, k: int, row_bytes: int, n: int) -> int:
    """RAM the budget counts for the read-ahead: `read_ahead_rows` rows of K ages."""
    return read_ahead_rows(budget_bytes, k, row_bytes, n) * int(k) * int(row_bytes)


def with_read_ahead(need_bytes: int, k: int, row_bytes: int, n: int) -> int:
    """The smallest budget that leaves `need_bytes` after the read-ahead's share (`read_ahead_bytes`). Iterated
    from below: the share grows with the budget, by at most 1/READ_AHEAD_SHARE of it, so this converges."""
    budget = int(need_bytes)
    while (grown := int(need_bytes) + read_ahead_bytes(budget, k, row_bytes, n)) != budget:
        budget = grown
    return budget


def resident_window_blocks(num_blocks: int) -> int:
    """Blocks per window of the order when every slot is resident (reads never touch disk then): all of them.

    One window makes the order a uniform random permutation of the dataset, the paper's protocol. The price is that
    nearly every block completes (and is compressed and written whole) in the last steps of the epoch, so the commit
    waits for most of the slot's writes: measured 2.7 s for K=1, N=50 000 on 2 busy cores; the writer encodes
    WRITE_BATCH_BLOCKS chunks in parallel, so it shrinks with more cores. Splitting the order into windows would
    overlap those writes with training but make the order quasi-random; we keep the protocol.
    """
    return int(num_blocks)


def fits_resident(budget_bytes: int, k: int, n: int, block_size: int, row_bytes: int) -> bool:
    """True when every ring slot of the whole dataset fits `budget_bytes` (the Zarr store's resident fast path).

    Resident: S = K+1 slots of n rows (K read slots and the write slot; chunk writes take views of it), plus the
    decode temporaries of the first epoch's load from disk (as in `window_blocks_for_budget`), the encode
    temporaries of WRITE_BATCH_BLOCKS chunks written at once and the batches gathered ahead (`read_ahead_bytes`).
    """
    transient = 2 * (DECODE_GROUP_BLOCKS * k + WRITE_BATCH_BLOCKS) * block_size * row_bytes
    return (k + 1) * n * row_bytes + transient + read_ahead_bytes(budget_bytes, k, row_bytes, n) <= int(budget_bytes)


def window_blocks_for_budget(budget_bytes: int, k: int, block_size: int, row_bytes: int, num_blocks: int) -> int:
    """Blocks per window so that resident memory fits `budget_bytes`.

    Resident at most: two windows of the K read slots (the one training and the next one prefetching, or a batch
    straddling both), two windows of write buffers (one filling, one queued for write-behind), i.e.
    (2K + 2) · window_rows · row_bytes, plus the decode temporaries of a window load (compressed and decoded copies
    of DECODE_GROUP_BLOCKS blocks per read slot). Raises StoreError if even one block does not fit.
    """
    block_bytes = block_size * row_bytes
    transient = 2 * DECODE_GROUP_BLOCKS * k * block_bytes
    per_block = (2 * k + 2) * block_bytes
    fit = (int(budget_bytes) - transient) // per_block
    if fit < 1:
        raise StoreError(
            f"memory budget {budget_bytes} B is too small for one block of {block_size} samples at K={k} "
            f"(needs {per_block + transient} B); raise memory_budget or create the store with a smaller block_size"
        )
    return int(min(fit, num_blocks))


# RAM a storage row costs outside the windows, in bytes at int32 indices (`index_bytes`; bench/layout_scale.py
# measures it): members and position (4 + 4), the epoch's plan visits and its write tracker (2 + 3), the next
# epoch's plan built during the epoch (order 4, visits 2), the int64 order begin_epoch hands the caller (8), and
# the temporaries of building a plan on the plan thread (12).
INDEX_BYTES_PER_ROW = 39
INDEX_BYTES_PER_ROW_WIDE = 63  # the same at int64 indices (2**31 rows or more): 8 + 8 + 2 + 3 + 8 + 2 + 8 + 24


def index_bytes(rows: int) -> int:
    """RAM in bytes of a store's per-row index arrays at `rows` storage rows (see INDEX_BYTES_PER_ROW); the memory
    budget holds them before any window."""
    per_row = INDEX_BYTES_PER_ROW if index_dtype(rows) is np.int32 else INDEX_BYTES_PER_ROW_WIDE
    return per_row * int(rows)


def budget_after_index(budget_bytes: int, rows: int) -> int:
    """The budget left for the windows once the index arrays of `rows` rows are held; StoreError (one line) when
    they alone fill it."""
    left = int(budget_bytes) - index_bytes(rows)
    if left <= 0:
        raise StoreError(f"memory budget {budget_bytes} B cannot hold the store's index arrays ({index_bytes(rows)} B "
                         f"for {rows} rows); raise memory_budget above {index_bytes(rows) / 2**20:.0f} MiB")
    return left


def memory_plan(budget_bytes: int, k: int, parts: tuple[int, ...], block_size: int, row_bytes: int,
                window_slots: int | None = None) -> tuple[int, int]:
    """(blocks per window of the windowed part, resident blocks) for a memory budget: the first `resident` block
    ids stay in RAM across epochs (the resident fast path), the others are read in windows. `window_slots`: the
    memory ages a window decodes (m with per-window slot draws; default all K), which sizes the windows.

    Everything fits: all resident (one window). Otherwise one part is windowed whole; with two parts the base part
    (visited several times an epoch, in any order) stays resident and the generated part is windowed in what the
    budget leaves. The index arrays (`index_bytes`) come out of the budget first, then the batches gathered ahead
    (`read_ahead_bytes`). Raises StoreError when the index arrays or the base part alone do not fit or not even one
    block fits.
    """
    ranges = part_row_ranges(parts, block_size)
    rows = ranges[-1][1]
    total_bytes, budget_bytes = int(budget_bytes), budget_after_index(budget_bytes, rows)
    num_blocks = -(-rows // block_size)
    first_windowed = ranges[-1][0] // block_size  # 0 for one part
    if fits_resident(budget_bytes, k, rows, block_size, row_bytes):
        return resident_window_blocks(num_blocks - first_windowed), num_blocks
    r = k if window_slots is None else max(1, min(int(window_slots), k))  # slots a window decodes
    windowed_bytes = int(budget_bytes) - read_ahead_bytes(budget_bytes, k, row_bytes, rows)
    if first_windowed == 0:
        return window_blocks_for_budget(windowed_bytes, r, block_size, row_bytes, num_blocks), 0
    base_bytes = (k + 1) * ranges[-1][0] * row_bytes
    left = windowed_bytes - base_bytes
    one_block = (2 * r + 2 + 2 * DECODE_GROUP_BLOCKS * r) * block_size * row_bytes
    if left < one_block:
        need = with_read_ahead(base_bytes + one_block, k, row_bytes, rows) + index_bytes(rows)
        raise StoreError(
            f"memory budget {total_bytes} B is too small at K={k}: the base set's {parts[0]} samples stay in RAM "
            f"({base_bytes} B for K+1 slots) and the generated part needs at least {one_block} B more; raise "
            f"memory_budget to at least {need} B ({need / 2**30:.2f} GiB)")
    return window_blocks_for_budget(left, r, block_size, row_bytes, num_blocks - first_windowed), first_windowed
