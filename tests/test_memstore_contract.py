"""Contract tests run against every backend: Zarr on a local path, Zarr on a memory:// URL, Zarr on S3 (a moto server
in the test process, see tests/s3_server.py), and in-RAM."""

import itertools
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from memloss.memstore.base import MemStore
from memloss.memstore.entries import row_bytes
from memloss.memstore.location.options import store_location
from memloss.memstore.errors import StoreError
from memloss.memstore.layout.budget import DECODE_GROUP_BLOCKS, index_bytes, with_read_ahead
from memloss.memstore.layout.order import plan_epoch
from memloss.memstore.quant import dequantize, quantize
from memloss.memstore.spec import DatasetFingerprint, StoreSpec, ThreatModel
from memloss.memstore.store import create_memory_store, create_store

SHAPE = (3, 4, 4)
EPS = 8 / 255
Factory = Callable[..., MemStore]


def make_spec(n: int = 40, k: int = 2, shape: tuple[int, int, int] = SHAPE) -> StoreSpec:
    return StoreSpec(DatasetFingerprint("toy", n, shape, "0" * 64), ThreatModel("Linf", "8/255"), k)


def one_block_window_budget(spec: StoreSpec, block_size: int) -> int:
    """A budget whose windows hold one block: the windowed path (not resident) unless N <= 2 blocks."""
    block = block_size * row_bytes(spec)
    need = 2 * DECODE_GROUP_BLOCKS * spec.k * block + (2 * spec.k + 2) * block
    # plus the index arrays and the read-ahead's share
    return index_bytes(spec.fingerprint.n) + with_read_ahead(need, spec.k, row_bytes(spec), spec.fingerprint.n)


@pytest.fixture(params=["zarr-local", "zarr-memory-url", "zarr-s3", "zarr-windowed", "ram"])
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """Zarr with a large budget (resident: every slot stays in RAM) on a path, a memory:// URL and S3, Zarr with
    one-block windows, and in-RAM."""

    def make(spec: StoreSpec, block_size: int = 8, memory_budget: int = 1 << 30, seed: int = 0) -> MemStore:
        if request.param == "ram":
            return create_memory_store(spec, seed=seed, block_size=block_size)
        if request.param == "zarr-windowed":
            memory_budget = min(memory_budget, one_block_window_budget(spec, block_size))
        url: object = str(tmp_path / "mem.zarr")
        if request.param == "zarr-memory-url":
            url = f"memory://{uuid.uuid4().hex}"
        if request.param == "zarr-s3":
            s3 = request.getfixturevalue("s3")
            url = store_location(s3.url(), s3.options)
        return create_store(url, spec, memory_budget=memory_budget, seed=seed, block_size=block_size)

    return make


def marked_write(store: MemStore, idx: np.ndarray, epoch: int) -> None:
    """Rows whose offset encodes (epoch, sample) and whose codes encode the sample."""
    b = idx.shape[0]
    codes = np.broadcast_to(((idx * 7 + epoch) % 255 + 1).astype(np.uint8)[:, None, None, None], (b, *SHAPE))
    offset = np.stack([np.full(b, epoch), idx], axis=1).astype(np.int64)
    store.write(idx, codes.copy(), np.full(b, EPS, np.float32), offset, idx % 2 == 1)


def run_epoch(store: MemStore, epoch: int, batch: int = 7, check: Callable | None = None) -> np.ndarray:
    order = store.begin_epoch(epoch)
    for start in range(0, order.shape[0], batch):
        idx = order[start : start + batch]
        if check is not None:
            check(store.read(idx), idx)
        marked_write(store, idx, epoch)
    store.commit_epoch()
    return order


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_ring_rotation_and_slot_semantics(factory: Factory, k: int) -> None:
    with factory(make_spec(n=24, k=k), block_size=5) as store:
        for epoch in range(2 * k + 2):

            def check(mb, idx, epoch=epoch):  # noqa: ANN001, ANN202
                assert mb.codes.shape == (k, idx.shape[0], *SHAPE) and mb.valid.shape == (k, idx.shape[0])
                for slot in range(k):
                    src = epoch - 1 - slot
                    if src < 0:
                        assert not mb.valid[slot].any() and bool((mb.codes[slot] == 128).all())
                        continue
                    assert mb.valid[slot].all()
                    assert mb.offset[slot, :, 0].tolist() == [src] * idx.shape[0]
                    assert mb.offset[slot, :, 1].tolist() == idx.tolist()
                    assert mb.codes[slot, :, 0, 0, 0].tolist() == ((idx * 7 + src) % 255 + 1).tolist()
                    assert mb.flip[slot].tolist() == (idx % 2 == 1).tolist()

            run_epoch(store, epoch, check=check)
            assert store.last_committed_epoch == epoch
            assert store.committed_epochs == list(range(max(0, epoch - k), epoch + 1))
            assert store.slot_epochs[epoch % (k + 1)] == epoch


def test_commit_without_waiting_is_memory_at_once_and_lands(factory: Factory) -> None:
    """commit_epoch(wait=False): the next epoch begins before the commit landed and reads it exactly."""
    k = 2
    with factory(make_spec(n=30, k=k), block_size=4) as store:
        landed = []
        for epoch in range(4):

            def check(mb, idx, epoch=epoch):  # noqa: ANN001, ANN202
                for slot in range(k):
                    src = epoch - 1 - slot
                    assert bool(mb.valid[slot].all()) == (src >= 0)
                    if src >= 0:
                        assert mb.offset[slot, :, 0].tolist() == [src] * idx.shape[0]
                        assert mb.codes[slot, :, 0, 0, 0].tolist() == ((idx * 7 + src) % 255 + 1).tolist()

            order = store.begin_epoch(epoch)
            for start in range(0, order.shape[0], 7):
                check(store.read(order[start:start + 7]), order[start:start + 7])
                marked_write(store, order[start:start + 7], epoch)
            landed.append(store.commit_epoch(wait=False))
            assert store.last_committed_epoch == epoch
        for fut in landed:
            assert fut.result(timeout=30) is None
        assert store.committed_epochs == [1, 2, 3]


def test_batch_dtypes(factory: Factory) -> None:
    with factory(make_spec()) as store:
        run_epoch(store, 0)
        store.begin_epoch(1)
        mb = store.read(np.arange(5))
        assert (mb.codes.dtype, mb.scale.dtype, mb.offset.dtype, mb.flip.dtype, mb.valid.dtype) == (
            torch.uint8, torch.float32, torch.int16, torch.bool, torch.bool)
        assert mb.offset.shape == (2, 5, 2)


def test_quantized_round_trip_through_store(factory: Factory) -> None:
    g = torch.Generator().manual_seed(1)
    with factory(make_spec(n=30)) as store:
        order = store.begin_epoch(0)
        delta = (torch.rand(30, *SHAPE, generator=g) * 2 - 1) * EPS
        codes, scale = quantize(delta, eps=EPS)
        for start in range(0, 30, 8):
            idx = order[start : start + 8]
            store.write(torch.from_numpy(idx), codes[idx], scale[idx], torch.zeros(len(idx), 2, dtype=torch.int64),
                        torch.zeros(len(idx), dtype=torch.bool))
        store.commit_epoch()
        store.begin_epoch(1)
        idx = np.arange(30)
        mb = store.read(idx)
        back = dequantize(mb.codes[0], mb.scale[0])
        assert bool(((back - delta).abs() <= EPS / 254 * (1 + 1e-5)).all())
        assert bool(mb.valid[0].all()) and not bool(mb.valid[1].any())


def test_order_is_a_permutation_and_deterministic(factory: Factory) -> None:
    with factory(make_spec(n=50), block_size=6) as store:
        orders = [store.begin_epoch(e) for e in (0, 1, 0)]
        for order in orders:
            assert order.dtype == np.int64 and np.array_equal(np.sort(order), np.arange(50))
        assert np.array_equal(orders[0], orders[2]) and not np.array_equal(orders[0], orders[1])
        assert np.array_equal(orders[0], plan_epoch(store.layout, store.window_blocks, store.seed, 0).order)


def test_uncommitted_epoch_is_never_memory(factory: Factory) -> None:
    with factory(make_spec(n=20, k=2)) as store:
        run_epoch(store, 0)
        order = store.begin_epoch(1)
        marked_write(store, order, 1)  # epoch 1 written but never committed
        store.begin_epoch(2)
        mb = store.read(np.arange(20))
        assert not mb.valid[0].any() and mb.valid[1].all()
        assert store.committed_epochs == [0]


def test_samples_not_written_are_invalid_after_commit(factory: Factory) -> None:
    with factory(make_spec(n=20, k=1)) as store:
        run_epoch(store, 0)
        order = store.begin_epoch(1)
        marked_write(store, order[:15], 1)
        store.commit_epoch()
        store.begin_epoch(2)
        mb = store.read(order)
        assert mb.valid[0, :15].all() and not mb.valid[0, 15:].any()


def test_restarting_an_epoch_drops_later_epochs(factory: Factory) -> None:
    with factory(make_spec(n=16, k=3)) as store:
        for e in range(4):
            run_epoch(store, e)
        store.begin_epoch(2)  # a run resumed from a checkpoint of epoch 1
        assert store.committed_epochs == [0, 1]
        mb = store.read(np.arange(16))
        assert mb.valid[0].all() and mb.valid[1].all() and not mb.valid[2].any()


def test_straddling_batch_is_served(factory: Factory) -> None:
    spec = make_spec(n=64, k=1)
    row = row_bytes(spec)
    # zarr: transient 2·4·K blocks + 4 blocks per window block = 6 blocks per window (24 rows), below the 2 · 64 rows
    # + transient that would keep every slot resident (plus the index arrays and the read-ahead's share)
    budget = index_bytes(64) + with_read_ahead(4 * 4 * row * (2 + 6), 1, row, 64)
    with factory(spec, block_size=4, memory_budget=budget) as store:
        assert not getattr(store, "resident", False)
        run_epoch(store, 0)
        order = store.begin_epoch(1)
        for start in range(3, 64, 5):  # batches cross window borders at 24, 48
            idx = order[start : start + 5]
            mb = store.read(idx)
            assert mb.valid[0].all() and mb.offset[0, :, 1].tolist() == idx.tolist()


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("codes", np.zeros((3, *SHAPE), np.float32), "codes must be uint8"),
        ("codes", np.zeros((3, 3, 4, 5), np.uint8), "codes must be uint8"),
        ("scale", np.array([0.1, np.nan, 0.1], np.float32), "NaN"),
        ("scale", np.array([0.1, np.inf, 0.1], np.float32), "NaN"),
        ("scale", np.zeros(2, np.float32), "scale must be"),
        ("offset", np.zeros((3, 3), np.int64), "offset must be"),
        ("flip", np.zeros(4, bool), "flip must be"),
    ],
)
def test_bad_writes_are_rejected(factory: Factory, field: str, value: np.ndarray, match: str) -> None:
    with factory(make_spec()) as store:
        store.begin_epoch(0)
        args = {"codes": np.full((3, *SHAPE), 128, np.uint8), "scale": np.zeros(3, np.float32),
                "offset": np.zeros((3, 2), np.int64), "flip": np.zeros(3, bool)}
        args[field] = value
        with pytest.raises(StoreError, match=match):
            store.write(np.arange(3), **args)


def test_bad_indices_and_call_order(factory: Factory) -> None:
    with factory(make_spec(n=10)) as store:
        with pytest.raises(StoreError, match="begin_epoch"):
            store.read(np.arange(3))
        store.begin_epoch(0)
        with pytest.raises(StoreError, match="out of range"):
            store.read(np.array([0, 10]))
        with pytest.raises(StoreError, match="duplicate"):
            store.read(np.array([1, 1]))
        with pytest.raises(StoreError, match="epoch must be"):
            store.begin_epoch(-1)
    with pytest.raises(StoreError, match="closed"):
        store.read(np.arange(3))


def test_properties(factory: Factory) -> None:
    with factory(make_spec(n=12, k=3)) as store:
        assert (store.k, store.n, store.num_slots) == (3, 12, 4)
        assert store.slot_epochs == [None] * 4 and store.committed_epochs == [] and store.last_committed_epoch is None
        assert store.spec == make_spec(n=12, k=3)


def test_uniform_permutation_when_budget_covers_everything() -> None:
    """plan_epoch with one window: every sample lands at every position equally often, and block mates are not
    kept together."""
    store = create_memory_store(make_spec(n=6), block_size=2)
    counts = np.zeros((6, 6))
    mates_adjacent = 0
    a, b = store.layout.members[:2]  # the two samples of block 0
    for e in range(3000):
        order = plan_epoch(store.layout, store.layout.num_blocks, seed=0, epoch=e).order
        counts[order, np.arange(6)] += 1
        pos = np.argsort(order)
        mates_adjacent += abs(int(pos[a]) - int(pos[b])) == 1
    assert counts.min() > 500 - 110 and counts.max() < 500 + 110
    assert abs(mates_adjacent / 3000 - 1 / 3) < 0.06  # uniform: P(adjacent) = 2/n


def test_window_structure_when_budget_is_small() -> None:
    store = create_memory_store(make_spec(n=40), block_size=4)
    for e, window_blocks in itertools.product(range(3), (1, 3)):
        plan = plan_epoch(store.layout, window_blocks, seed=0, epoch=e)
        start = 0
        for win in plan.windows:
            rows = np.concatenate([np.arange(*store.layout.block_rows(int(b))) for b in win])
            seg = plan.order[start : start + rows.shape[0]]
            assert set(seg.tolist()) == set(store.layout.members[rows].tolist())
            start += rows.shape[0]
        assert start == 40
