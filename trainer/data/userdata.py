"""The user's own data (`--dataset PATH`, optional `--test-data PATH`): an .npz file or an image folder, its
training split converted once into a cached FFCV `.beton` (the built-in sets' format and fields), its statistics
computed once, and its test split found again from what a model file records.

- .npz: `image` uint8 [N, H, W, C] and `label` int [N], read in streamed slices and checked exactly like
  `--aux-data` files (npz.py, generated.py). Image folders: torchvision's ImageFolder layout (folder.py).
- Test split: `--test-data PATH` (a file or tree of the same kind, size, channels and classes); an image folder
  holding `train/` and `test/` (or `val/`); otherwise a seeded held-out share of the training data:
  `HOLDOUT_FRACTION` of the samples, the rows `np.random.default_rng(HOLDOUT_SEED).permutation(N)[:n_test]`, the
  same for every run seed, so runs compared across seeds share one test split.
- Classes: an .npz's labels are class numbers 0..C−1 with C = 1 + the largest training label; an image folder's
  classes are its sorted subfolder names. Test labels outside the training classes are refused.
- Statistics: per-channel mean and std of the training split's pixels in [0, 1] (population std over all pixels,
  as the built-in sets'; a constant channel is given std 1/255), computed in one streamed pass when the split is
  converted and kept in the cache's sidecar. Models normalize inside with them (models/layers.py).
- Cache: `<data_dir>/ffcv/user-<name>-<key>.beton` + JSON sidecar; the key is a digest of the source's identity
  (an .npz: absolute path, size and modification time; a folder: its path and every image's relative path, size and
  modification time), the held-out split and `n`, so a changed file is converted again, never silently reused.
- Everything is checked (layouts, labels, the test images) before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from memloss.memstore.spec import labels_sha256 as labels_digest
from memloss.trainer.common.files import atomic_write_bytes
from memloss.trainer.data.beton import CACHE_FORMAT, PreparedSplit, build_beton, read_sidecar, verify_beton
from memloss.trainer.data.folder import FolderSource, first_image_layout, scan, split_roots
from memloss.trainer.data.generated import GeneratedSource, npz_layout
from memloss.trainer.data.npz import GeneratedDataError, read_whole
from memloss.trainer.data.registry import DATASETS, DatasetInfo, UserRecord, user_info
from memloss.trainer.data.sources import Source, default_data_dir

HOLDOUT_FRACTION = 0.1
HOLDOUT_SEED = 0


class UserDataError(GeneratedDataError):
    """The user's data cannot be used: missing, of the wrong layout, or train and test that do not match."""


@dataclass(frozen=True)
class _Layout:
    """A SampleLayout (registry.py) for checking .npz files of a user dataset."""

    name: str
    shape: tuple[int, int, int]
    num_classes: int


@dataclass(frozen=True)
class Splits:
    """Both splits of a user dataset, checked: sources of uint8 [N, C, H, W] images, classes 0..num_classes−1."""

    kind: str
    train_path: Path
    test_path: Path | None
    train: Source
    test: Source
    shape: tuple[int, int, int]
    num_classes: int
    classes: tuple[str, ...]
    identity: Any  # what the training split's cache key records of the source


@dataclass(frozen=True)
class UserData:
    """A prepared user dataset: its facts (with the record), the training split's `.beton`, the test split."""

    info: DatasetInfo
    base: PreparedSplit
    test_x: torch.Tensor  # uint8 [n_test, C, H, W]
    test_y: torch.Tensor  # int64 [n_test]


def holdout_rows(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, test rows), both sorted int64: the seeded held-out split of n samples."""
    n_test = max(1, round(n * HOLDOUT_FRACTION))
    if n - n_test < 1:
        raise UserDataError(f"{n} sample(s) cannot be split into training and test data; pass --test-data or more "
                            "samples")
    order = np.random.default_rng(HOLDOUT_SEED).permutation(n)
    return np.sort(order[n_test:]).astype(np.int64), np.sort(order[:n_test]).astype(np.int64)


def _first(rows: np.ndarray, n: int | None, path: Path) -> np.ndarray:
    if n is None:
        return rows
    if not 1 <= n <= len(rows):
        raise UserDataError(f"--n {n}: the training split of {path} has {len(rows)} samples; pass --n ≤ {len(rows)}")
    return rows[:n]


def _existing(path: str | Path, option: str) -> Path:
    resolved = Path(path).expanduser().absolute()
    if not resolved.exists():
        raise UserDataError(f"{option} {path} does not exist; pass an .npz file or an image folder (or a built-in "
                            f"dataset: {', '.join(DATASETS)})")
    return resolved


def _npz_labels(path: Path) -> tuple[tuple[int, int, int], np.ndarray]:
    """((C, H, W), int64 labels) of an .npz dataset file after the --aux-data checks of its layout."""
    images, labels = npz_layout(path)
    n, h, w, c = images.shape
    if n == 0:
        raise UserDataError(f"{path} holds no images")
    if c > 4 and images.shape[1] <= 4:
        raise UserDataError(f"{path}: images look like [N, C, H, W] {images.shape}; store them as [N, H, W, C] "
                            "(x.transpose(0, 2, 3, 1))")
    y = read_whole(labels).astype(np.int64)
    if y.min() < 0:
        raise UserDataError(f"{path}: labels span {y.min()}..{y.max()}; labels must be class numbers 0..C−1")
    return (c, h, w), y


def _num_classes(path: Path, y: np.ndarray) -> int:
    classes = int(y.max()) + 1
    if classes < 2:
        raise UserDataError(f"{path}: every training label is {int(y.max())}; a classifier needs at least 2 classes")
    return classes


def _check_pair(train: Path, test: Path, shape: tuple, test_shape: tuple, y_test: np.ndarray, classes: int) -> None:
    if test_shape != shape:
        (c, h, w), (tc, th, tw) = shape, test_shape
        raise UserDataError(f"test data {test} is {th}×{tw} with {tc} channel(s), training data {train} is {h}×{w} "
                            f"with {c}; use test data of the same size and channels")
    if len(y_test) and int(y_test.max()) >= classes:
        raise UserDataError(f"test data {test}: labels span {int(y_test.min())}..{int(y_test.max())}, the training "
                            f"data {train} has classes 0..{classes - 1}; use test data of the same classes")


def _npz_splits(train: Path, test: Path | None, n: int | None) -> Splits:
    shape, y = _npz_labels(train)
    classes = _num_classes(train, y)
    if test is None:
        train_rows, test_rows = holdout_rows(len(y))
        test_shape, y_test = shape, y[test_rows]
    else:
        if test.is_dir():
            raise UserDataError(f"--test-data {test} is a folder but --dataset {train} is an .npz file; pass a test "
                                ".npz file")
        train_rows, test_rows = np.arange(len(y), dtype=np.int64), None
        test_shape, y_test = _npz_labels(test)
    _check_pair(train, test or train, shape, test_shape, y_test, classes)
    layout = _Layout(str(train), shape, classes)
    train_rows = _first(train_rows, n, train)
    stat = train.stat()
    return Splits("npz", train, test, GeneratedSource([train], layout, rows=train_rows),
                  GeneratedSource([test or train], layout, rows=test_rows), shape, classes, (),
                  [str(train), stat.st_size, stat.st_mtime_ns])


def _folder_splits(root: Path, test: Path | None, n: int | None) -> Splits:
    train_root, found_test = split_roots(root)
    test = test or found_test
    classes, samples = scan(train_root)
    if len(classes) < 2:
        raise UserDataError(f"{train_root} has one class folder ({classes[0]}); a classifier needs at least 2 classes")
    shape = first_image_layout(samples[0][0])
    everything = FolderSource(train_root, samples, shape)
    if test is None:
        train_rows, test_rows = holdout_rows(len(everything))
        test_source = everything.subset(test_rows)
    else:
        if not test.is_dir():
            raise UserDataError(f"--test-data {test} is a file but --dataset {root} is an image folder; pass a test "
                                "image folder")
        _, test_samples = scan(test, {name: i for i, name in enumerate(classes)})
        test_source = FolderSource(test, test_samples, first_image_layout(test_samples[0][0]))
        train_rows = np.arange(len(everything), dtype=np.int64)
    _check_pair(train_root, test or train_root, shape, test_source.shape, test_source.labels, len(classes))
    train_source = everything.subset(_first(train_rows, n, train_root))
    digest = hashlib.sha256(json.dumps(train_source.identity()).encode()).hexdigest()
    return Splits("folder", train_root, test, train_source, test_source, shape, len(classes), tuple(classes),
                  [str(train_root), digest])


def open_splits(dataset: str | Path, test_data: str | Path | None = None, n: int | None = None) -> Splits:
    """Both splits of the user dataset at `dataset` (an .npz file or an image folder), checked; nothing written."""
    path = _existing(dataset, "--dataset")
    test = _existing(test_data, "--test-data") if test_data is not None else None
    if path.is_dir():
        return _folder_splits(path, test, n)
    return _npz_splits(path, test, n)


def channel_stats(source: Source, label: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel of the pixels of `source` in [0, 1], in one streamed pass (float64 sums)."""
    from tqdm import tqdm

    c, h, w = source.shape
    total, squares = np.zeros(c), np.zeros(c)
    with tqdm(total=len(source), desc=f"statistics of {label} (once)", unit=" samples", disable=None) as bar:
        for start in range(0, len(source), source.chunk):
            x = source.images(start, min(start + source.chunk, len(source)))
            total += x.sum(axis=(0, 2, 3), dtype=np.float64)
            squares += np.square(x, dtype=np.uint32).sum(axis=(0, 2, 3), dtype=np.float64)
            bar.update(len(x))
    count = float(len(source) * h * w)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return tuple(float(v) for v in mean / 255.0), tuple(max(float(v) / 255.0, 1 / 255) for v in std)


def _slug(path: Path) -> str:
    stem = path.name.removesuffix(".npz") if path.name not in ("train", "") else path.parent.name + "-train"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)[:40] or "data"


def cache_paths(data_dir: Path, splits: Splits, request: dict) -> tuple[Path, Path]:
    """(beton, sidecar) of the training split that `request` describes."""
    key = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:16]
    stem = f"user-{_slug(splits.train_path)}-{key}"
    return data_dir / "ffcv" / f"{stem}.beton", data_dir / "ffcv" / f"{stem}.json"


def _convert(splits: Splits, data_dir: Path, n: int | None, num_workers: int | None) -> dict:
    """The sidecar record of the training split's `.beton`: reused if it verifies, else built now."""
    holdout = HOLDOUT_FRACTION if splits.test_path is None else 0.0
    request = {"format": CACHE_FORMAT, "name": f"user-{_slug(splits.train_path)}", "split": "train",
               "kind": splits.kind, "source": splits.identity, "holdout": holdout, "holdout_seed": HOLDOUT_SEED,
               "first_n": n, "shape": list(splits.shape), "num_classes": splits.num_classes}
    beton, sidecar = cache_paths(data_dir, splits, request)
    cached = read_sidecar(sidecar)
    if cached is not None and all(cached.get(k) == v for k, v in request.items()) and \
            verify_beton(beton, cached) is None:
        return {**cached, "beton": str(beton)}
    mean, std = channel_stats(splits.train, f"{splits.train_path.name} train")
    record = {**request, "n": len(splits.train), "labels_sha256": labels_digest(splits.train.labels),
              "mean": list(mean), "std": list(std), "classes": list(splits.classes)}
    sequential = getattr(splits.train, "sequential", False)  # a deflated .npz is read front to back
    record["beton_bytes"] = build_beton(splits.train, beton, record, 1 if sequential else num_workers)
    atomic_write_bytes(sidecar, json.dumps(record, indent=1).encode())
    return {**record, "beton": str(beton)}


def _tensors(source: Source) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [source.images(a, min(a + source.chunk, len(source))) for a in range(0, len(source), source.chunk)]
    x = np.concatenate(parts) if parts else np.zeros((0, *source.shape), dtype=np.uint8)
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.array(source.labels, dtype=np.int64))


def prepare_user(dataset: str | Path, test_data: str | Path | None = None, data_dir: str | Path | None = None, *,
                 n: int | None = None, num_workers: int | None = None) -> UserData:
    """The user dataset at `dataset` ready to train: its facts and record, the training split's verified `.beton`
    (the first `n` training samples; None = all) and the whole test split as tensors.

    Example
    -------
    >>> data = prepare_user("train.npz", "test.npz")  # doctest: +SKIP
    >>> data.info.shape, data.info.num_classes, data.base.n
    ((3, 24, 24), 10, 5000)
    """
    splits = open_splits(dataset, test_data, n)
    test_x, test_y = _tensors(splits.test)  # decoded first: a bad test image stops before anything is written
    data_dir = default_data_dir() if data_dir is None else Path(data_dir)
    record = _convert(splits, data_dir, n, num_workers)
    user = UserRecord(splits.kind, str(splits.train_path), str(splits.test_path) if splits.test_path else None,
                      record["holdout"], HOLDOUT_SEED, int(record["n"]), len(test_y), record["labels_sha256"],
                      labels_digest(test_y.numpy()), tuple(splits.classes))
    info = user_info(user, splits.shape, splits.num_classes, tuple(record["mean"]), tuple(record["std"]))
    base = PreparedSplit(Path(record["beton"]), int(record["n"]), splits.shape, splits.num_classes,
                         record["labels_sha256"])
    return UserData(info, base, test_x, test_y)


def recorded_test_points(info: DatasetInfo, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n points (None = all) of the test split a model of user dataset `info` was trained with, found
    again from its record: x uint8 [n, C, H, W], y int64 [n]. One line if the data moved or changed."""
    user = info.user
    assert user is not None, "recorded_test_points is for user datasets"
    recorded = Path(user.test or user.train)
    if not recorded.exists():
        raise UserDataError(f"the test data of this model, {recorded}, is not there any more (moved or deleted); "
                            "put it back at that path")
    splits = _recorded_test(user, info)
    if splits.shape != info.shape:
        raise UserDataError(f"the test data {recorded} is now {splits.shape[1]}×{splits.shape[2]} with "
                            f"{splits.shape[0]} channel(s), the model was trained on {info.shape}; restore the data")
    x, y = _tensors(splits.test)
    if labels_digest(y.numpy()) != user.test_labels_sha256:
        raise UserDataError(f"the test data {recorded} changed since the model was trained (its test labels differ "
                            f"from the recorded ones); restore it")
    if n is not None and n > len(y):
        raise UserDataError(f"--n {n} is larger than the test split of {recorded} ({len(y)} points); use --n "
                            f"{len(y)} or less")
    return x[:n], y[:n]


def _recorded_test(user: UserRecord, info: DatasetInfo) -> Splits:
    """The splits as recorded; an explicit test tree is scanned with the recorded classes."""
    if user.kind == "folder" and user.test is not None:
        test = Path(user.test)
        _, samples = scan(test, {name: i for i, name in enumerate(user.classes)})
        source = FolderSource(test, samples, first_image_layout(samples[0][0]))
        return Splits("folder", Path(user.train), test, source, source, source.shape, info.num_classes,
                      user.classes, None)
    if user.kind == "npz" and user.test is not None:
        test = Path(user.test)
        shape, _ = _npz_labels(test)
        source = GeneratedSource([test], _Layout(str(test), shape, info.num_classes))
        return Splits("npz", Path(user.train), test, source, source, shape, info.num_classes, (), None)
    return open_splits(user.train)
