"""Creating, opening and validating the Zarr group of a memory store, and committing its ring state.

The group attribute "memloss" holds everything a reader needs (see docs/store-format.md). It is written last at
creation and rewritten whole on every state change: on a local path zarr's LocalStore writes zarr.json to a
temporary file and renames it over the old one (atomic on POSIX), and on object stores (s3, gcs, azure, memory)
a put replaces the object atomically; on other fsspec filesystems the update is a plain overwrite.

Creation is recoverable: the group is first written with only the attribute "memloss_creating", so a location
whose creation was interrupted (a kill, a full disk) is recognized as ours and rebuilt by the next writer
(`location_kind` → "creating"), never mistaken for foreign files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import zarr
from zarr.abc.store import Store

from memloss.errors import MemlossError
from memloss.memstore.zarrstore.chunks import open_arrays
from memloss.memstore.zarrstore.members import layout_of, read_members, write_members
from memloss.memstore.location.resolve import (
    MANIFEST_DIR, OWN_TOP_LEVEL, UrlLike, delete_key, put_bytes, read_json, resolve_store,
    top_level_names, wipe_store,
)
from memloss.memstore.integrity.lock import StoreLock
from memloss.memstore.integrity.manifest import delete_manifests, read_error, verify_slots, write_manifest
from memloss.memstore.zarrstore.codecs import AUX_CODEC, check_codecs, make_codecs
from memloss.memstore.entries import NO_EPOCH
from memloss.memstore.errors import StoreError
from memloss.memstore.layout.order import BlockLayout, default_block_size, layout_members, storage_rows
from memloss.memstore.layout.ring import RingState
from memloss.memstore.spec import DatasetFingerprint, StoreSpec, ThreatModel

__all__ = ["ARRAYS", "UrlLike", "ZarrHandle", "create_handle", "open_handle", "resolve_store", "save_ring_state"]

FORMAT_NAME = "memloss-memstore"
FORMAT_VERSION = 4
# 1: one part, no manifests (its committed epochs are not verified); 2: manifests; 3: datasets of two parts (padding
# rows between them). Versions 1 and 2 open as stores of one part.
READABLE_VERSIONS = (1, 2, 3, 4)
ATTR = "memloss"
CREATING_ATTR = "memloss_creating"
ARRAYS = ("codes", "scale", "info")
INFO_COLUMNS = ("epoch", "dy", "dx", "flip")  # int32 columns of "info"; fill -1 = never written


class StoreMismatch(StoreError):
    """The store exists but was made for another dataset, threat model or K."""


@dataclass
class ZarrHandle:
    """An opened and validated store: group, arrays, spec, layout, ring state, the creation attributes and, for a
    writer, its lock."""

    url: str
    group: zarr.Group
    arrays: dict[str, zarr.Array]
    spec: StoreSpec
    layout: BlockLayout
    seed: int
    state: RingState
    meta: dict[str, Any]
    lock: StoreLock | None = None

    @property
    def store(self) -> Store:
        return self.group.store

    def release(self) -> None:
        """Gives up the writer lock (if held); idempotent."""
        if self.lock is not None:
            self.lock.release()


def memloss_version() -> str:
    try:
        return version("memloss")
    except PackageNotFoundError:
        return "unknown"


def location_kind(store: Store, url: str) -> str:
    """"empty", "creating" (an interrupted creation: ours, safe to rebuild), "store" or "foreign"."""
    names = top_level_names(store)
    if not names:
        return "empty"
    root = read_json(store, "zarr.json", url)
    attributes = (root or {}).get("attributes") or {}
    if ATTR in attributes:
        return "store"
    if CREATING_ATTR in attributes and set(names) <= set(OWN_TOP_LEVEL):
        return "creating"
    return "foreign"


_REFUSALS = {
    "empty": "no memory store at {text}; check the path",
    "creating": "the store {text} is being created, or its creation was interrupted; a training run with this "
                "store rebuilds an interrupted one (open_or_create)",
    "store": "{text} already holds a memloss store; open it with open_store() or choose an empty path",
    "foreign": "{text} holds files that are not a memloss store; choose an empty or new path for the store",
}


def check_location(store: Store, url: str, allowed: tuple[str, ...]) -> str:
    """The location's kind (see `location_kind`) if it is `allowed`; otherwise StoreError saying what is there."""
    kind = location_kind(store, url)
    if kind not in allowed:
        raise StoreError(_REFUSALS[kind].format(text=url))
    return kind


def demote_and_wipe(store: Store) -> None:
    """Deletes a store (this process holds its lock): first marks it as being created, so that a kill during the
    deletion leaves a location the next writer still recognizes and rebuilds."""
    if top_level_names(store):  # zarr's overwrite=True would delete the whole location, the lock file included
        marker = {"zarr_format": 3, "node_type": "group", "attributes": {CREATING_ATTR: _creating_info(None)}}
        put_bytes(store, "zarr.json", json.dumps(marker).encode())
    wipe_store(store)
    delete_key(store, "zarr.json")  # last, see above


def _creating_info(owner: str | None) -> dict[str, Any]:
    return {"since": datetime.now(timezone.utc).isoformat(timespec="seconds"), "by": owner}


def _array_specs(spec: StoreSpec, b: int) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], str, Any]]:
    """name -> (shape, chunks, dtype, fill value) of every per-slot array."""
    s, n, shape = spec.k + 1, storage_rows(spec.fingerprint.parts, b), spec.fingerprint.shape
    return {
        "codes": ((s, n, *shape), (1, b, *shape), "uint8", 128),
        "scale": ((s, n), (1, b), "float32", 0.0),
        "info": ((s, n, len(INFO_COLUMNS)), (1, b, len(INFO_COLUMNS)), "int32", NO_EPOCH),
    }


def create_handle(url: UrlLike, spec: StoreSpec, *, seed: int, block_size: int | None, codec: str,
                  memory_budget: int, lock: StoreLock | None = None) -> ZarrHandle:
    """Creates a new store; refuses a non-empty location (a memloss store or anything else). A writer passes the
    lock it holds; the location may then hold an interrupted creation, which is rebuilt."""
    store, text = resolve_store(url, read_only=False)
    if check_location(store, text, ("empty", "creating") if lock is not None else ("empty",)) == "creating":
        demote_and_wipe(store)
    n, parts = spec.fingerprint.n, spec.fingerprint.parts
    b = int(block_size) if block_size is not None else default_block_size(min(parts), spec.sample_bytes)
    if not 1 <= b <= n:
        raise StoreError(f"block_size {block_size} must be in [1, {n}]")
    codes_codecs, aux_codecs = make_codecs(codec), make_codecs(AUX_CODEC)
    group = zarr.create_group(store, attributes={CREATING_ATTR: _creating_info(lock.url if lock else None)})
    for name, (shape, chunks, dtype, fill) in _array_specs(spec, b).items():
        group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill,
                           compressors=codes_codecs if name == "codes" else aux_codecs)
    members = layout_members(spec.fingerprint.parts, b, seed)
    write_members(group, members, aux_codecs)
    group.create_group(MANIFEST_DIR)  # the per-epoch manifests are Zarr groups in it (memstore/integrity/manifest.py)
    meta = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "memloss_version": memloss_version(),
        "dataset": spec.fingerprint.to_dict(), "threat": spec.threat.to_dict(), "k": spec.k, "slots": spec.k + 1,
        "block_size": b, "seed": int(seed), "memory_budget": int(memory_budget),
        "codecs": {"codes": codec, "aux": AUX_CODEC},
        "slot_epochs": [None] * (spec.k + 1), "committed_epochs": [], "manifests": {},
    }
    group.attrs.put({ATTR: meta})  # written last, replacing the creation marker: now the store is complete
    layout = BlockLayout.from_members(members, b, spec.fingerprint.parts)
    arrays = open_arrays(group, ARRAYS)
    return ZarrHandle(text, group, arrays, spec, layout, int(seed), RingState([None] * (spec.k + 1), []), meta,
                      lock)


def open_handle(url: UrlLike, expect: StoreSpec | None, read_only: bool, lock: StoreLock | None = None
                ) -> ZarrHandle:
    """Opens and validates an existing store (format, spec, arrays, codecs, layout, ring state). A writer passes
    the lock it holds (released by `ZarrHandle.release`)."""
    store, text = resolve_store(url, read_only=read_only)
    check_location(store, text, ("store",))
    meta = read_json(store, "zarr.json", text)["attributes"][ATTR]  # type: ignore[index]
    if not isinstance(meta, dict):
        raise StoreError(f"{text}: the store's attributes are corrupt; recreate the store")
    if meta.get("format") != FORMAT_NAME or meta.get("format_version") not in READABLE_VERSIONS:
        raise StoreError(f"{text}: store format {meta.get('format')!r} v{meta.get('format_version')} is not "
                         f"{FORMAT_NAME} v1–v{FORMAT_VERSION}; upgrade memloss or recreate the store")
    spec = _parse_spec(meta, text)
    if expect is not None:
        diff = expect.mismatch(spec)
        if diff is not None:
            field, want, got = diff
            raise StoreMismatch(f"store {text} does not match this run: {field} expected {want!r}, found {got!r}; "
                                "use a new store path or the store's settings")
    return _open_arrays(store, text, meta, spec, read_only, lock)


def _open_arrays(store: Store, text: str, meta: dict[str, Any], spec: StoreSpec, read_only: bool,
                 lock: StoreLock | None) -> ZarrHandle:
    for name in (*ARRAYS, "members"):
        array_meta = read_json(store, f"{name}/zarr.json", text)
        if array_meta is None:
            raise StoreError(f"{text}: array {name!r} is missing; the store is corrupt: delete or restore it")
        check_codecs(name, array_meta.get("codecs", []))
    try:
        group = zarr.open_group(store, mode="r" if read_only else "r+")
        arrays = open_arrays(group, ARRAYS)
        members = read_members(group["members"])
    except MemlossError:
        raise
    except Exception as exc:
        raise StoreError(f"{text}: cannot open the store's arrays ({type(exc).__name__}: {exc}); delete or restore it"
                         ) from exc
    b = _int_field(meta, "block_size", text)
    _check_arrays(arrays, spec, b, text)
    layout = layout_of(members, b, spec.fingerprint.parts, text)
    return ZarrHandle(text, group, arrays, spec, layout, _int_field(meta, "seed", text), _parse_state(meta, spec, text),
                      meta, lock)


def _int_field(meta: dict[str, Any], name: str, url: str) -> int:
    value = meta.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise StoreError(f"{url}: attribute {name!r} is {value!r}, expected an integer; the store is corrupt")
    return value


def _parse_spec(meta: dict[str, Any], url: str) -> StoreSpec:
    try:
        fingerprint = DatasetFingerprint.from_dict(meta["dataset"])
        threat = ThreatModel.from_dict(meta["threat"])
        return StoreSpec(fingerprint, threat, int(meta["k"]))
    except (KeyError, TypeError, ValueError, MemlossError) as exc:
        raise StoreError(f"{url}: store attributes are corrupt ({type(exc).__name__}: {exc}); recreate the store"
                         ) from exc


def _check_arrays(arrays: dict[str, zarr.Array], spec: StoreSpec, b: int, url: str) -> None:
    for name, (shape, chunks, dtype, _) in _array_specs(spec, b).items():
        arr = arrays[name]
        found = (tuple(arr.shape), tuple(arr.chunks), str(arr.dtype))
        if found != (shape, chunks, dtype):
            raise StoreError(f"{url}: array {name!r} has shape/chunks/dtype {found}, expected "
                             f"{(shape, chunks, dtype)}; the store is corrupt")


def _parse_state(meta: dict[str, Any], spec: StoreSpec, url: str) -> RingState:
    slots, committed = meta.get("slot_epochs"), meta.get("committed_epochs")
    s = spec.k + 1
    ok = isinstance(slots, list) and len(slots) == s and isinstance(committed, list)
    ok = ok and all(e is None or (isinstance(e, int) and e >= 0 and e % s == i) for i, e in enumerate(slots))
    if not ok or sorted(e for e in slots if e is not None) != committed:  # type: ignore[union-attr]
        raise StoreError(f"{url}: ring state slot_epochs={slots!r} committed_epochs={committed!r} is inconsistent; "
                         "the store is corrupt")
    return RingState(list(slots), list(committed))  # type: ignore[arg-type]


def save_ring_state(handle: ZarrHandle, state: RingState) -> None:
    """Rewrites the "memloss" attribute with the new ring state (one atomic metadata write, see module doc). A newly
    committed epoch's manifest is written first; manifests of epochs that stop counting are deleted after."""
    if handle.lock is not None:
        handle.lock.check()
    old = set(handle.meta.get("committed_epochs") or [])
    known = handle.meta.get("manifests") or {}
    manifests = {str(e): known[str(e)] for e in state.committed if str(e) in known}
    for epoch in state.committed:
        if epoch not in old:
            manifests[str(epoch)] = write_manifest(handle.store, epoch, epoch % (handle.spec.k + 1))
    meta = dict(handle.meta, format_version=FORMAT_VERSION, slot_epochs=list(state.slot_epochs),
                committed_epochs=list(state.committed), manifests=manifests)
    handle.group.attrs.put({ATTR: meta})
    handle.meta = meta
    delete_manifests(handle.store, sorted(e for e in old - set(state.committed) if str(e) in known))


def reload_ring_state(handle: ZarrHandle) -> RingState:
    """The ring state as storage holds it now (another process may have committed since the store was opened);
    the handle's attributes follow, so later checks use the new manifests."""
    meta = read_json(handle.store, "zarr.json", handle.url)["attributes"][ATTR]  # type: ignore[index]
    state = _parse_state(meta, handle.spec, handle.url)
    handle.meta = meta
    return state


def verify_read_slots(handle: ZarrHandle, state: RingState, slots: list[int]) -> None:
    """Checks the chunks of the ring `slots` an epoch reads against their epochs' manifests (DamagedMemoryError)."""
    verify_slots(handle.store, handle.url, handle.meta, _slot_epochs(state, slots))


def read_failure(handle: ZarrHandle, state: RingState, slots: list[int], exc: BaseException) -> StoreError:
    """The one-line error for a failed read of ring `slots`: the damaged epoch and chunk, if one is damaged."""
    return read_error(handle.store, handle.url, handle.meta, _slot_epochs(state, slots), exc)


def _slot_epochs(state: RingState, slots: list[int]) -> dict[int, int]:
    return {slot: int(e) for slot in slots if (e := state.slot_epochs[slot]) is not None}
