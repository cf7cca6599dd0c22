"""Public entry points: create, open or reuse a Zarr memory store, or build an in-RAM one."""

from __future__ import annotations

from memloss.memstore._memory import InMemoryStore
from memloss.memstore._zarr import ZarrMemStore
from memloss.memstore._zarr_meta import UrlLike, create_handle, open_handle, resolve_store, store_is_empty
from memloss.memstore.base import DEFAULT_MEMORY_BUDGET
from memloss.memstore.codecs import DEFAULT_CODES_CODEC
from memloss.memstore.entries import row_bytes
from memloss.memstore.errors import StoreError
from memloss.memstore.order import fits_resident, resident_window_blocks, window_blocks_for_budget
from memloss.memstore.spec import StoreSpec


def _window_blocks(handle_spec: StoreSpec, block_size: int, num_blocks: int, memory_budget: int) -> tuple[int, bool]:
    """(blocks per window, resident): a budget that holds every slot of the whole dataset keeps it in RAM across
    epochs and orders it as one window (uniform permutation); otherwise windows fit the budget."""
    if memory_budget < 1:
        raise StoreError(f"memory_budget must be a positive number of bytes, got {memory_budget}")
    rb, k = row_bytes(handle_spec), handle_spec.k
    if fits_resident(memory_budget, k, handle_spec.fingerprint.n, block_size, rb):
        return resident_window_blocks(num_blocks), True
    return window_blocks_for_budget(memory_budget, k, block_size, rb, num_blocks), False


def create_store(
    url: UrlLike,
    spec: StoreSpec,
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    seed: int = 0,
    block_size: int | None = None,
    codec: str | None = None,
) -> ZarrMemStore:
    """Creates an empty store at `url` (local path or fsspec URL) and opens it for writing.

    memory_budget: bytes of RAM the store may hold (read windows, prefetch and write buffers); it sets the window
    size and is recorded as the default for later opens. A budget that holds all K+1 slots of the dataset keeps
    them in RAM across epochs (only the first epoch after opening reads from disk; writes still go to disk). seed: fixes block membership and every epoch's order.
    block_size: samples per chunk (default: about 512 KB of codes). codec: see memstore.codecs (default
    zstd-1). Refuses a location that is not empty.
    """
    n = spec.fingerprint.n
    if block_size is not None and 1 <= block_size <= n:  # fail on a too-small budget before anything is written
        _window_blocks(spec, block_size, -(-n // block_size), memory_budget)
    handle = create_handle(url, spec, seed=seed, block_size=block_size, codec=codec or DEFAULT_CODES_CODEC,
                           memory_budget=memory_budget)
    windows, resident = _window_blocks(spec, handle.layout.block_size, handle.layout.num_blocks, memory_budget)
    return ZarrMemStore(handle, windows, read_only=False, resident=resident)


def open_store(
    url: UrlLike, expect: StoreSpec | None = None, read_only: bool = False, *, memory_budget: int | None = None
) -> ZarrMemStore:
    """Opens an existing store, validating it (and checking it matches `expect`); StoreError names the problem.

    memory_budget: None uses the budget recorded at creation, so a resumed run gets the same training order.
    """
    handle = open_handle(url, expect, read_only)
    budget = int(handle.meta.get("memory_budget", DEFAULT_MEMORY_BUDGET)) if memory_budget is None else memory_budget
    windows, resident = _window_blocks(handle.spec, handle.layout.block_size, handle.layout.num_blocks, budget)
    return ZarrMemStore(handle, windows, read_only=read_only, resident=resident)


def open_or_create(
    url: UrlLike,
    spec: StoreSpec,
    *,
    memory_budget: int | None = None,
    seed: int = 0,
    block_size: int | None = None,
    codec: str | None = None,
) -> ZarrMemStore:
    """Opens the store at `url` if one exists (it must match `spec`; its own seed and block size are kept),
    otherwise creates it with these settings."""
    store, _ = resolve_store(url, read_only=False)
    if not store_is_empty(store):
        return open_store(url, expect=spec, memory_budget=memory_budget)
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else memory_budget
    return create_store(url, spec, memory_budget=budget, seed=seed, block_size=block_size, codec=codec)


def create_memory_store(spec: StoreSpec, *, seed: int = 0, block_size: int | None = None) -> InMemoryStore:
    """An in-RAM store with the same interface ((K+1)·N rows held in numpy arrays; nothing persists)."""
    return InMemoryStore(spec, seed=seed, block_size=block_size)
