"""`--val-split N`: N base training images held out of training for model selection (DM-Improves-AT holds out 1,024
CIFAR-10 training images and selects its weight average on them; trainer/training/selection.py).

The held-out images are a uniform draw of N of the split's rows, seeded by `--val-seed` (not the run's seed, so runs
of several seeds hold out the same images); their indices are recorded in the run directory (`heldout.json`). The
rest, in split order, is converted once to its own `.beton` (cached beside the split's as
`<stem>-val<N>s<seed>.beton`): every later stage (loader, store, fingerprint) sees a training set of N_base − N
images, so a memory store of the reduced set is refused for the full one and vice versa.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from memloss.errors import ConfigError
from memloss.memstore.spec import labels_sha256
from memloss.trainer.common.files import atomic_write_bytes
from memloss.trainer.data.beton import CACHE_FORMAT, PreparedSplit, build_beton, cache_paths, read_sidecar, verify_beton
from memloss.trainer.data.registry import dataset_info
from memloss.trainer.data.sources import ArraySource, default_data_dir, load_source

HELDOUT_FILE = "heldout.json"


@dataclass(frozen=True)
class HeldOut:
    """The held-out images: `indices` int64 [N] (rows of the training split, ascending), `x` uint8 [N,C,H,W] and
    `y` int64 [N] on the CPU, `seed` of the draw."""

    indices: np.ndarray
    x: torch.Tensor
    y: torch.Tensor
    seed: int

    def record(self) -> dict[str, object]:
        """What the run directory keeps of the split (heldout.json)."""
        digest = hashlib.sha256(self.indices.astype("<i8").tobytes()).hexdigest()
        return {"count": int(self.indices.size), "seed": self.seed, "indices_sha256": digest,
                "indices": self.indices.tolist()}


def holdout_indices(n: int, count: int, seed: int) -> np.ndarray:
    """int64 [count], ascending: the rows of a split of `n` held out by `--val-split count --val-seed seed`."""
    if not 1 <= count < n:
        raise ConfigError(f"--val-split {count} must be between 1 and {n - 1}: the training split has {n} images")
    rng = np.random.default_rng([int(seed), 0x7A11D])
    return np.sort(rng.choice(n, size=count, replace=False)).astype(np.int64)


def prepare_heldout(name: str, data_dir: Path | str | None, *, n: int | None, resolution: int | None, count: int,
                    seed: int, num_workers: int | None = None) -> tuple[PreparedSplit, HeldOut]:
    """(the `.beton` of the training split without the held-out rows, the held-out images)."""
    data_dir = default_data_dir() if data_dir is None else Path(data_dir)
    source = load_source(name, "train", data_dir, n=n, resolution=resolution)
    images = source.images(0, len(source))
    labels = np.asarray(source.labels, dtype=np.int64)
    held = holdout_indices(len(labels), count, seed)
    keep = np.setdiff1d(np.arange(len(labels)), held)
    split = _training_beton(name, data_dir, n, resolution, count, seed, images[keep], labels[keep], num_workers)
    out = HeldOut(held, torch.from_numpy(np.ascontiguousarray(images[held])), torch.from_numpy(labels[held]), seed)
    return split, out


def _training_beton(name: str, data_dir: Path, n: int | None, resolution: int | None, count: int, seed: int,
                    images: np.ndarray, labels: np.ndarray, num_workers: int | None) -> PreparedSplit:
    info = dataset_info(name, resolution)
    beton, sidecar = cache_paths(name, "train", data_dir, n, resolution)
    beton = beton.with_name(f"{beton.stem}-val{count}s{seed}.beton")
    sidecar = sidecar.with_name(f"{sidecar.stem}-val{count}s{seed}.json")
    record = {"format": CACHE_FORMAT, "name": name, "split": "train", "shape": list(info.shape),
              "num_classes": info.num_classes, "n": int(labels.size), "labels_sha256": labels_sha256(labels),
              "held_out": {"count": count, "seed": seed}}
    cached = read_sidecar(sidecar)
    same = cached is not None and all(cached.get(k) == v for k, v in record.items())
    if not (same and verify_beton(beton, cached) is None):  # type: ignore[arg-type]
        record["beton_bytes"] = build_beton(ArraySource(np.ascontiguousarray(images), labels), beton, record,
                                            num_workers)
        atomic_write_bytes(sidecar, json.dumps(record, indent=1).encode())
    return PreparedSplit(beton, int(labels.size), tuple(info.shape), info.num_classes, record["labels_sha256"])


def write_heldout_record(run_dir: Path, held: HeldOut) -> None:
    atomic_write_bytes(run_dir / HELDOUT_FILE, json.dumps(held.record()).encode())
