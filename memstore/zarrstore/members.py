"""The store's block membership on disk: the "members" array, int64 [rows] (storage row -> sample, −1 for padding
rows between parts; docs/store-format.md), written at creation and read at every open.

In RAM the layout keeps it in its index dtype (int32 below 2**31 rows, memstore/layout/order.py `index_dtype`), so
both directions go a chunk at a time: no int64 copy of the whole array is ever held.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from memloss.memstore.errors import StoreError
from memloss.memstore.layout.order import PADDING, BlockLayout, index_dtype, storage_rows

MEMBERS_CHUNK = 1 << 20


def write_members(group: zarr.Group, members: np.ndarray, compressors: Any) -> None:
    """Creates the "members" array of `group` (int64 on disk, format 4) holding `members` [rows]."""
    arr = group.create_array("members", shape=members.shape, chunks=(min(members.shape[0], MEMBERS_CHUNK),),
                             dtype="int64", compressors=compressors)
    for start in range(0, members.shape[0], MEMBERS_CHUNK):
        arr[start : start + MEMBERS_CHUNK] = members[start : start + MEMBERS_CHUNK].astype(np.int64)


def read_members(array: zarr.Array) -> np.ndarray:
    """The stored membership in the layout's index dtype. A wrong shape or dtype, or values no index dtype holds, come
    back as stored: the caller's checks (shape, BlockLayout.from_members) refuse them."""
    if array.ndim != 1 or array.dtype.kind not in "iu":
        return np.asarray(array[...])
    rows = int(array.shape[0])
    out = np.empty(rows, dtype=index_dtype(rows))
    for start in range(0, rows, MEMBERS_CHUNK):
        piece = array[start : start + MEMBERS_CHUNK]
        if out.dtype == np.int32 and ((piece < PADDING) | (piece >= 2**31)).any():
            return np.asarray(array[...])
        out[start : start + piece.shape[0]] = piece
    return out


def layout_of(members: np.ndarray, block_size: int, parts: tuple[int, ...], text: str) -> BlockLayout:
    """The layout of the store at `text` from its stored membership; StoreError (one line) if it is corrupt."""
    rows = storage_rows(parts, block_size)
    if members.shape != (rows,):
        raise StoreError(f"{text}: members has shape {members.shape}, expected ({rows},); the store is corrupt")
    try:
        return BlockLayout.from_members(members, block_size, parts)
    except (ValueError, IndexError) as exc:
        raise StoreError(f"{text}: members is not a permutation ({exc}); the store is corrupt") from exc
