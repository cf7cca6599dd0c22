"""Block layout of a store and the training order it serves.

Samples are assigned to fixed blocks of `block_size` rows by a random permutation drawn at creation
(`BlockLayout.members`). Storage row r holds sample members[r]; block j is rows [j·b, (j+1)·b). Each epoch the
blocks are shuffled, grouped into windows of `window_blocks` blocks, and the samples of each window are shuffled
(FFCV's QUASI_RANDOM idea). A window that covers all blocks gives a uniform random permutation of the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from memloss.memstore.errors import StoreError

TARGET_CHUNK_BYTES = 512 * 1024  # inside the 256 KB - 1 MB range where whole-chunk I/O runs at disk speed


def default_block_size(n: int, sample_bytes: int) -> int:
    """Samples per block so that one chunk of codes is about 512 KB raw, capped at n."""
    return int(max(1, min(n, TARGET_CHUNK_BYTES // max(1, sample_bytes))))


def random_members(n: int, seed: int) -> np.ndarray:
    """The block membership permutation fixed at creation: int64 [n], storage row -> sample index."""
    return np.random.default_rng([int(seed), 0x5EED]).permutation(n).astype(np.int64)


@dataclass(frozen=True)
class BlockLayout:
    """members int64 [n] (storage row -> sample), position int64 [n] (sample -> storage row), block size b."""

    members: np.ndarray
    position: np.ndarray
    block_size: int

    @classmethod
    def from_members(cls, members: np.ndarray, block_size: int) -> BlockLayout:
        members = np.asarray(members, dtype=np.int64)
        n = members.shape[0]
        position = np.full(n, -1, dtype=np.int64)
        valid = (members >= 0) & (members < n)
        if not valid.all():
            raise StoreError("store's block membership is corrupt (index out of range); recreate the store")
        position[members] = np.arange(n, dtype=np.int64)
        if (position < 0).any():
            raise StoreError("store's block membership is not a permutation; recreate the store")
        if block_size < 1:
            raise StoreError(f"store's block size {block_size} must be >= 1; recreate the store")
        return cls(members=members, position=position, block_size=int(block_size))

    @property
    def n(self) -> int:
        return int(self.members.shape[0])

    @property
    def num_blocks(self) -> int:
        return -(-self.n // self.block_size)

    def block_rows(self, block: int) -> tuple[int, int]:
        """[start, stop) storage rows of a block."""
        start = int(block) * self.block_size
        return start, min(start + self.block_size, self.n)


@dataclass(frozen=True)
class EpochPlan:
    """The order of one epoch: `order` int64 [n] (a permutation of range(n)), `windows` (block ids per window, in
    training order) and `window_of_block` int64 [num_blocks]."""

    epoch: int
    order: np.ndarray
    windows: list[np.ndarray]
    window_of_block: np.ndarray


def plan_epoch(layout: BlockLayout, window_blocks: int, seed: int, epoch: int) -> EpochPlan:
    """Deterministic in (seed, epoch, window_blocks); see the module docstring."""
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
