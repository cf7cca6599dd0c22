"""The two splits of the user's own data (`--dataset PATH`, optional `--test-data PATH`), opened and checked
before anything is written: an .npz file or an image folder, and its test split.

- .npz: `image` uint8 [N, H, W, C] and `label` int [N], read in streamed slices and checked exactly like
  `--aux-data` files (npz.py, generated.py). Image folders: torchvision's ImageFolder layout (folder.py).
- Test split: `--test-data PATH` (a file or tree of the same kind, size, channels and classes); an image folder
  holding `train/` and `test/` (or `val/`); otherwise a seeded held-out share of the training data:
  `HOLDOUT_FRACTION` of the samples, the rows `np.random.default_rng(HOLDOUT_SEED).permutation(N)[:n_test]`, the
  same for every run seed, so runs compared across seeds share one test split.
- Classes: an .npz's labels are class numbers 0..C−1 with C = 1 + the largest training label; an image folder's
  classes are its sorted subfolder names. Test labels outside the training classes are refused.
- `--val-split N`: N images of the training split (after `--n`) held out for model selection, drawn as for the
  built-in sets (holdout.py: seeded by `--val-seed`, indices relative to the training split); the test split is
  untouched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memloss.trainer.data.folder import FolderSource, first_image_layout, scan, split_roots
from memloss.trainer.data.generated import GeneratedSource, npz_layout
from memloss.trainer.data.npz import GeneratedDataError, read_whole
from memloss.trainer.data.registry import DATASETS
from memloss.trainer.data.sources import Source

HOLDOUT_FRACTION = 0.1
HOLDOUT_SEED = 0


class UserDataError(GeneratedDataError):
    """The user's data cannot be used: missing, of the wrong layout, or train and test that do not match."""


@dataclass(frozen=True)
class NpzLayout:
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
    held: Source | None = None  # --val-split: the held-out training images (not in `train`)
    held_rows: np.ndarray | None = None  # int64 [N], ascending: their rows in the training split before holding out


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


def npz_labels(path: Path) -> tuple[tuple[int, int, int], np.ndarray]:
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
    shape, y = npz_labels(train)
    classes = _num_classes(train, y)
    if test is None:
        train_rows, test_rows = holdout_rows(len(y))
        test_shape, y_test = shape, y[test_rows]
    else:
        if test.is_dir():
            raise UserDataError(f"--test-data {test} is a folder but --dataset {train} is an .npz file; pass a test "
                                ".npz file")
        train_rows, test_rows = np.arange(len(y), dtype=np.int64), None
        test_shape, y_test = npz_labels(test)
    _check_pair(train, test or train, shape, test_shape, y_test, classes)
    layout = NpzLayout(str(train), shape, classes)
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


def open_splits(dataset: str | Path, test_data: str | Path | None = None, n: int | None = None,
                val_split: int = 0, val_seed: int = 0) -> Splits:
    """Both splits of the user dataset at `dataset` (an .npz file or an image folder), checked, with `val_split`
    training images held out (seeded by `val_seed`); nothing written."""
    path = _existing(dataset, "--dataset")
    test = _existing(test_data, "--test-data") if test_data is not None else None
    splits = _folder_splits(path, test, n) if path.is_dir() else _npz_splits(path, test, n)
    return _hold_out(splits, val_split, val_seed) if val_split else splits


def _hold_out(splits: Splits, count: int, seed: int) -> Splits:
    """`splits` with `count` rows of its training split moved to `held` (holdout.py's seeded draw)."""
    from memloss.trainer.data.holdout import holdout_indices  # here: it loads torch (the CLI checks first)

    held = holdout_indices(len(splits.train), count, seed)
    keep = np.setdiff1d(np.arange(len(splits.train), dtype=np.int64), held)
    return dataclasses.replace(splits, train=_subset(splits.train, keep), held=_subset(splits.train, held),
                               held_rows=held)


def _subset(source: Source, rows: np.ndarray) -> Source:
    """The samples of `source` at sorted `rows` (positions in `source`), read from the same files."""
    if isinstance(source, FolderSource):
        return source.subset(rows)
    assert isinstance(source, GeneratedSource) and source.rows is not None
    return GeneratedSource([p.path for p in source.parts], source.info, rows=source.rows[rows])
