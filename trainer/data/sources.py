"""Raw samples of each dataset as uint8 [N, C, H, W] images and int64 [N] labels, before any FFCV conversion.

- cifar10 / cifar100 / svhn come from torchvision's own dataset classes (its file layout, pickle/.mat parsing and
  md5 checks) under `data_dir`; CIFAR-100 uses the 100 fine labels; SVHN's label 10 (digit 0) is mapped to 0 by
  torchvision. We first look for the files (download=False) and only then try torchvision's download.
- digits is scikit-learn's bundled 8×8 digits (1797 images, values 0..16), split once and for all with a stratified
  `train_test_split` (seed 0, 20 % test: 1437 train / 360 test), each split sorted by the original index; pixels are
  stored as round(v·255/16).
- synthetic is generated deterministically, chunk by chunk (never the whole float array at once), so any size works:
  each class has a colour (a mean per channel), each sample jitters that colour (sd 0.08) and adds pixel noise
  (sd 0.15); classes overlap, so a model beats chance clearly without reaching 100 %.
"""

import contextlib
import io
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from memloss.trainer.data.registry import SYNTHETIC_DEFAULT_N, DatasetError, check_split, dataset_info

# Synthetic generator constants. The class colours come from their own seed; each split has its own seed.
_SYNTH_COLOUR_SEED = 20240517
_SYNTH_SPLIT_SEED = {"train": 0, "test": 1}
_SYNTH_COLOUR_RANGE = (0.2, 0.8)
_SYNTH_SAMPLE_JITTER = 0.08
_SYNTH_PIXEL_NOISE = 0.15
# About 4 M float32 pixels (16 MiB) are generated at a time, whatever the resolution.
_SYNTH_CHUNK_PIXELS = 1 << 22

# Where torchvision expects each dataset's files inside data_dir (told to the user when they are missing).
_TORCHVISION_FILES = {
    "cifar10": "cifar-10-python.tar.gz or the extracted cifar-10-batches-py/",
    "cifar100": "cifar-100-python.tar.gz or the extracted cifar-100-python/",
    "svhn": "train_32x32.mat and test_32x32.mat",
}


class Source(Protocol):
    """A split's raw samples: `labels` int64 [N]; `images(start, stop)` uint8 [stop-start, C, H, W]."""

    labels: np.ndarray
    shape: tuple[int, int, int]
    chunk: int

    def __len__(self) -> int: ...

    def images(self, start: int, stop: int) -> np.ndarray: ...


@dataclass(frozen=True)
class ArraySource:
    """Samples held in memory: `data` uint8 [N, C, H, W] (C-contiguous), `labels` int64 [N]."""

    data: np.ndarray
    labels: np.ndarray
    chunk: int = 1000

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape[1:])

    def __len__(self) -> int:
        return len(self.labels)

    def images(self, start: int, stop: int) -> np.ndarray:
        return self.data[start:stop]


@dataclass(frozen=True)
class SyntheticSource:
    """The synthetic split: n samples of shape (3, r, r), generated in chunks of `chunk` samples from seeds that
    depend only on (split, chunk number), so any chunk can be regenerated on its own (e.g. in a writer process)."""

    split: str
    n: int
    resolution: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3, self.resolution, self.resolution)

    @property
    def chunk(self) -> int:
        return max(1, _SYNTH_CHUNK_PIXELS // (3 * self.resolution ** 2))

    @cached_property
    def labels(self) -> np.ndarray:
        rng = np.random.default_rng((_SYNTH_SPLIT_SEED[self.split], 0))
        return rng.integers(0, 10, size=self.n, dtype=np.int64)

    def __len__(self) -> int:
        return self.n

    def images(self, start: int, stop: int) -> np.ndarray:
        """uint8 [stop-start, 3, r, r], assembled from the generator chunks that cover [start, stop)."""
        labels = self.labels
        first, last = start // self.chunk, (max(stop, start + 1) - 1) // self.chunk
        parts = [self._chunk_images(c, labels) for c in range(first, last + 1)]
        offset = start - first * self.chunk
        return np.concatenate(parts)[offset:offset + (stop - start)]

    def _chunk_images(self, chunk_id: int, labels: np.ndarray) -> np.ndarray:
        """uint8 [m, 3, r, r] of chunk `chunk_id`: class colour + per-sample jitter + pixel noise, clipped."""
        y = labels[chunk_id * self.chunk:(chunk_id + 1) * self.chunk]
        rng = np.random.default_rng((_SYNTH_SPLIT_SEED[self.split], 1, chunk_id))
        colour = synthetic_class_colours()[y] + rng.normal(0, _SYNTH_SAMPLE_JITTER, (len(y), 3))
        shape = (len(y), 3, self.resolution, self.resolution)
        x = rng.standard_normal(shape, dtype=np.float32) * np.float32(_SYNTH_PIXEL_NOISE)
        x += colour.astype(np.float32)[:, :, None, None]
        np.clip(x, 0.0, 1.0, out=x)
        return np.rint(x * 255.0).astype(np.uint8)


def synthetic_class_colours() -> np.ndarray:
    """float64 [10, 3]: the mean colour (in [0.2, 0.8]) of each synthetic class."""
    return np.random.default_rng(_SYNTH_COLOUR_SEED).uniform(*_SYNTH_COLOUR_RANGE, size=(10, 3))


def default_data_dir() -> Path:
    """Where raw datasets and `.beton` caches live: $MEMLOSS_DATA, else ~/.cache/memloss/data."""
    env = os.environ.get("MEMLOSS_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "memloss" / "data"


def load_source(name: str, split: str, data_dir: Path, *, n: int | None = None, resolution: int | None = None,
                download: bool = True) -> Source:
    """The raw samples of `split` of dataset `name`, limited to the first `n` (None = all; synthetic: 1024)."""
    info = dataset_info(name, resolution)
    check_split(split)
    if name == "synthetic":
        count = SYNTHETIC_DEFAULT_N if n is None else n
        _check_n(count, None, name, split)
        return SyntheticSource(split, count, info.shape[1])
    source = digits_source(split) if name == "digits" else _torchvision_source(name, split, Path(data_dir), download)
    _check_n(n, len(source), name, split)
    if n is None or n == len(source):
        return source
    return ArraySource(source.data[:n], source.labels[:n])


def _check_n(n: int | None, available: int | None, name: str, split: str) -> None:
    """Raises DatasetError unless n is None or 1 ≤ n ≤ available (available None = unlimited)."""
    if n is None:
        return
    if n < 1 or (available is not None and n > available):
        limit = "" if available is None else f" and ≤ {available}"
        raise DatasetError(f"n must be ≥ 1{limit} for {name} {split}, got {n}")


def digits_split_indices(split: str) -> np.ndarray:
    """int64 sorted indices into sklearn's 1797 digits that form `split` (fixed: stratified, seed 0, 20 % test)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    target = load_digits().target
    train, test = train_test_split(np.arange(len(target)), test_size=0.2, stratify=target, random_state=0)
    return np.sort(train if split == "train" else test).astype(np.int64)


def digits_source(split: str) -> ArraySource:
    """The digits split: uint8 [N, 1, 8, 8] = round(v·255/16) and int64 labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    idx = digits_split_indices(check_split(split))
    pixels = np.rint(bunch.images[idx] * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return ArraySource(np.ascontiguousarray(pixels), bunch.target[idx].astype(np.int64))


def _torchvision_source(name: str, split: str, data_dir: Path, download: bool) -> ArraySource:
    """Loads the split through torchvision's dataset class; files first, then (if allowed) torchvision's download."""
    try:
        dataset = _torchvision_dataset(name, split, data_dir, download=False)
    except RuntimeError:  # torchvision: "Dataset not found or corrupted" (missing files or md5 mismatch)
        if not download:
            raise _missing_files(name, data_dir, "not found or corrupted (download disabled)") from None
        dataset = _download(name, split, data_dir)
    if name == "svhn":
        return ArraySource(np.ascontiguousarray(dataset.data), np.asarray(dataset.labels, dtype=np.int64))
    images = np.ascontiguousarray(dataset.data.transpose(0, 3, 1, 2))  # CIFAR is stored [N, H, W, C]
    return ArraySource(images, np.asarray(dataset.targets, dtype=np.int64))


def _download(name: str, split: str, data_dir: Path) -> object:
    """torchvision's download; any network or file failure becomes a one-line DatasetError."""
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        # torchvision prints "Downloading ..." / "Files already downloaded"; keep the CLI's output clean.
        with contextlib.redirect_stdout(io.StringIO()):
            return _torchvision_dataset(name, split, data_dir, download=True)
    except Exception as err:  # urllib/http/ssl/OSError/RuntimeError: all mean "could not get the files"
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:160]
        raise _missing_files(name, data_dir, f"download failed ({reason})") from None


def _missing_files(name: str, data_dir: Path, why: str) -> DatasetError:
    return DatasetError(f"{name} {why}; put {_TORCHVISION_FILES[name]} into {data_dir} (torchvision's layout) "
                        f"or pass --data-dir / set MEMLOSS_DATA to where they are")


def _torchvision_dataset(name: str, split: str, data_dir: Path, *, download: bool) -> object:
    """The torchvision dataset object (data already decoded into numpy arrays by torchvision)."""
    from torchvision import datasets

    if name == "svhn":
        return datasets.SVHN(str(data_dir), split=split, download=download)
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    return cls(str(data_dir), train=split == "train", download=download)


def load_tensors(name: str, split: str, data_dir: Path | str | None = None, *, n: int | None = None,
                 resolution: int | None = None, download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(x uint8 [n, C, H, W], y int64 [n]) on CPU: the first `n` samples of the split in dataset order (the same
    samples and indices as `prepare` with the same arguments), read from the raw data, not the `.beton`."""
    data_dir = default_data_dir() if data_dir is None else Path(data_dir)
    source = load_source(name, split, data_dir, n=n, resolution=resolution, download=download)
    x = torch.from_numpy(np.ascontiguousarray(source.images(0, len(source))))
    return x, torch.from_numpy(np.array(source.labels, dtype=np.int64))
