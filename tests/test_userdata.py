"""The user's own data (`--dataset PATH`): an .npz pair and image folders at resolutions other than 32 train,
evaluate, export, inspect and compare; a stopped run resumes to the uninterrupted weights; the cache is reused and
converted again when the file changes; the statistics are those of the training pixels; the test split is found
again from the model file, and a moved or changed test file is one line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import memloss
from memloss.cli.app import app
from memloss.memstore.spec import labels_sha256
from memloss.trainer.data.registry import info_from_meta
from memloss.trainer.data.userdata import prepare_user, recorded_test_points
from memloss.trainer.data.usersplits import HOLDOUT_FRACTION, UserDataError, holdout_rows
from memloss.trainer.models.files import read_model_meta
from memloss.trainer.training import fit as fit_module

TINY = {"model": "small_cnn", "batch_size": 16, "attack_steps": 1, "k": 1, "epochs": 1}


def make_npz(path: Path, n: int, side: int = 24, channels: int = 3, classes: int = 3, seed: int = 0) -> Path:
    """Class c's pixels lie around 60·c + noise, so a small model learns the classes within an epoch."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.integers(0, 60, (n, side, side, channels)) + (y * 60)[:, None, None, None]
    np.savez(path, image=x.astype(np.uint8), label=y.astype(np.int64))
    return path


def make_folder(root: Path, n: int, side: int, gray: bool, names: tuple[str, ...] = ("ant", "bee", "cow"),
                seed: int = 0) -> Path:
    """An ImageFolder tree: root/<class>/<i>.png, n images per class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, name in enumerate(names):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (side, side) if gray else (side, side, 3)
            pixels = (rng.integers(0, 60, shape) + 60 * c).astype(np.uint8)
            Image.fromarray(pixels, "L" if gray else "RGB").save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pair")
    return {"train": make_npz(root / "train.npz", 48), "test": make_npz(root / "test.npz", 12, seed=1),
            "data": root / "data", "root": root}


def _config(out: Path, dataset: Path, data_dir: Path, **extra: Any) -> Any:
    return memloss.train_config(dataset=str(dataset), out=str(out), data_dir=str(data_dir), **{**TINY, **extra})


class _Stop(Exception):
    pass


def test_npz_pair_trains_resumes_evaluates_exports(pair: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    root = pair["root"]
    cfg = _config(root / "whole", pair["train"], pair["data"], test_data=str(pair["test"]), epochs=2)
    whole = memloss.fit(cfg, quiet=True, threads=1)
    assert [r["epoch"] for r in whole.records] == [1, 2]
    # The same run stopped after epoch 1 and resumed: the same weights.
    real = fit_module.finish_epoch

    def stop_after_first(s: Any, epoch: int, *args: Any) -> None:
        real(s, epoch, *args)
        raise _Stop

    monkeypatch.setattr(fit_module, "finish_epoch", stop_after_first)
    with pytest.raises(_Stop):
        memloss.fit(_config(root / "part", pair["train"], pair["data"], test_data=str(pair["test"]), epochs=2),
                    quiet=True, threads=1)
    monkeypatch.setattr(fit_module, "finish_epoch", real)
    resumed = memloss.fit(fit_module.resume_config(root / "part", {}), resume=root / "part", quiet=True, threads=1)
    assert [r["epoch"] for r in resumed.records] == [1, 2]
    a, b = load_file(str(root / "whole" / "last.safetensors")), load_file(str(root / "part" / "last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # evaluate finds the test file from the model's record; export's card describes the user dataset.
    result = memloss.evaluate(root / "whole", attacks="pgd20", n=5)
    assert result.n == 5 and result.dataset == str(pair["train"])
    card = json.loads(memloss.export(root / "whole", "robustbench", root / "export").card.read_text())
    user = card["user_dataset"]
    assert (user["kind"], user["test"], user["shape"], user["num_classes"]) == ("npz", str(pair["test"]),
                                                                              [3, 24, 24], 3)
    pixels = np.load(pair["train"])["image"] / 255.0
    assert user["mean"] == pytest.approx(pixels.mean(axis=(0, 1, 2)), abs=1e-9)
    assert user["std"] == pytest.approx(pixels.std(axis=(0, 1, 2)), abs=1e-9)
    assert card["normalization"]["mean"] == pytest.approx(user["mean"], abs=1e-6)
    # the card's description builds the network again, without the run directory
    model = memloss.build_model(card["arch"], info_from_meta({"user_dataset": json.dumps(card["user_dataset"])}))
    model.load_state_dict(torch.load(root / "export" / "model.pt", weights_only=True))
    assert model.eval()(torch.rand(2, 3, 24, 24)).shape == (2, 3)


@pytest.mark.parametrize(("side", "gray", "split_dirs"), [(16, True, True), (24, False, False)])
def test_image_folder_trains_evaluates_exports_and_compares(tmp_path: Path, side: int, gray: bool,
                                                           split_dirs: bool) -> None:
    root = tmp_path / "images"
    if split_dirs:  # root/train and root/test
        make_folder(root / "train", 10, side, gray)
        make_folder(root / "test", 2, side, gray, seed=1)
    else:  # classes directly inside: a seeded tenth is held out as the test split
        make_folder(root, 12, side, gray)
    run = memloss.fit(_config(tmp_path / "run", root, tmp_path / "data"), quiet=True, threads=1)
    assert run.records[0]["epoch"] == 1
    meta = read_model_meta(run.run_dir / "best.safetensors")
    info = info_from_meta(meta)
    channels = 1 if gray else 3
    assert info.shape == (channels, side, side) and info.num_classes == 3 and info.user is not None
    assert info.user.classes == ("ant", "bee", "cow")
    assert info.user.n_test == (6 if split_dirs else round(36 * HOLDOUT_FRACTION))
    # Every command, through the CLI.
    cli = CliRunner()
    done = cli.invoke(app, ["evaluate", str(run.run_dir), "--attacks", "pgd20", "--n", "3", "--device", "cpu",
                            "--out", str(tmp_path / "eval.json")])
    assert done.exit_code == 0, done.output
    assert json.loads((tmp_path / "eval.json").read_text())["n"] == 3
    done = cli.invoke(app, ["export", str(run.run_dir), str(tmp_path / "export")])
    assert done.exit_code == 0, done.output
    card = json.loads((tmp_path / "export" / "card.json").read_text())
    assert card["user_dataset"]["shape"] == [channels, side, side] and card["input_shape"] == [channels, side, side]
    done = cli.invoke(app, ["inspect-store", str(run.store), "--json"])
    assert done.exit_code == 0, done.output
    summary = memloss.summarize(run.store)
    assert summary["dataset"]["shape"] == [channels, side, side] and summary["dataset"]["n"] == info.user.n_train
    done = cli.invoke(app, ["compare", str(run.run_dir), "--out", str(tmp_path / "cmp")])
    assert done.exit_code == 0, done.output
    assert any((tmp_path / "cmp").iterdir())


def test_cache_is_reused_and_converted_again_when_the_file_changes(tmp_path: Path) -> None:
    train = make_npz(tmp_path / "train.npz", 30)
    first = prepare_user(train, None, tmp_path / "data")
    stamp = first.base.beton.stat().st_mtime_ns
    again = prepare_user(train, None, tmp_path / "data")
    assert again.base.beton == first.base.beton and again.base.beton.stat().st_mtime_ns == stamp
    assert again.info == first.info
    make_npz(train, 30, seed=5)  # same name and shape, other pixels
    os.utime(train, ns=(stamp + 10**9, stamp + 10**9))  # a distinct modification time even on coarse clocks
    changed = prepare_user(train, None, tmp_path / "data")
    assert changed.base.beton != first.base.beton and changed.info.mean != first.info.mean
    # a changed image folder (one image rewritten) is converted again too
    folder = make_folder(tmp_path / "imgs", 4, 8, gray=True)
    a = prepare_user(folder, None, tmp_path / "data")
    assert prepare_user(folder, None, tmp_path / "data").base.beton == a.base.beton
    make_folder(folder, 4, 8, gray=True, seed=9)
    later = a.base.beton.stat().st_mtime_ns + 10**9
    for image in folder.rglob("*.png"):
        os.utime(image, ns=(later, later))
    assert prepare_user(folder, None, tmp_path / "data").base.beton != a.base.beton


def test_held_out_split_is_seeded_disjoint_and_recorded(tmp_path: Path) -> None:
    train = make_npz(tmp_path / "all.npz", 40)
    data = prepare_user(train, None, tmp_path / "data")
    rows_train, rows_test = holdout_rows(40)
    assert len(rows_test) == 4 and not set(rows_train) & set(rows_test) and len(rows_train) + 4 == 40
    labels = np.load(train)["label"]
    assert torch.equal(data.test_y, torch.from_numpy(labels[rows_test]))
    assert data.info.user.holdout == HOLDOUT_FRACTION and data.info.user.test is None and data.base.n == 36
    x, y = recorded_test_points(data.info)
    assert torch.equal(x, data.test_x) and torch.equal(y, data.test_y)


def test_evaluate_names_a_moved_or_changed_test_file(tmp_path: Path) -> None:
    train, test = make_npz(tmp_path / "tr.npz", 20), make_npz(tmp_path / "te.npz", 6)
    info = prepare_user(train, test, tmp_path / "data").info
    make_npz(test, 6, seed=3, classes=2)  # other labels
    with pytest.raises(UserDataError, match="changed since the model was trained"):
        recorded_test_points(info)
    test.rename(tmp_path / "elsewhere.npz")
    with pytest.raises(UserDataError, match=f"{test}, is not there any more"):
        recorded_test_points(info)


@pytest.mark.parametrize("arch", ["resnet18", "preact_resnet18", "small_cnn", "wrn-28-10"])
def test_models_take_any_resolution_and_channels(tmp_path: Path, arch: str) -> None:
    info = prepare_user(make_npz(tmp_path / "g.npz", 20, side=12, channels=1, classes=4), None, tmp_path / "d").info
    model = memloss.build_model(arch, info).eval()
    assert model(torch.rand(2, 1, 12, 12)).shape == (2, 4)
    assert torch.allclose(model.normalize.mean.flatten(), torch.tensor(info.mean))


def test_n_takes_the_first_training_samples_and_a_resume_refuses_changed_data(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from memloss.errors import ConfigError
    from memloss.trainer.training.resume_state import _check_same_data, _data_record

    train = make_npz(tmp_path / "c.npz", 30, side=8, channels=4)
    first = prepare_user(train, None, tmp_path / "data", n=10)
    rows, _ = holdout_rows(30)
    assert first.base.n == 10 and first.info.user.n_train == 10 and first.info.shape == (4, 8, 8)
    assert first.base.labels_sha256 == labels_sha256(np.load(train)["label"][rows[:10]])
    saved = _data_record(first.info)  # what the resume point holds
    _check_same_data(SimpleNamespace(info=first.info), saved)  # the same data: no complaint
    make_npz(train, 30, side=8, channels=4, seed=7)
    stamp = train.stat().st_mtime_ns + 10**9
    os.utime(train, ns=(stamp, stamp))
    changed = prepare_user(train, None, tmp_path / "data", n=10)
    with pytest.raises(ConfigError, match="changed since the run started"):
        _check_same_data(SimpleNamespace(info=changed.info), saved)
