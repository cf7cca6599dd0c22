"""Each rank's share of every global batch, and of the evaluation points.

`--batch-size` B is the global batch. Global batch g of an epoch is the slice [g·B, (g+1)·B) of the epoch's order
(the store's, or the seeded uniform one); rank r takes the r-th of W contiguous parts of it (B/W samples each;
the last, partial batch is split as evenly as possible). When the last batch holds fewer than W samples, no rank
could take a part of it, so it is left out of that epoch (the order changes every epoch, so it is not always the
same samples).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from memloss.errors import ConfigError


def part_sizes(total: int, parts: int) -> list[int]:
    """Sizes of `parts` contiguous parts of `total` items, as even as possible (the first ones larger)."""
    base, extra = divmod(total, parts)
    return [base + (r < extra) for r in range(parts)]


def shard_range(total: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous part of `total` items (evaluation points)."""
    sizes = part_sizes(total, world)
    start = sum(sizes[:rank])
    return start, start + sizes[rank]


@dataclass(frozen=True)
class Shards:
    """The split of an epoch of n samples into global batches of `batch` and those into `world` parts."""

    n: int
    batch: int
    world: int
    rank: int

    def __post_init__(self) -> None:
        if self.batch % self.world:
            raise ConfigError(f"--batch-size {self.batch} is the global batch and must be divisible by the "
                              f"{self.world} processes; use a multiple of {self.world}")

    @property
    def local_batch(self) -> int:
        """Samples per rank of a full global batch."""
        return self.batch // self.world

    @property
    def kept(self) -> int:
        """Samples of the epoch that are trained (all but a last batch smaller than the world)."""
        tail = self.n % self.batch
        return self.n - tail if 0 < tail < self.world else self.n

    @property
    def steps(self) -> int:
        """Optimizer steps per epoch (global batches)."""
        return -(-self.kept // self.batch)

    def batch_parts(self, step: int) -> list[int]:
        """Samples of each rank in global batch `step`."""
        return part_sizes(min(self.batch, self.kept - step * self.batch), self.world)

    @property
    def local_size(self) -> int:
        """Samples this rank trains per epoch."""
        return sum(self.batch_parts(g)[self.rank] for g in range(self.steps))

    def local(self, order: np.ndarray) -> np.ndarray:
        """This rank's samples of an epoch, in its loader's order: its part of each global batch in turn.
        order: int64 [n], the epoch's global order."""
        full = self.kept // self.batch
        b = self.local_batch
        head = order[: full * self.batch].reshape(full, self.batch)[:, self.rank * b:(self.rank + 1) * b].ravel()
        if full == self.steps:
            return np.ascontiguousarray(head, dtype=np.int64)
        start, stop = shard_range(self.kept - full * self.batch, self.rank, self.world)
        tail = order[full * self.batch + start: full * self.batch + stop]
        return np.concatenate([head, tail]).astype(np.int64, copy=False)

    def global_batch(self, order: np.ndarray, step: int) -> np.ndarray:
        """Dataset indices of global batch `step` (the ranks' parts one after the other). order: int64 [n]."""
        start = step * self.batch
        return order[start: start + sum(self.batch_parts(step))]


@dataclass(frozen=True)
class MixedShards:
    """The split of a two-part epoch (trainer/data/mixed.py) over `world` ranks. The epoch's order is the one a single
    process trains: `batches` global batches of `base` base rows then `aux` generated rows. Rank r takes the r-th
    part of each batch's base rows and the r-th part of its generated rows (`part_sizes`, as even as possible), so
    every rank trains the same mix as the global batch. Global batch g of the ranks (their parts one after the
    other, the order the writer gathers them in) is a permutation of the single process's batch g: the same samples."""

    base: int
    aux: int
    batches: int
    world: int
    rank: int

    def __post_init__(self) -> None:
        if min(self.base, self.aux) < self.world:
            raise ConfigError(f"a batch of {self.base} base + {self.aux} generated samples cannot give each of the "
                              f"{self.world} processes both; raise --batch-size or use fewer processes")

    @property
    def batch(self) -> int:
        return self.base + self.aux

    @property
    def steps(self) -> int:
        """Optimizer steps per epoch (global batches): every batch of a two-part epoch is full."""
        return self.batches

    def _columns(self, rank: int) -> np.ndarray:
        """Positions int64 in a global batch of the single-process order that rank `rank` trains: its base part,
        then its generated part."""
        b0, b1 = shard_range(self.base, rank, self.world)
        a0, a1 = shard_range(self.aux, rank, self.world)
        return np.concatenate([np.arange(b0, b1), self.base + np.arange(a0, a1)]).astype(np.int64)

    @property
    def base_rows(self) -> int:
        """Base rows of this rank's local batch (its first rows)."""
        return part_sizes(self.base, self.world)[self.rank]

    @property
    def aux_rows(self) -> int:
        return part_sizes(self.aux, self.world)[self.rank]

    @property
    def local_batch(self) -> int:
        """Rows of the largest local batch (rank 0's)."""
        return part_sizes(self.base, self.world)[0] + part_sizes(self.aux, self.world)[0]

    def batch_parts(self, step: int) -> list[int]:
        """Samples of each rank in global batch `step` (the same in every batch)."""
        return [b + a for b, a in zip(part_sizes(self.base, self.world), part_sizes(self.aux, self.world))]

    @property
    def local_size(self) -> int:
        return self.batches * (self.base_rows + self.aux_rows)

    def local(self, order: np.ndarray) -> np.ndarray:
        """This rank's samples of an epoch, batch after batch. order: int64 [batches · batch], the global order."""
        return np.ascontiguousarray(order.reshape(self.batches, self.batch)[:, self._columns(self.rank)].ravel())

    def global_batch(self, order: np.ndarray, step: int) -> np.ndarray:
        """Dataset indices of global batch `step` as the ranks train it (their parts one after the other)."""
        columns = np.concatenate([self._columns(r) for r in range(self.world)])
        return order[step * self.batch + columns]
