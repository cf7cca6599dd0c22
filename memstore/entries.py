"""Rows of the memory as the store moves them: `Entries` (numpy, one slot or several), the `MemoryBatch` a read
returns (torch), index and write validation, and the raw size of one row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from memloss.memstore.errors import StoreError
from memloss.memstore.spec import StoreSpec

NO_EPOCH = -1  # entry stamp of a row that holds no memory
_INT_KINDS = "iu"  # numpy dtype kinds of signed and unsigned integers (dtype.kind is cheaper than issubdtype)
ROW_AUX_BYTES = 4 + 4 * 4  # scale f32 + (epoch, dy, dx, flip) int32 on disk
ENTRY_FIELDS = ("codes", "scale", "offset", "flip", "epoch")


@dataclass(frozen=True)
class MemoryBatch:
    """Memory of a batch (torch CPU tensors). codes uint8 [K,B,C,H,W], scale float32 [K,B], offset int16 [K,B,2]
    (crop offset dy, dx of the view δ was made on), flip bool [K,B], valid bool [K,B]. Slot k holds epoch n−1−k;
    rows with valid False hold codes 128 and scale 0 (δ = 0)."""

    codes: torch.Tensor
    scale: torch.Tensor
    offset: torch.Tensor
    flip: torch.Tensor
    valid: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MemoryBatch:
        """Same batch on `device` (pinned memory is not used; pass non_blocking only for pinned inputs)."""
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return MemoryBatch(move(self.codes), move(self.scale), move(self.offset), move(self.flip), move(self.valid))

    @classmethod
    def of(cls, rows: Entries, valid: np.ndarray) -> MemoryBatch:
        """The batch of `rows` (lead [K]) and valid bool [K, B], sharing their memory."""
        return cls(torch.from_numpy(rows.codes), torch.from_numpy(rows.scale), torch.from_numpy(rows.offset),
                   torch.from_numpy(rows.flip), torch.from_numpy(valid))


@dataclass
class Entries:
    """Rows of one slot as numpy arrays: codes uint8 [R,C,H,W], scale float32 [R], offset int16 [R,2],
    flip bool [R], epoch int32 [R] (the epoch that wrote each row, NO_EPOCH if none)."""

    codes: np.ndarray
    scale: np.ndarray
    offset: np.ndarray
    flip: np.ndarray
    epoch: np.ndarray

    @classmethod
    def empty(cls, rows: int, shape: tuple[int, ...], lead: tuple[int, ...] = ()) -> Entries:
        """Rows holding no memory: codes 128, scale 0, epoch NO_EPOCH; `lead` prepends dims (e.g. (K,))."""
        return cls(
            codes=np.full((*lead, rows, *shape), 128, dtype=np.uint8),
            scale=np.zeros((*lead, rows), dtype=np.float32),
            offset=np.zeros((*lead, rows, 2), dtype=np.int16),
            flip=np.zeros((*lead, rows), dtype=bool),
            epoch=np.full((*lead, rows), NO_EPOCH, dtype=np.int32),
        )


    @classmethod
    def uninitialized(cls, rows: int, shape: tuple[int, ...], lead: tuple[int, ...] = ()) -> Entries:
        """Like `empty` without filling (for buffers every row of which is overwritten right away)."""
        return cls(
            codes=np.empty((*lead, rows, *shape), dtype=np.uint8),
            scale=np.empty((*lead, rows), dtype=np.float32),
            offset=np.empty((*lead, rows, 2), dtype=np.int16),
            flip=np.empty((*lead, rows), dtype=bool),
            epoch=np.empty((*lead, rows), dtype=np.int32),
        )


def row_bytes(spec: StoreSpec) -> int:
    """Raw bytes of one entry (codes + scale + offset + flip + epoch)."""
    return spec.sample_bytes + ROW_AUX_BYTES


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def as_index(idx: Any, n: int) -> np.ndarray:
    """Validates sample indices: int64 [B], each in [0, n), no duplicates."""
    arr = _to_numpy(idx)
    if arr.ndim != 1 or not (arr.dtype.kind in _INT_KINDS or arr.size == 0):
        raise StoreError(f"idx must be a 1-D integer array, got dtype {arr.dtype} and shape {arr.shape}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size:
        # One sort gives the range and the duplicates (np.unique + min + max cost ~10 numpy calls per step).
        s = np.sort(arr)
        if s[0] < 0 or s[-1] >= n:
            raise StoreError(f"idx out of range [0, {n}): min {s[0]}, max {s[-1]}")
        if (s[1:] == s[:-1]).any():
            raise StoreError("idx contains duplicate samples; each sample may appear once per batch")
    return arr


def take_rows(rows: Entries, slots: list[int], pos: np.ndarray) -> Entries:
    """Rows at positions pos int64 [B] (validated, in [0, R)) of `slots` of rows (Entries with lead [S] over R
    rows): fresh Entries with lead [len(slots)], the caller owns them."""
    r = rows.epoch.shape[1]
    flat = (np.asarray(slots, dtype=np.int64)[:, None] * r + pos).ravel()
    lead = (len(slots), pos.shape[0])

    def take(a: np.ndarray) -> np.ndarray:
        # np.take on the flattened (slot, row) axis beats 2-D fancy indexing; "clip" skips the bounds check
        # (the indices are validated) and never buffers.
        got = np.take(a.reshape(a.shape[0] * r, *a.shape[2:]), flat, axis=0, mode="clip")
        return got.reshape(*lead, *a.shape[2:])

    return Entries(take(rows.codes), take(rows.scale), take(rows.offset), take(rows.flip), take(rows.epoch))



def subset_rows(entries: Entries, mask: np.ndarray) -> Entries:
    """The rows of `entries` (no lead dims) where `mask` bool [R] is True (the object itself when every row is)."""
    if mask.all():
        return entries
    return Entries(*(getattr(entries, name)[mask] for name in ENTRY_FIELDS))


def assign_rows(out: Entries, mask: np.ndarray, part: Entries) -> None:
    """out[:, mask] = part for every field (lead dim [slots]; mask bool [R])."""
    for name in ENTRY_FIELDS:
        getattr(out, name)[:, mask] = getattr(part, name)

def validate_write(spec: StoreSpec, b: int, codes: Any, scale: Any, offset: Any, flip: Any,
                   epoch: int = NO_EPOCH) -> Entries:
    """Checks dtypes, shapes and finiteness of a write and returns it as `Entries` stamped with `epoch`. The arrays
    may be the caller's own (no copy when dtypes already match): backends copy them into their rows."""
    codes_np, scale_np = _to_numpy(codes), _to_numpy(scale)
    offset_np, flip_np = _to_numpy(offset), _to_numpy(flip)
    shape = spec.fingerprint.shape
    if codes_np.dtype != np.uint8 or codes_np.shape != (b, *shape):
        raise StoreError(f"codes must be uint8 {(b, *shape)}, got {codes_np.dtype} {codes_np.shape}; use quantize()")
    if scale_np.dtype.kind != "f" or scale_np.shape != (b,):
        raise StoreError(f"scale must be float32 [{b}], got {scale_np.dtype} {scale_np.shape}")
    # min is NaN when any value is NaN, so these two reductions catch NaN, +-Inf and negatives.
    if b and not (scale_np.min() >= 0 and scale_np.max() < np.inf):
        raise StoreError("scale contains NaN, Inf or negative values; quantize() gives finite scales >= 0")
    if offset_np.dtype.kind not in _INT_KINDS or offset_np.shape != (b, 2):
        raise StoreError(f"offset must be an integer array [{b}, 2], got {offset_np.dtype} {offset_np.shape}")
    if b and _offset_out_of_range(offset_np):
        raise StoreError("offset values must lie in [0, 32767] (crop offsets in pixels)")
    if flip_np.shape != (b,) or flip_np.dtype.kind not in "b" + _INT_KINDS:
        raise StoreError(f"flip must be a bool array [{b}], got {flip_np.dtype} {flip_np.shape}")
    return Entries(
        codes=np.ascontiguousarray(codes_np),
        scale=scale_np.astype(np.float32, copy=False),
        offset=offset_np.astype(np.int16, copy=False),
        flip=flip_np.astype(bool, copy=False),
        epoch=np.full(b, epoch, dtype=np.int32),
    )


def _offset_out_of_range(offset: np.ndarray) -> bool:
    """True if a value of the non-empty integer array lies outside [0, 32767] (bounds its dtype implies are
    not checked: int16 needs only the minimum, uint8 nothing)."""
    info = np.iinfo(offset.dtype)
    if info.min < 0 and offset.min() < 0:
        return True
    return bool(info.max > np.iinfo(np.int16).max and offset.max() > np.iinfo(np.int16).max)


_NEVER = np.iinfo(np.int32).min  # read target of a slot whose epoch would be < 0: no stamp equals it


def valid_memory(out: Entries, epoch: int, drawn: np.ndarray | None, read_ages: list[int]) -> np.ndarray:
    """valid bool [K, B] of rows `out` (lead [K]; slot k should hold epoch n−1−k, n = `epoch`) read for the ages
    `read_ages` (the others are empty already): a row is valid if it holds that epoch and, with window draws
    (drawn bool [K, B]), its window drew its age. Invalid rows that were read are emptied in place (δ = 0)."""
    k = out.epoch.shape[0]
    # Slots of epochs < 0 never match: their rows are NO_EPOCH and their target is below any stamp.
    target = np.array([epoch - 1 - a if epoch - 1 - a >= 0 else _NEVER for a in range(k)], dtype=np.int32)[:, None]
    valid = out.epoch == target
    if drawn is not None:
        valid &= drawn
    if not valid.all():
        invalid = ~valid
        invalid[np.setdiff1d(np.arange(k), read_ages)] = False  # unread: already empty rows
        out.codes[invalid], out.scale[invalid], out.offset[invalid], out.flip[invalid] = 128, 0, 0, False
    return valid
