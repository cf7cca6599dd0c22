"""The `.beton` cache: built once, reused after verification, rebuilt when corrupt, never left half-written."""

import json

import numpy as np
import pytest

from memloss.trainer.data import beton as beton_module
from memloss.trainer.data import labels_digest
from memloss.trainer.data.beton import cache_paths, prepare, verify_beton
from memloss.trainer.data.sources import SyntheticSource

ARGS = {"n": 50, "resolution": 8}


def _refuse_to_write(*args, **kwargs):
    raise AssertionError("the cache should have been reused")


@pytest.fixture
def built(tmp_path):
    split = prepare("synthetic", "train", tmp_path, **ARGS)
    _, sidecar = cache_paths("synthetic", "train", tmp_path, **ARGS)
    return tmp_path, split, sidecar


def test_split_record_matches_the_source(built) -> None:
    _, split, sidecar = built
    labels = SyntheticSource("train", 50, 8).labels
    assert (split.n, split.shape, split.num_classes) == (50, (3, 8, 8), 10)
    assert split.labels_sha256 == labels_digest(labels)
    record = json.loads(sidecar.read_text())
    assert record["beton_bytes"] == split.beton.stat().st_size
    assert verify_beton(split.beton, record) is None


def test_valid_cache_is_reused_without_rewriting(built, monkeypatch) -> None:
    data_dir, split, _ = built
    before = split.beton.stat()
    monkeypatch.setattr(beton_module, "write_beton", _refuse_to_write)
    again = prepare("synthetic", "train", data_dir, **ARGS)
    after = again.beton.stat()
    assert again == split and (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@pytest.mark.parametrize("damage", ["truncate", "header", "sidecar_labels", "no_sidecar"])
def test_damaged_cache_is_rebuilt(built, damage) -> None:
    data_dir, split, sidecar = built
    good = split.beton.read_bytes()
    if damage == "truncate":
        split.beton.write_bytes(good[: len(good) // 2])
    elif damage == "header":  # same size, garbage where the header and field table are
        split.beton.write_bytes(b"\xff" * 512 + good[512:])
    elif damage == "sidecar_labels":
        record = json.loads(sidecar.read_text())
        sidecar.write_text(json.dumps({**record, "labels_sha256": "0" * 64}))
    else:
        sidecar.unlink()
    record = json.loads(sidecar.read_text()) if sidecar.exists() else None
    assert record is None or verify_beton(split.beton, record) is not None
    rebuilt = prepare("synthetic", "train", data_dir, **ARGS)
    assert rebuilt == split and rebuilt.beton.read_bytes() == good
    assert verify_beton(rebuilt.beton, json.loads(sidecar.read_text())) is None


def test_failed_write_leaves_no_beton_and_no_temp(tmp_path, monkeypatch) -> None:
    def half_write(source, path, num_workers=None, label=None):
        path.write_bytes(b"partial beton")
        raise OSError("disk full")

    monkeypatch.setattr(beton_module, "write_beton", half_write)
    with pytest.raises(OSError, match="disk full"):
        prepare("synthetic", "train", tmp_path, **ARGS)
    assert list((tmp_path / "ffcv").iterdir()) == []


def test_leftover_temp_file_is_never_used(tmp_path) -> None:
    beton, _ = cache_paths("synthetic", "train", tmp_path, **ARGS)
    beton.parent.mkdir(parents=True)
    stale = beton.with_name(f".{beton.stem}.999-deadbeef.tmp")
    stale.write_bytes(b"half-written")
    split = prepare("synthetic", "train", tmp_path, **ARGS)
    assert split.beton == beton and verify_beton(beton, json.loads(beton.with_suffix(".json").read_text())) is None
    assert stale.read_bytes() == b"half-written"  # not ours to delete, and not mistaken for the cache


def test_each_size_and_resolution_has_its_own_cache(tmp_path) -> None:
    a = prepare("synthetic", "test", tmp_path, n=20, resolution=8)
    b = prepare("synthetic", "test", tmp_path, n=30, resolution=8)
    c = prepare("synthetic", "test", tmp_path, n=20, resolution=12)
    assert len({a.beton, b.beton, c.beton}) == 3
    assert (b.n, c.shape) == (30, (3, 12, 12))
    assert a.labels_sha256 == labels_digest(SyntheticSource("test", 20, 8).labels)
    assert np.array_equal(SyntheticSource("test", 20, 12).labels, SyntheticSource("test", 20, 8).labels)
