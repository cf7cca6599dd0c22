"""Two-part stores (a base set plus generated images): the mixed order (memstore/layout/mixing.py) and the memory
semantics under uneven visits, on every backend: slot k of a sample holds its perturbation from its last visit in
epoch n−1−k, a sample that epoch skipped has none; each generated chunk is read and written whole at most once."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from zarr.storage import LocalStore

from memloss.memstore.base import MemStore
from memloss.memstore.entries import row_bytes
from memloss.memstore.errors import StoreError
from memloss.memstore.inspection.summary import summarize
from memloss.memstore.layout.mixing import BatchMix, base_stream, plan_mixed
from memloss.memstore.layout.budget import DECODE_GROUP_BLOCKS, index_bytes, with_read_ahead
from memloss.memstore.layout.order import BlockLayout, layout_members, storage_rows
from memloss.memstore.spec import DatasetFingerprint, StoreSpec, ThreatModel
from memloss.memstore.store import create_memory_store, create_store, open_store

SHAPE = (3, 4, 4)
PARTS = (30, 90)
B = 8  # block size
MIX = BatchMix(batch_size=16, aux_per_batch=10, batches=8)  # 6 base a batch; 80 of the 90 generated an epoch


def spec(k: int = 2, parts: tuple[int, int] = PARTS) -> StoreSpec:
    return StoreSpec(DatasetFingerprint("toy+generated", sum(parts), SHAPE, "0" * 64, parts),
                     ThreatModel("Linf", "8/255"), k)


def layout(parts: tuple[int, int] = PARTS, b: int = B, seed: int = 0) -> BlockLayout:
    return BlockLayout.from_members(layout_members(parts, b, seed), b, parts)


def base_resident_budget(s: StoreSpec, b: int = B, blocks: int = 1) -> int:
    """A budget that keeps the base part resident and windows the generated part `blocks` blocks at a time."""
    rb = row_bytes(s)
    base_rows = storage_rows(s.fingerprint.parts, b) - s.fingerprint.parts[1]
    rows = storage_rows(s.fingerprint.parts, b)
    need = (s.k + 1) * base_rows * rb + blocks * (2 * s.k + 2 + 2 * DECODE_GROUP_BLOCKS * s.k) * b * rb
    return index_bytes(rows) + with_read_ahead(need, s.k, rb, rows)  # + the index arrays and the read-ahead


@pytest.fixture(params=["zarr-resident", "zarr-windowed", "zarr-memory-url", "ram"])
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., MemStore]:
    def make(s: StoreSpec) -> MemStore:
        if request.param == "ram":
            return create_memory_store(s, block_size=B)
        budget = base_resident_budget(s) if request.param == "zarr-windowed" else 1 << 30
        url = f"memory://{uuid.uuid4().hex}" if request.param == "zarr-memory-url" else str(tmp_path / "m.zarr")
        store = create_store(url, s, block_size=B, memory_budget=budget)
        assert store.resident == (request.param != "zarr-windowed")
        return store

    return make


# ---- the order ------------------------------------------------------------------------------------------------
def test_every_batch_has_exactly_the_mix_and_no_repeats() -> None:
    lay = layout()
    plan = plan_mixed(lay, 3, seed=0, epoch=4, mix=MIX)
    batches = plan.order.reshape(MIX.batches, MIX.batch_size)
    assert ((batches < PARTS[0]).sum(axis=1) == MIX.base_per_batch).all()
    assert (batches[:, : MIX.base_per_batch] < PARTS[0]).all()  # base rows first
    assert all(len(set(row.tolist())) == MIX.batch_size for row in batches)
    aux = batches[:, MIX.base_per_batch :].ravel()
    assert len(set(aux.tolist())) == aux.size == MIX.aux_rows  # without replacement
    base_visits = np.bincount(batches[:, : MIX.base_per_batch].ravel(), minlength=PARTS[0])
    assert base_visits.max() - base_visits.min() <= 1  # consecutive permutations: visited evenly
    assert np.array_equal(plan.visits, np.bincount(lay.position[plan.order], minlength=lay.rows))


def test_generated_part_comes_in_whole_blocks_window_after_window() -> None:
    lay = layout()
    plan = plan_mixed(lay, 3, seed=1, epoch=2, mix=MIX)
    aux = plan.order.reshape(MIX.batches, -1)[:, MIX.base_per_batch :].ravel()
    wins = plan.window_of_block[lay.position[aux] // B]
    assert (np.diff(wins) >= 0).all() and wins.min() == 1  # window 0 is the base part
    assert all(len(w) <= 3 for w in plan.windows[1:])
    blocks = np.concatenate(plan.windows[1:])
    assert len(set(blocks.tolist())) == blocks.size
    complete = [b for b in blocks if plan.visits[b * B : (b + 1) * B].min() == 1]
    assert len(blocks) - len(complete) <= 3  # only blocks of the last window can be partly visited
    per_block = np.bincount(np.arange(lay.rows) // B, weights=plan.visits)
    assert (plan.window_of_block[per_block == 0] == -1).all() and (plan.window_of_block[per_block > 0] >= 0).all()


def test_order_is_a_pure_function_of_seed_and_epoch() -> None:
    a, b = (plan_mixed(layout(), 3, 0, 5, MIX).order for _ in range(2))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, plan_mixed(layout(), 3, 0, 6, MIX).order)
    assert not np.array_equal(a, plan_mixed(layout(seed=1), 3, 1, 5, MIX).order)


def test_shards_split_every_batch_by_whole_blocks() -> None:
    lay = layout(parts=(64, 200))
    mix = BatchMix(16, 10, 12)
    plan = plan_mixed(lay, 4, seed=0, epoch=1, mix=mix, shards=2)
    halves = plan.order.reshape(mix.batches, 2, 8)
    owned = [set((lay.position[halves[:, s].ravel()] // B).tolist()) for s in range(2)]
    assert not owned[0] & owned[1]  # no chunk is visited by two shards
    assert ((halves < 64).sum(axis=2) == 3).all()  # each shard: 3 base + 5 generated rows a batch
    assert all(len(set(row.tolist())) == 16 for row in plan.order.reshape(mix.batches, 16))


@pytest.mark.parametrize("seed", range(20))
def test_base_stream_never_repeats_a_sample_within_a_batch(seed: int) -> None:
    items = np.arange(100, 117)  # 17 items, 5 a batch: batches straddle the permutations
    out = base_stream(items, 5, 40, np.random.default_rng(seed)).reshape(40, 5)
    assert all(len(set(row.tolist())) == 5 for row in out)
    assert np.array_equal(np.sort(out.ravel()[:17]), items)


# Epochs that visit some generated rows more than once (issue 21: a small generated set is never refused).
OVER = BatchMix(16, 10, 12)  # 120 generated rows from 90: each visited once or twice
DRAWN = BatchMix(16, 10, 8, "with-replacement")  # 80 uniform draws from 90: the published sampler
REPEATING = [OVER, DRAWN]


def check_repeating_plan(lay: BlockLayout, plan, mix: BatchMix) -> np.ndarray:  # noqa: ANN001
    """The plan's invariants; returns the visits of the generated rows."""
    batches = plan.order.reshape(mix.batches, mix.batch_size)
    assert all(len(set(row.tolist())) == mix.batch_size for row in batches)  # no repeat within a batch
    assert ((batches[:, : mix.base_per_batch] < PARTS[0]).all()
            and (batches[:, mix.base_per_batch :] >= PARTS[0]).all())
    assert np.array_equal(plan.visits, np.bincount(lay.position[plan.order], minlength=lay.rows))
    aux = batches[:, mix.base_per_batch :].ravel()
    wins = plan.window_of_block[lay.position[aux] // B]
    assert (np.diff(wins) >= 0).all() and wins.min() == 1  # window after window, each block in one window
    blocks = np.concatenate(plan.windows[1:])
    assert len(set(blocks.tolist())) == blocks.size
    return np.bincount(aux - PARTS[0], minlength=PARTS[1])


@pytest.mark.parametrize("epoch", range(6))
def test_more_generated_rows_than_the_set_visit_every_row_once_or_twice(epoch: int) -> None:
    lay = layout()
    visits = check_repeating_plan(lay, plan_mixed(lay, 3, 0, epoch, OVER), OVER)
    assert visits.min() == 1 and visits.max() == 2 and visits.sum() == OVER.aux_rows


@pytest.mark.parametrize("epoch", range(6))
def test_with_replacement_draws_are_uniform_and_distinct_within_batches(epoch: int) -> None:
    lay = layout()
    visits = check_repeating_plan(lay, plan_mixed(lay, 3, 0, epoch, DRAWN), DRAWN)
    assert visits.sum() == DRAWN.aux_rows
    assert visits.max() >= 2 and (visits == 0).any()  # 80 draws from 90: repeats and misses (seeded)


def test_with_replacement_visits_every_row_equally_often_over_many_epochs() -> None:
    lay, mix = layout(), BatchMix(16, 10, 8, "with-replacement")
    total = sum(check_repeating_plan(lay, plan_mixed(lay, 90, 0, e, mix), mix) for e in range(150))
    expected = 150 * mix.aux_rows / PARTS[1]  # 133.3 visits a row
    assert abs(total.mean() - expected) < 1e-9 and total.std() < 4 * np.sqrt(expected)  # binomial spread


def test_impossible_mixes_are_one_line_errors() -> None:
    with pytest.raises(StoreError, match="generated set has 90"):
        plan_mixed(layout(), 3, 0, 0, BatchMix(128, 100, 2))  # 100 distinct generated a batch
    with pytest.raises(StoreError, match="shards need generated rows drawn without replacement"):
        plan_mixed(layout(), 3, 0, 0, OVER, shards=2)
    with pytest.raises(StoreError, match="unknown generated draw"):
        BatchMix(16, 10, 8, "bootstrap")
    with pytest.raises(StoreError, match="base set has 30"):
        plan_mixed(layout(parts=(30, 900)), 3, 0, 0, BatchMix(64, 10, 2))
    with pytest.raises(StoreError, match="between 1 and 15"):
        BatchMix(16, 16, 2)


# ---- the store --------------------------------------------------------------------------------------------------
def run_epochs(store: MemStore, epochs: int, k: int, mix: BatchMix = MIX) -> list[dict[int, int]]:
    """Trains `epochs` epochs of marked writes; checks every read against a hand model of the last visits."""
    last_visit: list[dict[int, int]] = []
    for epoch in range(epochs):
        order = store.begin_epoch(epoch, mix=mix)
        seen: dict[int, int] = {}
        for i in range(mix.batches):
            idx = order[i * mix.batch_size : (i + 1) * mix.batch_size]
            mb = store.read(idx)
            for j, sample in enumerate(idx.tolist()):
                for age in range(k):
                    src = epoch - 1 - age
                    want = last_visit[src].get(sample) if src >= 0 else None
                    assert bool(mb.valid[age, j]) == (want is not None), (epoch, sample, age)
                    if want is not None:
                        assert int(mb.offset[age, j, 1]) == want  # the last visit's write
            stamp = epoch * 100 + i  # (epoch, batch) of this visit, in the crop offset
            n = idx.shape[0]
            store.write(idx, np.full((n, *SHAPE), 9, np.uint8), np.full(n, 0.01, np.float32),
                        np.stack([np.full(n, epoch), np.full(n, stamp)], 1), np.zeros(n, bool))
            seen.update({s: stamp for s in idx.tolist()})
        store.commit_epoch()
        last_visit.append(seen)
    return last_visit


@pytest.mark.parametrize("k", [1, 2])
def test_memory_is_the_last_visit_and_skipped_samples_have_none(factory, k: int) -> None:  # noqa: ANN001
    with factory(spec(k)) as store:
        visits = run_epochs(store, 5, k)
    assert all(len([s for s in v if s >= PARTS[0]]) == MIX.aux_rows for v in visits)  # 10 generated skipped


@pytest.mark.parametrize("backend", ["zarr-resident", "zarr-windowed", "ram"])
@pytest.mark.parametrize("mix", REPEATING, ids=["over-one-pass", "with-replacement"])
def test_a_row_visited_twice_keeps_its_last_visit(tmp_path: Path, backend: str, mix: BatchMix) -> None:
    """Rows visited more than once an epoch: the store's tracker waits for every visit; the last write is the
    memory (run_epochs checks each read against the hand model of the last visits). Windows of 2 blocks (16 rows):
    a window must hold more rows than a batch takes from it for a repeat to move to another batch."""
    s = spec(2)
    if backend == "ram":
        store = create_memory_store(s, block_size=B)
    else:
        budget = base_resident_budget(s, blocks=2) if backend == "zarr-windowed" else 1 << 30
        store = create_store(str(tmp_path / "m.zarr"), s, block_size=B, memory_budget=budget)
        assert store.resident == (backend == "zarr-resident") and store.window_blocks >= 2
    with store:
        visits = run_epochs(store, 4, 2, mix)
    generated = [len([s for s in v if s >= PARTS[0]]) for v in visits]
    assert all(g == PARTS[1] for g in generated) if mix is OVER else all(g < PARTS[1] for g in generated)


def test_two_part_store_reopens_with_the_same_order_and_memory(tmp_path: Path) -> None:
    s = spec(2)
    url = str(tmp_path / "m.zarr")
    with create_store(url, s, block_size=B, memory_budget=base_resident_budget(s)) as store:
        visits = run_epochs(store, 3, 2)
        order = store.begin_epoch(3, mix=MIX)
        expected = store.read(order[:16])
    with open_store(url, expect=s) as store:
        assert not store.resident and store.resident_blocks == 4  # 30 base rows → 4 blocks of 8
        assert np.array_equal(store.begin_epoch(3, mix=MIX), order)
        got = store.read(order[:16])
    assert np.array_equal(got.valid, expected.valid) and np.array_equal(got.offset, expected.offset)
    assert visits[2]


def test_each_generated_chunk_is_read_and_written_whole_at_most_once_an_epoch(tmp_path: Path) -> None:
    counting = CountingStore(tmp_path / "m.zarr")
    s = spec(1)
    lay = layout()
    first_aux_block = int(lay.part_blocks(1)[0])
    with create_store(counting, s, block_size=B, memory_budget=base_resident_budget(s)) as store:
        for epoch in range(4):
            counting.sets.clear()
            run_epochs_from(store, epoch)
            chunks = {key: n for key, n in counting.sets.items() if key.startswith("codes/c/")}
            assert max(chunks.values()) == 1
            aux_written = {int(key.split("/")[3]) for key in chunks if int(key.split("/")[3]) >= first_aux_block}
            plan = plan_mixed(lay, store.window_blocks, 0, epoch, MIX)
            assert aux_written == {int(b) for b in np.concatenate(plan.windows[1:])}  # visited blocks only
        reads = Counter(key for key in counting.gets if key.startswith("codes/c/"))
    assert max(counting.gets[key] for key in reads) <= 2  # each slot's chunk is read by 2 of the 4 epochs at most


class CountingStore(LocalStore):
    """LocalStore counting sets (and deletes) and whole-object gets per key (the manifests' 4-byte checksum reads,
    ranged gets, are counted apart)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.sets: Counter[str] = Counter()
        self.gets: Counter[str] = Counter()
        self.ranged_gets: Counter[str] = Counter()

    async def set(self, key, value) -> None:  # noqa: ANN001
        self.sets[key] += 1
        await super().set(key, value)

    async def get(self, key, prototype, byte_range=None):  # noqa: ANN001, ANN201
        (self.gets if byte_range is None else self.ranged_gets)[key] += 1
        return await super().get(key, prototype, byte_range)


def run_epochs_from(store: MemStore, epoch: int) -> None:
    order = store.begin_epoch(epoch, mix=MIX)
    for i in range(MIX.batches):
        idx = order[i * MIX.batch_size : (i + 1) * MIX.batch_size]
        store.read(idx)
        n = idx.shape[0]
        store.write(idx, np.full((n, *SHAPE), 9, np.uint8), np.full(n, 0.01, np.float32),
                    np.zeros((n, 2), np.int64), np.zeros(n, bool))
    store.commit_epoch()


def test_wrong_use_of_the_mix_is_refused(factory) -> None:  # noqa: ANN001
    with factory(spec(1)) as store:
        with pytest.raises(StoreError, match="two parts"):
            store.begin_epoch(0)
        order = store.begin_epoch(0, mix=MIX)
        skipped = sorted(set(range(PARTS[0], sum(PARTS))) - set(order.tolist()))
        with pytest.raises(StoreError, match="not in epoch 0's order"):
            store.read(np.array(skipped[:1]))
        idx = order[:16]
        args = (np.zeros((16, *SHAPE), np.uint8), np.zeros(16, np.float32), np.zeros((16, 2), np.int64),
                np.zeros(16, bool))
        store.write(idx, *args)
    one_part = StoreSpec(DatasetFingerprint("toy", 40, SHAPE, "0" * 64), ThreatModel("Linf", "8/255"), 1)
    with create_memory_store(one_part) as store, pytest.raises(StoreError, match="two parts"):
        store.begin_epoch(0, mix=MIX)


def test_inspect_counts_rows_holding_memory_per_part(tmp_path: Path) -> None:
    url = str(tmp_path / "m.zarr")
    with create_store(url, spec(1), block_size=B) as store:
        visits = run_epochs(store, 2, 1)
    summary = summarize(url)
    assert summary["parts"] == list(PARTS)
    by_slot = {s["slot"]: s for s in summary["per_slot"]}
    for epoch in (0, 1):
        aux = len([s for s in visits[epoch] if s >= PARTS[0]])
        assert by_slot[epoch % 2]["valid_by_part"] == [PARTS[0], aux] == [30, 80]


@pytest.mark.parametrize("version", [1, 2])
def test_format_1_and_2_stores_open_as_one_part(tmp_path: Path, version: int) -> None:
    url = tmp_path / "old.zarr"
    one = StoreSpec(DatasetFingerprint("toy", 40, SHAPE, "0" * 64), ThreatModel("Linf", "8/255"), 1)
    with create_store(str(url), one, block_size=8) as store:
        order = store.begin_epoch(0)
        store.write(order, np.full((40, *SHAPE), 7, np.uint8), np.zeros(40, np.float32), np.zeros((40, 2), np.int64),
                    np.zeros(40, bool))
        store.commit_epoch()
    meta_file = url / "zarr.json"
    meta = json.loads(meta_file.read_text())
    attrs = meta["attributes"]["memloss"]
    attrs["format_version"] = version
    del attrs["dataset"]["parts"]
    if version == 1:
        del attrs["manifests"]
    meta_file.write_text(json.dumps(meta))
    with open_store(str(url), expect=one) as store:
        assert store.layout.part_rows == ((0, 40),) and store.layout.members.shape == (40,)
        store.begin_epoch(1)
        assert bool(store.read(order[:5]).valid.all())
    attrs["format_version"] = 5
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="v5 is not memloss-memstore v1–v4"):
        open_store(str(url))
