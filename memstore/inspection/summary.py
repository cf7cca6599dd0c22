"""Inspection of a store: a JSON-able summary (rendered by memstore/inspection/render.py), and the code and scale
distributions that `memloss.trainer.plots.store` draws.

Works read-only, also on a store that a running training is writing: it reports the last committed state and
counts only rows whose epoch stamp equals their slot's committed epoch. Rows are read block by block, so RAM stays
bounded; above `sample_coords` coordinates per slot the statistics use a random sample of blocks (the summary
says so in "sampled_blocks").
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from zarr.core.sync import sync

from memloss.errors import MemlossError
from memloss.memstore.integrity.manifest import DamagedMemoryError
from memloss.memstore.zarrstore.meta import ARRAYS, UrlLike, ZarrHandle, open_handle, read_failure, verify_read_slots
from memloss.memstore.inspection.render import render_summary

__all__ = ["entropy_bits", "render_summary", "slot_distributions", "summarize"]

DEFAULT_SAMPLE_COORDS = 50_000_000  # per slot; about 50 MB of codes read
SCALE_SAMPLE = 100_000
EPOCH_READ_ROWS = 1 << 18


@dataclass
class _SlotStats:
    """Accumulated over the read blocks of one slot (valid rows only)."""

    hist: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.int64))
    coords: int = 0
    abs_sum: float = 0.0  # Σ |δ| / ε
    at_eps: int = 0
    at_scale: int = 0
    scales: list[np.ndarray] = field(default_factory=list)
    blocks_read: int = 0


def summarize(url: UrlLike, *, sample_coords: int = DEFAULT_SAMPLE_COORDS, seed: int = 0) -> dict[str, Any]:
    """Summary of the store at `url` as a JSON-able dict (see the module docstring and docs/store-format.md)."""
    handle = _verified(url)
    with _named_read_errors(handle):
        return _summary(handle, _all_slot_stats(handle, sample_coords, seed))


def _verified(url: UrlLike) -> ZarrHandle:
    """Opens the store and checks its committed epochs against their manifests (DamagedMemoryError). A training
    may be rewriting a slot meanwhile (it uncommits it first): a failed check is repeated once on a fresh open."""
    try:
        return _open_checked(url)
    except DamagedMemoryError:
        return _open_checked(url)


def _open_checked(url: UrlLike) -> ZarrHandle:
    handle = open_handle(url, expect=None, read_only=True)
    verify_read_slots(handle, handle.state, [slot for slot, e in enumerate(handle.state.slot_epochs) if e is not None])
    return handle


@contextmanager
def _named_read_errors(handle: ZarrHandle) -> Iterator[None]:
    """A chunk that fails to read or decode becomes one line naming the damaged epoch and chunk."""
    try:
        yield
    except MemlossError:
        raise
    except Exception as exc:
        slots = [slot for slot, e in enumerate(handle.state.slot_epochs) if e is not None]
        raise read_failure(handle, handle.state, slots, exc) from None


def _summary(handle: ZarrHandle, stats: dict[int, _SlotStats]) -> dict[str, Any]:
    spec, meta, layout = handle.spec, handle.meta, handle.layout
    coords_per_row = spec.sample_bytes
    by_array, by_slot = _bytes_on_disk(handle)
    by_part = {slot: _valid_entries(handle, slot) for slot in range(spec.k + 1)}
    valid = {slot: sum(counts) for slot, counts in by_part.items()}
    per_slot = [_slot_summary(handle, slot, valid[slot], by_slot.get(slot, 0), stats.get(slot)) for slot in
                range(spec.k + 1)]
    if len(spec.fingerprint.parts) > 1:
        for entry in per_slot:
            entry["valid_by_part"] = by_part[entry["slot"]]
    total_valid = sum(valid.values())
    f32 = total_valid * coords_per_row * 4
    total = sum(by_array.values())
    return {
        "url": handle.url,
        "format": meta["format"],
        "format_version": meta["format_version"],
        "memloss_version": meta.get("memloss_version"),
        "dataset": spec.fingerprint.to_dict(),
        "threat": spec.threat.to_dict(),
        "n": spec.fingerprint.n,
        "parts": list(spec.fingerprint.parts),
        "sample_shape": list(spec.fingerprint.shape),
        "k": spec.k,
        "slots": spec.k + 1,
        "slot_epochs": {str(i): e for i, e in enumerate(handle.state.slot_epochs)},
        "committed_epochs": list(handle.state.committed),
        "last_committed_epoch": handle.state.committed[-1] if handle.state.committed else None,
        "valid_entries": total_valid,
        "bytes_on_disk": total,
        "bytes_by_array": by_array,
        "float32_equivalent_bytes": f32,
        "ratio_vs_float32": round(f32 / total, 3) if total and f32 else None,
        "layout": {
            "block_size": layout.block_size,
            "num_blocks": layout.num_blocks,
            "codes_chunk_shape": list(handle.arrays["codes"].chunks),
            "codecs": meta.get("codecs"),
            "seed": handle.seed,
            "memory_budget": meta.get("memory_budget"),
        },
        "per_slot": per_slot,
        "stats_note": _stats_note(handle, stats),
    }


def _stats_note(handle: ZarrHandle, stats: dict[int, _SlotStats]) -> str:
    total = handle.layout.num_blocks
    if any(st.blocks_read < total for st in stats.values()):
        return f"per-slot statistics use a random sample of blocks (see sampled_blocks, of {total})"
    return "per-slot statistics use every block"


def _slot_summary(handle: ZarrHandle, slot: int, valid: int, nbytes: int, st: _SlotStats | None) -> dict[str, Any]:
    coords = valid * handle.spec.sample_bytes
    out: dict[str, Any] = {
        "slot": slot,
        "epoch": handle.state.slot_epochs[slot],
        "valid_entries": valid,
        "bytes_on_disk": nbytes,
        "bytes_per_coord": round(nbytes / coords, 4) if coords else None,
        "ratio_vs_float32": round(4 * coords / nbytes, 3) if coords and nbytes else None,
    }
    if st is None or st.coords == 0:
        return {**out, "mean_abs_delta_over_eps": None, "at_eps_fraction": None, "at_scale_fraction": None,
                "code_entropy_bits": None, "sampled_blocks": None}
    return {
        **out,
        "mean_abs_delta_over_eps": round(st.abs_sum / st.coords, 5),
        "at_eps_fraction": round(st.at_eps / st.coords, 5),
        "at_scale_fraction": round(st.at_scale / st.coords, 5),
        "code_entropy_bits": round(entropy_bits(st.hist), 4),
        "sampled_blocks": f"{st.blocks_read} of {handle.layout.num_blocks}",
    }


def _valid_entries(handle: ZarrHandle, slot: int) -> list[int]:
    """Rows of each part of ring `slot` that hold memory of its committed epoch (the stamps, read in slices)."""
    epoch = handle.state.slot_epochs[slot]
    if epoch is None:
        return [0] * len(handle.layout.parts)
    arr, out = handle.arrays["info"], []
    step = max(handle.layout.block_size, EPOCH_READ_ROWS // handle.layout.block_size * handle.layout.block_size)
    for first, stop in handle.layout.part_rows:
        total = 0
        for start in range(first, stop, step):
            total += int((arr[slot, start : min(stop, start + step)][:, 0] == epoch).sum())  # whole chunks: see below
        out.append(total)
    return out


def _all_slot_stats(handle: ZarrHandle, sample_coords: int, seed: int) -> dict[int, _SlotStats]:
    out = {}
    for slot, epoch in enumerate(handle.state.slot_epochs):
        if epoch is not None:
            out[slot] = _slot_stats(handle, slot, epoch, sample_coords, np.random.default_rng(seed))
    return out


def _slot_stats(handle: ZarrHandle, slot: int, epoch: int, sample_coords: int, rng: np.random.Generator) -> _SlotStats:
    layout, eps = handle.layout, handle.spec.threat.eps_float
    per_block = layout.block_size * handle.spec.sample_bytes
    budget_blocks = max(1, sample_coords // per_block)
    blocks = np.arange(layout.num_blocks)
    if layout.num_blocks > budget_blocks:
        blocks = np.sort(rng.choice(layout.num_blocks, size=budget_blocks, replace=False))
    st = _SlotStats()
    for block in blocks:
        start, stop = layout.block_rows(int(block))
        # whole chunks, then the column: zarrs reads a part of a chunk through a partial decoder it builds while
        # holding the GIL, a request on an object store (memstore/zarrstore/chunks.py)
        ok = handle.arrays["info"][slot, start:stop][:, 0] == epoch
        st.blocks_read += 1
        if ok.any():
            _accumulate(st, handle.arrays["codes"][slot, start:stop][ok],
                        handle.arrays["scale"][slot, start:stop][ok], eps)
    return st


def _accumulate(st: _SlotStats, codes: np.ndarray, scale: np.ndarray, eps: float) -> None:
    """codes uint8 [R,C,H,W], scale float32 [R] of valid rows."""
    flat = codes.reshape(codes.shape[0], -1)
    st.hist += np.bincount(flat.ravel(), minlength=256)
    dev = np.abs(flat.astype(np.int16) - 128)
    st.coords += flat.size
    st.abs_sum += float((dev.sum(axis=1) * (scale.astype(np.float64) / 127)).sum() / eps)
    at_max = (dev == 127).sum(axis=1)
    st.at_scale += int(at_max.sum())
    st.at_eps += int(at_max[scale >= eps * (1 - 1e-5)].sum())
    if sum(s.size for s in st.scales) < SCALE_SAMPLE:
        st.scales.append(scale.copy())


def _bytes_on_disk(handle: ZarrHandle) -> tuple[dict[str, int], dict[int, int]]:
    """Bytes of every key per array (metadata included), and chunk bytes per ring slot."""
    store = handle.group.store

    async def collect() -> list[tuple[str, int]]:
        keys = [key async for key in store.list()]
        sizes = [await store.getsize(key) for key in keys]
        return list(zip(keys, sizes))

    by_array: dict[str, int] = {}
    by_slot: dict[int, int] = {}
    prefix = handle.group.path.strip("/")
    for key, size in sync(collect()):
        rel = key[len(prefix) + 1 :] if prefix and key.startswith(prefix + "/") else key
        parts = rel.split("/")
        name = parts[0] if len(parts) > 1 else "group"
        by_array[name] = by_array.get(name, 0) + int(size)
        if name in ARRAYS and len(parts) > 2 and parts[1] == "c":
            by_slot[int(parts[2])] = by_slot.get(int(parts[2]), 0) + int(size)
    return by_array, by_slot


def slot_distributions(url: UrlLike, *, sample_coords: int = DEFAULT_SAMPLE_COORDS) -> dict[str, Any]:
    """What the store figure draws: per ring slot holding a committed epoch, the histogram of δ codes (int64 [256],
    code 128 = 0, 1 and 255 = ∓ the sample's scale s) and a sample of per-sample scales s/ε (float [≤100 000]);
    plus the dataset name, threat model and K."""
    handle = _verified(url)
    with _named_read_errors(handle):
        stats = _all_slot_stats(handle, sample_coords, seed=0)
    eps = handle.spec.threat.eps_float
    slots = {slot: {"epoch": handle.state.slot_epochs[slot], "hist": st.hist,
                    "scale_over_eps": np.concatenate(st.scales) / eps if st.scales else np.zeros(0)}
             for slot, st in sorted(stats.items())}
    threat = handle.spec.threat.to_dict()
    return {"url": handle.url, "dataset": handle.spec.fingerprint.name, "norm": threat["norm"],
            "eps": str(threat["eps"]), "k": handle.spec.k, "slots": slots}


def entropy_bits(hist: np.ndarray) -> float:
    """Order-0 entropy in bits of a histogram of counts."""
    total = hist.sum()
    if total == 0:
        return math.nan
    p = hist[hist > 0] / total
    return float(-(p * np.log2(p)).sum())
