"""memstore: the memory of the last K epochs of adversarial perturbations (quantization, Zarr and in-RAM stores,
training order, inspection)."""

from memstore.base import DEFAULT_MEMORY_BUDGET, MemoryBatch, MemStore
from memstore.codecs import DEFAULT_CODES_CODEC
from memstore.errors import MemlossError, StoreError
from memstore.quant import dequantize, quantize
from memstore.spec import DatasetFingerprint, StoreSpec, ThreatModel, labels_sha256, parse_eps
from memstore.store import create_memory_store, create_store, open_or_create, open_store

__all__ = [
    "DEFAULT_CODES_CODEC",
    "DEFAULT_MEMORY_BUDGET",
    "DatasetFingerprint",
    "MemStore",
    "MemlossError",
    "MemoryBatch",
    "StoreError",
    "StoreSpec",
    "ThreatModel",
    "create_memory_store",
    "create_store",
    "dequantize",
    "labels_sha256",
    "open_or_create",
    "open_store",
    "parse_eps",
    "quantize",
]
