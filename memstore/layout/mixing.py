"""The order of a training set of two parts: a base set plus generated images (`DatasetFingerprint.parts`).

Each batch holds `base_per_batch` base samples and `aux_per_batch` generated ones, and an epoch is `batches`
batches (`BatchMix`), as the published `SemiSupervisedSampler` (DM-Improves-AT, core/data/semisup.py) makes them:

- **Base part: consecutive random permutations.** The base samples are cut into batches one permutation after
  another, so each is visited about batches·base_per_batch / N_base times an epoch. Where a batch spans two
  permutations, entries of the next permutation that repeat a sample already in that batch are swapped with later
  entries (no batch holds a sample twice; the published sampler instead fills that batch with more generated rows).
  The base part stays resident in the store, so these visits may come in any order.
- **Generated part: whole blocks, windows, two draws** (`BatchMix.draw`). The generated blocks are shuffled and
  cut into windows of `window_blocks` blocks; the rows a window holds for the epoch are shuffled and the epoch takes
  them window after window, so every generated chunk is read whole and written whole once an epoch.
  - ``without`` (the default): the epoch's batches·aux_per_batch generated rows are as even as possible over the
    set: each row q or q+1 times with q = floor(rows / N_generated). With fewer rows than the set (q = 0) the first
    blocks of the shuffled order are taken and the rest of the set is not visited that epoch (no memory from it);
    with as many or more, every generated row is visited at least once.
  - ``with-replacement``: each of the rows is drawn uniformly from the set, independently, as the published
    `SemiSupervisedSampler` draws them (`torch.randint`); some rows come twice or more, most not at all when the
    epoch is short (the published recipe: 35,084 draws from 1M rows an epoch).
  A row visited several times comes in several batches of one window, never twice in one batch (the published
  sampler allows that; a store read takes distinct samples): a repeat is swapped with a row of another batch of the
  same window. Its last visit's δ is its memory of the epoch (the store's tracker counts the visits).

Everything is a pure function of (seed, epoch, block layout, window size, mix, shards).

**Shards (for data-parallel training).** With `shards` = R > 1 the plan is R interleaved sub-plans: base blocks are
dealt to shards once (block j of the base part to shard j mod R), generated blocks as they are taken (each to the
shard with the fewest rows so far), and global batch i is the concatenation over shards of shard s's
[base_per_batch/R base rows, aux_per_batch/R generated rows]. Every chunk's rows are then visited by one shard only,
so a rank that trains shard s of every global batch is the only writer of its chunks. R = 1 is the plan the trainer
runs today.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from memloss.memstore.errors import StoreError
from memloss.memstore.layout.order import BlockLayout, EpochPlan, block_rows, layout_members, plan_epoch
from memloss.memstore.layout.repeats import aux_repeated

_BASE_STREAM, _AUX_STREAM = 0xBA5E, 0xA0C5
PUBLISHED_AUX_FRACTION = 0.7  # generated share of every batch in the published recipe (DM-Improves-AT unsup_fraction)
AUX_DRAWS = ("without", "with-replacement")


@dataclass(frozen=True)
class BatchMix:
    """How a two-part epoch is batched: `batch_size` B rows per batch, of them `aux_per_batch` generated (int(f·B)
    for a generated fraction f), and `batches` per epoch."""

    batch_size: int
    aux_per_batch: int
    batches: int
    draw: str = "without"  # generated rows: "without" (even over the set) | "with-replacement" (iid, published)

    def __post_init__(self) -> None:
        if self.draw not in AUX_DRAWS:
            raise StoreError(f"unknown generated draw {self.draw!r}; valid: {', '.join(AUX_DRAWS)}")
        if not 1 <= self.aux_per_batch < self.batch_size:
            raise StoreError(f"a batch of {self.batch_size} must hold between 1 and {self.batch_size - 1} generated "
                             f"samples, got {self.aux_per_batch}; choose a generated fraction in (0, 1)")
        if self.batches < 1:
            raise StoreError(f"an epoch must have at least one batch, got {self.batches}")

    @property
    def base_per_batch(self) -> int:
        return self.batch_size - self.aux_per_batch

    @property
    def aux_rows(self) -> int:
        """Generated rows an epoch visits."""
        return self.batches * self.aux_per_batch

    @property
    def length(self) -> int:
        """Rows of the epoch's order."""
        return self.batches * self.batch_size

    def check(self, parts: tuple[int, ...], shards: int = 1) -> None:
        """StoreError (one line) if this mix cannot be served from `parts` = (N_base, N_generated)."""
        if len(parts) != 2:
            raise StoreError("a batch mix needs a store of two parts (base set + generated images); this one has one")
        if self.base_per_batch % shards or self.aux_per_batch % shards:
            raise StoreError(f"{shards} shards need base and generated rows per batch divisible by {shards}")
        if self.base_per_batch > parts[0] // shards:
            raise StoreError(f"a batch takes {self.base_per_batch} base samples but the base set has {parts[0]}; "
                             "raise the generated fraction or lower the batch size")
        if self.aux_per_batch > parts[1]:
            raise StoreError(f"a batch takes {self.aux_per_batch} distinct generated samples but the generated set has "
                             f"{parts[1]}; lower the generated fraction or the batch size, or give more images")
        if shards > 1 and (self.draw != "without" or self.aux_rows > parts[1]):
            raise StoreError(f"{shards} shards need generated rows drawn without replacement, at most once an epoch "
                             f"({self.aux_rows} rows from {parts[1]} here)")

    def describe(self, parts: tuple[int, ...]) -> str:
        """One line: the epoch's batches and how often it visits the base and the generated samples."""
        base, aux = parts
        b_visits = self.batches * self.base_per_batch / base
        a_visits = self.aux_rows / aux
        how = ("drawn uniformly with replacement (the published sampler)" if self.draw == "with-replacement"
               else "without replacement, as even as possible")
        return (f"epoch: {self.batches} batches of {self.batch_size} ({self.aux_per_batch} generated + "
                f"{self.base_per_batch} base); base samples visited {b_visits:.3g} times an epoch on average, "
                f"generated {a_visits:.3g} times, {how}")


def epoch_plan(layout: BlockLayout, window_blocks: int, seed: int, epoch: int, mix: BatchMix | None,
               compact: bool = False) -> EpochPlan:
    """The plan of an epoch of a store's layout: `plan_epoch` for one part (mix must be None), `plan_mixed` for
    two (mix required). `compact`: the order in the layout's index dtype (int32 below 2**31 rows), not int64."""
    if len(layout.parts) == 1:
        if mix is not None:
            raise StoreError("a batch mix needs a store of two parts (base set + generated images); this one has "
                             "one: call begin_epoch(epoch) without mix")
        return plan_epoch(layout, window_blocks, seed, epoch, compact)
    if mix is None:
        raise StoreError("this store has two parts (base set + generated images): its order needs the batches, "
                         "begin_epoch(epoch, mix=BatchMix(batch_size, aux_per_batch, batches))")
    return plan_mixed(layout, window_blocks, seed, epoch, mix, compact=compact)


def check_visited(plan: EpochPlan | None, layout: BlockLayout, idx: np.ndarray) -> None:
    """StoreError if a sample of idx int64 [B] is not in the plan's order (a generated sample the epoch skips)."""
    if plan is not None and plan.visits is not None and idx.size:
        skipped = plan.visits[layout.position[idx]] == 0
        if skipped.any():
            raise StoreError(f"sample {int(idx[np.flatnonzero(skipped)[0]])} is not in epoch {plan.epoch}'s order; "
                             "read the samples of the order begin_epoch returned")


def plan_mixed(layout: BlockLayout, window_blocks: int, seed: int, epoch: int, mix: BatchMix,
               shards: int = 1, compact: bool = False) -> EpochPlan:
    """The plan of one epoch of a two-part layout (module docstring). Windows: window 0 is the base part's blocks,
    windows 1, 2, … the generated part's in training order; `visits` counts each storage row's visits. `compact`:
    the order in the layout's index dtype (int32 below 2**31 rows) instead of int64, the same values."""
    mix.check(layout.parts, shards)
    base = _base_rows(layout, mix, seed, epoch, shards)
    if shards == 1 and (mix.draw != "without" or mix.aux_rows > layout.parts[1]):
        rng = np.random.default_rng([int(seed), int(epoch), _AUX_STREAM])
        stream, aux_windows = aux_repeated(layout, mix.aux_rows, mix.aux_per_batch, mix.draw, window_blocks, rng)
        aux = [stream]
    else:
        aux, aux_windows = _aux_rows(layout, mix, window_blocks, seed, epoch, shards)
    visits = _visits(layout, base, aux)
    # A block of the last windows whose rows all fell after the epoch's cut is not visited: out of the windows.
    starts = np.arange(layout.num_blocks, dtype=np.int64) * layout.block_size
    per_block = np.add.reduceat(visits, starts, dtype=np.int64)
    aux_windows = [w for w in (blocks[per_block[blocks] > 0] for blocks in aux_windows) if w.size]
    window_of_block = np.full(layout.num_blocks, -1, dtype=np.int64)
    base_blocks = layout.part_blocks(0)
    window_of_block[base_blocks] = 0
    for w, blocks in enumerate(aux_windows, start=1):
        window_of_block[blocks] = w
    per_shard = [np.concatenate([b.reshape(mix.batches, -1), a.reshape(mix.batches, -1)], axis=1)
                 for b, a in zip(base, aux)]
    del base, aux
    order = layout.members[np.concatenate(per_shard, axis=1).ravel()]  # batch after batch
    return EpochPlan(epoch=int(epoch), order=order if compact else order.astype(np.int64),
                     windows=[base_blocks, *aux_windows], window_of_block=window_of_block, visits=visits)


def _visits(layout: BlockLayout, base: list[np.ndarray], aux: list[np.ndarray]) -> np.ndarray:
    """uint16 [rows]: visits of each storage row (2 B a row: the plan lives beside the store's windows)."""
    visits = np.zeros(layout.rows, dtype=np.uint16)
    for rows in aux:
        np.add.at(visits, rows, 1)  # generated rows: once or not at all, unless the set is drawn again
    first, stop = layout.part_rows[0]
    base_visits = np.bincount(np.concatenate(base) - first, minlength=stop - first)
    if base_visits.max() > np.iinfo(np.uint16).max:
        raise StoreError(f"an epoch would visit a base sample {base_visits.max()} times (at most 65535); use fewer "
                         "batches per epoch")
    visits[first:stop] = base_visits
    return visits


def _base_rows(layout: BlockLayout, mix: BatchMix, seed: int, epoch: int, shards: int) -> list[np.ndarray]:
    """Per shard: storage rows (`index_dtype`) [batches · base_per_batch / shards] of the base part (its blocks dealt
    once)."""
    rng = np.random.default_rng([int(seed), int(epoch), _BASE_STREAM])
    blocks = layout.part_blocks(0)
    stop = layout.part_rows[0][1]
    out = []
    for s in range(shards):
        rows = block_rows(layout, blocks[s::shards])
        out.append(base_stream(rows[rows < stop], mix.base_per_batch // shards, mix.batches, rng))
    return out


def base_stream(items: np.ndarray, per_batch: int, batches: int, rng: np.random.Generator) -> np.ndarray:
    """[batches · per_batch] (items' dtype): `items` in consecutive random permutations, no batch holding an item
    twice (module docstring). Needs per_batch <= len(items)."""
    n, total = items.shape[0], per_batch * batches
    out = np.empty(total, dtype=items.dtype)
    filled = 0
    while filled < total:
        perm = items.copy()
        rng.shuffle(perm)  # the draws of items[rng.permutation(n)]
        carried = filled % per_batch  # rows of the current batch taken from the previous permutation
        if carried:
            head, tail = per_batch - carried, out[filled - carried : filled]
            clash = np.flatnonzero(np.isin(perm[:head], tail))
            if clash.size:
                later = head + np.flatnonzero(~np.isin(perm[head:], tail))[: clash.size]
                perm[clash], perm[later] = perm[later], perm[clash]
        take = min(n, total - filled)
        out[filled : filled + take] = perm[:take]
        filled += take
    return out


def _aux_rows(layout: BlockLayout, mix: BatchMix, window_blocks: int, seed: int, epoch: int,
              shards: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(per shard: storage rows (`index_dtype`) [aux_rows / shards] of the generated part, the visited generated
    blocks per window in training order)."""
    rng = np.random.default_rng([int(seed), int(epoch), _AUX_STREAM])
    need = mix.aux_rows // shards
    taken, owner = _take_blocks(layout, rng.permutation(layout.part_blocks(1)), need, shards)
    step = max(1, int(window_blocks))
    windows = [taken[i : i + step] for i in range(0, taken.shape[0], step)]
    streams: list[list[np.ndarray]] = [[] for _ in range(shards)]
    for start in range(0, taken.shape[0], step):
        for s in range(shards):
            mine = taken[start : start + step][owner[start : start + step] == s]
            if mine.size:
                rows = block_rows(layout, mine)
                rng.shuffle(rows)  # the draws of rows[rng.permutation(len(rows))]
                streams[s].append(rows)
    return [np.concatenate(parts)[:need] for parts in streams], windows


def _take_blocks(layout: BlockLayout, shuffled: np.ndarray, need: int, shards: int) -> tuple[np.ndarray, np.ndarray]:
    """The first blocks of `shuffled` that give every shard `need` rows, and the shard of each (the one with the
    fewest rows so far)."""
    sizes = np.minimum(layout.block_size, layout.rows - shuffled * layout.block_size)
    if shards == 1:
        count = int(np.searchsorted(np.cumsum(sizes), need)) + 1
        return shuffled[:count], np.zeros(count, dtype=np.int64)
    have = np.zeros(shards, dtype=np.int64)
    owner = np.empty(shuffled.shape[0], dtype=np.int64)
    count = 0
    while (have < need).any():
        s = int(np.argmin(have))
        owner[count] = s
        have[s] += sizes[count]
        count += 1
    return shuffled[:count], owner[:count]


def unstored_layout(parts: tuple[int, ...], seed: int) -> BlockLayout:
    """A layout of blocks of one sample (uniform order) for runs that keep no store but mix two parts."""
    return BlockLayout.from_members(layout_members(parts, 1, seed), 1, parts)
