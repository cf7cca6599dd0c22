"""Windowed reads of the Zarr store: the K read slots of one window of blocks are decoded on the reader thread, the
next window while the current one is trained on (prefetch), and the batches of the epoch are gathered from them.
During the last window of an epoch, the first window of the next epoch is loaded (memstore/zarrstore/early.py).

A window load that follows a commit still in flight waits (on the reader thread) until that commit has landed, so
it never reads a chunk of the committed epoch before the chunk is on storage.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import zarr

from memloss.memstore.zarrstore.early import NextWindow
from memloss.memstore.zarrstore.prefetch import BackgroundReader
from memloss.memstore.zarrstore.chunks import read_rows
from memloss.memstore.entries import ENTRY_FIELDS, Entries
from memloss.memstore.layout.order import BlockLayout, EpochPlan

PREFETCH_WINDOWS = 2  # the window being read and the next one (the memory budget counts two)


@dataclass
class _Window:
    """Rows (sorted storage rows [R]) of one window for the read slots, with their entries [S', R, ...]; `lead`:
    the positions in the read-slot list that entries' lead dim holds (None: every read slot, in order)."""

    rows: np.ndarray
    entries: Entries
    lead: list[int] | None = None


class WindowReader:
    """Loads and serves the windows of one epoch's plan for a fixed list of ring slots."""

    def __init__(self, layout: BlockLayout, shape: tuple[int, ...], arrays: dict[str, zarr.Array],
                 reader: BackgroundReader) -> None:
        self._layout, self._shape, self._arrays, self._reader = layout, shape, arrays, reader
        self._plan: EpochPlan | None = None
        self._slots: list[int] = []
        self._after: Future[None] | None = None
        self._windows: dict[int, Future[_Window]] = {}
        self._next: NextWindow | None = None
        self._leads: Callable[[int], list[int]] | None = None  # per-window slot draws: what each window decodes
        self.at_last_window = False  # the epoch's reads reached its last window (see `_reached_last`)
        self._rows_read = 0  # rows gathered this epoch

    def __len__(self) -> int:
        """Windows held: loaded or being loaded."""
        return len(self._windows)

    def start(self, plan: EpochPlan, slots: list[int], after: Future[None] | None,
              leads: Callable[[int], list[int]] | None = None) -> None:
        """Begins an epoch: prefetches its first windows of ring `slots` once `after` (a pending commit) landed.
        `leads(w)`: the positions in `slots` that window w decodes (per-window slot draws); None: all of them."""
        self.drop(keep_from=None)
        self._plan, self._slots, self._after, self._leads = plan, list(slots), after, leads
        self.at_last_window, self._rows_read = False, 0
        nxt, self._next = self._next, None
        if nxt is not None:
            _settle(nxt.check_done)  # used by begin_epoch already, or of no use
        lead = None if leads is None else leads(0)
        want = self._slots if lead is None else [self._slots[i] for i in lead]  # what window 0 decodes
        if nxt is not None and nxt.loaded is not None and (nxt.plan.epoch, nxt.slots, len(nxt.plan.windows)) == (
                plan.epoch, want, len(plan.windows)) and np.array_equal(nxt.plan.windows[0], plan.windows[0]):
            self._windows[0] = self._reader.submit(lambda: _Window(*nxt.complete(), lead=lead))
        elif nxt is not None:
            _settle(nxt.loaded)
        if self._slots:
            for w in range(min(PREFETCH_WINDOWS, len(plan.windows))):
                self._schedule(w)

    def prepare_next(self, nxt: NextWindow, barrier: Future[None], load: bool = True) -> None:
        """Keeps `nxt` (its slot check running) and, when `load`, starts loading the next epoch's first window (see
        memstore/zarrstore/early.py)."""
        self.drop_next()
        if load:
            nxt.loaded = self._reader.submit(lambda: nxt.load(barrier, self._decode))
        self._next = nxt

    def carry(self, block: int, entries: Entries | None) -> None:
        """A block of the slot being written was completed: the next epoch's first window may need its rows."""
        if self._next is not None:
            self._next.carry(block, entries)

    def drop_next(self) -> None:
        if self._next is not None:
            _settle(self._next.loaded)
            _settle(self._next.check_done)
            self._next = None

    def checked_ahead(self, slot_epochs: list[int | None]) -> set[int]:
        """The read slots the next epoch's early load already checked against their manifests (NextWindow)."""
        return set() if self._next is None else self._next.checked_for(slot_epochs)

    def gather(self, pos: np.ndarray, out: Entries, at: int = 0) -> None:
        """Fills rows [at, at + B) of out (lead [len(slots)]) with the rows at storage positions pos int64 [B]
        (every block belongs to a window); raises the load's error if a window failed."""
        plan = self._plan
        assert plan is not None
        wins = plan.window_of_block[pos // self._layout.block_size]
        touched = np.unique(wins)
        if touched.size == 0:
            return
        self.drop(keep_from=int(touched[0]))
        for w in touched:
            self._schedule(int(w))
            window = self._windows[int(w)].result()
            if touched.size == 1:  # the common case: one copy per field, straight into the batch
                local = np.searchsorted(window.rows, pos)
                for name in ENTRY_FIELDS:
                    take_into(getattr(window.entries, name), local, getattr(out, name), at, window.lead)
                break
            sel = wins == w
            local = np.searchsorted(window.rows, pos[sel])
            lead = range(len(self._slots)) if window.lead is None else window.lead
            for name in ENTRY_FIELDS:  # rows of ages a window did not draw stay as they are (the store masks them)
                dst, src = getattr(out, name), getattr(window.entries, name)
                for j, i in enumerate(lead):
                    dst[i, at:at + pos.shape[0]][sel] = src[j, local]
        if touched.size == 1:
            self._schedule(int(touched[0]) + 1)
        self._rows_read += pos.shape[0]
        self.at_last_window = self.at_last_window or self._reached_last(int(touched[-1]))

    def _reached_last(self, window: int) -> bool:
        """True once the reads are in the epoch's last window; in an epoch of one window, once a quarter of it was
        read: the next epoch's early work (its first window's load, the check of its read slots) then does not
        compete for the cores with this epoch's start (the previous commit landing, the read-ahead filling), which
        delayed a batch by up to 0.35 s at K = 64 (docs/benchmarks.md)."""
        assert self._plan is not None
        last = len(self._plan.windows) - 1
        rows = self._plan.windows[0].size * self._layout.block_size
        return window == last and (last > 0 or 4 * self._rows_read >= rows)

    def failed(self) -> BaseException | None:
        """The error of a window load that has failed, if any (without waiting)."""
        futures = [*self._windows.values(), *([self._next.loaded] if self._next and self._next.loaded else [])]
        for fut in futures:
            if fut.done() and not fut.cancelled() and fut.exception() is not None:
                return fut.exception()
        return None

    def drop(self, keep_from: int | None) -> None:
        """Forgets windows below `keep_from` (all when None), waiting for a running load to finish."""
        for w in [w for w in self._windows if keep_from is None or w < keep_from]:
            _settle(self._windows.pop(w))

    def _schedule(self, w: int) -> None:
        plan = self._plan
        if plan is None or w in self._windows or not 0 <= w < len(plan.windows):
            return
        blocks, slots, after = np.sort(plan.windows[w]), list(self._slots), self._after
        lead = None if self._leads is None else self._leads(w)
        if lead is not None:
            slots = [slots[i] for i in lead]
        self._windows[w] = self._reader.submit(lambda: self._load(blocks, slots, after, lead))

    def _load(self, blocks: np.ndarray, slots: list[int], after: Future[None] | None,
              lead: list[int] | None = None) -> _Window:
        """Runs on the reader thread: whole chunks of `blocks` (sorted) for ring `slots` (those of `lead`)."""
        if after is not None and after.exception() is not None:  # waits for the commit to land
            raise after.exception()  # type: ignore[misc]
        rows = np.concatenate([np.arange(*self._layout.block_rows(int(b)), dtype=np.int64) for b in blocks])
        out = Entries.uninitialized(rows.shape[0], self._shape, lead=(len(slots),))
        if slots:
            self._decode(slots, rows, out, list(range(len(slots))))
        return _Window(rows=rows, entries=out, lead=lead)

    def _decode(self, slots: list[int], rows: np.ndarray, out: Entries, dest: list[int]) -> None:
        read_rows(self._arrays, slots, rows, out, dest)



def window_leads(drawn: np.ndarray | None, read_slots: list[tuple[int, int]],
                 first: int) -> Callable[[int], list[int]] | None:
    """With per-window slot draws (drawn bool [windows, K] of the epoch's plan): for window w of the windowed plan
    (which starts at the plan's window `first`), the positions in the read-slot list (age, slot) of the ages that
    window drew (only those are decoded); None when every window reads every slot."""
    if drawn is None:
        return None
    ages = [k for k, _ in read_slots]
    return lambda w: [i for i, k in enumerate(ages) if drawn[w + first, k]]

def take_into(src: np.ndarray, local: np.ndarray, out: np.ndarray, at: int, lead: list[int] | None = None) -> None:
    """out[lead, at:at + len(local)] = src[:, local] (lead dim: slots; `lead` None: all of out's): one take into the
    batch when it is all of it, else one per slot into its contiguous rows (a take into a strided view is 5×
    slower)."""
    if lead is None and at == 0 and local.shape[0] == out.shape[1]:
        np.take(src, local, axis=1, out=out, mode="clip")
        return
    for j, k in enumerate(range(src.shape[0]) if lead is None else lead):
        np.take(src[j], local, axis=0, out=out[k, at:at + local.shape[0]], mode="clip")


def _settle(fut: Future | None) -> None:
    """Cancels a load not started yet, or waits for a running one (its error belongs to a window nobody reads)."""
    if fut is not None and not fut.cancel():
        fut.exception()
