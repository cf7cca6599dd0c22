"""Where a store lives: a zarr Store for a path or URL, and the few whole-store operations memloss needs besides
zarr's arrays (listing chunk sizes, small JSON objects, wiping an interrupted creation, removing the `.partial`
files that zarr's LocalStore leaves when a process is killed mid-write).

Every function takes the zarr `Store` of the group's root, so one code path serves local directories, `file://`
URLs, object stores (`s3://`, `gs://`, `az://`: zarr's ObjectStore on obstore, which the zarrs codec pipeline
reads and writes itself; memstore/location/objstore.py) and any other fsspec URL (`memory://`, ...).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore, ObjectStore

from memloss.memstore.errors import StoreError
from memloss.memstore.location.objstore import is_object_url, obstore_store, with_prefix
from memloss.memstore.location.options import StoreLocation, is_url, probe, url_options

UrlLike = str | Path | Store | StoreLocation
LOCK_KEY = "memloss.lock"  # the writer lock (a file locked with flock) or lease object; never part of the data
MANIFEST_DIR = "manifests"
PARTIAL_SUFFIX = ".partial"  # LocalStore writes a key to <key>.<uuid>.partial, then renames it
OWN_TOP_LEVEL = ("zarr.json", "codes", "scale", "info", "members", MANIFEST_DIR)


def resolve_store(url: UrlLike, read_only: bool) -> tuple[Store, str]:
    """A zarr Store for a local path, a file:// URL, an object store URL ("s3://b/x", "gs://b/x": an ObjectStore)
    or any other fsspec URL ("memory://x"), and its name; a StoreLocation carries its storage options,
    MEMLOSS_STORE_OPTIONS applies to every URL."""
    if isinstance(url, Store):
        return url, str(url)
    explicit = url.options if isinstance(url, StoreLocation) else None
    text = str(url)
    if is_object_url(text):
        options = url_options(text, explicit)
        region = probe(text, options)
        return ObjectStore(obstore_store(text, options, region), read_only=read_only), text
    if is_url(text):
        return _fsspec_store(text, url_options(text, explicit), read_only), text
    path = Path(text.removeprefix("file://")).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise StoreError(f"{path} is a file, not a memory store directory; choose another path")
    if read_only and not path.exists():
        raise StoreError(f"no memory store at {path}; check the path")
    return LocalStore(path, read_only=read_only), str(path)


def _fsspec_store(url: str, options: dict[str, Any], read_only: bool) -> FsspecStore:
    """The FsspecStore of a URL, after one probe of its location per process (see memstore/location/options.py)."""
    probe(url, options)
    try:
        return FsspecStore.from_url(url, storage_options=options, read_only=read_only)
    except TypeError as exc:
        raise StoreError(f"bad store option for {url} ({exc}); check --store-option / MEMLOSS_STORE_OPTIONS"
                         ) from None
    except (ImportError, ValueError, OSError) as exc:
        raise StoreError(f"cannot open URL {url!r} ({exc}); install the fsspec backend for it") from exc


def local_root(store: Store) -> Path | None:
    """The directory of a LocalStore (None for any other store)."""
    return Path(store.root) if isinstance(store, LocalStore) else None


def run_all(coros: list[Coroutine[Any, Any, Any]]) -> list[Any]:
    """Runs store coroutines concurrently on zarr's event loop."""

    async def gather() -> list[Any]:
        return list(await asyncio.gather(*coros))

    return sync(gather())


def top_level_names(store: Store) -> list[str]:
    """Names at the root of the store other than the lock (an empty location may hold just the lock)."""

    async def names() -> list[str]:
        return [name async for name in store.list_dir("")]

    return sorted(n for n in sync(names()) if n != LOCK_KEY and not n.endswith(PARTIAL_SUFFIX))


def get_bytes(store: Store, key: str) -> bytes | None:
    buf = sync(store.get(key, prototype=default_buffer_prototype()))
    return None if buf is None else buf.to_bytes()


def put_bytes(store: Store, key: str, data: bytes) -> None:
    """Writes one object whole (LocalStore: temporary file + rename; object stores: one put)."""
    sync(store.set(key, default_buffer_prototype().buffer.from_bytes(data)))


def delete_key(store: Store, key: str) -> None:
    sync(store.delete(key))


def delete_prefix(store: Store, prefix: str) -> None:
    """Deletes every key under `prefix` (a local store: the folder too, so no empty folder is left for zarr to list)."""
    sync(store.delete_dir(prefix))


def read_json(store: Store, key: str, url: str) -> dict[str, Any] | None:
    """A JSON object of the store, None if absent; StoreError if it does not parse."""
    data = get_bytes(store, key)
    if data is None:
        return None
    try:
        found = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreError(f"{url}: {key} is not valid JSON ({exc}); the store is corrupt") from exc
    if not isinstance(found, dict):
        raise StoreError(f"{url}: {key} is not a JSON object; the store is corrupt")
    return found


def list_sizes(store: Store, prefix: str) -> dict[str, int]:
    """Every key under `prefix` (ending in "/") with its size in bytes, in one listing; `.partial` files left by a
    killed writer are not keys."""
    root = local_root(store)
    return _local_sizes(root, prefix) if root is not None else sync(list_sizes_async(store, prefix))


async def list_sizes_async(store: Store, prefix: str) -> dict[str, int]:
    """`list_sizes` as a coroutine of zarr's event loop, so that several listings can run at once (`run_all`)."""
    root = local_root(store)
    if root is not None:  # a directory walk: on a thread, not on zarr's event loop
        return await asyncio.to_thread(_local_sizes, root, prefix)
    if isinstance(store, ObjectStore):
        import obstore

        # sizes from the listing itself (no request per key)
        metas = await obstore.list(store.store, prefix=prefix).collect_async()
        return {meta["path"]: int(meta["size"]) for meta in metas}
    if isinstance(store, FsspecStore):
        base = f"{store.path.rstrip('/')}/{prefix}"
        try:
            found = await store.fs._find(base, detail=True)
        except FileNotFoundError:
            return {}
        start = len(store.path.rstrip("/")) + 1
        return {p[start:].lstrip("/"): int(info["size"]) for p, info in found.items()
                if not p.endswith(PARTIAL_SUFFIX)}
    keys = [key async for key in store.list_prefix(prefix)]
    return {key: await store.getsize(key) for key in keys}


def parent_store(store: Store) -> tuple[Store, str] | None:
    """(a store rooted at the parent prefix of an object or fsspec store, the store's last name); None for a
    local store, a store at a bucket's root, or another kind of store."""
    if isinstance(store, ObjectStore):
        parent, _, name = (store.store.prefix or "").strip("/").rpartition("/")
        if parent and name:
            return ObjectStore(with_prefix(store.store, parent), read_only=False), name
    elif isinstance(store, FsspecStore):
        parent, _, name = store.path.rstrip("/").rpartition("/")
        if parent.strip("/") and name:
            return FsspecStore(store.fs, read_only=False, path=parent), name
    return None


def _local_sizes(root: Path, prefix: str) -> dict[str, int]:
    """Keys under `prefix` of a local store with their sizes. os.scandir and string keys: the read slots' check lists
    every chunk of K slots each epoch on a background thread, and pathlib's per-file cost (25 µs, 5 ms a slot of
    177 chunks) held the GIL long enough to delay the training thread's batches (docs/benchmarks.md)."""
    out: dict[str, int] = {}
    folders = [prefix.rstrip("/")]
    while folders:
        rel = folders.pop()
        try:
            listing = os.scandir(os.path.join(root, rel))
        except (FileNotFoundError, NotADirectoryError):
            continue
        with listing:
            for entry in listing:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(f"{rel}/{entry.name}")
                elif not entry.name.endswith(PARTIAL_SUFFIX):
                    out[f"{rel}/{entry.name}"] = entry.stat().st_size
    return out


def local_sizes_of(store: Store, keys: list[str]) -> dict[str, int] | None:
    """The size of each of `keys` that exists in a local store, by one stat each (a listing walks the four folder
    levels of every chunk key: about 10x the cost); None when the store is not local."""
    root = local_root(store)
    if root is None:
        return None
    out: dict[str, int] = {}
    for key in keys:
        try:
            out[key] = os.stat(os.path.join(root, key)).st_size
        except (FileNotFoundError, NotADirectoryError):
            pass
    return out


def wipe_store(store: Store) -> None:
    """Deletes everything memloss writes into a store except the lock (used only on a location that holds an
    interrupted creation or a store that never committed an epoch, while this process holds the lock)."""
    for name in OWN_TOP_LEVEL:
        if name == "zarr.json":
            sync(store.delete(name))
        else:
            sync(store.delete_dir(name))


def remove_partials(store: Store) -> int:
    """Removes the temporary `.partial` files a killed writer left in a local store; returns how many."""
    root = local_root(store)
    if root is None or not root.is_dir():
        return 0
    removed = 0
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(PARTIAL_SUFFIX):
                Path(folder, name).unlink(missing_ok=True)
                removed += 1
    return removed
