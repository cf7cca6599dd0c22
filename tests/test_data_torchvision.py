"""cifar10 / cifar100 / svhn through torchvision's own loading code, on tiny files in torchvision's on-disk format.

torchvision compares each file's md5 with the real dataset's (`check_integrity`, used by `_check_integrity` and, for
CIFAR, by `_load_meta`), so tiny files are refused as "not found or corrupted". The tests replace only that md5
comparison, in the cifar/svhn modules, by an existence check; everything else (pickle/.mat parsing, label mapping,
HWC→CHW handling, our conversion and loading) is the real code. Downloads are replaced by a raising stub (no network
here, and CI must not fetch 170 MB).
"""

import os
import pickle
import urllib.error

import numpy as np
import pytest
import torch

from memloss.trainer.data.beton import prepare
from memloss.trainer.data.loader import make_loader
from memloss.trainer.data.registry import DatasetError
from memloss.trainer.data.sources import load_tensors


def _exists(fpath: str, md5: str | None = None) -> bool:
    return os.path.isfile(fpath)


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


@pytest.fixture(autouse=True)
def offline_torchvision(monkeypatch):
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.svhn as svhn

    monkeypatch.setattr(cifar, "check_integrity", _exists)
    monkeypatch.setattr(svhn, "check_integrity", _exists)
    monkeypatch.setattr(cifar, "download_and_extract_archive", _no_network)
    monkeypatch.setattr(svhn, "download_url", _no_network)


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


def _pickle(path, obj) -> None:
    path.write_bytes(pickle.dumps(obj))


def write_cifar10(root, rng) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """5 train batches of 3 images + a test batch of 4, as pickled dicts with 'data' [N, 3072] and 'labels'."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    splits: dict[str, list] = {"train": [], "test": []}
    for name, count in [(f"data_batch_{i}", 3) for i in range(1, 6)] + [("test_batch", 4)]:
        x, y = _images(rng, count), rng.integers(0, 10, count)
        _pickle(folder / name, {"data": x.reshape(count, -1), "labels": y.tolist()})
        splits["test" if name == "test_batch" else "train"].append((x, y))
    _pickle(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    return {k: (np.concatenate([a for a, _ in v]), np.concatenate([b for _, b in v])) for k, v in splits.items()}


def write_cifar100(root, rng) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """'train' (7 images) and 'test' (5) with 'fine_labels' in 0..99 and 'coarse_labels', plus 'meta'."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for name, count in (("train", 7), ("test", 5)):
        x, y = _images(rng, count), rng.integers(0, 100, count)
        _pickle(folder / name, {"data": x.reshape(count, -1), "fine_labels": y.tolist(),
                                "coarse_labels": (y // 5).tolist()})
        out[name] = (x, y)
    _pickle(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)]})
    return out


def write_svhn(root, rng) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """train_32x32.mat / test_32x32.mat with X [32, 32, 3, N] and y [N, 1] in 1..10 (10 means digit 0)."""
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, count in (("train", 6), ("test", 4)):
        x = _images(rng, count)
        y = np.array([10, 1, 2, 3, 9, 10][:count], dtype=np.uint8)
        savemat(root / f"{name}_32x32.mat", {"X": x.transpose(2, 3, 1, 0), "y": y[:, None]})
        out[name] = (x, np.where(y == 10, 0, y).astype(np.int64))
    return out


WRITERS = {"cifar10": write_cifar10, "cifar100": write_cifar100, "svhn": write_svhn}


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn"])
def test_torchvision_files_convert_and_load_exactly(tmp_path, name) -> None:
    expected = WRITERS[name](tmp_path, np.random.default_rng(7))
    for split_name, (x_true, y_true) in expected.items():
        x, y = load_tensors(name, split_name, tmp_path, download=False)
        assert torch.equal(x, torch.from_numpy(x_true)) and torch.equal(y, torch.from_numpy(y_true.astype(np.int64)))
    x_true, y_true = expected["train"]
    split = prepare(name, "train", tmp_path, download=False)
    assert (split.n, split.shape) == (len(y_true), (3, 32, 32))
    with make_loader(split, batch_size=4, device="cpu", order=lambda epoch: np.arange(split.n)[::-1].copy()) as ld:
        batches = list(ld)
    idx = torch.cat([b[2] for b in batches])
    assert torch.equal(idx, torch.arange(split.n).flip(0))
    assert torch.equal(torch.cat([b[0] for b in batches]), torch.from_numpy(x_true)[idx])
    assert torch.equal(torch.cat([b[1] for b in batches]), torch.from_numpy(y_true.astype(np.int64))[idx])


def test_first_n_samples_of_a_torchvision_split(tmp_path) -> None:
    x_true, y_true = write_cifar10(tmp_path, np.random.default_rng(1))["train"]
    split = prepare("cifar10", "train", tmp_path, n=10, download=False)
    x, y = load_tensors("cifar10", "train", tmp_path, n=10, download=False)
    assert split.n == 10 and torch.equal(x, torch.from_numpy(x_true[:10]))
    assert split.beton.name == "cifar10-train-n10-r32.beton"


@pytest.mark.parametrize("name, hint", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"),
                                        ("svhn", "train_32x32.mat")])
def test_missing_files_and_failed_download_give_one_line(tmp_path, name, hint) -> None:
    with pytest.raises(DatasetError) as err:
        prepare(name, "train", tmp_path)
    message = str(err.value)
    assert "\n" not in message and "download failed" in message and "URLError" in message
    assert hint in message and str(tmp_path) in message
    with pytest.raises(DatasetError, match="download disabled"):
        load_tensors(name, "test", tmp_path, download=False)
    assert not (tmp_path / "ffcv").exists()
