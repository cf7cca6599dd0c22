"""The store's index arrays (issue 20 item 3): int32 layout and orders with the values of the int64 ones, their RAM
counted in the memory budget, the next epoch's plan built on a background thread, stores on disk still open."""

from pathlib import Path

import numpy as np
import pytest
import zarr

from memloss.memstore.errors import StoreError
from memloss.memstore.layout.mixing import BatchMix, epoch_plan, plan_mixed
from memloss.memstore.layout.nextplan import NextPlan
from memloss.memstore.layout.budget import index_bytes, memory_plan
from memloss.memstore.layout.order import BlockLayout, layout_members, plan_epoch, random_members
from memloss.memstore.store import create_store, open_store
from test_memstore_mixed import MIX, base_resident_budget, spec
from test_memstore_zarr import make_spec, write_epoch


def old_members(parts: tuple[int, ...], b: int, seed: int) -> np.ndarray:
    """The membership as memloss built it before int32 indices (int64 permutations of each part)."""
    if len(parts) == 1:
        return np.random.default_rng([seed, 0x5EED]).permutation(parts[0]).astype(np.int64)
    out, first, start = [], 0, 0
    for p, size in enumerate(parts):
        key = [seed, 0x5EED] if p == 0 else [seed, 0x5EED, p]
        stop = start + size if p == len(parts) - 1 else start - (-size // b) * b
        out.append(np.full(stop - start, -1, np.int64))
        out[-1][:size] = first + np.random.default_rng(key).permutation(size)
        first, start = first + size, stop
    return np.concatenate(out)


def old_plan_order(layout: BlockLayout, window_blocks: int, seed: int, epoch: int) -> np.ndarray:
    """plan_epoch's order as memloss computed it with int64 permutations."""
    rng = np.random.default_rng([seed, epoch])
    blocks = rng.permutation(layout.num_blocks)
    parts = []
    for i in range(0, blocks.shape[0], window_blocks):
        rows = np.concatenate([np.arange(*layout.block_rows(b), dtype=np.int64) for b in blocks[i:i + window_blocks]])
        parts.append(layout.members[rng.permutation(rows)])
    return np.concatenate(parts)


@pytest.mark.parametrize("parts, b", [((1000,), 7), ((300, 2000), 13), ((257, 64), 10)])
def test_compact_layout_has_the_old_values(parts: tuple[int, ...], b: int) -> None:
    members = layout_members(parts, b, seed=3)
    assert members.dtype == np.int32
    np.testing.assert_array_equal(members, old_members(parts, b, 3))
    layout = BlockLayout.from_members(members, b, parts)
    assert layout.position.dtype == np.int32
    idx = np.arange(layout.n)
    np.testing.assert_array_equal(layout.members[layout.rows_of(idx)], idx)
    assert layout.rows_of(idx[:5]).dtype == np.int64
    np.testing.assert_array_equal(random_members(50, 9), np.random.default_rng([9, 0x5EED]).permutation(50))


def test_orders_have_the_old_values_compact_or_not() -> None:
    layout = BlockLayout.from_members(layout_members((1000,), 7, 0), 7)
    for epoch, window in [(0, 5), (1, 3), (2, 1000)]:
        full, compact = plan_epoch(layout, window, 11, epoch), plan_epoch(layout, window, 11, epoch, compact=True)
        assert full.order.dtype == np.int64 and compact.order.dtype == np.int32
        np.testing.assert_array_equal(full.order, old_plan_order(layout, window, 11, epoch))
        np.testing.assert_array_equal(compact.order, full.order)
    mixed = BlockLayout.from_members(layout_members((300, 2000), 13, 0), 13, (300, 2000))
    for mix in (BatchMix(64, 44, 30), BatchMix(64, 44, 50, "with-replacement")):
        full, compact = plan_mixed(mixed, 12, 0, 1, mix), plan_mixed(mixed, 12, 0, 1, mix, compact=True)
        assert full.order.dtype == np.int64 and compact.order.dtype == np.int32
        np.testing.assert_array_equal(full.order, compact.order)
        np.testing.assert_array_equal(full.visits, compact.visits)


def test_a_budget_below_the_index_arrays_is_refused_in_one_line(tmp_path: Path) -> None:
    rows, row = 100_000, 3092
    with pytest.raises(StoreError, match="index arrays") as err:
        memory_plan(index_bytes(rows) - 1, 1, (rows,), 170, row)
    assert "\n" not in str(err.value)
    small = memory_plan(index_bytes(rows) + 20 * 170 * row, 1, (rows,), 170, row)[0]
    assert small < memory_plan(20 * 170 * row + 2 * index_bytes(rows), 1, (rows,), 170, row)[0]
    with pytest.raises(StoreError, match="index arrays"):
        create_store(tmp_path / "s.zarr", make_spec(n=2000), block_size=8, memory_budget=index_bytes(2000) // 2)
    assert not (tmp_path / "s.zarr").exists()


def test_next_plan_is_built_ahead_and_is_the_same_plan() -> None:
    layout = BlockLayout.from_members(layout_members((300, 2000), 13, 0), 13, (300, 2000))
    plans = NextPlan(layout, 12, 5)
    try:
        plans.start(4, MIX_LARGE)
        ahead = plans.take(4, MIX_LARGE)  # waits for the thread
        here = epoch_plan(layout, 12, 5, 4, MIX_LARGE, compact=True)
        np.testing.assert_array_equal(ahead.order, here.order)
        np.testing.assert_array_equal(ahead.visits, here.visits)
        plans.start(5, MIX_LARGE)
        other = plans.take(5, BatchMix(64, 44, 31))  # another mix: built here, the one ahead dropped
        np.testing.assert_array_equal(other.order, epoch_plan(layout, 12, 5, 5, BatchMix(64, 44, 31), True).order)
    finally:
        plans.close()


MIX_LARGE = BatchMix(64, 44, 30)


@pytest.mark.parametrize("wait", [False, True])
def test_store_orders_do_not_depend_on_the_plan_thread(tmp_path: Path, wait: bool) -> None:
    """begin_epoch's order is the synchronous plan's, whether or not the plan built ahead had finished."""
    s = spec()
    with create_store(tmp_path / "m.zarr", s, block_size=8, memory_budget=base_resident_budget(s)) as store:
        for epoch in range(3):
            if wait and store._plans._future is not None:
                store._plans._future.result()
            order = store.begin_epoch(epoch, mix=MIX)
            assert order.dtype == np.int64
            ref = epoch_plan(store.layout, store.window_blocks, store.seed, epoch, MIX).order
            np.testing.assert_array_equal(order, ref)
            assert store._plans._key == (epoch + 1, MIX)  # the next epoch's plan is being built
            write_epoch_mixed(store, order)
            store.commit_epoch()


def write_epoch_mixed(store, order: np.ndarray) -> None:  # noqa: ANN001
    """Writes the order's distinct samples once (the memory of the epoch)."""
    idx = np.unique(order)
    n = idx.shape[0]
    store.write(idx, np.zeros((n, *store.spec.fingerprint.shape), np.uint8), np.zeros(n, np.float32),
                np.zeros((n, 2), np.int64), np.zeros(n, bool))


def test_a_store_with_int64_members_on_disk_opens(tmp_path: Path) -> None:
    """Format 4 keeps members int64 on disk (as every store written before): it opens into the int32 layout."""
    url = tmp_path / "s.zarr"
    with create_store(url, make_spec(n=300, k=1), block_size=8) as store:
        write_epoch(store, 0)
        expected = store.layout.members.copy()
    stored = zarr.open_group(str(url), mode="r")
    assert stored["members"].dtype == np.int64 and stored.attrs["memloss"]["format_version"] == 4
    with open_store(url, read_only=True) as reopened:
        assert reopened.layout.members.dtype == np.int32
        np.testing.assert_array_equal(reopened.layout.members, expected)
        np.testing.assert_array_equal(reopened.layout.members, old_members((300,), 8, reopened.seed))
        assert reopened.committed_epochs == [0]
