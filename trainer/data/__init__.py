"""Datasets by name, their one-time conversion to FFCV `.beton` files, and the batch loader (contract: "Batches" in
docs/architecture.md). ffcv itself is imported only when a split is prepared or loaded."""

from trainer.data.beton import PreparedSplit, labels_digest, prepare
from trainer.data.loader import BatchLoader, make_loader
from trainer.data.registry import DATASETS, SPLITS, DatasetError, DatasetInfo, dataset_info
from trainer.data.sources import default_data_dir, digits_split_indices, load_tensors

__all__ = [
    "DATASETS", "SPLITS", "BatchLoader", "DatasetError", "DatasetInfo", "PreparedSplit", "dataset_info",
    "default_data_dir", "digits_split_indices", "labels_digest", "load_tensors", "make_loader", "prepare",
]
