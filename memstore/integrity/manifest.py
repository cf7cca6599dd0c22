"""What each committed epoch wrote, and the checks that its chunks are still there and intact.

At commit, before the commit record, the store lists the epoch's ring slot (one listing per array, all at once) and
writes the manifest `manifests/e<epoch>/zarr.json`: every chunk key of the slot with its size and its CRC-32C (the 4-byte checksum zarr's
crc32c codec appends to each chunk, read back by a suffix request, so no chunk is read whole). The commit record
keeps the SHA-256 of each committed epoch's manifest. When an epoch begins, the read slots are listed again and
compared with their manifests: a missing chunk or a chunk of another size is a one-line `DamagedMemoryError`
naming the epoch, the ring slot and the chunk, before anything is read. Requests that do not depend on each other
are issued together (on an object store each is a round trip): the listings of the three arrays and the manifest's
own read, and the checks of all read slots, so a commit's manifest costs 3 round trips and a start check 1. Damaged bytes of a chunk that kept its
size fail zarr's checksum at decode; `read_error` turns that into the same kind of message (it finds the chunk by
checking each chunk of the read slots). `memloss repair-store` (memstore/integrity/repair.py) drops damaged epochs.

A manifest is the attribute `memloss_manifest` of an (empty) Zarr group, `manifests/e<epoch>`, under the group
`manifests`: plain zarr lists and consolidates a store without warnings about objects it does not know. Stores of
format 3 and older kept manifests as `manifests/e<epoch>.json`; those are still read (and checked against the same
SHA-256) until their epochs leave the ring.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import google_crc32c
import numpy as np
from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.abc.store import RangeByteRequest, SuffixByteRequest
from zarr.core.sync import sync
from zarr.storage import ObjectStore

from memloss.memstore.location.resolve import (
    MANIFEST_DIR, get_bytes, list_sizes_async, local_root, local_sizes_of, run_all,
)
from memloss.memstore.errors import StoreError

ARRAYS = ("codes", "scale", "info")
MANIFEST_FORMAT = "memloss-manifest/1"


class DamagedMemoryError(StoreError):
    """A committed epoch's chunk is missing or damaged; `memloss repair-store` drops that epoch's memory."""


@dataclass(frozen=True)
class Damage:
    """One damaged committed epoch: where, and what is wrong (`what` names the chunk)."""

    epoch: int
    slot: int
    what: str

    def message(self, url: str) -> str:
        return (f"memory of epoch {self.epoch} (ring slot {self.slot}) in {url} is damaged: {self.what}; run "
                f"`memloss repair-store {url}` to drop that epoch's memory, or restore the store from a backup")


MANIFEST_ATTR = "memloss_manifest"
GROUP_MARKER = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}).encode()


def manifest_key(epoch: int) -> str:
    """The key of `epoch`'s manifest: the metadata document of the Zarr group `manifests/e<epoch>`."""
    return f"{MANIFEST_DIR}/e{epoch}/zarr.json"


def legacy_manifest_key(epoch: int) -> str:
    """Where stores of format ≤ 3 kept `epoch`'s manifest (a plain JSON object, not a Zarr node)."""
    return f"{MANIFEST_DIR}/e{epoch}.json"


def slot_chunks(store: Store, slot: int) -> dict[str, int]:
    """Chunk key -> size of every chunk of ring `slot` in the three per-slot arrays."""
    return sync(_slot_chunks(store, slot))


async def _slot_chunks(store: Store, slot: int) -> dict[str, int]:
    """`slot_chunks` as a coroutine: the three listings at once."""
    found = await asyncio.gather(*(list_sizes_async(store, f"{name}/c/{slot}/") for name in ARRAYS))
    return {key: size for part in found for key, size in part.items()}


async def _get(store: Store, key: str) -> bytes | None:
    buf = await store.get(key, prototype=default_buffer_prototype())
    return None if buf is None else buf.to_bytes()


def _trailers(store: Store, sizes: dict[str, int]) -> list[str | None]:
    """The 4-byte CRC-32C trailer of each chunk (key -> size from the listing), as hex (None if the chunk vanished
    meanwhile): one ranged read each, all at once (a range, not a suffix: Azure has no suffix reads)."""
    proto = default_buffer_prototype()
    got = run_all([store.get(key, prototype=proto, byte_range=RangeByteRequest(size - 4, size) if size >= 4
                             else SuffixByteRequest(4)) for key, size in sizes.items()])
    return [None if buf is None else buf.to_bytes().hex() for buf in got]


def write_manifest(store: Store, epoch: int, slot: int) -> str:
    """Writes the manifest of `epoch` (every chunk now in `slot`); returns its SHA-256 for the commit record.
    Three round trips: the listings (with the check that `manifests` is a group), the trailers, the put."""

    async def listed() -> tuple[dict[str, int], bytes | None]:
        return await asyncio.gather(_slot_chunks(store, slot), _get(store, f"{MANIFEST_DIR}/zarr.json"))

    sizes, marker = sync(listed())
    sizes = dict(sorted(sizes.items()))
    crcs = _trailers(store, sizes)
    chunks = {key: [size, crc] for (key, size), crc in zip(sizes.items(), crcs) if crc is not None}
    body = {"format": MANIFEST_FORMAT, "epoch": epoch, "slot": slot, "chunks": chunks}
    data = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {MANIFEST_ATTR: body}},
                      separators=(",", ":")).encode()
    puts = {manifest_key(epoch): data}
    if marker is None:  # a store of format ≤ 3: make `manifests` a group (independent of the manifest's own put)
        puts[f"{MANIFEST_DIR}/zarr.json"] = GROUP_MARKER
    proto = default_buffer_prototype()
    run_all([store.set(key, proto.buffer.from_bytes(value)) for key, value in puts.items()])
    return hashlib.sha256(data).hexdigest()


def delete_manifests(store: Store, epochs: list[int]) -> None:
    """Deletes the manifests of `epochs` (both layouts), all at once. On an object store the manifest object itself
    is deleted (one request; its group "folder" is only a prefix), elsewhere its folder (a local store must not keep
    an empty folder for zarr to list)."""
    coros = []
    for epoch in epochs:
        key = manifest_key(epoch)
        coros.append(store.delete(key) if isinstance(store, ObjectStore) else store.delete_dir(key.rsplit("/", 1)[0]))
        coros.append(store.delete(legacy_manifest_key(epoch)))
    if coros:
        run_all(coros)


async def _manifest_bytes(store: Store, epoch: int) -> tuple[str, bytes | None]:
    """(key, bytes) of `epoch`'s manifest: the current layout, else a format-3 store's JSON file."""
    for key in (manifest_key(epoch), legacy_manifest_key(epoch)):
        data = await _get(store, key)
        if data is not None:
            return key, data
    return manifest_key(epoch), None


def _manifest_chunks(data: bytes) -> Any:
    found = json.loads(data)
    if found.get("node_type") == "group":
        found = found["attributes"][MANIFEST_ATTR]
    return found["chunks"]


def read_manifest(store: Store, epoch: int, sha256: str) -> dict[str, list[Any]] | str:
    """The chunk table of `epoch`'s manifest, or a description of what is wrong with the manifest itself."""
    return _parse_manifest(*sync(_manifest_bytes(store, epoch)), sha256)


def _parse_manifest(key: str, data: bytes | None, sha256: str) -> dict[str, list[Any]] | str:
    if data is None:
        return f"its manifest {key} is missing"
    if hashlib.sha256(data).hexdigest() != sha256:
        return f"its manifest {key} is damaged (checksum mismatch)"
    try:
        chunks = _manifest_chunks(data)
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"its manifest {key} is not a memloss manifest"
    return chunks


async def check_listing(store: Store, epoch: int, slot: int, sha256: str) -> Damage | None:
    """Compares one listing of `slot` with `epoch`'s manifest (presence and size of every chunk); the manifest is
    read while the slot is listed (a coroutine of zarr's event loop: see `verify_slots`)."""
    (key, data), found = await asyncio.gather(_manifest_bytes(store, epoch), _slot_chunks(store, slot))
    chunks = _parse_manifest(key, data, sha256)
    return Damage(epoch, slot, chunks) if isinstance(chunks, str) else _compare(epoch, slot, chunks, found)


def _verify_local(store: Store, checks: list[tuple[int, int, str]]) -> list[Damage | None]:
    """`check_listing` of each (epoch, slot, sha256) on a local store: the manifests read at once, then one stat
    per committed chunk, slot after slot, on this thread. A listing walks four folder levels per chunk (about 10x
    the cost) and threads only contend for the GIL with the training's; extra chunks never matter."""
    got = run_all([_manifest_bytes(store, epoch) for epoch, _, _ in checks])
    damages: list[Damage | None] = []
    for (epoch, slot, sha256), (key, data) in zip(checks, got):
        chunks = _parse_manifest(key, data, sha256)
        if isinstance(chunks, str):
            damages.append(Damage(epoch, slot, chunks))
        else:
            damages.append(_compare(epoch, slot, chunks, local_sizes_of(store, list(chunks)) or {}))
    return damages


def _compare(epoch: int, slot: int, chunks: dict[str, list[Any]], found: dict[str, int]) -> Damage | None:
    """The first committed chunk (key -> [size, crc]) missing from `found` (key -> size) or of another size."""
    for key, (size, _) in sorted(chunks.items()):
        if key not in found:
            return Damage(epoch, slot, f"chunk {key} is missing")
        if found[key] != size:
            return Damage(epoch, slot, f"chunk {key} has {found[key]} bytes, {size} were committed")
    return None


def check_bytes(store: Store, epoch: int, slot: int, sha256: str | None) -> Damage | None:
    """Reads every chunk of `slot` and checks its CRC-32C (and, with a manifest, its size and recorded CRC)."""
    chunks = read_manifest(store, epoch, sha256) if sha256 is not None else None
    if isinstance(chunks, str):
        return Damage(epoch, slot, chunks)
    found = slot_chunks(store, slot)
    keys = sorted(set(found) | set(chunks or {}))
    for key in keys:
        data = get_bytes(store, key)
        if data is None:
            return Damage(epoch, slot, f"chunk {key} is missing")
        problem = _chunk_problem(key, data, (chunks or {}).get(key))
        if problem is not None:
            return Damage(epoch, slot, problem)
    return None


def _chunk_problem(key: str, data: bytes, committed: list[Any] | None) -> str | None:
    if len(data) < 4:
        return f"chunk {key} is truncated ({len(data)} bytes)"
    body = np.frombuffer(data, dtype=np.uint8)[:-4]
    crc = np.uint32(google_crc32c.value(body.tobytes())).tobytes()
    if crc != data[-4:]:
        return f"chunk {key} fails its CRC-32C checksum"
    if committed is not None and (len(data) != committed[0] or data[-4:].hex() != committed[1]):
        return f"chunk {key} is not the one committed (size or checksum differs)"
    return None


def verify_slots(store: Store, url: str, meta: dict[str, Any], slot_epochs: dict[int, int]) -> None:
    """Raises DamagedMemoryError for the first read slot (ring slot -> its committed epoch) that fails
    `check_listing`; epochs committed without a manifest (format 1 stores) are not checked."""
    manifests = meta.get("manifests") or {}
    checks = [(epoch, slot, manifests[str(epoch)]) for slot, epoch in sorted(slot_epochs.items())
              if str(epoch) in manifests]
    if local_root(store) is not None:
        damages = _verify_local(store, checks)
    else:
        damages = run_all([check_listing(store, *c) for c in checks])  # every slot at once: one round trip
    for damage in damages:
        if damage is not None:
            raise DamagedMemoryError(damage.message(url))


def read_error(store: Store, url: str, meta: dict[str, Any], slot_epochs: dict[int, int],
               exc: BaseException) -> StoreError:
    """The one-line error for a failed read of the slots `slot_epochs` (ring slot -> epoch): which epoch and chunk
    is damaged if one is, otherwise the underlying error."""
    manifests = meta.get("manifests") or {}
    for slot, epoch in sorted(slot_epochs.items()):
        try:
            damage = check_bytes(store, epoch, slot, manifests.get(str(epoch)))
        except Exception:  # the diagnosis itself failed: report the original error below
            damage = None
        if damage is not None:
            return DamagedMemoryError(damage.message(url))
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
    return StoreError(f"cannot read memory from {url} ({text}); run `memloss repair-store {url}` to check it")
