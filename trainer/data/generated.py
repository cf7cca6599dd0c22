"""Generated training images (the published format: `.npz` files with `image` uint8 [N, H, W, C] and `label` int
[N]; the large sets come as several part files that together form one set) converted once into an FFCV `.beton`
beside the base dataset's, then reused after verification.

- Parts are concatenated in the order given; `take` keeps a seeded subset of the whole set: the rows
  `np.random.RandomState(seed).permutation(N)[:take]` (seed 13 by default), which is the subset of the published
  code's `np.random.seed(13); np.random.choice(N, take, replace=False)`, stored in increasing row order.
- The conversion streams (npz.py): pixels are read a chunk of rows at a time straight from the zip member (a stored
  member by file offset, a deflated one through zipfile's decompressing reader), so pixel memory is one chunk per
  writer process whatever N is. What still grows with N is per-row bookkeeping: the labels (8 B a row) and FFCV's
  writer tables (beton.py).
- Every part is checked against the base dataset before anything is written: image layout [N, H, W, C] uint8 with
  the base's H, W and channel count, integer labels of the same length in [0, classes).
- Cache: `<data_dir>/ffcv/<dataset>-generated-<key>.beton` and its JSON sidecar, where the key is a digest of the
  parts (absolute path, size, modification time), `take` and `seed`; built under a temporary name, verified, renamed
  into place, sidecar last (beton.py). Fields as the base's: `image` uint8 [C, H, W], `label`, `index` 0..n−1.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from memloss.memstore.spec import labels_sha256 as labels_digest
from memloss.trainer.common.files import atomic_write_bytes, remove_stale_temporaries
from memloss.trainer.data.beton import CACHE_FORMAT, PreparedSplit, build_beton, read_sidecar, verify_beton
from memloss.trainer.data.npz import GeneratedDataError, MemberReader, NpzMember, open_member, read_whole
from memloss.trainer.data.registry import DatasetInfo, SampleLayout, dataset_info
from memloss.trainer.data.sources import default_data_dir

# The published subset seed (DM-Improves-AT core/data/semisup.py `take_amount_seed`).
DEFAULT_TAKE_SEED = 13
# About 4 MiB of pixels per chunk (1365 CIFAR images): the unit of reading and of FFCV's writer work.
CHUNK_BYTES = 4 << 20
# Rows closer than this are read as one span (a subset's neighbouring rows), farther ones with a seek.
_GAP_ROWS = 8


@dataclass(frozen=True)
class GeneratedPart:
    """One checked part file: its image member and its first row in the whole set."""

    path: Path
    images: NpzMember
    labels: NpzMember
    first_row: int


def npz_layout(path: Path) -> tuple[NpzMember, NpzMember]:
    """(image, label) members of an .npz dataset file with their own layout checked: image uint8 [N, H, W, C],
    label integers [N]; GeneratedDataError (one line) if not. Used for generated parts and for `--dataset FILE`."""
    images, labels = open_member(path, "image"), open_member(path, "label")
    shape = images.shape
    if images.dtype != np.uint8:
        raise GeneratedDataError(f"{path}: images are {images.dtype}, expected uint8 pixels 0..255 [N, H, W, C]; "
                                 f"convert them with np.round(x * 255).astype(np.uint8)")
    if len(shape) != 4:
        raise GeneratedDataError(f"{path}: images have shape {shape}, expected 4 axes [N, H, W, C]")
    if labels.shape != (shape[0],) or labels.dtype.kind not in "iu":
        raise GeneratedDataError(f"{path}: labels are {labels.dtype} {labels.shape}, expected integers [{shape[0]}] "
                                 f"(one per image)")
    return images, labels


def check_part(path: Path, info: SampleLayout) -> tuple[NpzMember, NpzMember]:
    """(image, label) members of one part, checked against the base dataset `info`; GeneratedDataError if not."""
    images, labels = npz_layout(path)
    c, h, w = info.shape
    shape = images.shape
    if shape[1:] == (c, h, w) and shape[3] != c:
        raise GeneratedDataError(f"{path}: images are [N, C, H, W] {shape}; store them as [N, H, W, C] "
                                 f"(x.transpose(0, 2, 3, 1))")
    if shape[3] != c:
        raise GeneratedDataError(f"{path}: images have {shape[3]} channels, {info.name} has {c}; use generated "
                                 f"data made for {info.name}")
    if shape[1:3] != (h, w):
        raise GeneratedDataError(f"{path}: images are {shape[1]}×{shape[2]}, {info.name} is {h}×{w}; use "
                                 f"generated data made for {info.name}")
    return images, labels


def _check_label_range(path: Path, labels: np.ndarray, info: SampleLayout) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= info.num_classes):
        raise GeneratedDataError(f"{path}: labels span {labels.min()}..{labels.max()}, {info.name} has classes "
                                 f"0..{info.num_classes - 1}; use generated data made for {info.name}")


def take_rows(n: int, take: int | None, seed: int = DEFAULT_TAKE_SEED) -> np.ndarray | None:
    """Sorted int64 rows of the seeded subset of size `take` of n rows (None = every row)."""
    if take is None:
        return None
    if not 1 <= take <= n:
        raise GeneratedDataError(f"take={take} must be between 1 and the {n} generated images")
    return np.sort(np.random.RandomState(seed).permutation(n)[:take]).astype(np.int64)


class GeneratedSource:
    """The generated set as a `Source` (sources.py): `images(start, stop)` uint8 [m, C, H, W] of rows
    [start, stop) of the (subset of the) concatenated parts; `labels` int64 [n]. `rows`: sorted int64 rows of the
    whole set to keep instead of `take`'s subset (a user dataset's held-out split, userdata.py)."""

    def __init__(self, files: Sequence[Path | str], info: SampleLayout, take: int | None = None,
                 seed: int = DEFAULT_TAKE_SEED, rows: np.ndarray | None = None) -> None:
        if not files:
            raise GeneratedDataError("no generated-data files given; pass one or more .npz files")
        self.info = info
        self.parts: list[GeneratedPart] = []
        first = 0
        for file in files:
            path = Path(file).expanduser().resolve()
            images, labels = check_part(path, info)
            self.parts.append(GeneratedPart(path, images, labels, first))
            first += images.rows
        self.total = first
        self.rows = take_rows(first, take, seed) if rows is None else np.asarray(rows, dtype=np.int64)
        self.shape = info.shape
        self.chunk = max(1, CHUNK_BYTES // int(np.prod(info.shape)))
        self._readers = [MemberReader(p.images) for p in self.parts]

    @property
    def sequential(self) -> bool:
        """True if a part is compressed: then one writer process reads it front to back."""
        return any(p.images.compressed for p in self.parts)

    def __len__(self) -> int:
        return self.total if self.rows is None else len(self.rows)

    @cached_property
    def labels(self) -> np.ndarray:
        """int64 [n], checked against the base's classes (read in slices, 8 B a row)."""
        parts = []
        for part in self.parts:
            labels = read_whole(part.labels).astype(np.int64)
            _check_label_range(part.path, labels, self.info)
            parts.append(labels)
        labels = np.concatenate(parts)
        return labels if self.rows is None else labels[self.rows]

    def images(self, start: int, stop: int) -> np.ndarray:
        """uint8 [stop − start, C, H, W] (C-contiguous)."""
        rows = np.arange(start, stop, dtype=np.int64) if self.rows is None else self.rows[start:stop]
        out = np.empty((len(rows), *self.shape), dtype=np.uint8)
        for k, part in enumerate(self.parts):
            lo, hi = np.searchsorted(rows, [part.first_row, part.first_row + part.images.rows])
            if hi > lo:
                out[lo:hi] = self._read_rows(k, rows[lo:hi] - part.first_row)
        return out

    def _read_rows(self, k: int, local: np.ndarray) -> np.ndarray:
        """uint8 [len(local), C, H, W] of increasing rows `local` of part k: spans of near rows, one read each."""
        breaks = np.flatnonzero(np.diff(local) > _GAP_ROWS) + 1
        pieces = []
        for run in np.split(local, breaks):
            span = self._readers[k].read(int(run[0]), int(run[-1]) + 1)
            pieces.append(span[run - run[0]])
        return np.concatenate(pieces).transpose(0, 3, 1, 2)

    def describe(self) -> list[dict]:
        """The parts as the cache key records them (absolute path, size, modification time, rows)."""
        out = []
        for part in self.parts:
            stat = part.path.stat()
            out.append({"path": str(part.path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                        "rows": part.images.rows})
        return out


def generated_cache_paths(data_dir: Path, dataset: str, request: dict) -> tuple[Path, Path]:
    """(beton, sidecar) of the generated set described by `request` (parts, take, seed)."""
    key = hashlib.sha256(json.dumps([request["parts"], request["take"], request["seed"]]).encode()).hexdigest()
    stem = f"{dataset}-generated-{key[:16]}"
    return data_dir / "ffcv" / f"{stem}.beton", data_dir / "ffcv" / f"{stem}.json"


def prepare_generated(files: Sequence[Path | str], dataset: str, data_dir: Path | str | None = None, *,
                      take: int | None = None, seed: int = DEFAULT_TAKE_SEED, resolution: int | None = None,
                      num_workers: int | None = None, info: DatasetInfo | None = None) -> PreparedSplit:
    """The verified `.beton` of the generated set in `files` (one set, parts in order) for base dataset `dataset`,
    converted on first use or when its cache fails verification. `info`: the base set's facts when it is not a
    built-in dataset (the user's own data: `dataset` then only names the cache files).

    Example
    -------
    >>> prepare_generated(["20m_part1.npz", "20m_part2.npz"], "cifar10", take=1_000_000)  # doctest: +SKIP
    PreparedSplit(beton=.../ffcv/cifar10-generated-....beton, n=1000000, shape=(3, 32, 32), num_classes=10, ...)
    """
    data_dir = default_data_dir() if data_dir is None else Path(data_dir)
    info = dataset_info(dataset, resolution) if info is None else info
    source = GeneratedSource(files, info, take, seed)
    request = {"format": CACHE_FORMAT, "name": f"{dataset}-generated", "split": "train", "shape": list(info.shape),
               "num_classes": info.num_classes, "parts": source.describe(), "take": take, "seed": seed}
    beton, sidecar = generated_cache_paths(data_dir, dataset, request)
    remove_stale_temporaries(beton.parent)  # what a killed conversion left, whichever set it was converting
    cached = read_sidecar(sidecar)
    if cached is not None and all(cached.get(k) == v for k, v in request.items()) and \
            verify_beton(beton, cached) is None:
        return PreparedSplit(beton, int(cached["n"]), info.shape, info.num_classes, cached["labels_sha256"])
    record = {**request, "n": len(source), "labels_sha256": labels_digest(source.labels)}
    record["beton_bytes"] = build_beton(source, beton, record, 1 if source.sequential else num_workers)
    atomic_write_bytes(sidecar, json.dumps(record, indent=1).encode())
    return PreparedSplit(beton, record["n"], info.shape, info.num_classes, record["labels_sha256"])
