"""Datasets by name, their one-time conversion to `.beton` files in FFCV's format (and that of generated-image
`.npz` sets), and the batch loader (contract: "Batches" in docs/architecture.md). The conversion needs no ffcv;
ffcv is imported only by the FFCV loader, and where it cannot be imported the numpy reader yields the same batches
(loader.py)."""

from memloss.memstore.spec import labels_sha256 as labels_digest
from memloss.trainer.data.beton import PreparedSplit, prepare
from memloss.trainer.data.generated import prepare_generated
from memloss.trainer.data.loader import BatchLoader, make_loader
from memloss.trainer.data.registry import DATASETS, SPLITS, DatasetError, DatasetInfo, dataset_info
from memloss.trainer.data.sources import default_data_dir, digits_split_indices, load_tensors

__all__ = [
    "DATASETS", "SPLITS", "BatchLoader", "DatasetError", "DatasetInfo", "PreparedSplit", "dataset_info",
    "default_data_dir", "digits_split_indices", "labels_digest", "load_tensors", "make_loader", "prepare",
    "prepare_generated",
]
