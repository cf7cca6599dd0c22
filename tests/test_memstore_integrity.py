"""Nothing lost, nothing silent: the writer lock (flock and lease), recoverable creation, per-epoch manifests with
their checks, and repair-store."""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from shutil import rmtree as shutil_rmtree

import numpy as np
import pytest
import zarr

from memloss.memstore.integrity import lock as _lock
from memloss.memstore.integrity.manifest import DamagedMemoryError
from memloss.memstore.zarrstore.meta import CREATING_ATTR, location_kind, resolve_store
from memloss.memstore.errors import StoreError
from memloss.memstore.integrity.repair import dropped_epochs, repair_store
from memloss.memstore.store import create_store, open_or_create, open_store
from test_memstore_zarr import ROOT, make_spec, write_epoch

LOCKED = r"is being written by host \S+, pid \d+, run runs/a, since \d{4}-"


def _chunk(url: Path, array: str, slot: int, block: int) -> Path:
    tail = {"codes": ["0", "0", "0"], "scale": [], "info": ["0"]}[array]
    return url.joinpath(array, "c", str(slot), str(block), *tail)


def test_second_writer_gets_a_one_line_lock_error_and_readers_need_no_lock(tmp_path: Path) -> None:
    url = tmp_path / "s.zarr"
    with create_store(url, make_spec(), owner="runs/a") as writer:
        write_epoch(writer, 0)
        for attempt in (lambda: open_store(url), lambda: open_or_create(url, make_spec())):
            with pytest.raises(_lock.StoreLockedError, match=LOCKED) as info:
                attempt()
            assert "\n" not in str(info.value)
        with open_store(url, read_only=True) as reader:
            assert reader.committed_epochs == [0]
    with open_store(url) as again:  # released by close()
        assert again.committed_epochs == [0]


HOLDER = """
import sys, time
from memloss.memstore.spec import DatasetFingerprint, StoreSpec, ThreatModel
from memloss.memstore.store import open_or_create
spec = StoreSpec(DatasetFingerprint("toy", 40, (3, 4, 4), "0" * 64), ThreatModel("Linf", "8/255"), 2)
store = open_or_create(sys.argv[1], spec, owner="runs/killed")
open(sys.argv[2], "w").close()
time.sleep(600)
"""


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    url, ready = tmp_path / "s.zarr", tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(url), str(ready)],
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        deadline = time.time() + 120
        while not ready.exists():
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.05)
        with pytest.raises(_lock.StoreLockedError, match=f"pid {proc.pid}, run runs/killed"):
            open_store(url)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    notes: list[str] = []
    with open_or_create(url, make_spec(), notes=notes) as store:
        write_epoch(store, 0)
    assert any(f"pid {proc.pid}" in n and "is gone" in n for n in notes), notes


def _lease(url: str, **fields: object) -> None:
    from zarr.storage import FsspecStore

    from memloss.memstore.location.resolve import put_bytes

    info = {"host": socket.gethostname(), "pid": os.getpid(), "run": "runs/other", "since": "2026-01-01T00:00:00+00:00",
            "token": "t", "heartbeat": time.time(), "ttl_s": 120.0, **fields}
    where, key = _lock.lock_location(FsspecStore.from_url(url))
    put_bytes(where, key, json.dumps(info).encode())


def test_lease_on_an_object_store(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"memory://lease-{os.getpid()}-{time.time_ns()}"
    with create_store(url, make_spec(), owner="runs/a") as store:
        with pytest.raises(_lock.StoreLockedError, match=LOCKED):
            open_store(url)
        write_epoch(store, 0)
    _lease(url, pid=2**22 + 12345)  # a process of this host that does not exist
    notes: list[str] = []
    open_or_create(url, make_spec(), notes=notes).close()
    assert any("stopped renewing" in n for n in notes)
    _lease(url, host="elsewhere", heartbeat=time.time() - 1000)  # expired
    open_store(url).close()
    _lease(url, host="elsewhere")  # alive on another host
    with pytest.raises(_lock.StoreLockedError, match="host elsewhere"):
        open_store(url)
    _lease(url, host="elsewhere", heartbeat=time.time() - 1000)
    monkeypatch.setattr(_lock, "LEASE_TTL_S", 0.2)
    store = open_store(url)
    _lease(url, host="thief", token="stolen")  # another writer took the lease over
    time.sleep(0.3)
    with pytest.raises(StoreError, match="lost its lease to host thief"):  # raised where the state is saved
        write_epoch(store, 1)
    store._handle.release()  # noqa: SLF001


def check_interrupted_creation_is_rebuilt(location: object, monkeypatch: pytest.MonkeyPatch, failure: OSError,
                                          root_json: Callable[[], bytes | str]) -> None:
    """A creation that fails after its first object (`failure` from zarr's array creation) leaves a store marked as
    being created, which readers refuse and the next writer rebuilds. Shared by the local and S3 tests."""

    def fail(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        raise failure

    monkeypatch.setattr(zarr.Group, "create_array", fail)
    with pytest.raises(OSError):
        open_or_create(location, make_spec())
    monkeypatch.undo()
    store, text = resolve_store(location, read_only=True)
    assert location_kind(store, text) == "creating"
    assert CREATING_ATTR in json.loads(root_json())["attributes"]
    with pytest.raises(StoreError, match="is being created, or its creation was interrupted"):
        open_store(location)
    notes: list[str] = []
    with open_or_create(location, make_spec(), notes=notes) as rebuilt:
        write_epoch(rebuilt, 0)
    assert any("creation had been interrupted" in n for n in notes)


def test_interrupted_creation_is_rebuilt_by_the_next_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = tmp_path / "s.zarr"
    check_interrupted_creation_is_rebuilt(url, monkeypatch, OSError(28, "No space left on device"),
                                          lambda: (url / "zarr.json").read_text())


def test_a_store_that_never_committed_is_replaced_only_when_asked(tmp_path: Path) -> None:
    url = tmp_path / "s.zarr"
    create_store(url, make_spec(k=2)).close()
    with pytest.raises(StoreError, match="k expected"):
        open_or_create(url, make_spec(k=3))
    notes: list[str] = []
    with open_or_create(url, make_spec(k=3), replace_uncommitted=True, notes=notes) as store:
        assert store.k == 3
        write_epoch(store, 0)
    assert any("never committed" in n for n in notes)
    with pytest.raises(StoreError, match="k expected"):
        open_or_create(url, make_spec(k=2), replace_uncommitted=True)  # it holds memory now


def test_partial_files_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    url = tmp_path / "s.zarr"
    with create_store(url, make_spec()) as store:
        write_epoch(store, 0)
    stray = url / "codes" / "c" / "1" / "0" / "0" / "0" / "0.abc.partial"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"half")
    notes: list[str] = []
    open_or_create(url, make_spec(), notes=notes).close()
    assert not stray.exists() and any("removed 1 temporary" in n for n in notes)


@pytest.mark.parametrize("damage", ["delete-info", "delete-codes", "flip-byte", "manifest"])
def test_damaged_committed_memory_is_named_and_repair_drops_it(tmp_path: Path, damage: str) -> None:
    url = tmp_path / "s.zarr"
    with create_store(url, make_spec(n=16, k=2), block_size=8) as store:
        for epoch in range(3):
            write_epoch(store, epoch)
    # Epoch 2 lives in ring slot 2; epoch 3 reads slots 2 (epoch 2) and 1 (epoch 1).
    target = {"delete-info": _chunk(url, "info", 2, 1), "delete-codes": _chunk(url, "codes", 2, 0),
              "flip-byte": _chunk(url, "codes", 2, 1), "manifest": url / "manifests" / "e2" / "zarr.json"}[damage]
    before = {p: p.read_bytes() for p in url.rglob("*") if p.is_file()}
    if damage == "flip-byte":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "manifest":
        target.write_text("{}")
    else:
        target.unlink()
    with open_store(url) as store, pytest.raises(DamagedMemoryError) as info:
        store.begin_epoch(3)
        store.read(np.arange(16))
    msg = str(info.value)
    assert "\n" not in msg and "epoch 2 (ring slot 2)" in msg and "memloss repair-store" in msg
    assert ("e2/zarr.json" if damage == "manifest" else target.relative_to(url).as_posix()) in msg
    checked = repair_store(url, check_only=True)
    assert [d.epoch for d in checked.damaged] == [2] and not checked.dropped
    report = repair_store(url)
    assert report.dropped == [2] and any("dropped the memory of epochs [2]" in line for line in report.lines())
    with open_store(url) as store:
        assert store.committed_epochs == [1] and dropped_epochs(store) == [2]
        store.begin_epoch(3)
        batch = store.read(np.arange(16))
        assert not batch.valid[0].any() and batch.valid[1].all()
    assert not repair_store(url).damaged
    del before


def test_format_1_stores_open_unverified_and_upgrade_at_their_next_commit(tmp_path: Path) -> None:
    url = tmp_path / "s.zarr"
    with create_store(url, make_spec()) as store:
        write_epoch(store, 0)
    meta_path = url / "zarr.json"
    root = json.loads(meta_path.read_text())
    meta = root["attributes"]["memloss"]
    meta["format_version"] = 1
    del meta["manifests"]
    meta_path.write_text(json.dumps(root))
    with open_store(url) as store:
        write_epoch(store, 1)
    meta = json.loads(meta_path.read_text())["attributes"]["memloss"]
    assert meta["format_version"] == 4 and list(meta["manifests"]) == ["1"]  # and the parts of version 3
    assert repair_store(url, check_only=True).unverified == [0]


@pytest.mark.parametrize("budget", [12000, None], ids=["windowed", "resident"])
def test_write_after_holds_the_epoch_start_but_not_its_reads(tmp_path: Path, budget: int | None) -> None:
    """A trainer passes its resume point's landing: the next epoch's drop of the oldest memory waits for it (so a
    kill never finds the store two epochs ahead of the resume point), while that epoch's reads go on."""
    import threading
    from concurrent.futures import Future

    url = tmp_path / "s.zarr"
    kwargs = {"memory_budget": budget} if budget else {}
    with create_store(url, make_spec(n=40, k=2), block_size=4, **kwargs) as store:
        assert store.resident == (budget is None)
        for epoch in range(3):
            write_epoch(store, epoch)
        gate: Future[None] = Future()
        safety = threading.Timer(30, gate.set_result, (None,))
        safety.start()
        store.write_after(gate)
        order = store.begin_epoch(3)  # drops epoch 0, once the gate opens
        t0 = time.perf_counter()
        batch = store.read(order[:4])  # the first window's rows (the next epoch's window is prepared at the last)
        assert time.perf_counter() - t0 < 10 and batch.valid.all()  # epochs 2 and 1, without waiting
        committed = json.loads((url / "zarr.json").read_text())["attributes"]["memloss"]["committed_epochs"]
        assert committed == [0, 1, 2]  # the drop has not been written yet
        gate.set_result(None)
        safety.cancel()
        order = store.layout.members  # any order: write every sample once
        for start in range(0, 40, 8):
            idx = order[start:start + 8]
            store.write(idx, np.full((8, 3, 4, 4), 7, np.uint8), np.full(8, 0.01, np.float32),
                        np.zeros((8, 2), np.int64), np.zeros(8, bool))
        store.commit_epoch()
        assert store.committed_epochs == [1, 2, 3]


def test_a_resident_writer_verifies_only_the_slots_it_reads_from_storage(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A resident writer checks a slot's chunks when it loads the slot from storage (the first epoch after
    opening), not every epoch for slots its RAM already holds; a damaged chunk is still found at the next open."""
    from memloss.memstore.zarrstore import backend as _zarr

    checked: list[list[int]] = []
    real = _zarr.verify_read_slots
    monkeypatch.setattr(_zarr, "verify_read_slots", lambda h, s, slots: (checked.append(list(slots)), real(h, s, slots)))
    url = tmp_path / "s.zarr"
    with create_store(url, make_spec(n=16, k=2), block_size=8) as store:
        assert store.resident
        for epoch in range(4):
            write_epoch(store, epoch)
    assert checked == [[], [], [], []]  # epochs 1–3 read the slots this process wrote and holds
    checked.clear()
    _chunk(url, "codes", 2, 0).unlink()  # epoch 2's memory (ring slot 2), read by epoch 4 together with epoch 3
    with open_store(url) as store, pytest.raises(DamagedMemoryError, match=r"epoch 2 \(ring slot 2\)"):
        store.begin_epoch(4)
        store.read(np.arange(16))
    assert sorted(checked[0]) == [0, 2]  # loaded from storage after opening: verified


def _zarr_warnings(url: Path) -> list[str]:
    """What plain zarr says when it lists and consolidates the store (a copy, so the store itself is untouched)."""
    import shutil
    import warnings

    import zarr

    copy = url.with_name(url.name + "-copy")
    shutil.copytree(url, copy)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        list(zarr.open_group(url, mode="r").members(max_depth=None))
        zarr.consolidate_metadata(copy)
    shutil.rmtree(copy)
    return [str(w.message) for w in seen if "not recognized" in str(w.message)]


def test_plain_zarr_lists_a_store_without_warnings(tmp_path: Path) -> None:
    url = tmp_path / "s.zarr"
    with create_store(url, make_spec(n=16, k=2), block_size=8) as store:
        for epoch in range(4):  # epoch 0's manifest is deleted when it leaves the ring
            write_epoch(store, epoch)
        assert (tmp_path / "s.zarr.lock").is_file() and not (url / "memloss.lock").exists()
        assert _zarr_warnings(url) == []
    assert sorted(p.name for p in (url / "manifests").iterdir()) == ["e1", "e2", "e3", "zarr.json"]


def test_a_store_of_the_previous_layout_opens_and_loses_its_warnings(tmp_path: Path) -> None:
    """Format 3 as memloss 0.1 wrote it: the lock file inside, manifests as plain JSON files."""
    url = tmp_path / "s.zarr"
    with create_store(url, make_spec(n=16, k=2), block_size=8) as store:
        for epoch in range(2):
            write_epoch(store, epoch)
    for epoch in range(2):
        group = url / "manifests" / f"e{epoch}"
        doc = json.loads((group / "zarr.json").read_bytes())["attributes"]["memloss_manifest"]
        old = json.dumps(doc, separators=(",", ":")).encode()
        (url / "manifests" / f"e{epoch}.json").write_bytes(old)
        shutil_rmtree(group)
        record = json.loads((url / "zarr.json").read_text())
        record["attributes"]["memloss"]["manifests"][str(epoch)] = hashlib.sha256(old).hexdigest()
        (url / "zarr.json").write_text(json.dumps(record))
    (url / "manifests" / "zarr.json").unlink()
    (url / "memloss.lock").write_text("")
    assert {w.split()[2] for w in _zarr_warnings(url)} == {"manifests", "memloss.lock"}  # as before
    with open_store(url) as store:
        store.begin_epoch(2)  # reads epochs 0 and 1, checked against their old manifests
        store.read(np.arange(16))
        write_epoch(store, 2)
    assert not (url / "memloss.lock").exists()
    with open_store(url) as store:  # epoch 0 left the ring; epoch 1's manifest is still the old file
        store.begin_epoch(3)
        store.read(np.arange(16))
        write_epoch(store, 3)
        assert [w.split()[2] for w in _zarr_warnings(url)] == ["e1.json", "e1.json"]
        write_epoch(store, 4)  # the last old manifest leaves with its epoch
    assert _zarr_warnings(url) == []


def test_a_writer_of_the_previous_version_still_holding_its_lock_is_respected(tmp_path: Path) -> None:
    import fcntl

    url = tmp_path / "s.zarr"
    create_store(url, make_spec(n=16, k=2), block_size=8).close()
    fd = os.open(url / "memloss.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(_lock.StoreLockedError, match="older memloss"):
            open_store(url)
    finally:
        os.close(fd)
    open_store(url).close()
    assert not (url / "memloss.lock").exists()
