"""Creating, opening and validating the Zarr group of a memory store, and committing its ring state.

The group attribute "memloss" holds everything a reader needs (see docs/store-format.md). It is written last at
creation and rewritten whole on every state change: on a local path zarr's LocalStore writes zarr.json to a
temporary file and renames it over the old one (atomic on POSIX), and on object stores (s3, gcs, azure, memory)
a put replaces the object atomically; on other fsspec filesystems the update is a plain overwrite.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import zarr
from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore

from memloss.errors import MemlossError
from memloss.memstore._zarr_chunks import open_arrays
from memloss.memstore.codecs import AUX_CODEC, check_codecs, make_codecs
from memloss.memstore.entries import NO_EPOCH
from memloss.memstore.errors import StoreError
from memloss.memstore.order import BlockLayout, default_block_size, random_members
from memloss.memstore.ring import RingState
from memloss.memstore.spec import DatasetFingerprint, StoreSpec, ThreatModel

FORMAT_NAME = "memloss-memstore"
FORMAT_VERSION = 1
ATTR = "memloss"
ARRAYS = ("codes", "scale", "info")
INFO_COLUMNS = ("epoch", "dy", "dx", "flip")  # int32 columns of "info"; fill -1 = never written
MEMBERS_CHUNK = 1 << 20
UrlLike = str | Path | Store


@dataclass
class ZarrHandle:
    """An opened and validated store: group, arrays, spec, layout, ring state and the creation attributes."""

    url: str
    group: zarr.Group
    arrays: dict[str, zarr.Array]
    spec: StoreSpec
    layout: BlockLayout
    seed: int
    state: RingState
    meta: dict[str, Any]


def memloss_version() -> str:
    try:
        return version("memloss")
    except PackageNotFoundError:
        return "unknown"


def resolve_store(url: UrlLike, read_only: bool) -> tuple[Store, str]:
    """A zarr Store for a local path, a file:// URL or any fsspec URL ("memory://x", "s3://b/x")."""
    if isinstance(url, Store):
        return url, str(url)
    text = str(url)
    if "://" in text and not text.startswith("file://"):
        try:
            return FsspecStore.from_url(text, read_only=read_only), text
        except (ImportError, ValueError, TypeError) as exc:
            raise StoreError(f"cannot open URL {text!r} ({exc}); install the fsspec backend for it") from exc
    path = Path(text.removeprefix("file://")).expanduser()
    if path.exists() and not path.is_dir():
        raise StoreError(f"{path} is a file, not a memory store directory; choose another path")
    if read_only and not path.exists():
        raise StoreError(f"no memory store at {path}; check the path")
    return LocalStore(path, read_only=read_only), str(path)


def store_is_empty(store: Store) -> bool:
    return bool(sync(store.is_empty("")))


def _read_json(store: Store, key: str, url: str) -> dict[str, Any] | None:
    buf = sync(store.get(key, prototype=default_buffer_prototype()))
    if buf is None:
        return None
    try:
        return json.loads(buf.to_bytes())
    except ValueError as exc:
        raise StoreError(f"{url}: metadata {key} is not valid JSON ({exc}); the store is corrupt") from exc


def _array_specs(spec: StoreSpec, b: int) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], str, Any]]:
    """name -> (shape, chunks, dtype, fill value) of every per-slot array."""
    s, n, shape = spec.k + 1, spec.fingerprint.n, spec.fingerprint.shape
    return {
        "codes": ((s, n, *shape), (1, b, *shape), "uint8", 128),
        "scale": ((s, n), (1, b), "float32", 0.0),
        "info": ((s, n, len(INFO_COLUMNS)), (1, b, len(INFO_COLUMNS)), "int32", NO_EPOCH),
    }


def create_handle(url: UrlLike, spec: StoreSpec, *, seed: int, block_size: int | None, codec: str,
                  memory_budget: int) -> ZarrHandle:
    """Creates a new store; refuses a non-empty location (a memloss store or anything else)."""
    store, text = resolve_store(url, read_only=False)
    if not store_is_empty(store):
        found = _read_json(store, "zarr.json", text)
        is_ours = bool(found) and ATTR in found.get("attributes", {})
        what = "a memloss store" if is_ours else "files that are not a memloss store"
        raise StoreError(f"{text} already holds {what}; open it with open_store() or choose an empty path")
    n = spec.fingerprint.n
    b = int(block_size) if block_size is not None else default_block_size(n, spec.sample_bytes)
    if not 1 <= b <= n:
        raise StoreError(f"block_size {block_size} must be in [1, {n}]")
    codes_codecs, aux_codecs = make_codecs(codec), make_codecs(AUX_CODEC)
    group = zarr.create_group(store)
    for name, (shape, chunks, dtype, fill) in _array_specs(spec, b).items():
        group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill,
                           compressors=codes_codecs if name == "codes" else aux_codecs)
    members = random_members(n, seed)
    arr = group.create_array("members", shape=(n,), chunks=(min(n, MEMBERS_CHUNK),), dtype="int64",
                             compressors=aux_codecs)
    arr[:] = members
    meta = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "memloss_version": memloss_version(),
        "dataset": spec.fingerprint.to_dict(), "threat": spec.threat.to_dict(), "k": spec.k, "slots": spec.k + 1,
        "block_size": b, "seed": int(seed), "memory_budget": int(memory_budget),
        "codecs": {"codes": codec, "aux": AUX_CODEC},
        "slot_epochs": [None] * (spec.k + 1), "committed_epochs": [],
    }
    group.attrs.update({ATTR: meta})  # written last: a store is a memloss store only once it is complete
    layout = BlockLayout.from_members(members, b)
    arrays = open_arrays(group, ARRAYS)
    return ZarrHandle(text, group, arrays, spec, layout, int(seed), RingState([None] * (spec.k + 1), []), meta)


def open_handle(url: UrlLike, expect: StoreSpec | None, read_only: bool) -> ZarrHandle:
    """Opens and validates an existing store (format, spec, arrays, codecs, layout, ring state)."""
    store, text = resolve_store(url, read_only=read_only)
    if store_is_empty(store):
        raise StoreError(f"no memory store at {text}; create one with create_store() or check the path")
    root = _read_json(store, "zarr.json", text)
    meta = (root or {}).get("attributes", {}).get(ATTR)
    if not isinstance(meta, dict):
        raise StoreError(f"{text} is not a memloss memory store (or its creation was interrupted); use another path")
    if meta.get("format") != FORMAT_NAME or meta.get("format_version") != FORMAT_VERSION:
        raise StoreError(f"{text}: store format {meta.get('format')!r} v{meta.get('format_version')} is not "
                         f"{FORMAT_NAME} v{FORMAT_VERSION}; upgrade memloss or recreate the store")
    spec = _parse_spec(meta, text)
    if expect is not None:
        diff = expect.mismatch(spec)
        if diff is not None:
            field, want, got = diff
            raise StoreError(f"store {text} does not match this run: {field} expected {want!r}, found {got!r}; "
                             "use a new store path or the store's settings")
    for name in (*ARRAYS, "members"):
        array_meta = _read_json(store, f"{name}/zarr.json", text)
        if array_meta is None:
            raise StoreError(f"{text}: array {name!r} is missing; the store is corrupt: delete or restore it")
        check_codecs(name, array_meta.get("codecs", []))
    try:
        group = zarr.open_group(store, mode="r" if read_only else "r+")
        arrays = open_arrays(group, ARRAYS)
        members = group["members"][:]
    except MemlossError:
        raise
    except Exception as exc:
        raise StoreError(f"{text}: cannot open the store's arrays ({type(exc).__name__}: {exc}); delete or restore it"
                         ) from exc
    b = _int_field(meta, "block_size", text)
    _check_arrays(arrays, spec, b, text)
    if members.shape != (spec.fingerprint.n,):
        raise StoreError(f"{text}: members has shape {members.shape}, expected ({spec.fingerprint.n},); store corrupt")
    layout = BlockLayout.from_members(members, b)
    return ZarrHandle(text, group, arrays, spec, layout, _int_field(meta, "seed", text), _parse_state(meta, spec, text),
                      meta)


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
    """Rewrites the "memloss" attribute with the new ring state (one atomic metadata write, see module doc)."""
    meta = dict(handle.meta, slot_epochs=list(state.slot_epochs), committed_epochs=list(state.committed))
    handle.group.attrs.update({ATTR: meta})
    handle.meta = meta
