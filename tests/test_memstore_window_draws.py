"""Per-window slot draws (`--memory-slot-draw window`): a window of the Zarr store decodes only the memory ages it
drew, and its size follows m (the ages decoded), not K."""

from pathlib import Path

import numpy as np
import pytest
import torch

import memloss.memstore.zarrstore.windows as windows_module
from memloss.memstore.layout.budget import index_bytes, with_read_ahead
from memloss.memstore.store import create_store, open_store
from test_memstore_zarr import make_spec, write_epoch

K, M, N, SHAPE = 4, 1, 400, (3, 32, 32)
# 1 MiB (plus the index arrays and the read-ahead's share) against 400 rows × 5 slots × 3 KiB: windowed
BUDGET = index_bytes(N) + with_read_ahead(1 << 20, K, 3 * 32 * 32 + 20, N)


def _filled(tmp_path: Path) -> Path:
    url = tmp_path / "s.zarr"
    with create_store(url, make_spec(n=N, k=K, shape=SHAPE), block_size=8, memory_budget=BUDGET) as store:
        for epoch in range(K):
            write_epoch(store, epoch, batch=40)
    return url


def _ages(window: int) -> list[int]:
    return [(3 * window) % K]


def test_a_window_decodes_only_the_ages_it_drew(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = _filled(tmp_path)
    decoded: list[list[int]] = []
    read_rows = windows_module.read_rows

    def counting(arrays, slots, rows, out, dest):  # noqa: ANN001, ANN202
        decoded.append(list(slots))
        return read_rows(arrays, slots, rows, out, dest)

    monkeypatch.setattr(windows_module, "read_rows", counting)
    batches = []
    with open_store(url, read_only=True, memory_budget=BUDGET, window_slots=M) as drawn:
        assert not drawn.resident
        order = drawn.begin_epoch(K, ages=_ages)
        window_of_block = drawn._plan.window_of_block  # noqa: SLF001  (the window each block belongs to)
        for start in range(0, N, 40):
            idx = order[start:start + 40]
            batches.append((idx, drawn.read(idx), window_of_block[drawn.layout.position[idx] // drawn.block_size]))
        windows = len(drawn._plan.windows)  # noqa: SLF001
    assert windows > 1 and len(decoded) == windows
    slot_of_age = {k: (K - 1 - k) % (K + 1) for k in range(K)}  # epoch K reads epochs K−1−k, in slot e mod S
    assert decoded == [[slot_of_age[_ages(w)[0]]] for w in range(windows)]  # one age per window: the drawn one
    monkeypatch.setattr(windows_module, "read_rows", read_rows)
    with open_store(url, read_only=True, memory_budget=BUDGET, window_slots=M) as full:
        full.begin_epoch(K)
        for idx, got, wins in batches:
            want = full.read(idx)
            assert bool(want.valid.all())
            for row, window in enumerate(wins):
                age = _ages(int(window))[0]
                assert got.valid[:, row].tolist() == [k == age for k in range(K)]
                assert torch.equal(got.codes[age, row], want.codes[age, row])  # the drawn age, exactly as stored
                assert torch.equal(got.scale[age, row], want.scale[age, row])


def test_windows_grow_as_k_over_m(tmp_path: Path) -> None:
    url = _filled(tmp_path)
    with open_store(url, read_only=True, memory_budget=BUDGET) as every, \
            open_store(url, read_only=True, memory_budget=BUDGET, window_slots=M) as drawn:
        assert drawn.window_blocks > 2 * every.window_blocks  # (2m+2+…)/(2K+2+…) of the budget per row


def test_a_two_part_store_decodes_only_the_drawn_ages_of_its_generated_windows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The base part stays resident (every age); the generated part's windows decode the ages they drew, numbered
    as the full plan's windows (window 0 is the base part's)."""
    from test_memstore_mixed import MIX, base_resident_budget, spec

    s = spec(k=K)
    budget = base_resident_budget(s)
    url = tmp_path / "two.zarr"
    with create_store(url, s, block_size=8, memory_budget=budget, window_slots=M) as store:
        assert not store.resident and store.resident_blocks > 0
        for epoch in range(K):
            order = store.begin_epoch(epoch, mix=MIX)
            for start in range(0, order.shape[0], MIX.batch_size):
                idx = order[start:start + MIX.batch_size]
                b = idx.shape[0]
                store.write(idx, np.full((b, *s.fingerprint.shape), epoch + 1, np.uint8), np.full(b, 0.01, np.float32),
                            np.zeros((b, 2), np.int64), np.zeros(b, bool))
            store.commit_epoch()
    decoded: list[list[int]] = []
    read_rows = windows_module.read_rows
    monkeypatch.setattr(windows_module, "read_rows", lambda a, slots, r, o, d: (decoded.append(list(slots)),
                                                                              read_rows(a, slots, r, o, d))[1])
    batches = []
    with open_store(url, read_only=True, memory_budget=budget, window_slots=M) as store:
        order = store.begin_epoch(K, ages=_ages, mix=MIX)
        plan = store._plan  # noqa: SLF001
        for start in range(0, order.shape[0], MIX.batch_size):
            idx = order[start:start + MIX.batch_size]
            batches.append((idx, store.read(idx), plan.window_of_block[store.layout.position[idx] // 8]))
    monkeypatch.setattr(windows_module, "read_rows", read_rows)
    with open_store(url, read_only=True, memory_budget=budget, window_slots=M) as full:
        full.begin_epoch(K, mix=MIX)
        for idx, got, wins in batches:
            want = full.read(idx)
            for row, window in enumerate(wins):
                age = _ages(int(window))[0]  # generated rows a past epoch did not visit hold no memory of it
                assert got.valid[:, row].tolist() == [k == age and bool(want.valid[k, row]) for k in range(K)]
                assert torch.equal(got.codes[age, row], want.codes[age, row])
    slot_of_age = {k: (K - 1 - k) % (K + 1) for k in range(K)}
    generated = range(1, len(plan.windows))
    assert decoded == [[slot_of_age[_ages(w)[0]]] for w in generated]
