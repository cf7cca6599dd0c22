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
