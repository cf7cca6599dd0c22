"""The worker of bench/store_s3_requests.py: a resident store on S3 run phase by phase, with memloss's own I/O calls
traced (thread, what, wall-clock start and end). Returns the phases as JSON-ready dicts."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import memloss.memstore.zarrstore.backend as backend_module
from memloss.memstore.spec import DatasetFingerprint, StoreSpec, ThreatModel
from memloss.memstore.store import create_store, open_store
from memloss.memstore.zarrstore.codecs import DEFAULT_CODES_CODEC

BATCH, SHAPE = 128, (3, 32, 32)
# memloss's I/O helpers (memstore/location/resolve.py) and the chunk writer, wherever a module bound them by name
TRACED = ("get_bytes", "put_bytes", "delete_key", "delete_prefix", "list_sizes", "run_all", "top_level_names",
          "save_ring_state", "write_chunks")


def trace(calls: list[tuple[float, float, str, str]]) -> None:
    """Wraps the TRACED functions in every loaded memloss module (and zarr's attribute put) to log each call."""
    import zarr.core.attributes as attributes

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def traced(*a: Any, **kw: Any) -> Any:
            t0 = time.time()
            try:
                return fn(*a, **kw)
            finally:
                what = f"{name}({len(a[0])} coroutines)" if name == "run_all" else name
                what += f" {a[1]}" if len(a) > 1 and isinstance(a[1], str) else ""
                calls.append((t0, time.time(), threading.current_thread().name, what))
        traced.__wrapped__ = fn  # type: ignore[attr-defined]
        return traced

    originals = {}
    for mod in [m for name, m in sys.modules.items() if name.startswith("memloss.") and m is not None]:
        for name in TRACED:
            fn = getattr(mod, name, None)
            if callable(fn) and getattr(fn, "__module__", "").startswith("memloss."):
                fn = getattr(fn, "__wrapped__", fn)
                setattr(mod, name, originals.setdefault(fn, wrap(name, fn)))
    attributes.Attributes.put = wrap("group attrs put", attributes.Attributes.put)  # type: ignore[method-assign]


def rows(idx: np.ndarray) -> tuple[np.ndarray, ...]:
    """write() arguments for samples idx: low-entropy codes (as quantized perturbations are), zero offsets."""
    rng = np.random.default_rng(int(idx[0]))
    codes = (128 + rng.integers(-8, 9, size=(idx.shape[0], *SHAPE))).astype(np.uint8)
    return codes, rng.random(idx.shape[0], dtype=np.float32), np.zeros((idx.shape[0], 2), np.int64), \
        np.zeros(idx.shape[0], bool)


class Phases:
    """Timed phases of the worker and the traced calls made during each."""

    def __init__(self, calls: list[tuple[float, float, str, str]]) -> None:
        self.calls, self.out = calls, []  # type: ignore[var-annotated]

    def run(self, epoch: int, name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.time()
        got = fn()
        t1 = time.time()
        self.out.append({"epoch": epoch, "name": name, "t0": t0, "t1": t1,
                         "calls": sorted(c for c in self.calls if t0 <= c[0] <= t1)})
        return got


def epoch_rows(store: Any, order: np.ndarray, step_s: float, read_from: int) -> None:
    for s in range(0, order.shape[0], BATCH):
        idx = order[s:s + BATCH]
        if s >= read_from:
            store.read(idx)
        time.sleep(step_s)
        store.write(idx, *rows(idx))


def run_worker(url: str, n: int, k: int, budget_mb: int, step_ms: float, epochs: int) -> list[dict[str, Any]]:
    """Fill, warm-up, then `epochs` training-like epochs, each phase timed and traced (see the caller's doc)."""
    calls: list[tuple[float, float, str, str]] = []
    spec = StoreSpec(DatasetFingerprint("bench", n, SHAPE, "0" * 64), ThreatModel("Linf", "8/255"), k)
    phases = Phases(calls)
    store = phases.run(-1, "create_store", lambda: create_store(url, spec, memory_budget=budget_mb << 20,
                                                                 codec=DEFAULT_CODES_CODEC))
    assert store.resident, "the budget does not keep the store resident"
    trace(calls)
    for epoch in range(k + 1):  # fill, then the warm-up epoch (reads every age)
        order = store.begin_epoch(epoch)
        epoch_rows(store, order, 0.0, 0 if epoch == k else order.shape[0])
        store.commit_epoch()
    for epoch in range(k + 1, k + 1 + epochs):
        time.sleep(0.3)
        order = phases.run(epoch, "begin_epoch (training thread)", lambda: store.begin_epoch(epoch))
        phases.run(epoch, "first read (training thread)", lambda: store.read(order[:BATCH]))
        phases.run(epoch, "begin's state save lands (writer)", lambda: backend_module_landed(store))
        epoch_rows(store, order, step_ms / 1000, BATCH)
        landed = phases.run(epoch, "commit_epoch(wait=False) (training thread)",
                            lambda: store.commit_epoch(wait=False))
        phases.run(epoch, "commit lands (writer)", landed.result)
    phases.run(-1, "close", store.close)
    reopen(phases, url, k + 1 + epochs)
    return phases.out


def reopen(phases: Phases, url: str, epoch: int) -> None:
    """A resume: open the store (lease, validation), then its first epoch checks the K read slots against their
    manifests (begin_epoch) and loads them (the first read waits for the load)."""
    store = phases.run(-1, "open_store (lease, checks)", lambda: open_store(url))
    order = phases.run(epoch, "begin_epoch after opening (training thread)", lambda: store.begin_epoch(epoch))
    phases.run(epoch, "first read after opening (resident load)", lambda: store.read(order[:BATCH]))
    backend_module_landed(store)
    store.close()


def backend_module_landed(store: Any) -> None:
    """Waits for the last state save the store queued (the one of begin_epoch)."""
    assert isinstance(store, backend_module.ZarrMemStore)
    if store._landed is not None:
        store._landed.result()
