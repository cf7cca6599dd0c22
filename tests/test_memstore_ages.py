"""Contract of per-window slot draws, `begin_epoch(epoch, ages=...)`, against every backend (the factory of the store
contract tests): rows of ages a sample's window did not draw come back invalid and empty, drawn rows are intact,
and a bad `ages` callable is refused before anything changes."""

from __future__ import annotations

import numpy as np
import pytest

from memloss.memstore.errors import StoreError
from test_memstore_contract import SHAPE, Factory, factory, make_spec, run_epoch  # noqa: F401  (factory: fixture)


def _ages_by_window(k: int):  # noqa: ANN202
    """Window w reads ages {w mod k, (w + 2) mod k}: different windows draw different ages."""
    return lambda w: sorted({w % k, (w + 2) % k})


@pytest.mark.parametrize("k", [1, 3, 4])
def test_undrawn_ages_come_back_invalid(factory: Factory, k: int) -> None:
    ages = _ages_by_window(k)
    with factory(make_spec(n=40, k=k), block_size=4) as store:
        for epoch in range(k):
            run_epoch(store, epoch)
        order = store.begin_epoch(k, ages=ages)
        plan_windows = store._plan.windows  # noqa: SLF001  (the test checks against the store's own plan)
        window_of_sample = np.empty(40, dtype=np.int64)
        for w, blocks in enumerate(plan_windows):
            for b in blocks:
                start, stop = store.layout.block_rows(int(b))
                window_of_sample[store.layout.members[start:stop]] = w
        for start in range(0, 40, 7):
            idx = order[start:start + 7]
            mb = store.read(idx)
            for j, i in enumerate(idx):
                drawn = set(ages(int(window_of_sample[i])))
                for age in range(k):
                    assert bool(mb.valid[age, j]) == (age in drawn)
                    if age in drawn:  # the row written in epoch k − 1 − age, intact
                        assert mb.offset[age, j].tolist() == [k - 1 - age, int(i)]
                    else:
                        assert bool((mb.codes[age, j] == 128).all()) and float(mb.scale[age, j]) == 0.0


def test_ages_none_reads_everything_and_draws_end_with_the_epoch(factory: Factory) -> None:
    with factory(make_spec(n=20, k=2), block_size=5) as store:
        run_epoch(store, 0)
        run_epoch(store, 1)
        order = store.begin_epoch(2, ages=lambda w: [1])
        assert not store.read(order[:5]).valid[0].any()
        store.commit_epoch()
        store.begin_epoch(3)
        mb = store.read(order[:5])
        assert mb.valid[1].all() and not mb.valid[0].any()  # epoch 2 wrote nothing; epoch 1 is age 1


@pytest.mark.parametrize("bad", [lambda w: [2], lambda w: [-1], lambda w: [0.5]])
def test_bad_ages_are_refused_before_the_epoch_starts(factory: Factory, bad) -> None:  # noqa: ANN001
    with factory(make_spec(n=20, k=2), block_size=5) as store:
        run_epoch(store, 0)
        with pytest.raises(StoreError, match=r"memory ages in \[0, 2\)"):
            store.begin_epoch(1, ages=bad)
        assert store.committed_epochs == [0] and store.current_epoch is None
        store.begin_epoch(1)
        assert store.read(np.arange(5)).valid[0].all()


def test_shape_of_a_drawn_batch_is_unchanged(factory: Factory) -> None:
    with factory(make_spec(n=12, k=3), block_size=4) as store:
        for epoch in range(3):
            run_epoch(store, epoch)
        store.begin_epoch(3, ages=lambda w: [])
        mb = store.read(np.arange(6))
        assert mb.codes.shape == (3, 6, *SHAPE) and not mb.valid.any()
