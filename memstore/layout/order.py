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


def random_members(n: int, seed: int) -> np.ndarray:
    """The block membership permutation fixed at creation: int64 [n], storage row -> sample index."""
    return np.random.default_rng([int(seed), 0x5EED]).permutation(n).astype(np.int64)


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
    """The membership fixed at creation: int64 [rows], storage row -> sample (PADDING between parts). One part:
    `random_members`; part p > 0 is permuted by its own stream, its samples numbered after the earlier parts'."""
    if len(parts) == 1:
        return random_members(parts[0], seed)
    ranges = part_row_ranges(parts, block_size)
    members = np.full(ranges[-1][1], PADDING, dtype=np.int64)
    first = 0
    for p, ((start, stop), size) in enumerate(zip(ranges, parts)):
        key = [int(seed), 0x5EED] if p == 0 else [int(seed), 0x5EED, p]
        members[start:stop] = first + np.random.default_rng(key).permutation(size)
        first += size
    return members


@dataclass(frozen=True)
class BlockLayout:
    """members int64 [rows] (storage row -> sample, PADDING for rows between parts), position int64 [n] (sample ->
    storage row), block size b, and the [start, stop) storage rows of each part."""

    members: np.ndarray
    position: np.ndarray
    block_size: int
    part_rows: tuple[tuple[int, int], ...] = ()

    @classmethod
    def from_members(cls, members: np.ndarray, block_size: int, parts: tuple[int, ...] | None = None) -> BlockLayout:
        members = np.asarray(members, dtype=np.int64)
        if block_size < 1:
            raise StoreError(f"store's block size {block_size} must be >= 1; recreate the store")
        parts = tuple(parts) if parts else (int((members >= 0).sum()),)
        n, ranges = sum(parts), part_row_ranges(parts, block_size)
        in_part = np.zeros(members.shape[0], dtype=bool)
        for start, stop in ranges:
            in_part[start:stop] = True
        if members.shape[0] != ranges[-1][1] or not np.array_equal(members >= 0, in_part) or \
                not ((members >= PADDING) & (members < n)).all():
            raise StoreError("store's block membership is corrupt (index out of range); recreate the store")
        position = np.full(n, -1, dtype=np.int64)
        rows = np.flatnonzero(in_part)
        position[members[rows]] = rows
        if (position < 0).any():
            raise StoreError("store's block membership is not a permutation; recreate the store")
        return cls(members=members, position=position, block_size=int(block_size), part_rows=ranges)

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


@dataclass(frozen=True)
class EpochPlan:
    """The order of one epoch: `order` int64 [L] (a permutation of range(n); for a two-part store the epoch's
    batches one after the other, memstore/layout/mixing.py), `windows` (block ids per window, in training order),
    `window_of_block` int64 [num_blocks] (−1: a block the epoch does not visit) and `visits` (uint16 [rows]: how
    often the epoch visits each storage row; None: every sample once)."""

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


def plan_epoch(layout: BlockLayout, window_blocks: int, seed: int, epoch: int) -> EpochPlan:
    """Deterministic in (seed, epoch, window_blocks); see the module docstring. One part only."""
    rng = np.random.default_rng([int(seed), int(epoch)])
    blocks = rng.permutation(layout.num_blocks).astype(np.int64)
    step = max(1, int(window_blocks))
    windows = [blocks[i : i + step] for i in range(0, blocks.shape[0], step)]
    window_of_block = np.empty(layout.num_blocks, dtype=np.int64)
    parts = []
    for w, win in enumerate(windows):
        window_of_block[win] = w
        rows = np.concatenate([np.arange(*layout.block_rows(b), dtype=np.int64) for b in win])
        parts.append(layout.members[rng.permutation(rows)])
    return EpochPlan(epoch=int(epoch), order=np.concatenate(parts), windows=windows, window_of_block=window_of_block)


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


def memory_plan(budget_bytes: int, k: int, parts: tuple[int, ...], block_size: int, row_bytes: int,
                window_slots: int | None = None) -> tuple[int, int]:
    """(blocks per window of the windowed part, resident blocks) for a memory budget: the first `resident` block
    ids stay in RAM across epochs (the resident fast path), the others are read in windows. `window_slots`: the
    memory ages a window decodes (m with per-window slot draws; default all K), which sizes the windows.

    Everything fits: all resident (one window). Otherwise one part is windowed whole; with two parts the base part
    (visited several times an epoch, in any order) stays resident and the generated part is windowed in what the
    budget leaves. The batches gathered ahead (`read_ahead_bytes`) come off the budget first. Raises StoreError
    when the base part alone does not fit or not even one block fits.
    """
    ranges = part_row_ranges(parts, block_size)
    rows = ranges[-1][1]
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
        need = with_read_ahead(base_bytes + one_block, k, row_bytes, rows)
        raise StoreError(
            f"memory budget {budget_bytes} B is too small at K={k}: the base set's {parts[0]} samples stay in RAM "
            f"({base_bytes} B for K+1 slots) and the generated part needs at least {one_block} B more; raise "
            f"memory_budget to at least {need} B ({need / 2**30:.2f} GiB)")
    return window_blocks_for_budget(left, r, block_size, row_bytes, num_blocks - first_windowed), first_windowed
