"""memstore: the memory of the last K epochs of adversarial perturbations (quantization, Zarr and in-RAM stores,
training order, inspection)."""

from memloss.errors import MemlossError
from memloss.memstore.base import DEFAULT_MEMORY_BUDGET, MemStore
from memloss.memstore.codecs import DEFAULT_CODES_CODEC
from memloss.memstore.entries import MemoryBatch
from memloss.memstore.errors import StoreError
from memloss.memstore.quant import dequantize, quantize
from memloss.memstore.spec import DatasetFingerprint, StoreSpec, ThreatModel, labels_sha256, parse_eps
from memloss.memstore.store import create_memory_store, create_store, open_or_create, open_store

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
