"""The memory store interface (`MemStore`) shared by the Zarr and in-RAM backends, and the batch it returns.

A store keeps S = K+1 ring slots; epoch e is written into slot e mod S. During epoch n, `read` returns slot 0 =
epoch n−1, ..., slot K−1 = epoch n−K. The ring state (which epoch each slot holds, which epochs are committed) is
shared logic here; the backends only move rows (`_read_entries`, `_write_entries`) and persist the state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from memstore.errors import StoreError
from memstore.order import BlockLayout, EpochPlan, plan_epoch
from memstore.spec import StoreSpec

DEFAULT_MEMORY_BUDGET = 2 * 1024**3
NO_EPOCH = -1  # entry stamp of a row that holds no memory
_NEVER = np.iinfo(np.int32).min  # read target of a slot whose epoch would be < 0: no stamp equals it
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


@dataclass
class RingState:
    """Which epoch each of the S slots holds (None = no committed epoch) and the committed epochs, ascending."""

    slot_epochs: list[int | None]
    committed: list[int]

    def for_new_epoch(self, epoch: int) -> RingState:
        """State to persist before epoch `epoch` writes into its slot: its slot and every epoch >= `epoch` (a
        resumed run rewinding past them) stop counting as memory."""
        s = len(self.slot_epochs)
        slots = [None if e is None or e >= epoch or i == epoch % s else e for i, e in enumerate(self.slot_epochs)]
        return RingState(slots, sorted(e for e in slots if e is not None))

    def after_commit(self, epoch: int) -> RingState:
        slots = list(self.slot_epochs)
        slots[epoch % len(slots)] = epoch
        return RingState(slots, sorted(e for e in slots if e is not None))


class MemStore(ABC):
    """Memory of the last K epochs; see the module docstring. Use as a context manager or call close()."""

    def __init__(
        self, spec: StoreSpec, layout: BlockLayout, seed: int, state: RingState, window_blocks: int, read_only: bool
    ) -> None:
        self._spec, self._layout, self._seed = spec, layout, int(seed)
        self._state, self._window_blocks, self._read_only = state, int(window_blocks), read_only
        self._epoch: int | None = None
        self._plan: EpochPlan | None = None
        self._closed = False

    # ---- properties -------------------------------------------------------------------------------------------
    @property
    def spec(self) -> StoreSpec:
        return self._spec

    @property
    def k(self) -> int:
        return self._spec.k

    @property
    def n(self) -> int:
        return self._spec.fingerprint.n

    @property
    def num_slots(self) -> int:
        return self._spec.k + 1

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def block_size(self) -> int:
        return self._layout.block_size

    @property
    def window_blocks(self) -> int:
        return self._window_blocks

    @property
    def layout(self) -> BlockLayout:
        return self._layout

    @property
    def slot_epochs(self) -> list[int | None]:
        return list(self._state.slot_epochs)

    @property
    def committed_epochs(self) -> list[int]:
        return list(self._state.committed)

    @property
    def last_committed_epoch(self) -> int | None:
        return self._state.committed[-1] if self._state.committed else None

    @property
    def current_epoch(self) -> int | None:
        return self._epoch

    @property
    def read_only(self) -> bool:
        return self._read_only

    # ---- public API ---------------------------------------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> np.ndarray:
        """Starts epoch `epoch` (>= 0): returns its order (int64 permutation of range(N), deterministic in (seed,
        epoch) and the memory budget) and starts prefetching. A previous uncommitted epoch is abandoned; epochs >=
        `epoch` and the epoch in slot epoch mod S stop counting as memory (persisted before any row is written)."""
        self._check_usable()
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise StoreError(f"epoch must be an integer >= 0, got {epoch!r}")
        epoch = int(epoch)
        self._abandon_epoch()
        if not self._read_only:
            self._state = self._state.for_new_epoch(epoch)
            self._save_state(self._state)
        self._plan = plan_epoch(self._layout, self._window_blocks, self._seed, epoch)
        self._epoch = epoch
        self._start_epoch(self._plan, self._read_slots(epoch))
        return self._plan.order.copy()

    def read(self, idx: Any) -> MemoryBatch:
        """Memory of samples idx (int [B]) for the current epoch n: see `MemoryBatch`."""
        self._check_usable()
        epoch = self._require_epoch()
        idx_np = as_index(idx, self.n)
        wanted = self._read_slots(epoch)
        if len(wanted) == self.k:  # every memory slot committed: the backend's fresh arrays are the batch
            out = self._read_entries(idx_np, [slot for _, slot in wanted])
        else:
            out = Entries.empty(idx_np.shape[0], self._spec.fingerprint.shape, lead=(self.k,))
            if wanted:
                got = self._read_entries(idx_np, [slot for _, slot in wanted])
                ks = [k for k, _ in wanted]
                for name in ENTRY_FIELDS:
                    getattr(out, name)[ks] = getattr(got, name)
        # Slots of epochs < 0 never match: their rows are NO_EPOCH and their target is below any stamp.
        target = np.array([epoch - 1 - k if epoch - 1 - k >= 0 else _NEVER for k in range(self.k)],
                          dtype=np.int32)[:, None]
        valid = out.epoch == target
        if not valid.all():
            invalid = ~valid
            out.codes[invalid], out.scale[invalid], out.offset[invalid], out.flip[invalid] = 128, 0, 0, False
        return MemoryBatch(
            codes=torch.from_numpy(out.codes),
            scale=torch.from_numpy(out.scale),
            offset=torch.from_numpy(out.offset),
            flip=torch.from_numpy(out.flip),
            valid=torch.from_numpy(valid),
        )

    def write(self, idx: Any, codes: Any, scale: Any, offset: Any, flip: Any) -> None:
        """Stores the memory of samples idx (int [B]) for the current epoch: codes uint8 [B,C,H,W], scale float32
        [B] (finite, >= 0), offset int [B,2] (crop dy, dx), flip bool [B]. Torch tensors or numpy arrays."""
        self._check_usable()
        epoch = self._require_epoch()
        if self._read_only:
            raise StoreError("store is open read-only; open it with read_only=False to write")
        idx_np = as_index(idx, self.n)
        entries = validate_write(self._spec, idx_np.shape[0], codes, scale, offset, flip, epoch)
        self._write_entries(idx_np, entries)

    def commit_epoch(self) -> None:
        """Makes the current epoch memory: waits until all its rows are on storage, then records it atomically."""
        self._check_usable()
        epoch = self._require_epoch()
        if self._read_only:
            raise StoreError("store is open read-only; open it with read_only=False to commit")
        self._finish_epoch(epoch)
        self._state = self._state.after_commit(epoch)
        self._save_state(self._state)
        self._epoch, self._plan = None, None

    def close(self) -> None:
        """Drains background work (raising its error, if any) and releases the store; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._close_backend()

    def __enter__(self) -> MemStore:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except Exception:  # the body's exception is the one the user needs to see
            pass

    # ---- helpers --------------------------------------------------------------------------------------------------
    def _read_slots(self, epoch: int) -> list[tuple[int, int]]:
        """(k, ring slot) for each memory slot k whose epoch n−1−k is committed."""
        out = []
        for k in range(self.k):
            e = epoch - 1 - k
            slot = e % self.num_slots
            if e >= 0 and self._state.slot_epochs[slot] == e:
                out.append((k, slot))
        return out

    def _write_slot(self) -> int:
        return self._require_epoch() % self.num_slots

    def _require_epoch(self) -> int:
        if self._epoch is None:
            raise StoreError("no epoch in progress; call store.begin_epoch(epoch) first")
        return self._epoch

    def _check_usable(self) -> None:
        if self._closed:
            raise StoreError("store is closed; open it again with open_store()")
        self._raise_background_error()

    # ---- backend hooks --------------------------------------------------------------------------------------------
    @abstractmethod
    def _save_state(self, state: RingState) -> None:
        """Persists the ring state atomically (after every row it refers to is on storage)."""

    @abstractmethod
    def _start_epoch(self, plan: EpochPlan, read_slots: list[tuple[int, int]]) -> None:
        """Prepares reads of `read_slots` and writes into the epoch's slot."""

    @abstractmethod
    def _abandon_epoch(self) -> None:
        """Drops buffers of an epoch that will not be committed (already queued writes still drain)."""

    @abstractmethod
    def _read_entries(self, idx: np.ndarray, slots: list[int]) -> Entries:
        """Rows of samples idx in ring `slots`: Entries with a leading [len(slots)] dim, in fresh arrays the
        caller owns (they become the returned batch)."""

    @abstractmethod
    def _write_entries(self, idx: np.ndarray, entries: Entries) -> None:
        """Stores rows of samples idx into the current epoch's slot."""

    @abstractmethod
    def _finish_epoch(self, epoch: int) -> None:
        """Puts every row of the epoch on storage (rows never written become NO_EPOCH)."""

    @abstractmethod
    def _close_backend(self) -> None:
        """Drains and stops background work and raises its error, if any."""

    def _raise_background_error(self) -> None:
        """Raises StoreError if a background thread failed (backends with threads override)."""
