"""Block layout of a store and the training order it serves.

Samples are assigned to fixed blocks of `block_size` rows by a random permutation drawn at creation
(`BlockLayout.members`). Storage row r holds sample members[r]; block j is rows [j·b, (j+1)·b). Each epoch the
blocks are shuffled, grouped into windows of `window_blocks` blocks, and the samples of each window are shuffled
(FFCV's QUASI_RANDOM idea). A window that covers all blocks gives a uniform random permutation of the dataset.

A training set of two parts (a base set and generated images, `DatasetFingerprint.parts`) keeps each part in blocks
of its own: part p's rows start at a block boundary, so the last block of the base part may have padding rows
(members −1) that hold no sample. Its order is the mixed one of memstore/layout/mixing.py.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from memloss.memstore.errors import StoreError

TARGET_CHUNK_BYTES = 512 * 1024  # inside the 256 KB - 1 MB range where whole-chunk I/O runs at disk speed
PADDING = -1  # members entry of a storage row that holds no sample


def default_block_size(n: int, sample_bytes: int) -> int:
    """Samples per block so that one chunk of codes is about 512 KB raw, capped at n (the smallest part's size)."""
    return int(max(1, min(n, TARGET_CHUNK_BYTES // max(1, sample_bytes))))


def index_dtype(rows: int) -> type[np.signedinteger]:
    """The dtype of row and sample indices of a store of `rows` rows: int32 below 2**31 rows (4 B a row), else
    int64. Values never depend on it: numpy's shuffle draws the same swaps for any item size."""
    return np.int32 if int(rows) < 2**31 else np.int64


def random_members(n: int, seed: int) -> np.ndarray:
    """The block membership permutation fixed at creation: `index_dtype` [n], storage row -> sample index (the
    values of `default_rng([seed, 0x5EED]).permutation(n)`, shuffled in place: no int64 copy)."""
    members = np.arange(n, dtype=index_dtype(n))
    np.random.default_rng([int(seed), 0x5EED]).shuffle(members)
    return members


def part_row_ranges(parts: tuple[int, ...], block_size: int) -> tuple[tuple[int, int], ...]:
    """[start, stop) storage rows of each part: every part but the last is padded to whole blocks."""
    out, start = [], 0
    for i, size in enumerate(parts):
        out.append((start, start + int(size)))
        start += int(size) if i == len(parts) - 1 else -(-int(size) // block_size) * block_size
    return tuple(out)


def storage_rows(parts: tuple[int, ...], block_size: int) -> int:
    """Rows of the store's arrays: the samples plus the padding rows between parts."""
    return part_row_ranges(parts, block_size)[-1][1]


def layout_members(parts: tuple[int, ...], block_size: int, seed: int) -> np.ndarray:
    """The membership fixed at creation: `index_dtype` [rows], storage row -> sample (PADDING between parts). One
    part: `random_members`; part p > 0 is permuted by its own stream, its samples numbered after the earlier parts'
    (each part shuffled in place in its rows: the values of `first + permutation(size)`, 4 B a row)."""
    if len(parts) == 1:
        return random_members(parts[0], seed)
    ranges = part_row_ranges(parts, block_size)
    members = np.full(ranges[-1][1], PADDING, dtype=index_dtype(ranges[-1][1]))
    first = 0
    for p, ((start, stop), size) in enumerate(zip(ranges, parts)):
        key = [int(seed), 0x5EED] if p == 0 else [int(seed), 0x5EED, p]
        members[start:stop] = np.arange(first, first + size, dtype=members.dtype)
        np.random.default_rng(key).shuffle(members[start:stop])
        first += size
    return members


@dataclass(frozen=True)
class BlockLayout:
    """members [rows] (storage row -> sample, PADDING for rows between parts), position [n] (sample -> storage
    row), both `index_dtype` (int32 below 2**31 rows), block size b, and the [start, stop) storage rows of each
    part. `rows_of` gives int64 storage rows of a batch of samples."""

    members: np.ndarray
    position: np.ndarray
    block_size: int
    part_rows: tuple[tuple[int, int], ...] = ()

    @classmethod
    def from_members(cls, members: np.ndarray, block_size: int, parts: tuple[int, ...] | None = None) -> BlockLayout:
        if block_size < 1:
            raise StoreError(f"store's block size {block_size} must be >= 1; recreate the store")
        members = np.asarray(members)
        parts = tuple(parts) if parts else (int((members >= 0).sum()),)
        n, ranges = sum(parts), part_row_ranges(parts, block_size)
        if members.shape[0] != ranges[-1][1] or not _members_in_range(members, ranges, n):
            raise StoreError("store's block membership is corrupt (index out of range); recreate the store")
        members = members.astype(index_dtype(members.shape[0]), copy=False)
        position = np.full(n, -1, dtype=members.dtype)
        for start, stop in ranges:
            position[members[start:stop]] = np.arange(start, stop, dtype=members.dtype)
        if (position < 0).any():
            raise StoreError("store's block membership is not a permutation; recreate the store")
        return cls(members=members, position=position, block_size=int(block_size), part_rows=ranges)

    def rows_of(self, idx: np.ndarray) -> np.ndarray:
        """int64 [B]: the storage rows of samples idx [B] (valid sample indices)."""
        return self.position[idx].astype(np.int64)

    @property
    def n(self) -> int:
        """Samples."""
        return int(self.position.shape[0])

    @property
    def rows(self) -> int:
        """Storage rows (samples plus padding between parts)."""
        return int(self.members.shape[0])

    @property
    def num_blocks(self) -> int:
        return -(-self.rows // self.block_size)

    @property
    def parts(self) -> tuple[int, ...]:
        return tuple(stop - start for start, stop in self.part_rows) or (self.n,)

    def part_blocks(self, part: int) -> np.ndarray:
        """Block ids of one part (int64, ascending)."""
        start, stop = self.part_rows[part]
        return np.arange(start // self.block_size, -(-stop // self.block_size), dtype=np.int64)

    def block_rows(self, block: int) -> tuple[int, int]:
        """[start, stop) storage rows of a block."""
        start = int(block) * self.block_size
        return start, min(start + self.block_size, self.rows)


def _members_in_range(members: np.ndarray, ranges: tuple[tuple[int, int], ...], n: int) -> bool:
    """True when the rows of every part hold sample indices in [0, n) and the rows between parts PADDING (checked
    a part at a time: no per-row temporaries beyond a bool of one part)."""
    if members.dtype.kind not in "iu":
        return False
    gaps = [(ranges[i][1], ranges[i + 1][0]) for i in range(len(ranges) - 1)]
    return all(bool(((members[a:b] >= 0) & (members[a:b] < n)).all()) for a, b in ranges) and \
        all(bool((members[a:b] == PADDING).all()) for a, b in gaps)


@dataclass(frozen=True)
class EpochPlan:
    """The order of one epoch: `order` [L] (int64; `index_dtype` in a compact plan; a permutation of range(n); for
    a two-part store the epoch's batches one after the other, memstore/layout/mixing.py), `windows` (block ids per
    window, in training order), `window_of_block` int64 [num_blocks] (−1: a block the epoch does not visit) and
    `visits` (uint16 [rows]: how often the epoch visits each storage row; None: every sample once)."""

    epoch: int
    order: np.ndarray
    windows: list[np.ndarray]
    window_of_block: np.ndarray
    visits: np.ndarray | None = None

    def from_window(self, first: int) -> EpochPlan:
        """The plan of windows `first`, `first`+1, … renumbered from 0 (earlier windows' blocks get −1)."""
        if first == 0:
            return self
        wob = np.where(self.window_of_block >= first, self.window_of_block - first, -1)
        return replace(self, windows=self.windows[first:], window_of_block=wob)


def plan_epoch(layout: BlockLayout, window_blocks: int, seed: int, epoch: int, compact: bool = False) -> EpochPlan:
    """Deterministic in (seed, epoch, window_blocks); see the module docstring. One part only. `compact`: the order
    keeps the layout's index dtype (4 B a row below 2**31 rows) instead of int64; the values are the same."""
    rng = np.random.default_rng([int(seed), int(epoch)])
    blocks = rng.permutation(layout.num_blocks).astype(np.int64)
    step = max(1, int(window_blocks))
    windows = [blocks[i : i + step] for i in range(0, blocks.shape[0], step)]
    window_of_block = np.empty(layout.num_blocks, dtype=np.int64)
    order = np.empty(layout.n, dtype=layout.members.dtype)
    at = 0
    for w, win in enumerate(windows):
        window_of_block[win] = w
        rows = block_rows(layout, win)
        rng.shuffle(rows)  # the draws of rows[rng.permutation(len(rows))], in place
        order[at : at + rows.shape[0]] = layout.members[rows]
        at += rows.shape[0]
    return EpochPlan(epoch=int(epoch), order=order if compact else order.astype(np.int64), windows=windows,
                     window_of_block=window_of_block)


def block_rows(layout: BlockLayout, blocks: np.ndarray) -> np.ndarray:
    """Storage rows (`index_dtype`) of `blocks` (in their order, ascending within each), without rows past the end."""
    fits = layout.num_blocks * layout.block_size < 2**31
    dtype = layout.members.dtype if fits else np.dtype(np.int64)
    rows = (np.asarray(blocks, dtype=dtype)[:, None] * dtype.type(layout.block_size)
            + np.arange(layout.block_size, dtype=dtype)).ravel()
    return rows[rows < layout.rows]


DECODE_GROUP_BLOCKS = 4  # decode temporaries budgeted per read slot while loading a window (chunks in flight)
WRITE_BATCH_BLOCKS = 8  # chunks the writer encodes concurrently (zarr compresses each on its own thread)


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
    decode temporaries of the first epoch's load from disk (as in `window_blocks_for_budget`) and the encode
    temporaries of WRITE_BATCH_BLOCKS chunks written at once.
    """
    transient = 2 * (DECODE_GROUP_BLOCKS * k + WRITE_BATCH_BLOCKS) * block_size * row_bytes
    return (k + 1) * n * row_bytes + transient <= int(budget_bytes)


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
    budget leaves. The index arrays (`index_bytes`) come out of the budget first. Raises StoreError when they or the
    base part alone do not fit or not even one block fits.
    """
    ranges = part_row_ranges(parts, block_size)
    rows = ranges[-1][1]
    budget_bytes = budget_after_index(budget_bytes, rows)
    num_blocks = -(-rows // block_size)
    first_windowed = ranges[-1][0] // block_size  # 0 for one part
    if fits_resident(budget_bytes, k, rows, block_size, row_bytes):
        return resident_window_blocks(num_blocks - first_windowed), num_blocks
    r = k if window_slots is None else max(1, min(int(window_slots), k))  # slots a window decodes
    if first_windowed == 0:
        return window_blocks_for_budget(budget_bytes, r, block_size, row_bytes, num_blocks), 0
    base_bytes = (k + 1) * ranges[-1][0] * row_bytes
    left = int(budget_bytes) - base_bytes
    one_block = (2 * r + 2 + 2 * DECODE_GROUP_BLOCKS * r) * block_size * row_bytes
    if left < one_block:
        raise StoreError(
            f"memory budget {budget_bytes} B is too small at K={k}: the base set's {parts[0]} samples stay in RAM "
            f"({base_bytes} B for K+1 slots) and the generated part needs at least {one_block} B more; raise "
            f"memory_budget to at least {base_bytes + one_block} B ({(base_bytes + one_block) / 2**30:.2f} GiB)")
    return window_blocks_for_budget(left, r, block_size, row_bytes, num_blocks - first_windowed), first_windowed
