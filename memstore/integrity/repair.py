"""`memloss repair-store`: find committed epochs whose chunks are missing or damaged and drop their memory.

Every chunk of every committed epoch is read and checked (its CRC-32C, and its size and checksum against the
epoch's manifest). A damaged epoch stops counting as memory: it is removed from the ring state (one atomic
commit-record write) and listed in the attribute `dropped_epochs`, so that a resumed training knows the memory was
dropped on purpose and continues without it (those rows read as "no memory"). The damaged chunks stay until the
slot is written again. The repair takes the store's writer lock, so it never runs beside a training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from memloss.memstore.integrity.manifest import Damage, check_bytes
from memloss.memstore.zarrstore.meta import ATTR, UrlLike, ZarrHandle, open_handle, save_ring_state, verify_read_slots
from memloss.memstore.layout.ring import RingState
from memloss.memstore.store import open_store


@dataclass
class RepairReport:
    """What `repair_store` found and did. `damaged`: one entry per damaged committed epoch."""

    url: str
    checked: list[int]
    damaged: list[Damage] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    unverified: list[int] = field(default_factory=list)  # committed without a manifest (format 1): CRC only

    def lines(self) -> list[str]:
        """A human summary, one line per finding."""
        out = [f"{self.url}: checked every chunk of committed epochs {self.checked or 'none'}"]
        if self.unverified:
            out.append(f"epochs {self.unverified} have no manifest (written by an older memloss): checked by CRC only")
        for damage in self.damaged:
            out.append(f"epoch {damage.epoch} (ring slot {damage.slot}): {damage.what}")
        if self.dropped:
            out.append(f"dropped the memory of epochs {self.dropped}: training continues without it")
        elif not self.damaged:
            out.append("no damage found")
        return out


def find_damage(handle: ZarrHandle) -> RepairReport:
    """Reads every chunk of every committed epoch of an opened store; changes nothing."""
    manifests: dict[str, Any] = handle.meta.get("manifests") or {}
    report = RepairReport(handle.url, list(handle.state.committed))
    for slot, epoch in enumerate(handle.state.slot_epochs):
        if epoch is None:
            continue
        sha = manifests.get(str(epoch))
        if sha is None:
            report.unverified.append(epoch)
        damage = check_bytes(handle.store, epoch, slot, sha)
        if damage is not None:
            report.damaged.append(damage)
    report.damaged.sort(key=lambda d: d.epoch)
    return report


def repair_store(url: UrlLike, *, check_only: bool = False, owner: str | None = None) -> RepairReport:
    """Checks the store at `url` and, unless `check_only`, drops the memory of its damaged epochs (see the module
    docstring). `check_only` opens the store read-only and takes no lock."""
    if check_only:
        return find_damage(open_handle(url, None, read_only=True))
    with open_store(url, owner=owner) as store:
        handle: ZarrHandle = store._handle  # noqa: SLF001 (the repair edits the ring state directly)
        report = find_damage(handle)
        bad = {d.epoch for d in report.damaged}
        if bad:
            slots = [None if e in bad else e for e in handle.state.slot_epochs]
            state = RingState(slots, sorted(e for e in slots if e is not None))
            dropped = sorted(set(handle.meta.get("dropped_epochs") or []) | bad)
            handle.meta = dict(handle.meta, dropped_epochs=dropped)
            save_ring_state(handle, state)
            handle.state = state
            report.dropped = sorted(bad)
    return report


def dropped_epochs(store: Any) -> list[int]:
    """Epochs whose memory `repair_store` dropped from a Zarr store (empty for other stores)."""
    group = getattr(store, "group", None)
    if group is None:
        return []
    meta = group.attrs.get(ATTR) or {}
    return [int(e) for e in meta.get("dropped_epochs") or []]


def verify_committed(store: Any) -> None:
    """Checks every committed epoch of an open Zarr store against its manifest (one listing per epoch; a missing or
    resized chunk raises DamagedMemoryError). Other stores have nothing to check."""
    handle = getattr(store, "_handle", None)
    if isinstance(handle, ZarrHandle):
        slots = [slot for slot, e in enumerate(handle.state.slot_epochs) if e is not None]
        verify_read_slots(handle, handle.state, slots)
