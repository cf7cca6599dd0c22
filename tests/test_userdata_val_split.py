"""`--val-split N` with the user's own data (`--dataset PATH`): N images of its training split (after `--n` and the
test share) held out as for the built-in sets (holdout.py), the rest converted to their own cached `.beton`, the
per-epoch selection on the held-out images with no test key logged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_userdata import TINY, make_folder, make_npz

import memloss
from memloss.errors import ConfigError
from memloss.memstore.spec import labels_sha256
from memloss.trainer.data.holdout import holdout_indices
from memloss.trainer.data.userdata import prepare_user
from memloss.trainer.data.usersplits import holdout_rows


def test_npz_training_split_loses_the_seeded_held_out_rows(tmp_path: Path) -> None:
    train = make_npz(tmp_path / "all.npz", 40)
    plain = prepare_user(train, None, tmp_path / "data")
    data = prepare_user(train, None, tmp_path / "data", val_split=5, val_seed=3)
    rows, test_rows = holdout_rows(40)  # 36 training rows, 4 test rows
    held = holdout_indices(36, 5, 3)
    assert data.held_out is not None and np.array_equal(data.held_out.indices, held) and data.held_out.seed == 3
    source = np.load(train)
    assert torch.equal(data.held_out.y, torch.from_numpy(source["label"][rows[held]].astype(np.int64)))
    assert torch.equal(data.held_out.x, torch.from_numpy(source["image"][rows[held]].transpose(0, 3, 1, 2)))
    kept = np.delete(rows, held)
    assert data.base.n == 31 and data.base.labels_sha256 == labels_sha256(source["label"][kept])
    assert data.info.user.n_train == 31 and torch.equal(data.test_y, plain.test_y)  # the test split is untouched
    assert data.base.beton != plain.base.beton and plain.held_out is None
    again = prepare_user(train, None, tmp_path / "data", val_split=5, val_seed=3)
    assert again.base.beton == data.base.beton and again.base.beton.stat().st_mtime_ns == \
        data.base.beton.stat().st_mtime_ns  # cached: not converted again


def test_image_folder_holds_out_from_its_train_tree(tmp_path: Path) -> None:
    root = tmp_path / "images"
    make_folder(root / "train", 4, 8, gray=True)
    make_folder(root / "test", 2, 8, gray=True, seed=1)
    data = prepare_user(root, None, tmp_path / "data", val_split=3, val_seed=0)
    assert data.held_out is not None and data.held_out.x.shape == (3, 1, 8, 8) and data.base.n == 9
    assert len(data.test_y) == 6


def test_too_large_a_split_is_one_line_before_anything_is_written(tmp_path: Path) -> None:
    train = make_npz(tmp_path / "few.npz", 20)
    with pytest.raises(ConfigError, match="--val-split 18 must be between 1 and 17"):
        prepare_user(train, None, tmp_path / "data", val_split=18)
    assert not (tmp_path / "data").exists()


def test_val_split_and_aux_data_are_accepted_with_user_data(tmp_path: Path) -> None:
    train = make_npz(tmp_path / "u.npz", 20)
    assert memloss.train_config(dataset=str(train), val_split=4).data.val_split == 4
    assert memloss.train_config(dataset=str(train), aux_data=[str(train)]).data.aux_data == (str(train),)


@pytest.mark.slow
def test_a_user_data_run_selects_on_held_out_images(tmp_path: Path) -> None:
    from memloss.memstore.store import open_store

    train = make_npz(tmp_path / "train.npz", 48)
    cfg = memloss.train_config(dataset=str(train), out=str(tmp_path / "run"), data_dir=str(tmp_path / "data"),
                               val_split=8, val_seed=2, **TINY)
    result = memloss.fit(cfg, quiet=True, threads=1)
    first = result.records[0]
    assert {"val_clean_acc", "val_pgd20_acc"} <= set(first) and first["eval_n"] == 8
    assert not [k for k in first if k.startswith("test_")]
    held = json.loads((tmp_path / "run" / "heldout.json").read_text())
    rows, _ = holdout_rows(48)
    assert held["indices"] == holdout_indices(len(rows), 8, 2).tolist() and held["seed"] == 2
    with open_store(str(tmp_path / "run" / "memory.zarr"), read_only=True) as store:
        assert store.spec.fingerprint.n == len(rows) - 8 and store.spec.fingerprint.name.endswith("-val8s2")
