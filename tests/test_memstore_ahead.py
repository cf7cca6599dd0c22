"""The read-ahead (memstore/ahead.py) gathers several batches ahead: its depth is bounded by the rows the memory
budget counts for it, its batches are the very bits of a one-batch read-ahead, and a slow window load is absorbed
by the batches already gathered (waits counted, not timed). The epoch start: the next epoch's committed read slots
are checked against their manifests off the training thread (memstore/zarrstore/early.py), damage still refused."""

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

import memloss.memstore.zarrstore.backend as backend_module
from memloss.memstore.ahead import ReadAhead
from memloss.memstore.integrity.manifest import DamagedMemoryError
from memloss.memstore.entries import MemoryBatch, row_bytes
from memloss.memstore.layout.budget import (
    DECODE_GROUP_BLOCKS, READ_AHEAD_SHARE, memory_plan, read_ahead_bytes, read_ahead_rows, window_blocks_for_budget,
)
from memloss.memstore.store import create_memory_store, create_store
from test_memstore_zarr import make_spec

B, BATCHES, SLOW = 4, 16, 8  # batch size, batches of the double's epoch, the batch whose load runs late
LATE_BY = 3  # steps of the loop the slow load takes once started


class SlowWindowStore:
    """A store double: read(idx) gives a batch made of idx; the batch starting at SLOW·B blocks until `release`
    (the slow window). `started` lists each gather's first index, in the order the worker began them."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.release = threading.Event()

    def read(self, idx: np.ndarray) -> MemoryBatch:
        self.started.append(int(idx[0]))
        if int(idx[0]) == SLOW * B:
            assert self.release.wait(30), "the test never released the slow load"
        t = torch.from_numpy(np.array(idx))
        return MemoryBatch(t, t, t, t > 0, t >= 0)

    def write(self, *args: Any) -> None:
        pass


def _wait_until(cond: Any) -> None:
    """Polls cond() (the worker thread's progress) for up to 30 s."""
    done = threading.Event()
    for _ in range(3000):
        if cond():
            return
        done.wait(0.01)
    raise AssertionError("the read-ahead's worker made no progress")


def _loop(rows: int) -> tuple[int, int]:
    """One epoch of the double as the trainer runs it (`follow` then `read` each step); a step lasts until the
    worker began every gather queued (up to the slow one). Returns (steps that waited for the slow load, the most
    gathers begun ahead of the loop's batch)."""
    store, order = SlowWindowStore(), np.arange(BATCHES * B)
    ahead = ReadAhead(store, rows=rows)  # type: ignore[arg-type]
    depth, waits, most, slow_began = ahead.depth(B), 0, 0, None
    ahead.follow(order, 0, B)
    for i in range(BATCHES):
        ahead.follow(order, (i + 1) * B, B)
        queued = min(BATCHES, i + 1 + depth)
        _wait_until(lambda: len(store.started) >= min(queued, SLOW + 1))  # the slow one holds those behind it
        if slow_began is None and SLOW * B in store.started:
            slow_began = i
        if slow_began is not None and i >= slow_began + LATE_BY:
            store.release.set()
        if i == SLOW and not store.release.is_set():
            waits += 1  # the loop would wait here for the late window: it finishes meanwhile
            store.release.set()
        most = max(most, len(store.started) - i)
        got = ahead.read(order[i * B:(i + 1) * B])
        assert torch.equal(got.codes, torch.arange(i * B, (i + 1) * B))
        ahead.write(order[i * B:(i + 1) * B], None, None, None, None)  # queued between the gathers, as the loop does
    ahead.drain()
    ahead.close()
    return waits, most


def test_a_slow_window_is_absorbed_by_a_deeper_read_ahead() -> None:
    waits, most = _loop(rows=0)
    assert waits == 1 and most <= 2  # one batch ahead (as before): the late load shows as a wait
    waits, most = _loop(rows=(LATE_BY + 1) * B)
    assert waits == 0 and most <= LATE_BY + 2  # absorbed; never more gathers begun than the loop's batch + depth


def test_depth_follows_the_rows_and_restarts_after_a_drain() -> None:
    store = SlowWindowStore()
    store.release.set()
    ahead = ReadAhead(store, rows=3 * B + 1)  # type: ignore[arg-type]
    assert ahead.depth(B) == 3 and ahead.depth(10 * B) == 1
    order = np.arange(BATCHES * B)
    ahead.follow(order, 0, B)
    ahead.follow(order, 0, B)  # called again at the same position: nothing more is queued
    ahead.drain()
    assert store.started == [0, B, 2 * B]
    ahead.follow(order, 5 * B, B)  # after a drain (an epoch's end) it starts again where the loop is
    ahead.drain()
    assert store.started[3:] == [5 * B, 6 * B, 7 * B]
    ahead.close()
    assert ReadAhead(SimpleNamespace()).depth(B) == 1  # type: ignore[arg-type]  # a store without a budget
    assert ReadAhead(create_memory_store(make_spec())).rows == 0


def test_the_budget_counts_the_read_ahead() -> None:
    spec = make_spec(n=50_000, k=16, shape=(3, 32, 32))
    rb, block, budget = row_bytes(spec), 170, 1 << 30
    rows = read_ahead_rows(budget, 16, rb, 50_000)
    assert 0 < rows * 16 * rb == read_ahead_bytes(budget, 16, rb, 50_000) <= budget // READ_AHEAD_SHARE
    window, resident = memory_plan(budget, 16, (50_000,), block, rb)
    assert resident == 0 and window < window_blocks_for_budget(budget, 16, block, rb, 295)
    transient = 2 * DECODE_GROUP_BLOCKS * 16 * block * rb
    assert window * (2 * 16 + 2) * block * rb + transient + rows * 16 * rb <= budget


def test_the_store_sizes_its_read_ahead_from_the_budget(tmp_path: Path) -> None:
    spec = make_spec(n=400, k=2, shape=(3, 32, 32))
    budget = 2_000_000
    with create_store(tmp_path / "s.zarr", spec, block_size=8, memory_budget=budget) as store:
        assert not store.resident
        assert store.read_ahead_rows == read_ahead_rows(budget, 2, row_bytes(spec), 400) > 0
        assert ReadAhead(store).rows == store.read_ahead_rows


def _batches(url: Path, rows: int) -> list[MemoryBatch]:
    """Every batch a windowed store hands out over 4 epochs (each written back as the trainer does), read through
    a read-ahead of `rows` rows."""
    spec = make_spec(n=90, k=2)
    out = []
    with create_store(url, spec, block_size=8, memory_budget=40_000) as store:
        assert not store.resident and store.window_blocks < store.layout.num_blocks
        ahead = ReadAhead(store, rows=rows)
        for epoch in range(4):
            order = store.begin_epoch(epoch)
            for start in range(0, order.shape[0], 7):
                idx = order[start:start + 7]
                ahead.follow(order, start, 7)
                out.append(ahead.read(idx))
                b = idx.shape[0]
                codes = (np.arange(b * 48, dtype=np.int64).reshape(b, 3, 4, 4) * (epoch + 1) % 251).astype(np.uint8)
                ahead.write(idx, codes, np.full(b, 0.5 + epoch, np.float32), np.stack([idx % 3, idx % 5], 1),
                            idx % 2 == 0)
            ahead.drain()
            store.commit_epoch()
        ahead.close()
    return out


@pytest.mark.parametrize("rows", [21, 1000])
def test_a_deeper_read_ahead_hands_out_the_same_bits(tmp_path: Path, rows: int) -> None:
    one = _batches(tmp_path / "one.zarr", rows=0)
    deep = _batches(tmp_path / "deep.zarr", rows=rows)
    assert len(one) == len(deep) and any(bool(b.valid.any()) for b in one)
    for a, b in zip(one, deep):
        for name in ("codes", "scale", "offset", "flip", "valid"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name


def _windowed_epochs(url: Path, epochs: range, before: Any = None) -> None:
    """Epochs of a windowed store (K = 3), each read to its last window (so the next one's first window and read
    slot check start early) and committed; before(store, epoch) runs after each begin_epoch."""
    spec = make_spec(n=90, k=3)
    with create_store(url, spec, block_size=8, memory_budget=40_000) as store:
        assert not store.resident and store.window_blocks < store.layout.num_blocks
        for epoch in epochs:
            order = store.begin_epoch(epoch)
            if before is not None:
                before(store, epoch)
            for start in range(0, order.shape[0], 10):
                idx = order[start:start + 10]
                store.read(idx)
                b = idx.shape[0]
                store.write(idx, np.full((b, 3, 4, 4), epoch + 1, np.uint8), np.ones(b, np.float32),
                            np.zeros((b, 2), np.int64), np.zeros(b, bool))
            store.commit_epoch()


def test_the_epoch_start_checks_only_the_slot_just_committed(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, list[int]]] = []
    real = backend_module.verify_read_slots

    def record(handle: Any, state: Any, slots: list[int]) -> None:
        calls.append((threading.current_thread().name, sorted(slots)))
        real(handle, state, slots)

    monkeypatch.setattr(backend_module, "verify_read_slots", record)
    _windowed_epochs(tmp_path / "s.zarr", range(6))
    begins = [slots for name, slots in calls if name == "MainThread"]
    ahead = [slots for name, slots in calls if name == "memstore-verify"]
    assert begins[4:] == [[3], [0]]  # epochs 4 and 5 check on the training thread only the slot of epoch 3, 4
    # checked ahead, during epochs 1..5 (epoch 0 reads nothing): the other read slots of epochs 2..6
    assert ahead == [[0], [0, 1], [1, 2], [2, 3], [0, 3]]


def test_damage_found_by_the_early_check_is_refused_at_the_epoch_start(tmp_path: Path) -> None:
    url = tmp_path / "s.zarr"

    def damage(store: Any, epoch: int) -> None:  # epoch 2's memory (ring slot 2), after epoch 4 checked it
        if epoch == 4:
            next(p for p in sorted((url / "codes" / "c" / "2").rglob("*")) if p.is_file()).unlink()

    starts: list[int] = []
    with pytest.raises(DamagedMemoryError, match=r"epoch 2 \(ring slot 2\)"):
        _windowed_epochs(url, range(6), lambda store, epoch: (starts.append(epoch), damage(store, epoch)))
    assert starts == [0, 1, 2, 3, 4]  # refused by begin_epoch(5), which took epoch 4's early check of slot 2
