"""Datasets by name or path (the user's own .npz files and image folders: `prepare_user`), their one-time
conversion to `.beton` files in FFCV's format (and that of generated-image `.npz` sets), and the batch loader
(contract: "Batches" in docs/architecture.md). The conversion needs no ffcv; ffcv is imported only by the FFCV
loader, and where it cannot be imported the numpy reader yields the same batches (loader.py).

The names below are imported on first use (PEP 562): `memloss train` reads the dataset facts (registry.py) in its
checks before torch is loaded, and importing this package must not load it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, tuple[str, str]] = {
    "labels_digest": ("memloss.memstore.spec", "labels_sha256"),
    "PreparedSplit": ("memloss.trainer.data.beton", "PreparedSplit"),
    "prepare": ("memloss.trainer.data.beton", "prepare"),
    "prepare_generated": ("memloss.trainer.data.generated", "prepare_generated"),
    "BatchLoader": ("memloss.trainer.data.loader", "BatchLoader"),
    "make_loader": ("memloss.trainer.data.loader", "make_loader"),
    "DATASETS": ("memloss.trainer.data.registry", "DATASETS"),
    "SPLITS": ("memloss.trainer.data.registry", "SPLITS"),
    "DatasetError": ("memloss.trainer.data.registry", "DatasetError"),
    "DatasetInfo": ("memloss.trainer.data.registry", "DatasetInfo"),
    "dataset_info": ("memloss.trainer.data.registry", "dataset_info"),
    "default_data_dir": ("memloss.trainer.data.sources", "default_data_dir"),
    "digits_split_indices": ("memloss.trainer.data.sources", "digits_split_indices"),
    "load_tensors": ("memloss.trainer.data.sources", "load_tensors"),
    "UserData": ("memloss.trainer.data.userdata", "UserData"),
    "prepare_user": ("memloss.trainer.data.userdata", "prepare_user"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'memloss.trainer.data' has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from memloss.memstore.spec import labels_sha256 as labels_digest
    from memloss.trainer.data.beton import PreparedSplit, prepare
    from memloss.trainer.data.generated import prepare_generated
    from memloss.trainer.data.loader import BatchLoader, make_loader
    from memloss.trainer.data.registry import DATASETS, SPLITS, DatasetError, DatasetInfo, dataset_info
    from memloss.trainer.data.sources import default_data_dir, digits_split_indices, load_tensors
    from memloss.trainer.data.userdata import UserData, prepare_user
