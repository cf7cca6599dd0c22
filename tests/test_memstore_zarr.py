"""Zarr-specific guarantees: whole-chunk writes, crash safety, validation of bad stores, background errors,
bounded memory, and the plain-zarr reading recipe of docs/store-format.md."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

from memloss.memstore.entries import row_bytes
from memloss.memstore.errors import StoreError
from memloss.memstore.layout.budget import index_bytes, resident_window_blocks, with_read_ahead
from memloss.memstore.layout.order import plan_epoch
from memloss.memstore.spec import DatasetFingerprint, StoreSpec, ThreatModel
from memloss.memstore.store import create_store, open_or_create, open_store

SHAPE = (3, 4, 4)
ROOT = Path(__file__).resolve().parents[1]


def make_spec(n: int = 40, k: int = 2, shape: tuple[int, int, int] = SHAPE, eps: str = "8/255",
              name: str = "toy") -> StoreSpec:
    return StoreSpec(DatasetFingerprint(name, n, shape, "0" * 64), ThreatModel("Linf", eps), k)


def write_epoch(store, epoch: int, batch: int = 6, commit: bool = True, ages=None) -> np.ndarray:  # noqa: ANN001
    order = store.begin_epoch(epoch, ages=ages)
    for start in range(0, order.shape[0], batch):
        idx = order[start : start + batch]
        b = idx.shape[0]
        codes = np.full((b, *store.spec.fingerprint.shape), epoch % 200 + 1, np.uint8)
        store.write(idx, codes, np.full(b, 0.01, np.float32), np.stack([np.full(b, epoch), idx], 1), np.zeros(b, bool))
    if commit:
        store.commit_epoch()
    return order


class CountingStore(LocalStore):
    """LocalStore that counts every set/delete and whole get per key."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.sets: Counter[str] = Counter()
        self.gets: Counter[str] = Counter()

    async def set(self, key, value) -> None:  # noqa: ANN001
        self.sets[key] += 1
        await super().set(key, value)

    async def delete(self, key) -> None:  # noqa: ANN001
        self.sets[key] += 1
        await super().delete(key)

    async def get(self, key, prototype, byte_range=None):  # noqa: ANN001, ANN201
        if byte_range is None:  # whole reads only: the commit's manifest reads each chunk's 4-byte checksum
            self.gets[key] += 1
        return await super().get(key, prototype, byte_range)


def test_each_chunk_is_written_once_per_epoch_and_never_read_back(tmp_path: Path) -> None:
    store_obj = CountingStore(tmp_path / "s.zarr")
    spec = make_spec(n=50, k=2)
    with create_store(store_obj, spec, block_size=8) as store:
        for epoch in range(4):
            store_obj.sets.clear()
            store_obj.gets.clear()
            write_epoch(store, epoch, batch=7)
            slot = epoch % 3
            chunk_sets = {k: v for k, v in store_obj.sets.items() if "/c/" in k}
            assert max(chunk_sets.values()) == 1
            written = {k for k in chunk_sets if k.split("/")[2] == str(slot)}
            assert written == set(chunk_sets)  # only the write slot is touched
            assert len({k for k in written if k.startswith("codes/")}) == 7  # ceil(50/8) blocks, each once
            assert not any(k.split("/")[2] == str(slot) for k in store_obj.gets if "/c/" in k)


def test_reopen_validates_every_field(tmp_path: Path) -> None:
    url = tmp_path / "s.zarr"
    with create_store(url, make_spec()) as store:
        write_epoch(store, 0)
    cases = [(make_spec(name="other"), "dataset"), (make_spec(n=41), "n"), (make_spec(k=3), "k"),
             (make_spec(eps="4/255"), "eps"), (make_spec(shape=(3, 4, 5)), "shape")]
    for spec, field in cases:
        with pytest.raises(StoreError) as info:
            open_store(url, expect=spec)
        msg = str(info.value)
        assert "\n" not in msg and f"{field} expected" in msg
    with open_store(url, expect=make_spec()) as store:
        assert store.committed_epochs == [0]


def test_foreign_and_missing_locations(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a memloss store"):
        create_store(foreign, make_spec())
    assert (foreign / "notes.txt").read_text() == "mine"
    with pytest.raises(StoreError, match="not a memloss"):
        open_store(foreign)
    with pytest.raises(StoreError, match="no memory store"):
        open_store(tmp_path / "missing", read_only=True)
    with pytest.raises(StoreError, match="no memory store"):
        open_store(tmp_path / "missing2")
    url = tmp_path / "s.zarr"
    create_store(url, make_spec()).close()
    with pytest.raises(StoreError, match="already holds a memloss store"):
        create_store(url, make_spec())


def test_truncated_chunk_is_a_clear_error(tmp_path: Path) -> None:
    url = tmp_path / "s.zarr"
    with create_store(url, make_spec(n=16), block_size=8) as store:
        write_epoch(store, 0)
    chunk = url / "codes" / "c" / "0" / "0" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:10])
    with open_store(url) as store:
        with pytest.raises(StoreError, match=r"epoch 0 \(ring slot 0\) .* damaged: chunk codes/c/0/0/0/0/0 has 10 "
                                             "bytes.*memloss repair-store") as info:
            store.begin_epoch(1)  # caught by the manifest check, before any read
        assert "\n" not in str(info.value)


def test_unknown_codec_in_metadata_is_refused(tmp_path: Path) -> None:
    url = tmp_path / "s.zarr"
    create_store(url, make_spec()).close()
    meta_path = url / "codes" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["codecs"].append({"name": "numcodecs.pickle", "configuration": {}})
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="numcodecs.pickle"):
        open_store(url)


def test_corrupt_ring_state_is_refused(tmp_path: Path) -> None:
    url = tmp_path / "s.zarr"
    create_store(url, make_spec()).close()
    meta_path = url / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["memloss"]["slot_epochs"] = [5, None, None]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="inconsistent"):
        open_store(url)


def test_simulated_crash_before_commit(tmp_path: Path) -> None:
    url = tmp_path / "s.zarr"
    store = create_store(url, make_spec(n=30, k=2), block_size=4)
    write_epoch(store, 0)
    write_epoch(store, 1)
    write_epoch(store, 2, commit=False)  # every block of epoch 2 is on disk, the commit never happens
    store._writer.drain()  # noqa: SLF001 (the data really reached the disk before the "crash")
    store._handle.release()  # noqa: SLF001 (a crashed process holds no lock)
    del store  # no close, no commit
    with open_store(url, expect=make_spec(n=30, k=2)) as again:
        assert again.committed_epochs == [0, 1]
        again.begin_epoch(3)  # epoch 2 is not memory: its slot must read as invalid
        mb = again.read(np.arange(30))
        assert not mb.valid[0].any() and mb.valid[1].all()
        assert mb.offset[1, :, 0].tolist() == [1] * 30


KILL_SCRIPT = """
import sys, numpy as np
from memstore import *
spec = StoreSpec(DatasetFingerprint("toy", 64, (3, 4, 4), "0" * 64), ThreatModel("Linf", "8/255"), 2)
store = create_store(sys.argv[1], spec, block_size=4)
epoch = 0
while True:
    order = store.begin_epoch(epoch)
    for start in range(0, 64, 5):
        idx = order[start:start + 5]
        b = len(idx)
        store.write(idx, np.full((b, 3, 4, 4), epoch % 200 + 1, np.uint8), np.full(b, 0.01, np.float32),
                    np.stack([np.full(b, epoch), idx], 1), np.zeros(b, bool))
    landed = store.commit_epoch(wait=epoch % 2 == 0)  # odd epochs: the next one begins before the commit lands
    if epoch == 2:
        landed.result()
        open(sys.argv[2], "w").close()
    epoch += 1
"""


@pytest.mark.slow
def test_kill_9_while_writing_leaves_committed_epochs_intact(tmp_path: Path) -> None:
    url, ready = tmp_path / "s.zarr", tmp_path / "ready"
    script = tmp_path / "writer.py"
    script.write_text(KILL_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(script), str(url), str(ready)], env=env)
    try:
        deadline = time.time() + 60
        while not ready.exists():
            assert proc.poll() is None and time.time() < deadline, "writer died or never committed epoch 2"
            time.sleep(0.05)
        time.sleep(0.3)  # let it run into later epochs, somewhere mid-write
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with open_store(url, expect=make_spec(n=64, k=2)) as store:
        last = store.last_committed_epoch
        assert last is not None and last >= 2
        # Killed mid-epoch: the two newest epochs; killed between a commit and the next begin_epoch: all S = 3 slots
        # still hold consecutive committed epochs. Either way the newest two are intact.
        committed = store.committed_epochs
        assert committed[-2:] == [last - 1, last] and committed == list(range(last - len(committed) + 1, last + 1))
        assert len(committed) <= 3
        store.begin_epoch(last + 1)
        mb = store.read(np.arange(64))
        assert mb.valid.all()
        assert mb.offset[0, :, 0].tolist() == [last] * 64 and mb.offset[1, :, 0].tolist() == [last - 1] * 64
        assert mb.offset[0, :, 1].tolist() == list(range(64))
        assert int(mb.codes[0].min()) == int(mb.codes[0].max()) == last % 200 + 1
        write_epoch(store, last + 1)  # the interrupted slot is rewritten and the run continues
        assert store.committed_epochs == [last - 1, last, last + 1]


class FailingArray:
    """Stands in for a zarr array whose writes fail (e.g. a full disk)."""

    @property
    def async_array(self) -> "FailingArray":
        return self

    async def setitem(self, key, value) -> None:  # noqa: ANN001
        raise OSError("No space left on device")


def test_background_write_error_reaches_the_caller(tmp_path: Path) -> None:
    store = create_store(tmp_path / "s.zarr", make_spec(n=16), block_size=4)
    store._arrays["codes"] = FailingArray()  # noqa: SLF001
    with pytest.raises(StoreError, match="No space left on device"):
        write_epoch(store, 0)
    with pytest.raises(StoreError, match="No space left"):
        store.close()


def test_read_only_store_refuses_writes(tmp_path: Path) -> None:
    url = tmp_path / "s.zarr"
    with create_store(url, make_spec()) as store:
        write_epoch(store, 0)
    with open_store(url, read_only=True) as store:
        store.begin_epoch(1)
        assert store.read(np.arange(4)).valid[0].all()
        with pytest.raises(StoreError, match="read-only"):
            store.write(np.arange(1), np.zeros((1, *SHAPE), np.uint8), np.zeros(1, np.float32),
                        np.zeros((1, 2), np.int64), np.zeros(1, bool))
        assert store.committed_epochs == [0]


def test_second_write_of_a_stored_block_is_refused(tmp_path: Path) -> None:
    with create_store(tmp_path / "s.zarr", make_spec(n=8), block_size=8) as store:
        order = store.begin_epoch(0)
        def args(b: int) -> tuple:
            return (np.zeros((b, *SHAPE), np.uint8), np.zeros(b, np.float32), np.zeros((b, 2), np.int64),
                    np.zeros(b, bool))

        store.write(order, *args(8))
        with pytest.raises(StoreError, match="written again"):
            store.write(order[:1], *args(1))


def test_open_or_create_reuses_matching_store(tmp_path: Path) -> None:
    url = tmp_path / "s.zarr"
    with open_or_create(url, make_spec(), seed=3) as store:
        write_epoch(store, 0)
    with open_or_create(url, make_spec(), seed=99) as store:
        assert store.committed_epochs == [0] and store.seed == 3
    with pytest.raises(StoreError, match="k expected 4"):
        open_or_create(url, make_spec(k=4))


def test_budget_too_small_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="memory budget"):
        create_store(tmp_path / "s.zarr", make_spec(n=100), block_size=50, memory_budget=1000)
    assert not (tmp_path / "s.zarr").exists()


def test_memory_stays_within_budget(tmp_path: Path) -> None:
    spec = make_spec(n=2500, k=2, shape=(3, 32, 32))
    budget = 6_000_000  # the 3 slots hold 3 * 2500 * 3092 B = 23 MB
    with create_store(tmp_path / "s.zarr", spec, block_size=32, memory_budget=budget) as store:
        block = store.block_size * row_bytes(spec)
        assert store.window_blocks * block * (2 * spec.k + 2) + 8 * spec.k * block <= budget
        for epoch in range(2):
            write_epoch(store, epoch, batch=128)
        tracemalloc.start()
        try:
            order = store.begin_epoch(2)
            for start in range(0, 2500, 128):  # batches smaller than a window: at most 2 windows resident
                idx = order[start : start + 128]
                store.read(idx)
                b = idx.shape[0]
                store.write(idx, np.ones((b, 3, 32, 32), np.uint8), np.zeros(b, np.float32),
                            np.zeros((b, 2), np.int64), np.zeros(b, bool))
                assert len(store._windows) <= 2  # noqa: SLF001
            store.commit_epoch()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < budget + 3_000_000, f"peak {peak} B over budget {budget} B (+3 MB of zarr/asyncio overhead)"


def test_memory_url_store_persists_across_opens() -> None:
    url = "memory://memstore-test-persist"
    with create_store(url, make_spec(n=12)) as store:
        write_epoch(store, 0)
    with open_store(url, expect=make_spec(n=12)) as store:
        store.begin_epoch(1)
        assert store.read(np.arange(12)).valid[0].all()


def test_plain_zarr_snippet_from_docs(tmp_path: Path) -> None:
    url = str(tmp_path / "s.zarr")
    with create_store(url, make_spec(n=20, k=2), block_size=8) as store:
        for epoch in range(3):
            write_epoch(store, epoch)
        store.begin_epoch(3)
        expected = store.read(np.array([13]))
    doc = (ROOT / "docs" / "store-format.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    for k in range(2):
        scope = {"path": url, "i": 13, "k": k, "zarr": zarr}
        exec(snippet, scope)  # noqa: S102
        assert scope["valid"] == bool(expected.valid[k, 0])
        assert np.array_equal(scope["codes"], expected.codes[k, 0].numpy())
        assert np.allclose(scope["delta"], (expected.codes[k, 0].numpy().astype(np.float32) - 128) / 127
                           * float(expected.scale[k, 0]))


@pytest.mark.parametrize("codec", ["none", "zstd-9", "blosc-zstd-1-noshuffle", "blosc-lz4-5-bitshuffle"])
def test_allowed_codecs_round_trip(tmp_path: Path, codec: str) -> None:
    with create_store(tmp_path / "s.zarr", make_spec(n=12), codec=codec) as store:
        write_epoch(store, 0)
    with open_store(tmp_path / "s.zarr") as store:
        store.begin_epoch(1)
        mb = store.read(np.arange(12))
        assert mb.valid[0].all() and mb.offset[0, :, 1].tolist() == list(range(12))


def test_unknown_codec_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unknown codec 'pickle'"):
        create_store(tmp_path / "s.zarr", make_spec(), codec="pickle")


# ---- resident fast path -------------------------------------------------------------------------------------------
def random_epoch_rows(n: int, epoch: int) -> dict[str, np.ndarray]:
    """Seeded rows of every sample for one epoch; samples with (i + epoch) % 5 == 0 are not written (invalid)."""
    rng = np.random.default_rng(epoch)
    return {"codes": rng.integers(1, 256, (n, *SHAPE), dtype=np.uint8), "scale": rng.random(n, dtype=np.float32),
            "offset": rng.integers(0, 9, (n, 2)).astype(np.int16), "flip": rng.random(n) < 0.5,
            "valid": (np.arange(n) + epoch) % 5 != 0}


def assert_memory_is(mb, idx: np.ndarray, epoch: int, ref: dict[int, dict[str, np.ndarray]]) -> None:  # noqa: ANN001
    """Bit-exact: slot k holds what epoch−1−k wrote (or the empty row: codes 128, scale 0, offset 0, no flip)."""
    for k in range(mb.valid.shape[0]):
        rec = ref.get(epoch - 1 - k)
        valid = rec["valid"][idx] if rec is not None else np.zeros(idx.shape[0], bool)
        assert np.array_equal(mb.valid[k].numpy(), valid)
        codes = np.where(valid[:, None, None, None], rec["codes"][idx], 128) if rec is not None else 128
        assert np.array_equal(mb.codes[k].numpy(), np.broadcast_to(codes, mb.codes[k].shape))
        for name, empty in (("scale", 0), ("flip", False)):
            want = np.where(valid, rec[name][idx], empty) if rec is not None else np.full(idx.shape[0], empty)
            assert np.array_equal(getattr(mb, name)[k].numpy(), want), name
        want_off = np.where(valid[:, None], rec["offset"][idx], 0) if rec is not None else 0
        assert np.array_equal(mb.offset[k].numpy(), np.broadcast_to(want_off, (idx.shape[0], 2)))


def run_checked_epoch(store, epoch: int, ref: dict[int, dict[str, np.ndarray]], batch: int = 7) -> None:  # noqa: ANN001
    """Reads every batch (checked against `ref`), writes this epoch's rows except the skipped samples, commits."""
    rows = random_epoch_rows(store.n, epoch)
    order = store.begin_epoch(epoch)
    for start in range(0, store.n, batch):
        idx = order[start : start + batch]
        assert_memory_is(store.read(idx), idx, epoch, ref)
        idx = idx[rows["valid"][idx]]
        store.write(idx, rows["codes"][idx], rows["scale"][idx], rows["offset"][idx], rows["flip"][idx])
    store.commit_epoch()
    ref[epoch] = rows


def chunk_gets(counting: CountingStore) -> set[str]:
    return {key for key in counting.gets if "/c/" in key}


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_resident_rotation_is_bit_exact_without_disk_reads(tmp_path: Path, k: int) -> None:
    counting = CountingStore(tmp_path / "s.zarr")
    ref: dict[int, dict[str, np.ndarray]] = {}
    with create_store(counting, make_spec(n=45, k=k), block_size=8) as store:
        assert store.resident and store.window_blocks == store.layout.num_blocks
        for epoch in range(2 * k + 2):
            run_checked_epoch(store, epoch, ref)
        assert not chunk_gets(counting), "a resident store read chunks back from disk"
    reopened = CountingStore(tmp_path / "s.zarr")  # a resumed run: the first epoch must read its K slots from disk
    with open_store(reopened, expect=make_spec(n=45, k=k)) as store:
        assert store.resident
        run_checked_epoch(store, 2 * k + 2, ref)
        read_slots = {key.split("/")[2] for key in chunk_gets(reopened) if key.startswith("codes/")}
        assert read_slots == {str(e % (k + 1)) for e in range(k + 2, 2 * k + 2)}
        reopened.gets.clear()
        run_checked_epoch(store, 2 * k + 3, ref)
        assert not chunk_gets(reopened)


def test_windowed_store_reads_the_same_memory(tmp_path: Path) -> None:
    """The windowed path (budget below K+1 slots of the dataset) serves the same memory, reading from disk."""
    counting = CountingStore(tmp_path / "s.zarr")
    spec = make_spec(n=45, k=2)
    ref: dict[int, dict[str, np.ndarray]] = {}
    budget = (2 * 4 * 2 * 8 + 2 * 6 * 8) * row_bytes(spec)  # decode temporaries + two-block windows of 6 slots
    budget = index_bytes(45) + with_read_ahead(budget, 2, row_bytes(spec), 45)  # + index arrays and read-ahead
    with create_store(counting, spec, block_size=8, memory_budget=budget) as store:
        assert not store.resident and store.window_blocks < store.layout.num_blocks
        for epoch in range(4):
            run_checked_epoch(store, epoch, ref)
        assert chunk_gets(counting)


def test_abandoned_epoch_and_rewind_stay_exact_when_resident(tmp_path: Path) -> None:
    spec = make_spec(n=45, k=2)
    ref: dict[int, dict[str, np.ndarray]] = {}
    with create_store(tmp_path / "s.zarr", spec, block_size=8) as store:
        for epoch in range(4):
            run_checked_epoch(store, epoch, ref)
        order = store.begin_epoch(4)  # written halfway, never committed
        store.write(order[:20], np.ones((20, *SHAPE), np.uint8), np.ones(20, np.float32), np.ones((20, 2), np.int64),
                    np.ones(20, bool))
        run_checked_epoch(store, 4, ref)
        del ref[4], ref[3], ref[1]  # epoch 1 was overwritten by epoch 4 (same ring slot)
        run_checked_epoch(store, 3, ref)  # a run resumed from a checkpoint of epoch 2
        run_checked_epoch(store, 4, ref)
        assert store.committed_epochs == [2, 3, 4]


def test_resident_budget_boundary_and_memory(tmp_path: Path) -> None:
    spec = make_spec(n=2500, k=2, shape=(3, 32, 32))
    row, block = row_bytes(spec), 32
    need = 3 * 2500 * row + 2 * (4 * 2 + 8) * block * row  # S slots + decode and encode temporaries
    need = index_bytes(2500) + with_read_ahead(need, 2, row, 2500)  # + index arrays and read-ahead
    with create_store(tmp_path / "a.zarr", spec, block_size=block, memory_budget=need - 1) as store:
        assert not store.resident
    with create_store(tmp_path / "s.zarr", spec, block_size=block, memory_budget=need) as store:
        assert store.resident
        tracemalloc.start()
        try:
            for epoch in range(3):
                write_epoch(store, epoch, batch=128)
                store.begin_epoch(epoch + 1)
                store.read(np.arange(128))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < need + 3_000_000, f"peak {peak} B over budget {need} B (+3 MB of zarr/asyncio overhead)"


def test_resident_order_is_one_window() -> None:
    """Resident: one window, so the order is a uniform permutation of the dataset (the paper's protocol)."""
    assert [resident_window_blocks(b) for b in (6, 16, 100, 295, 1600)] == [6, 16, 100, 295, 1600]


def test_next_epochs_first_window_is_loaded_during_the_last_window(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Windowed: epoch e+1's first window is decoded while epoch e trains on its last one (committed slots from disk,
    slot e partly from RAM); after begin_epoch(e+1) no decode touches it, and the memory stays exact even when
    the commit of e was not waited for."""
    import memloss.memstore.zarrstore.windows as windows

    decoded: list[tuple[list[int], np.ndarray]] = []
    real = windows.read_rows

    def spy(arrays, slots, rows, out, dest) -> None:  # noqa: ANN001
        decoded.append((list(slots), np.asarray(rows)))
        real(arrays, slots, rows, out, dest)

    monkeypatch.setattr(windows, "read_rows", spy)
    spec = make_spec(n=45, k=2)
    ref: dict[int, dict[str, np.ndarray]] = {}
    budget = (2 * 4 * 2 * 8 + 2 * 6 * 8) * row_bytes(spec)  # decode temporaries + two-block windows of 6 slots
    budget = index_bytes(45) + with_read_ahead(budget, 2, row_bytes(spec), 45)  # + index arrays and read-ahead
    with create_store(tmp_path / "s.zarr", spec, block_size=8, memory_budget=budget) as store:
        assert not store.resident and len(plan_epoch(store.layout, store.window_blocks, 0, 0).windows) >= 3
        for epoch in range(3):
            run_checked_epoch(store, epoch, ref)
        order = store.begin_epoch(3)
        first = np.sort(store.layout.position[order[: store.window_blocks * store.block_size]])
        decoded.clear()
        rows = random_epoch_rows(store.n, 3)
        for start in range(0, store.n, 7):
            idx = order[start : start + 7]
            assert_memory_is(store.read(idx), idx, 3, ref)
            idx = idx[rows["valid"][idx]]
            store.write(idx, rows["codes"][idx], rows["scale"][idx], rows["offset"][idx], rows["flip"][idx])
        assert decoded and not any(np.array_equal(np.sort(r), first) for _, r in decoded)
        store.commit_epoch(wait=False)
        ref[3] = rows
        run_checked_epoch(store, 4, ref)
