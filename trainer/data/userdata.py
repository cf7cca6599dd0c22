"""The user's own data (`--dataset PATH`, optional `--test-data PATH`) made ready to train: the training split
(opened and checked by usersplits.py) converted once into a cached FFCV `.beton` (the built-in sets' format and
fields), its statistics computed once, and its test split found again from what a model file records.

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from memloss.memstore.spec import labels_sha256 as labels_digest
from memloss.trainer.common.files import atomic_write_bytes
from memloss.trainer.data.beton import CACHE_FORMAT, PreparedSplit, build_beton, read_sidecar, verify_beton
from memloss.trainer.data.folder import FolderSource, first_image_layout, scan
from memloss.trainer.data.generated import GeneratedSource
from memloss.trainer.data.holdout import HeldOut
from memloss.trainer.data.registry import DatasetInfo, SampleLayout, UserRecord, user_info
from memloss.trainer.data.sources import Source, default_data_dir
from memloss.trainer.data.usersplits import (HOLDOUT_FRACTION, HOLDOUT_SEED, NpzLayout, Splits, UserDataError,
                                             npz_labels, open_splits)


@dataclass(frozen=True)
class UserData:
    """A prepared user dataset: its facts (with the record), the training split's `.beton`, the test split."""

    info: DatasetInfo
    base: PreparedSplit
    test_x: torch.Tensor  # uint8 [n_test, C, H, W]
    test_y: torch.Tensor  # int64 [n_test]
    held_out: HeldOut | None = None  # --val-split: the training images held out of `base` for model selection


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


def user_slug(path: Path) -> str:
    """A short file-name-safe name of a user dataset at `path` (its cache files are named by it)."""
    stem = path.name.removesuffix(".npz") if path.name not in ("train", "") else path.parent.name + "-train"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)[:40] or "data"


def cache_paths(data_dir: Path, splits: Splits, request: dict) -> tuple[Path, Path]:
    """(beton, sidecar) of the training split that `request` describes."""
    key = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:16]
    stem = f"user-{user_slug(splits.train_path)}-{key}"
    return data_dir / "ffcv" / f"{stem}.beton", data_dir / "ffcv" / f"{stem}.json"


def _convert(splits: Splits, data_dir: Path, n: int | None, num_workers: int | None,
             held: HeldOut | None) -> dict:
    """The sidecar record of the training split's `.beton`: reused if it verifies, else built now."""
    holdout = HOLDOUT_FRACTION if splits.test_path is None else 0.0
    request = {"format": CACHE_FORMAT, "name": f"user-{user_slug(splits.train_path)}", "split": "train",
               "kind": splits.kind, "source": splits.identity, "holdout": holdout, "holdout_seed": HOLDOUT_SEED,
               "first_n": n, "shape": list(splits.shape), "num_classes": splits.num_classes}
    if held is not None:  # --val-split: the training split less the held-out rows, cached under its own key
        request["held_out"] = {"count": int(held.indices.size), "seed": held.seed}
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
                 n: int | None = None, num_workers: int | None = None, val_split: int = 0,
                 val_seed: int = 0, check: Callable[[SampleLayout, int], object] | None = None) -> UserData:
    """The user dataset at `dataset` ready to train: its facts and record, the training split's verified `.beton`
    (the first `n` training samples, None = all, less `val_split` images held out for model selection, seeded by
    `val_seed` as for the built-in sets: holdout.py) and the whole test split as tensors. `check(layout, n_train)`
    runs on the checked splits before anything is converted (its errors propagate).

    Example
    -------
    >>> data = prepare_user("train.npz", "test.npz")  # doctest: +SKIP
    >>> data.info.shape, data.info.num_classes, data.base.n
    ((3, 24, 24), 10, 5000)
    """
    splits = open_splits(dataset, test_data, n, val_split, val_seed)
    if check is not None:  # e.g. generated images to mix in: refused before anything is converted
        check(NpzLayout(str(splits.train_path), splits.shape, splits.num_classes), len(splits.train))
    test_x, test_y = _tensors(splits.test)  # decoded first: a bad test image stops before anything is written
    held = None
    if splits.held is not None and splits.held_rows is not None:
        held = HeldOut(splits.held_rows, *_tensors(splits.held), seed=val_seed)
    data_dir = default_data_dir() if data_dir is None else Path(data_dir)
    record = _convert(splits, data_dir, n, num_workers, held)
    user = UserRecord(splits.kind, str(splits.train_path), str(splits.test_path) if splits.test_path else None,
                      record["holdout"], HOLDOUT_SEED, int(record["n"]), len(test_y), record["labels_sha256"],
                      labels_digest(test_y.numpy()), tuple(splits.classes))
    info = user_info(user, splits.shape, splits.num_classes, tuple(record["mean"]), tuple(record["std"]))
    base = PreparedSplit(Path(record["beton"]), int(record["n"]), splits.shape, splits.num_classes,
                         record["labels_sha256"])
    return UserData(info, base, test_x, test_y, held)


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
        shape, _ = npz_labels(test)
        source = GeneratedSource([test], NpzLayout(str(test), shape, info.num_classes))
        return Splits("npz", Path(user.train), test, source, source, shape, info.num_classes, (), None)
    return open_splits(user.train)
