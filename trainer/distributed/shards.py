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
