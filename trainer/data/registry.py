"""What memloss knows about each dataset, by name: classes, sample shape, normalization and augmentation facts.

Per-channel mean/std are of pixel values in [0, 1] over the training split:
- cifar10 / cifar100 / svhn: the standard published values (the true per-pixel std, not the often-copied
  (0.2023, 0.1994, 0.2010), which is a std of per-image means).
- digits / synthetic: computed by us from the stored uint8 training data (tests recompute them).

Augmentation facts follow the paper's setup: random crop with 4-pixel zero padding plus horizontal flip on CIFAR,
nothing on SVHN ("none for SVHN"; digits are not flip-symmetric either), and a 1-pixel crop padding for the 8×8 digits.

A user dataset (`--dataset PATH`: an .npz or an image folder, trainer/data/userdata.py) has no fixed facts: its
`DatasetInfo` is made from the data (shape, classes, per-channel statistics of its training split) and carries a
`UserRecord` saying where the data lives; `info_meta` / `info_from_meta` put both into a model file's metadata, so
a model is rebuilt, and its test data found again, without the training data.
"""

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Protocol

from memloss.errors import MemlossError

DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "svhn", "digits", "synthetic")
SPLITS: tuple[str, ...] = ("train", "test")

# The synthetic dataset's defaults: CIFAR-shaped, 10 classes, 1024 samples per split.
SYNTHETIC_DEFAULT_N = 1024
SYNTHETIC_DEFAULT_RESOLUTION = 32
SYNTHETIC_CLASSES = 10
SYNTHETIC_CHANNELS = 3


class DatasetError(MemlossError):
    """An unknown dataset or split, a bad size, or raw files that are missing or unreadable."""


class SampleLayout(Protocol):
    """What a set of samples must match: its name (for messages), (C, H, W) and number of classes."""

    @property
    def name(self) -> str: ...

    @property
    def shape(self) -> tuple[int, int, int]: ...

    @property
    def num_classes(self) -> int: ...


@dataclass(frozen=True)
class UserRecord:
    """Where a user dataset's splits come from, as a run and its model files record them. `kind`: "npz" or
    "folder"; `train`/`test`: absolute paths of the split files or folders, `test` None when the test split is
    `holdout` (a share, with `holdout_seed`) of `train`; `n_train`/`n_test`: samples; the labels' sha256 (int64
    little-endian) of each split; `classes`: class folder names in label order (folders only)."""

    kind: str
    train: str
    test: str | None
    holdout: float
    holdout_seed: int
    n_train: int
    n_test: int
    train_labels_sha256: str
    test_labels_sha256: str
    classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about one dataset. `shape` is (C, H, W) of one sample; `mean`/`std` are per channel, for pixel
    values in [0, 1]; `crop_padding` is the zero padding (pixels) of the random-crop augmentation, 0 = no crop."""

    name: str
    num_classes: int
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int
    flip: bool
    default_arch: str
    user: UserRecord | None = None  # a user dataset's origin (None: a built-in dataset)

    def __post_init__(self) -> None:
        channels = self.shape[0]
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"shape must be (C, H, W) with positive sizes, got {self.shape}")
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"mean/std need {channels} values, got {len(self.mean)}/{len(self.std)}")
        if min(self.std) <= 0 or self.num_classes < 2 or self.crop_padding < 0:
            raise ValueError(f"invalid DatasetInfo for {self.name}: std must be > 0, ≥ 2 classes, padding ≥ 0")


_FIXED: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo("cifar10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616),
                           crop_padding=4, flip=True, default_arch="resnet18"),
    "cifar100": DatasetInfo("cifar100", 100, (3, 32, 32), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                            crop_padding=4, flip=True, default_arch="resnet18"),
    "svhn": DatasetInfo("svhn", 10, (3, 32, 32), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
                        crop_padding=0, flip=False, default_arch="preact_resnet18"),
    # 8×8 is kept on purpose: it is the embedded default for fast CPU runs (the demo trains with PGD on 2 cores).
    "digits": DatasetInfo("digits", 10, (1, 8, 8), (0.3054,), (0.3760,),
                          crop_padding=1, flip=False, default_arch="small_cnn"),
}

# Per-channel mean/std of the synthetic generator (see sources.py), measured on 300 000 samples; they do not depend
# on n or on the resolution.
SYNTHETIC_MEAN = (0.4912, 0.4554, 0.5252)
SYNTHETIC_STD = (0.2533, 0.2268, 0.2201)


def dataset_info(name: str, resolution: int | None = None) -> DatasetInfo:
    """Facts about dataset `name`. `resolution` (pixels, square) only applies to `synthetic` (default 32); for the
    others it must be None or their native size."""
    if name == "synthetic":
        return _synthetic_info(resolution)
    if name not in _FIXED:
        raise DatasetError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    info = _FIXED[name]
    if resolution is not None and resolution != info.shape[1]:
        raise DatasetError(f"{name} is {info.shape[1]}×{info.shape[2]} only; drop --resolution "
                           f"(it applies to the synthetic dataset)")
    return info


def _synthetic_info(resolution: int | None) -> DatasetInfo:
    """The synthetic dataset at `resolution` pixels; the crop padding scales like CIFAR's 4 px at 32 px."""
    res = SYNTHETIC_DEFAULT_RESOLUTION if resolution is None else int(resolution)
    if res < 4:
        raise DatasetError(f"synthetic resolution must be ≥ 4 pixels, got {res}")
    return DatasetInfo("synthetic", SYNTHETIC_CLASSES, (SYNTHETIC_CHANNELS, res, res), SYNTHETIC_MEAN, SYNTHETIC_STD,
                       crop_padding=max(1, res // 8), flip=True, default_arch="small_cnn")


def check_split(split: str) -> str:
    """Returns `split` if it is a known split name, else raises DatasetError."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    return split


def is_builtin(name: str) -> bool:
    """True for the names of the built-in datasets; any other `--dataset` value is a path to the user's data."""
    return name in DATASETS


# A user dataset is augmented like CIFAR (random crop with zero padding of 1/8 of the side, horizontal flip) and
# trained with CIFAR's default architecture: the common case of the field; its user docs say so.
USER_DEFAULT_ARCH = "resnet18"


def user_info(record: UserRecord, shape: tuple[int, int, int], num_classes: int, mean: tuple[float, ...],
              std: tuple[float, ...]) -> DatasetInfo:
    """The facts of a user dataset: named by its training path; `mean`/`std` per channel in [0, 1] units."""
    return DatasetInfo(record.train, int(num_classes), tuple(int(v) for v in shape), tuple(mean), tuple(std),
                       crop_padding=max(1, int(shape[1]) // 8), flip=True, default_arch=USER_DEFAULT_ARCH,
                       user=record)


USER_META_KEY = "user_dataset"


def info_meta(info: DatasetInfo) -> dict[str, str]:
    """Model-file metadata of a user dataset (one JSON string: its record, shape, classes and statistics); {} for a
    built-in one, which its name alone describes."""
    if info.user is None:
        return {}
    doc = {**dataclasses.asdict(info.user), "shape": list(info.shape), "num_classes": info.num_classes,
           "mean": list(info.mean), "std": list(info.std)}
    return {USER_META_KEY: json.dumps(doc)}


def info_from_meta(meta: dict[str, str]) -> DatasetInfo:
    """The DatasetInfo a model file was trained on, from its metadata (`dataset`, `resolution`, `user_dataset`)."""
    if USER_META_KEY not in meta:
        resolution = int(meta["resolution"]) if meta.get("resolution") else None  # ValueError: bad metadata
        return dataset_info(meta["dataset"], resolution)
    try:
        doc: dict[str, Any] = json.loads(meta[USER_META_KEY])
        shape, classes = tuple(doc.pop("shape")), int(doc.pop("num_classes"))
        mean, std = tuple(float(v) for v in doc.pop("mean")), tuple(float(v) for v in doc.pop("std"))
        record = UserRecord(**{**doc, "classes": tuple(doc.get("classes", ()))})
        return user_info(record, shape, classes, mean, std)
    except (ValueError, TypeError, KeyError, AttributeError):
        raise DatasetError(f"bad {USER_META_KEY} metadata ({meta[USER_META_KEY][:60]}...); use a model file "
                           "written by memloss") from None
