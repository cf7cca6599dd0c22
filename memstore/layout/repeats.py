"""Generated rows visited more than once an epoch (memstore/layout/mixing.py's module docstring): the rows of
each window repeated by their visit counts and shuffled, then no batch left holding a row twice.

A pure function of the layout, the draws and the generator it is handed (the epoch's generated stream).
"""

from __future__ import annotations

import numpy as np

from memloss.memstore.errors import StoreError
from memloss.memstore.layout.order import BlockLayout, block_rows


def aux_repeated(layout: BlockLayout, aux_rows: int, per_batch: int, draw: str, window_blocks: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """One shard's `aux_rows` generated rows (`per_batch` a batch) when some are visited more than once (module
    docstring): (storage rows (`index_dtype`) [aux_rows] in training order, the visited generated blocks per window
    in training order), drawn from `rng` (the epoch's generated stream). O(N_generated)."""
    blocks = rng.permutation(layout.part_blocks(1))
    rows = block_rows(layout, blocks)
    rows = rows[layout.members[rows] >= 0]  # the set's rows, block after block in the shuffled block order
    counts = _aux_counts(rows.shape[0], aux_rows, draw, rng)
    block_of = rows // layout.block_size
    visited = np.zeros(layout.num_blocks, dtype=bool)
    visited[block_of[counts > 0]] = True
    blocks = blocks[visited[blocks]]
    keep = visited[block_of]  # rows of visited blocks, still grouped by block in the shuffled order
    rows, counts, block_of = rows[keep], counts[keep], block_of[keep]
    step = max(1, int(window_blocks))
    windows = [blocks[i : i + step] for i in range(0, blocks.shape[0], step)]
    rank = np.empty(layout.num_blocks, dtype=np.int64)
    rank[blocks] = np.arange(blocks.shape[0])
    edges = np.searchsorted(rank[block_of] // step, np.arange(len(windows) + 1))  # window w: rows[edges[w]:edges[w+1]]
    segments, spares = [], []
    for w in range(len(windows)):
        mine = slice(int(edges[w]), int(edges[w + 1]))
        occurrences = np.repeat(rows[mine], counts[mine])
        rng.shuffle(occurrences)  # the draws of occurrences[rng.permutation(len(occurrences))]
        segments.append(occurrences)
        spares.append(rows[mine])
    bounds = np.cumsum([0, *(seg.shape[0] for seg in segments)])
    stream = np.concatenate(segments)
    _distinct_batches(stream, per_batch, bounds, spares, rng)
    return stream, windows


def _aux_counts(n: int, aux_rows: int, draw: str, rng: np.random.Generator) -> np.ndarray:
    """int32 [n]: visits of each generated row (in the shuffled block order) this epoch."""
    if draw == "with-replacement":
        return np.bincount(rng.integers(0, n, size=aux_rows), minlength=n).astype(np.int32)
    q, r = divmod(aux_rows, n)
    counts = np.full(n, q, dtype=np.int32)
    counts[:r] += 1  # the extra rows: the first ones of the shuffled block order
    return counts


def _distinct_batches(stream: np.ndarray, per_batch: int, bounds: np.ndarray, spares: list[np.ndarray],
                      rng: np.random.Generator) -> None:
    """In place: no batch (per_batch consecutive entries) holds a row twice. A repeat is swapped with an entry of
    another batch in the same window segment ([bounds[w], bounds[w+1]) of the stream), so windows keep their rows
    and every row its number of visits; where no swap exists (a window of few rows spread over few batches) the
    repeat is replaced by a row of the same window's blocks (`spares[w]`) the batch lacks."""
    batches = stream.reshape(-1, per_batch)
    ordered = np.sort(batches, axis=1)
    for b in np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1)):
        lo = b * per_batch
        seen: set[int] = set()
        for p in range(lo, lo + per_batch):
            if int(stream[p]) in seen:
                _swap_out(stream, p, per_batch, bounds, spares, rng)
            seen.add(int(stream[p]))


def _swap_out(stream: np.ndarray, p: int, per_batch: int, bounds: np.ndarray, spares: list[np.ndarray],
              rng: np.random.Generator) -> None:
    """Moves the repeat stream[p] out of its batch (see `_distinct_batches`); StoreError if the window has no row
    the batch lacks."""
    b = p // per_batch
    w = int(np.searchsorted(bounds, p, side="right")) - 1
    lo, hi = int(bounds[w]), int(bounds[w + 1])
    mine = set(stream[b * per_batch : (b + 1) * per_batch].tolist())
    row = int(stream[p])
    for q in range(lo, hi):
        if q // per_batch == b or int(stream[q]) in mine:
            continue
        c = q // per_batch
        if row not in set(stream[c * per_batch : (c + 1) * per_batch].tolist()):
            stream[p], stream[q] = stream[q], stream[p]
            return
    spare = np.setdiff1d(spares[w], np.fromiter(mine, dtype=np.int64))
    if spare.size == 0:
        raise StoreError(f"a store window holds too few generated rows for a batch of {per_batch} distinct ones; "
                         "raise --memory-budget (larger windows) or lower --aux-fraction")
    stream[p] = spare[rng.integers(spare.size)]
