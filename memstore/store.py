"""Public entry points: create, open or reuse a Zarr memory store, or build an in-RAM one.

Every writer (create_store, open_store with read_only=False, open_or_create) first takes the store's writer lock
(memstore/integrity/lock.py) and keeps it until `close()`; readers take none. With the lock held, a writer removes the
`.partial` files a killed writer left, and open_or_create rebuilds a store whose creation was interrupted.
"""

from __future__ import annotations

from pathlib import Path

from memloss.memstore.location.resolve import remove_partials
from memloss.memstore.integrity.lock import StoreLock, acquire_lock
from memloss.memstore._memory import InMemoryStore
from memloss.memstore.zarrstore.backend import ZarrMemStore
from memloss.memstore.zarrstore.meta import (
    StoreMismatch, UrlLike, ZarrHandle, check_location, create_handle, demote_and_wipe, location_kind, open_handle,
    resolve_store,
)
from memloss.memstore.base import DEFAULT_MEMORY_BUDGET
from memloss.memstore.zarrstore.codecs import DEFAULT_CODES_CODEC
from memloss.memstore.entries import row_bytes
from memloss.memstore.errors import StoreError
from memloss.memstore.layout.budget import memory_plan, read_ahead_rows
from memloss.memstore.spec import StoreSpec


def _window_blocks(spec: StoreSpec, block_size: int, memory_budget: int,
                   window_slots: int | None = None) -> tuple[int, int]:
    """(blocks per window, resident blocks): a budget that holds every slot of the whole dataset keeps it in RAM
    across epochs and orders it as one window (uniform permutation); otherwise windows fit the budget (a two-part
    store keeps its base part in RAM, see `memory_plan`)."""
    if memory_budget < 1:
        raise StoreError(f"memory_budget must be a positive number of bytes, got {memory_budget}")
    return memory_plan(memory_budget, spec.k, spec.fingerprint.parts, block_size, row_bytes(spec), window_slots)


def _lock(url: UrlLike, owner: str | None, notes: list[str] | None, allowed: tuple[str, ...]) -> StoreLock:
    """Takes the writer lock of `url` and removes the `.partial` files a killed writer left. A location of another
    kind than `allowed` is refused first, so that a refused location gets no lock file."""
    store, text = resolve_store(url, read_only=False)
    check_location(store, text, allowed)
    lock = acquire_lock(store, text, owner)
    try:
        removed = remove_partials(store)
    except OSError as exc:
        lock.release()
        raise StoreError(f"cannot clean the store {text} ({exc.strerror}); check its permissions") from None
    if notes is not None:
        notes.extend(lock.notes)
        if removed:
            notes.append(f"removed {removed} temporary file(s) an interrupted write left in {text}")
    return lock


def _store(handle: ZarrHandle, memory_budget: int | None, read_only: bool,
           window_slots: int | None = None) -> ZarrMemStore:
    budget = int(handle.meta.get("memory_budget", DEFAULT_MEMORY_BUDGET)) if memory_budget is None else memory_budget
    try:
        windows, resident = _window_blocks(handle.spec, handle.layout.block_size, budget, window_slots)
        ahead = read_ahead_rows(budget, handle.spec.k, row_bytes(handle.spec), handle.layout.rows)
        return ZarrMemStore(handle, windows, read_only=read_only, resident_blocks=resident, read_ahead_rows=ahead,
                            window_ages=window_slots)
    except BaseException:
        handle.release()
        raise


def create_store(
    url: UrlLike,
    spec: StoreSpec,
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    seed: int = 0,
    block_size: int | None = None,
    codec: str | None = None,
    owner: str | None = None,
    window_slots: int | None = None,
) -> ZarrMemStore:
    """Creates an empty store at `url` (local path or fsspec URL) and opens it for writing.

    memory_budget: bytes of RAM the store may hold (read windows, prefetch and write buffers); it sets the window
    size and is recorded as the default for later opens. A budget that holds all K+1 slots of the dataset keeps
    them in RAM across epochs (only the first epoch after opening reads from disk; writes still go to disk). seed:
    fixes block membership and every epoch's order. block_size: samples per chunk (default: about 512 KB of
    codes). codec: see memstore.zarrstore.codecs (default zstd-1). owner: who writes (e.g. the run directory), named to a
    second writer. window_slots: the memory ages each window of a windowed store decodes (m with per-window slot
    draws, `begin_epoch(ages=...)`; default K): fewer slots make larger windows in the same budget, and change the
    order (it depends on the window size), so every open of a store for one run passes the same value. Refuses a
    location that is not empty (an interrupted creation is rebuilt).
    """
    _check_budget(spec, block_size, memory_budget, window_slots)  # a too-small budget fails before anything is written
    lock = _lock(url, owner, None, ("empty", "creating"))
    try:
        return _create_locked(url, spec, lock, seed, block_size, codec, memory_budget, window_slots)
    except BaseException:
        lock.release()
        raise


def _check_budget(spec: StoreSpec, block_size: int | None, memory_budget: int,
                  window_slots: int | None = None) -> None:
    """Refuses a memory budget that cannot hold one window of `block_size` blocks (StoreError, one line)."""
    if block_size is not None and 1 <= block_size <= spec.fingerprint.n:
        _window_blocks(spec, block_size, memory_budget, window_slots)


def _create_locked(url: UrlLike, spec: StoreSpec, lock: StoreLock, seed: int, block_size: int | None, codec: str | None,
                   memory_budget: int, window_slots: int | None = None) -> ZarrMemStore:
    """Creates the store at `url` under the writer `lock` already taken, and opens it for writing."""
    handle = create_handle(url, spec, seed=seed, block_size=block_size, codec=codec or DEFAULT_CODES_CODEC,
                           memory_budget=memory_budget, lock=lock)
    return _store(handle, memory_budget, read_only=False, window_slots=window_slots)


def open_store(
    url: UrlLike, expect: StoreSpec | None = None, read_only: bool = False, *, memory_budget: int | None = None,
    owner: str | None = None, window_slots: int | None = None,
) -> ZarrMemStore:
    """Opens an existing store, validating it (and checking it matches `expect`); StoreError names the problem.

    memory_budget: None uses the budget recorded at creation, so a resumed run gets the same training order.
    A writer (read_only=False) holds the store's lock until close(); a second writer gets StoreLockedError.
    window_slots: as in `create_store`.
    """
    if read_only:
        return _store(open_handle(url, expect, True), memory_budget, read_only=True, window_slots=window_slots)
    lock = _lock(url, owner, None, ("store",))
    try:
        handle = open_handle(url, expect, False, lock)
    except BaseException:
        lock.release()
        raise
    return _store(handle, memory_budget, read_only=False, window_slots=window_slots)


def open_or_create(
    url: UrlLike,
    spec: StoreSpec,
    *,
    memory_budget: int | None = None,
    seed: int = 0,
    block_size: int | None = None,
    codec: str | None = None,
    owner: str | None = None,
    replace_uncommitted: bool = False,
    recreate: bool = False,
    notes: list[str] | None = None,
    window_slots: int | None = None,
) -> ZarrMemStore:
    """Opens the store at `url` if one exists (it must match `spec`; its own seed and block size are kept),
    otherwise creates it with these settings; a store whose creation was interrupted is rebuilt.

    replace_uncommitted: a store that does not match `spec` but never committed an epoch (it holds no memory) is
    replaced instead of refused (a fresh start after a failed one). recreate: whatever store is there is deleted and
    created anew (it belongs to a run that is started again from scratch). notes: receives one line per thing done
    besides opening (a stale lock taken over, a store rebuilt or replaced, temporary files removed). window_slots:
    as in `create_store`.
    """
    store, text = resolve_store(url, read_only=False)
    lock = _lock(url, owner, notes, ("empty", "creating", "store"))
    try:
        kind = location_kind(store, text)
        if recreate and kind != "empty":
            demote_and_wipe(store)
            _note(notes, f"rebuilt the store {text} for the new start of its run")
        elif kind == "store":
            try:
                handle = open_handle(url, spec, False, lock)
                return _store(handle, memory_budget, read_only=False, window_slots=window_slots)
            except StoreMismatch:
                if not replace_uncommitted or _has_commits(url):
                    raise
            demote_and_wipe(store)
            _note(notes, f"replaced the store {text}: it was made for other settings and never committed an epoch")
        elif kind == "creating":
            _note(notes, f"rebuilt the store {text}: its creation had been interrupted")
        budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else memory_budget
        _check_budget(spec, block_size, budget, window_slots)
        return _create_locked(url, spec, lock, seed, block_size, codec, budget, window_slots)
    except BaseException:
        lock.release()
        raise


def _has_commits(url: UrlLike) -> bool:
    return bool(open_handle(url, None, True).state.committed)


def _note(notes: list[str] | None, text: str) -> None:
    if notes is not None:
        notes.append(text)


def create_memory_store(spec: StoreSpec, *, seed: int = 0, block_size: int | None = None) -> InMemoryStore:
    """An in-RAM store with the same interface ((K+1)·N rows held in numpy arrays; nothing persists)."""
    return InMemoryStore(spec, seed=seed, block_size=block_size)


def store_exists(url: UrlLike) -> bool:
    """True if `url` holds a complete memloss store (False: nothing, an interrupted creation or foreign files)."""
    if isinstance(url, str) and "://" not in url and not Path(url.removeprefix("file://")).expanduser().exists():
        return False
    store, text = resolve_store(url, read_only=True)
    return location_kind(store, text) == "store"
