"""Generated images mixed into the user's own data (`--dataset PATH --aux-data FILE`): every batch holds int(f·B)
generated rows, the store is made for two parts and written once per epoch, the generated set is converted once
and reused, generated images of another size or with labels outside the user's classes are one-line errors before
anything is trained, and two ranks under torchrun train the single process's global batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_userdata import make_npz

import memloss
from memloss.memstore.store import open_store
from memloss.trainer.data.mixed import GeneratedRequest, prepare_user_training_set
from memloss.trainer.data.npz import GeneratedDataError
from memloss.trainer.training import epoch as epoch_module

N_TRAIN, N_AUX, BATCH, FRACTION = 40, 60, 16, 0.5  # 36 training rows (4 go to the test share), 8 + 8 per batch
TINY = {"model": "small_cnn", "batch_size": BATCH, "attack_steps": 1, "epochs": 2, "aux_fraction": FRACTION}


def _prepare(tmp_path: Path, aux: Path) -> tuple:
    train = make_npz(tmp_path / "train.npz", N_TRAIN, side=8)
    return prepare_user_training_set(str(train), None, tmp_path / "data", n=None, num_workers=None, val_split=0,
                                     val_seed=0, eval_n=None, batch_size=BATCH,
                                     generated=GeneratedRequest((str(aux),), fraction=FRACTION))


def test_the_generated_part_follows_the_user_set_and_is_cached(tmp_path: Path) -> None:
    aux = make_npz(tmp_path / "gen.npz", N_AUX, side=8, seed=1)
    info, data, _, _ = _prepare(tmp_path, aux)
    assert data.parts == (36, N_AUX) and data.mix is not None and data.mix.aux_per_batch == 8
    assert data.aux is not None and data.aux.shape == info.shape == (3, 8, 8) and data.aux.num_classes == 3
    assert data.fingerprint().parts == (36, N_AUX) and data.fingerprint().name.endswith("+generated")
    first = data.aux.beton.stat().st_mtime_ns
    _, again, _, _ = _prepare(tmp_path, aux)
    assert again.aux is not None and again.aux.beton == data.aux.beton and again.aux.beton.stat().st_mtime_ns == first


@pytest.mark.parametrize(("side", "classes", "error"), [(16, 3, "images are 16×16"),
                                                        (8, 5, "labels span 0..4")])
def test_generated_images_that_do_not_fit_the_user_set_are_refused(tmp_path: Path, side: int, classes: int,
                                                                    error: str) -> None:
    aux = make_npz(tmp_path / "gen.npz", N_AUX, side=side, classes=classes)
    with pytest.raises(GeneratedDataError, match=error):
        _prepare(tmp_path, aux)


def test_two_epochs_on_user_data_with_generated_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = make_npz(tmp_path / "train.npz", N_TRAIN, side=8)
    aux = make_npz(tmp_path / "gen.npz", N_AUX, side=8, seed=1)
    batches: list[np.ndarray] = []
    original = epoch_module._train_batch

    def spy(s, x_u8, y, idx_dev, idx, *rest):  # noqa: ANN001, ANN202
        batches.append(idx.copy())
        return original(s, x_u8, y, idx_dev, idx, *rest)

    monkeypatch.setattr(epoch_module, "_train_batch", spy)
    cfg = memloss.train_config(dataset=str(train), aux_data=[str(aux)], out=str(tmp_path / "run"), k=1,
                               store=str(tmp_path / "mem.zarr"), data_dir=str(tmp_path / "data"), **TINY)
    memloss.fit(cfg, quiet=True, threads=1)
    per_epoch = -(-N_AUX // 8)  # one pass over the larger part: ceil(60 / 8) batches
    assert len(batches) == 2 * per_epoch
    assert all(b.shape == (BATCH,) and int((b >= 36).sum()) == 8 for b in batches)
    with open_store(str(tmp_path / "mem.zarr"), read_only=True) as store:
        assert store.committed_epochs == [1, 2] and store.spec.fingerprint.parts == (36, N_AUX)
        assert store.spec.fingerprint.shape == (3, 8, 8)


def test_two_ranks_on_user_data_with_generated_images(tmp_path: Path) -> None:
    """torchrun, 2 ranks on gloo: rank 0 writes each global batch once, and the global batches are the single
    process's order of the two-part store; the ranks' parameters stay equal."""
    from test_distributed import _lines, _torchrun

    from memloss.trainer.data.mixed import batch_mix

    train = make_npz(tmp_path / "train.npz", N_TRAIN, side=8)
    aux = make_npz(tmp_path / "gen.npz", N_AUX, side=8, seed=1)
    logs, run = tmp_path / "logs", tmp_path / "run"
    args = ["--dataset", str(train), "--aux-data", str(aux), "--model", "small_cnn", "--batch-size", str(BATCH),
            "--aux-fraction", str(FRACTION), "--attack-steps", "1", "--k", "1", "--epochs", "2", "--threads", "1",
            "--out", str(run), "--data-dir", str(tmp_path / "data")]
    assert _torchrun(2, logs, args) == 0
    mix = batch_mix(36, N_AUX, BATCH, FRACTION)
    with open_store(str(run / "memory.zarr"), read_only=True) as store:
        order = store.begin_epoch(2, mix=mix)
    batches = [w["idx"] for w in _lines(logs / "writes.r0.jsonl") if w["epoch"] == 2]
    assert not (logs / "writes.r1.jsonl").exists()
    assert [sorted(b) for b in batches] == [sorted(order[g * BATCH:(g + 1) * BATCH].tolist())
                                            for g in range(mix.batches)]
    params = [_lines(logs / f"params.r{r}.jsonl") for r in (0, 1)]
    assert [p["epoch"] for p in params[0]] == [1, 2] and params[0] == params[1]
