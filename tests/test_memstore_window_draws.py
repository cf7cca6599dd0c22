"""Per-window slot draws (`--memory-slot-draw window`): a window of the Zarr store decodes only the memory ages it
drew, and its size follows m (the ages decoded), not K."""

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import memloss.memstore.zarrstore.windows as windows_module
from memloss.memstore.layout.budget import index_bytes, with_read_ahead
from memloss.memstore.errors import StoreError
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
    with open_store(url, read_only=True, memory_budget=BUDGET) as full:
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
            order = store.begin_epoch(epoch, mix=MIX, ages=lambda w: [])  # write-only: the windows decode nothing
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
    # The reference: every age read alone, in windows of the same size (one age each), so the plans are the same.
    want = {}
    for a in range(K):
        with open_store(url, read_only=True, memory_budget=budget, window_slots=M) as full:
            full.begin_epoch(K, ages=lambda w, a=a: [a], mix=MIX)
            want[a] = [full.read(idx) for idx, _, _ in batches]
    for b, (idx, got, wins) in enumerate(batches):
        for row, window in enumerate(wins):
            age = _ages(int(window))[0]  # generated rows a past epoch did not visit hold no memory of it
            assert got.valid[:, row].tolist() == [k == age and bool(want[age][b].valid[k, row]) for k in range(K)]
            assert torch.equal(got.codes[age, row], want[age][b].codes[age, row])
    slot_of_age = {k: (K - 1 - k) % (K + 1) for k in range(K)}
    generated = range(1, len(plan.windows))
    assert decoded == [[slot_of_age[_ages(w)[0]]] for w in generated]


@pytest.mark.parametrize("ages", [None, lambda w: [0, 1]], ids=["every age", "two ages"])
def test_an_epoch_drawing_more_ages_than_the_windows_hold_is_refused_before_anything_changes(
        tmp_path: Path, ages) -> None:  # noqa: ANN001
    """Windows sized for m = 1 age cannot decode more in the same budget (issue 20: a draw-less epoch decoded all K
    ages into them and the store's RSS reached twice its budget): refused in one line, the store unchanged."""
    url = _filled(tmp_path)
    with open_store(url, memory_budget=BUDGET, window_slots=M) as store:
        before = (store.slot_epochs, store.committed_epochs)
        with pytest.raises(StoreError, match=r"sized for 1 of the K=4 memory ages.*at most 1 ages per window"):
            store.begin_epoch(K, ages=ages)
        assert (store.slot_epochs, store.committed_epochs, store.current_epoch) == (*before, None)
    with open_store(url, read_only=True, memory_budget=BUDGET) as again:  # nothing was saved
        assert (again.slot_epochs, again.committed_epochs) == before


def test_a_write_only_epoch_decodes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = _filled(tmp_path)
    decoded: list[list[int]] = []
    read_rows = windows_module.read_rows
    monkeypatch.setattr(windows_module, "read_rows", lambda a, slots, r, o, d: (decoded.append(list(slots)),
                                                                              read_rows(a, slots, r, o, d))[1])
    with open_store(url, memory_budget=BUDGET, window_slots=M) as store:
        write_epoch(store, K, batch=40, ages=lambda w: [])
        assert store.committed_epochs[-1] == K
    assert decoded == []  # without ages= the windows would decode the K = 4 committed ages


def _draws(epoch: int):  # noqa: ANN202
    """Per-window draws of one committed age (none at epoch 0)."""
    return lambda w: [] if epoch == 0 else [(epoch + w) % min(epoch, K)]


def _drawn_epochs(url: Path, epochs: int, next_known: bool,
                  monkeypatch: pytest.MonkeyPatch) -> tuple[list, list, list]:
    """Epochs 0..epochs-1 of a windowed store with window draws, each read whole and committed: the batches read,
    for each epoch whether its first window was decoded after its begin_epoch, and the training thread's slot
    checks (each epoch's start marked [-1])."""
    import memloss.memstore.zarrstore.backend as backend_module

    decoded: list[np.ndarray] = []
    read_rows, verify = windows_module.read_rows, backend_module.verify_read_slots
    monkeypatch.setattr(windows_module, "read_rows", lambda a, slots, r, o, d: (decoded.append(np.asarray(r)),
                                                                              read_rows(a, slots, r, o, d))[1])
    checks: list[list[int]] = []
    monkeypatch.setattr(backend_module, "verify_read_slots", lambda h, st, slots: (
        checks.append(sorted(slots)) if threading.current_thread() is threading.main_thread() else None,
        verify(h, st, slots))[1])
    batches, late = [], []
    with create_store(url, make_spec(n=N, k=K, shape=SHAPE), block_size=8, memory_budget=BUDGET,
                      window_slots=M) as store:
        for epoch in range(epochs):
            checks.append([-1])  # marks the epoch start
            order = store.begin_epoch(epoch, ages=_draws(epoch), next_ages=_draws(epoch + 1) if next_known else None)
            first = np.sort(store.layout.position[order[:store.window_blocks * store.block_size]])
            decoded.clear()
            for start in range(0, N, 40):
                idx = order[start:start + 40]
                batches.append(store.read(idx))
                write_epoch_rows(store, idx, epoch)
            late.append(any(np.array_equal(r, first) for r in decoded))
            store.commit_epoch(wait=False)
    monkeypatch.undo()
    return batches, late, checks


def write_epoch_rows(store, idx: np.ndarray, epoch: int) -> None:  # noqa: ANN001
    b = idx.shape[0]
    store.write(idx, np.full((b, *SHAPE), epoch + 1, np.uint8), np.full(b, 0.01, np.float32),
                np.stack([np.full(b, epoch), idx], 1), np.zeros(b, bool))


def test_with_the_next_epochs_draws_its_first_window_loads_during_the_last_window(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`begin_epoch(next_ages=...)`: the next epoch's first window is decoded (only its drawn age) before that
    epoch begins, and every read slot but the one just committed is checked off the training thread; the memory
    read is bit for bit that of a run that loads the window at the epoch start."""
    early, early_late, early_checks = _drawn_epochs(tmp_path / "a.zarr", 7, True, monkeypatch)
    plain, plain_late, _ = _drawn_epochs(tmp_path / "b.zarr", 7, False, monkeypatch)
    assert plain_late[2:] == [True] * 5 and early_late[2:] == [False] * 5
    starts = [i for i, c in enumerate(early_checks) if c == [-1]]
    for epoch in range(5, 7):  # from epoch K + 1 = 5 on: every read slot is committed
        at_start = early_checks[starts[epoch] + 1:starts[epoch + 1] if epoch + 1 < len(starts) else None]
        assert at_start == [[(epoch - 1) % (K + 1)]]  # only the slot of epoch e-1 on the training thread
    assert len(early) == len(plain)
    for a, b in zip(early, plain):
        for name in ("codes", "scale", "offset", "flip", "valid"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_in_an_epoch_of_one_window_the_next_epochs_early_work_starts_after_a_quarter(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A window as large as the dataset (m = 1 ages in ~6 MB, K = 4 resident would need ~7.4 MB): the next epoch's
    first window and slot check start once a quarter of the epoch was read, not with its first batch, when the
    previous commit is still landing and the read-ahead filling."""
    import memloss.memstore.zarrstore.backend as backend_module

    budget = index_bytes(N) + with_read_ahead(6 << 20, K, 3 * 32 * 32 + 20, N)
    url = tmp_path / "one.zarr"
    read_so_far: list[int] = []
    with create_store(url, make_spec(n=N, k=K, shape=SHAPE), block_size=8, memory_budget=budget,
                      window_slots=M) as store:
        assert not store.resident and store.window_blocks == store.layout.num_blocks
        real = backend_module.ZarrMemStore._prepare_next
        monkeypatch.setattr(backend_module.ZarrMemStore, "_prepare_next",
                            lambda self: (read_so_far.append(rows[0]), real(self))[1])
        for epoch in range(3):
            rows = [0]
            order = store.begin_epoch(epoch, ages=_draws(epoch), next_ages=_draws(epoch + 1))
            for start in range(0, N, 40):
                idx = order[start:start + 40]
                store.read(idx)
                rows[0] += idx.shape[0]
                write_epoch_rows(store, idx, epoch)
            store.commit_epoch(wait=False)
    assert read_so_far == [80, 80]  # 40-row batches: the third batch reaches N / 4 = 100 (epoch 0 reads nothing)
