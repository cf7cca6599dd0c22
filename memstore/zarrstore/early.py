"""The next epoch's first window, loaded while the current epoch trains on its last window (windowed Zarr store).

Without it, every epoch would start by decoding a whole window of K slots (at K = 16 and a 1 GB budget, about 900
chunks) while the training waits. The next epoch's order is known in advance (it is deterministic in the seed, the
epoch and the window size), and so are its read slots if the current epoch e is committed: e itself and the
committed epochs e−1 … e−K+1. Once the reads of epoch e reach its last window (the memory budget's second window is
free then), the reader thread decodes the first window of epoch e+1:

- the committed slots from storage, at once;
- slot e from storage for the blocks already queued for writing (after the writer has written them), and from RAM
  for the blocks completed later (`carry`: the very rows handed to the writer, kept by reference; a block the
  epoch never wrote holds no memory).

`begin_epoch(e+1)` uses it when its plan and read slots are the ones expected; any other begin drops it. With window
draws, the window decodes only the ages it draws: epoch e's caller gives them (`begin_epoch(e, next_ages=...)`);
without them nothing loads early, and the slot check below still runs. In an epoch of one window the early work
waits until a quarter of it was read (windows.py), away from the epoch's start.

At the same time, on a thread of its own, the committed read slots of epoch e+1 are checked against their manifests
(issue 13's check, memstore/integrity/manifest.py), so that `begin_epoch(e+1)` only checks slot e on the training
thread (at K = 16 and N = 50 000 the whole check costs about 1.5 s, the larger part of the epoch start's wait);
it uses the early check when those slots still hold the same epochs, and raises its DamagedMemoryError.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import numpy as np

from memloss.memstore.entries import ENTRY_FIELDS, Entries
from memloss.memstore.layout.draws import AgesOfWindow
from memloss.memstore.layout.order import BlockLayout, EpochPlan

Window = tuple[np.ndarray, Entries]  # sorted storage rows [R] of a window, and their entries [S', R, ...]
Decode = Callable[[list[int], np.ndarray, Entries, list[int]], None]  # read_rows bound to the store's arrays


class NextWindow:
    """The first window of `plan` for ring `slots` (in read-slot order); `own` is the slot being written now."""

    def __init__(self, plan: EpochPlan, slots: list[int], own: int, layout: BlockLayout, shape: tuple[int, ...],
                 flushed: np.ndarray) -> None:
        self.plan, self.slots, self.own = plan, list(slots), own
        self._layout, self._shape = layout, shape
        self.blocks = np.sort(plan.windows[0])
        self._from_disk = self.blocks[flushed[self.blocks]] if own in slots else self.blocks[:0]
        self._pending = set() if own not in slots else {int(b) for b in self.blocks[~flushed[self.blocks]]}
        self._carried: dict[int, Entries | None] = {}
        self.loaded: Future[Window] | None = None
        self.checked: dict[int, int | None] = {}  # ring slot -> epoch of the slots checked ahead
        self.check_done: Future[None] | None = None

    def check_ahead(self, check: Callable[[list[int]], None], slot_epochs: Sequence[int | None],
                    read_slots: Sequence[int]) -> None:
        """Starts check(slots) (the manifest check of read slots) for the committed ones of the next epoch's
        `read_slots` (all but `own`; with draws, more than the window loads) on a thread of its own; slot_epochs: the
        epoch each ring slot will hold at the next epoch's start."""
        slots = [slot for slot in read_slots if slot != self.own]
        self.checked = {slot: slot_epochs[slot] for slot in slots}
        self.check_done = _in_thread(lambda: check(slots), "memstore-verify")

    def checked_for(self, slot_epochs: Sequence[int | None]) -> set[int]:
        """The slots checked ahead, once that check is done (raising its error), when each still holds the epoch it
        was checked at; else none (the caller checks them all)."""
        if self.check_done is None or any(slot_epochs[s] != e for s, e in self.checked.items()):
            return set()
        self.check_done.result()
        return set(self.checked)

    def carry(self, block: int, entries: Entries | None) -> None:
        """Keeps the rows of a block of the own slot completed after the load started (None: never written)."""
        if block in self._pending:
            self._carried[block] = entries

    def load(self, barrier: Future[None], decode: Decode) -> Window:
        """Runs on the reader thread: the committed slots, then (after `barrier`, the writes queued before it) the
        own slot's blocks already written."""
        rows = self._rows(self.blocks)
        out = Entries.uninitialized(rows.shape[0], self._shape, lead=(len(self.slots),))
        others = [i for i, slot in enumerate(self.slots) if slot != self.own]
        decode([self.slots[i] for i in others], rows, out, others)
        if self._from_disk.size:
            if barrier.exception() is not None:
                raise barrier.exception()  # type: ignore[misc]
            disk_rows = self._rows(self._from_disk)
            part = Entries.uninitialized(disk_rows.shape[0], self._shape, lead=(1,))
            decode([self.own], disk_rows, part, [0])
            self._put(out, np.searchsorted(rows, disk_rows), part, 0)
        return rows, out

    def complete(self) -> Window:
        """Runs on the reader thread once the epoch was committed: the loaded window plus the carried blocks."""
        assert self.loaded is not None
        rows, out = self.loaded.result()
        for block in sorted(self._pending):
            start, stop = self._layout.block_rows(block)
            entries = self._carried.get(block)
            if entries is None:
                entries = Entries.empty(stop - start, self._shape)
            self._put(out, np.searchsorted(rows, np.arange(start, stop)), entries, None)
        return rows, out

    def _put(self, out: Entries, local: np.ndarray, src: Entries, src_slot: int | None) -> None:
        i = self.slots.index(self.own)
        for name in ENTRY_FIELDS:
            value = getattr(src, name)
            getattr(out, name)[i, local] = value if src_slot is None else value[src_slot]

    def _rows(self, blocks: np.ndarray) -> np.ndarray:
        return np.concatenate([np.arange(*self._layout.block_rows(int(b)), dtype=np.int64) for b in blocks])


def first_window_slots(read: list[tuple[int, int]], next_ages: AgesOfWindow | None, first: int, drawing: bool,
                       window_ages: int) -> tuple[list[int], bool]:
    """(ring slots the next epoch's first window decodes, whether to load it now) from its read slots `read` (age,
    slot) and, with window draws, its `next_ages` (their window `first`: the first read from storage). With draws
    this epoch (`drawing`) and the next epoch's unknown, nothing loads early; more ages than a window holds
    (`window_ages`) neither (begin_epoch would refuse them)."""
    drawn = None if next_ages is None else set(next_ages(first))
    loaded = [slot for age, slot in read if drawn is None or age in drawn]
    return loaded, (not drawing or drawn is not None) and len(loaded) <= window_ages


def _in_thread(fn: Callable[[], None], name: str) -> Future[None]:
    """Runs fn on a daemon thread of its own; the future holds its outcome (running: it cannot be cancelled, so
    dropping it waits for fn, which must not outlive the store)."""
    done: Future[None] = Future()
    done.set_running_or_notify_cancel()

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # reported by the caller's checked_for
            done.set_exception(exc)
        else:
            done.set_result(None)

    threading.Thread(target=run, name=name, daemon=True).start()
    return done
