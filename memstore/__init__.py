"""memstore: the memory of the last K epochs of adversarial perturbations (quantization, Zarr and in-RAM stores,
training order, inspection).

The names below are imported on first use (PEP 562), so that importing one light submodule (the order, the storage
options, the errors) does not load torch and zarr: `memloss train` checks its options before those imports."""

from __future__ import annotations

from typing import TYPE_CHECKING

from memloss._lazy import lazy_exports
from memloss.errors import MemlossError
from memloss.memstore.errors import StoreError

_EXPORTS: dict[str, str] = {
    "DEFAULT_CODES_CODEC": "memloss.memstore.zarrstore.codecs",
    "DEFAULT_MEMORY_BUDGET": "memloss.memstore.base",
    "MemStore": "memloss.memstore.base",
    "MemoryBatch": "memloss.memstore.entries",
    "dequantize": "memloss.memstore.quant",
    "quantize": "memloss.memstore.quant",
    "DatasetFingerprint": "memloss.memstore.spec",
    "StoreSpec": "memloss.memstore.spec",
    "ThreatModel": "memloss.memstore.spec",
    "labels_sha256": "memloss.memstore.spec",
    "parse_eps": "memloss.memstore.spec",
    "create_memory_store": "memloss.memstore.store",
    "create_store": "memloss.memstore.store",
    "open_or_create": "memloss.memstore.store",
    "open_store": "memloss.memstore.store",
}

__all__ = sorted(["MemlossError", "StoreError", *_EXPORTS])


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

if TYPE_CHECKING:
    from memloss.memstore.base import DEFAULT_MEMORY_BUDGET, MemStore
    from memloss.memstore.zarrstore.codecs import DEFAULT_CODES_CODEC
    from memloss.memstore.entries import MemoryBatch
    from memloss.memstore.quant import dequantize, quantize
    from memloss.memstore.spec import DatasetFingerprint, StoreSpec, ThreatModel, labels_sha256, parse_eps
    from memloss.memstore.store import create_memory_store, create_store, open_or_create, open_store
