"""Datasets by name or path (the user's own .npz files and image folders: `prepare_user`), their one-time
conversion to `.beton` files in FFCV's format (and that of generated-image `.npz` sets), and the batch loader
(contract: "Batches" in docs/architecture.md). The conversion needs no ffcv; ffcv is imported only by the FFCV
loader, and where it cannot be imported the numpy reader yields the same batches (loader.py).

The names below are imported on first use (PEP 562): `memloss train` reads the dataset facts (registry.py) in its
checks before torch is loaded, and importing this package must not load it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from memloss._lazy import lazy_exports

_EXPORTS: dict[str, str | tuple[str, str]] = {
    "labels_digest": ("memloss.memstore.spec", "labels_sha256"),
    "PreparedSplit": "memloss.trainer.data.beton",
    "prepare": "memloss.trainer.data.beton",
    "prepare_generated": "memloss.trainer.data.generated",
    "BatchLoader": "memloss.trainer.data.loader",
    "make_loader": "memloss.trainer.data.loader",
    "DATASETS": "memloss.trainer.data.registry",
    "SPLITS": "memloss.trainer.data.registry",
    "DatasetError": "memloss.trainer.data.registry",
    "DatasetInfo": "memloss.trainer.data.registry",
    "dataset_info": "memloss.trainer.data.registry",
    "default_data_dir": "memloss.trainer.data.sources",
    "digits_split_indices": "memloss.trainer.data.sources",
    "load_tensors": "memloss.trainer.data.sources",
    "UserData": "memloss.trainer.data.userdata",
    "prepare_user": "memloss.trainer.data.userdata",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

if TYPE_CHECKING:
    from memloss.memstore.spec import labels_sha256 as labels_digest
    from memloss.trainer.data.beton import PreparedSplit, prepare
    from memloss.trainer.data.generated import prepare_generated
    from memloss.trainer.data.loader import BatchLoader, make_loader
    from memloss.trainer.data.registry import DATASETS, SPLITS, DatasetError, DatasetInfo, dataset_info
    from memloss.trainer.data.sources import default_data_dir, digits_split_indices, load_tensors
    from memloss.trainer.data.userdata import UserData, prepare_user
