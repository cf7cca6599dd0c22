"""One configuration of bench/store.py, in a fresh process so that its peak RSS is its own; prints one JSON line.

1. Fills the K memory slots (write-only epochs through the store's API, each committed) and times the first.
2. A warm-up epoch, every K slot valid: reads and writes with no simulated step (rows/s of both together).
3. Training-like epochs, as the trainer runs them: the next batch's memory gathered ahead on a worker thread
   (memstore.ahead.ReadAhead), a sleep for the step (the cores are free, as while a GPU computes), the write handed to
   the same thread, and at the end of the epoch the commit started without waiting, so that it lands while the next
   epoch starts. With --steps, only the first `steps` batches of each epoch sleep; the rest of the epoch runs without
   a step (not counted), so every epoch is still committed whole. The first of them begins while the warm-up's
   commit lands, with its first window loaded during the warm-up's last window; but the warm-up runs unpaced, so the
   next epoch's early work (memstore/zarrstore/early.py) may not have finished: `wait_s_by_epoch` shows each
   epoch's wait, the later ones in steady state.

The decode (window and resident loads) and encode (chunk writes) functions of the store are wrapped to count their
busy seconds and volume: rows per second and MB per second of codes are those of the thread doing the work. Where
the wait comes from: each timed step's wait (percentiles, and the steps that waited over a tenth of the step), and
each window load's wall time and the process CPU spent meanwhile (all threads: decode, gathers, encodes), against
the time its predecessor window trains (its batches times the step). --ahead-rows sets the read-ahead's depth
(memstore/ahead.py; 0: one batch, the read-ahead before issue 20).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import memloss.memstore.zarrstore.windows as windows_module
from memloss.memstore.zarrstore.windows import WindowReader
import memloss.memstore.zarrstore.backend as zarr_module
from memloss.memstore.ahead import ReadAhead
from memloss.memstore.base import MemStore
from memloss.memstore.spec import DatasetFingerprint, StoreSpec, ThreatModel
from memloss.memstore.store import create_memory_store, create_store
from store_setup import PeakRss

BATCH = 128
FILL_BATCH = BATCH  # as the trainer writes (a larger batch is the caller's memory, outside the budget)
SHAPE = (3, 32, 32)
SAMPLE_BYTES = 3 * 32 * 32


class Busy:
    """Busy seconds and rows of one instrumented function (each is called from a single thread)."""

    def __init__(self) -> None:
        self.seconds, self.rows = 0.0, 0

    def report(self, name: str) -> dict[str, float]:
        mb = self.rows * SAMPLE_BYTES / 1e6
        rate = self.seconds if self.seconds > 0 else float("inf")
        return {f"{name}_s": round(self.seconds, 2), f"{name}_rows_per_s": round(self.rows / rate),
                f"{name}_MBps": round(mb / rate, 1)}


def time_window_loads() -> list[tuple[float, float, int]]:
    """Wraps WindowReader._load: (wall s, process CPU s, rows) of each window load, appended as they finish."""
    loads: list[tuple[float, float, int]] = []
    load = WindowReader._load

    def timed(self: WindowReader, blocks: Any, *rest: Any) -> Any:
        t0, c0 = time.perf_counter(), time.process_time()
        got = load(self, blocks, *rest)
        loads.append((time.perf_counter() - t0, time.process_time() - c0, int(got.rows.shape[0])))
        return got

    WindowReader._load = timed  # type: ignore[method-assign]
    return loads


def wait_figures(step_waits: list[float], loads: list[tuple[float, float, int]], step_s: float) -> dict[str, Any]:
    """Per-step wait distribution (ms) and window loads (s) against a window's training time (s)."""
    w = np.array(step_waits or [0.0]) * 1000
    out: dict[str, Any] = {"step_wait_ms_p50_p99_max": [round(float(np.percentile(w, q)), 1) for q in (50, 99, 100)],
                           "steps_waiting_over_tenth": int((w > 100 * step_s).sum())}
    if loads:
        wall, cpu, rows = (np.array(c, dtype=float) for c in zip(*loads))
        out.update(window_loads=len(loads), window_load_s_mean_max=[round(wall.mean(), 2), round(wall.max(), 2)],
                   window_load_cpu_s_mean=round(cpu.mean(), 2),
                   window_train_s=round(float(rows.mean()) / BATCH * step_s, 2))
    return out


def instrument() -> tuple[Busy, Busy]:
    """Wraps the store's chunk decoder (read_rows) and encoder (write_chunks) where the store looks them up."""
    decode, encode = Busy(), Busy()
    read_rows, write_chunks = windows_module.read_rows, zarr_module.write_chunks

    def timed_read(arrays: Any, slots: list[int], rows: Any, out: Any, dest: list[int]) -> None:
        t0 = time.perf_counter()
        read_rows(arrays, slots, rows, out, dest)
        decode.seconds += time.perf_counter() - t0
        decode.rows += len(slots) * (out.codes.shape[1] if isinstance(rows, slice) else rows.shape[0])

    def timed_write(arrays: Any, jobs: list[Any]) -> None:
        t0 = time.perf_counter()
        write_chunks(arrays, jobs)
        encode.seconds += time.perf_counter() - t0
        encode.rows += sum(j.stop - j.start for j in jobs if j.entries is not None)

    windows_module.read_rows = zarr_module.read_rows = timed_read
    zarr_module.write_chunks = timed_write
    return decode, encode


def make_rows(deltas: Path) -> Callable[[np.ndarray], tuple]:
    """write() arguments for samples idx: the real perturbations tiled over the dataset (fresh arrays per call)."""
    with np.load(deltas) as src:  # into RAM once: an NpzFile reads (and unzips) on every key access
        codes, scale = src["codes"], src["scale"]

    def rows(idx: np.ndarray) -> tuple:
        j = idx % codes.shape[0]
        return codes[j], scale[j], np.zeros((idx.shape[0], 2), np.int64), np.zeros(idx.shape[0], bool)

    return rows


def fill(store: MemStore, k: int, rows: Callable[[np.ndarray], tuple]) -> dict[str, float]:
    """Writes and commits epochs 0..k-1 (no step); times the first."""
    out: dict[str, float] = {}
    t_fill = time.perf_counter()
    for epoch in range(k):
        t0 = time.perf_counter()
        order = store.begin_epoch(epoch, ages=lambda w: [])  # write-only: no window decodes anything
        for s in range(0, order.shape[0], FILL_BATCH):
            store.write(order[s:s + FILL_BATCH], *rows(order[s:s + FILL_BATCH]))
        store.commit_epoch()
        if epoch == 0:
            out["fill_write_rows_per_s"] = round(order.shape[0] / (time.perf_counter() - t0))
    out["fill_s"] = round(time.perf_counter() - t_fill, 1)
    return out


def draws_of(epoch: int, k: int, m: int) -> Callable[[int], list[int]] | None:
    """Per-window slot draws as the trainer's `--memory-slot-draw window` makes them: m of the K ages per window."""
    if not m:
        return None
    return lambda w: sorted(np.random.default_rng([epoch, w]).choice(k, size=m, replace=False).tolist())


def run_epoch(store: MemStore, ahead: ReadAhead, epoch: int, timed_rows: int, step_s: float,
              rows: Callable[[np.ndarray], tuple], wait: dict[str, float], draws: int = 0,
              step_waits: list[float] | None = None) -> int:
    """One epoch as the trainer runs it; the first `timed_rows` rows sleep `step_s` per batch and their store waits
    on this thread are added to `wait`. `draws`: m per-window slot draws (0: every age). Leaves the commit running;
    returns the timed steps. `step_waits`: each timed step's gather wait (s) is appended."""
    step_waits = [] if step_waits is None else step_waits
    t0 = time.perf_counter()
    order = store.begin_epoch(epoch, ages=draws_of(epoch, store.k, draws),
                              next_ages=draws_of(epoch + 1, store.k, draws))
    ahead.follow(order, 0, BATCH)
    wait["start"] += time.perf_counter() - t0 if timed_rows else 0.0
    steps = 0
    for s in range(0, order.shape[0], BATCH):
        idx, timed = order[s:s + BATCH], s < timed_rows
        ahead.follow(order, s + BATCH, BATCH)
        t0 = time.perf_counter()
        batch = ahead.read(idx)
        if timed:
            wait["start" if s == 0 else "gather"] += time.perf_counter() - t0
            if s:
                step_waits.append(time.perf_counter() - t0)
            time.sleep(step_s)  # the accelerator computing
            steps += 1
        if s == 0:
            held = batch.valid.sum(dim=0) == (draws or store.k)  # every sample: each age it drew
            assert bool(held.all()), "internal error: the epoch is not in steady state"
        args = rows(idx)  # the trainer's δ of this batch (made before the clock starts)
        t0 = time.perf_counter()
        ahead.write(idx, *args)
        wait["write"] += (time.perf_counter() - t0) if timed else 0.0
    t0 = time.perf_counter()
    ahead.drain()
    wait["commit"] += time.perf_counter() - t0 if timed_rows else 0.0
    return steps


def training_epochs(store: MemStore, args: argparse.Namespace, rows: Callable[[np.ndarray], tuple],
                    loads: list[tuple[float, float, int]]) -> dict:
    """A warm-up epoch k (no step: read and write throughput, all K slots valid), then training-like epochs
    k+1..k+epochs (see the module docstring); the store's waits on the loop's thread. `loads`: the window loads
    timed so far (those of the training-like epochs are reported)."""
    wait = {"start": 0.0, "gather": 0.0, "write": 0.0, "commit": 0.0}
    ahead, step_s, step_waits = ReadAhead(store, rows=args.ahead_rows), args.step_ms / 1000, []
    t0 = time.perf_counter()
    run_epoch(store, ahead, args.k, 0, 0.0, rows, wait, args.window_draws)
    out: dict[str, Any] = {"warmup_rows_per_s_allK": round(store.n / (time.perf_counter() - t0))}
    landed = store.commit_epoch(wait=False)
    del loads[:]
    steps, t_all, cpu_all = 0, time.perf_counter(), time.process_time()
    loop_from = time.time()  # wall clock: bench/store_s3.py attributes its S3 server's CPU to this span
    by_epoch = []  # each epoch's wait (s): the first begins after the unpaced warm-up, the others in steady state
    for epoch in range(args.k + 1, args.k + 1 + args.epochs):
        before = sum(wait.values())
        steps += run_epoch(store, ahead, epoch, args.steps * BATCH if args.steps else store.n, step_s, rows, wait,
                           args.window_draws, step_waits)
        t0 = time.perf_counter()
        landed.result()  # the previous commit (long landed, unless the store cannot keep up)
        landed = store.commit_epoch(wait=False)
        wait["commit"] += time.perf_counter() - t0
        by_epoch.append(round(sum(wait.values()) - before, 3))
    loop_s, cpu_s = time.perf_counter() - t_all, time.process_time() - cpu_all
    out["loop_span_unix"] = [loop_from, time.time()]
    t0 = time.perf_counter()
    landed.result()
    ahead.close()
    total = sum(wait.values())
    out.update({f"wait_{name}_s": round(v, 3) for name, v in wait.items()})
    # Store CPU per step (all threads; the sleep costs none): what the cores must give the store per step, whatever
    # else loads the machine. Without --steps every row is a timed step.
    out.update(steps=steps, loop_s=round(loop_s, 1), cpu_ms_per_step=round(1000 * cpu_s * BATCH / (args.epochs * store.n), 2),
               last_commit_landing_s=round(time.perf_counter() - t0, 2), wait_s=round(total, 3),
               wait_pct_of_step=round(100 * total / (steps * step_s), 2), ahead_depth=ahead.depth(BATCH),
               wait_s_by_epoch=by_epoch,
               **wait_figures(step_waits, loads, step_s))
    return out


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One configuration: fill, warm-up, training-like epochs; RSS and busy figures."""
    decode, encode = instrument()
    loads = time_window_loads()
    rows = make_rows(Path(args.deltas))
    spec = StoreSpec(DatasetFingerprint("bench", args.n, SHAPE, "0" * 64), ThreatModel("Linf", "8/255"), args.k)
    rss = PeakRss()
    if args.backend == "ram":
        store: MemStore = create_memory_store(spec)
    else:
        name = f"k{args.k}-{args.budget_mb}.zarr"  # --dir may be a URL (bench/store_s3.py: s3://bucket/prefix)
        url = f"{args.dir.rstrip('/')}/{name}" if "://" in args.dir else Path(args.dir) / name
        store = create_store(url, spec, memory_budget=args.budget_mb << 20, codec=args.codec,
                             window_slots=args.window_draws or None)
    out: dict[str, Any] = {"backend": args.backend, "k": args.k, "window_draws": args.window_draws, "n": args.n,
                           "budget_mb": args.budget_mb,
                           "resident": bool(getattr(store, "resident", True)), "window_blocks": store.window_blocks,
                           "block_size": store.block_size, "load_avg_start": os.getloadavg()[0]}
    out.update(fill(store, args.k, rows))
    out["store_rss_fill_mb"] = (rss.peak - rss.base) >> 20
    out.update(training_epochs(store, args, rows, loads))
    store.close()
    base_mb, peak_mb = rss.stop()
    out.update(**decode.report("decode"), **encode.report("encode"), rss_before_store_mb=base_mb, peak_rss_mb=peak_mb,
               store_rss_mb=peak_mb - base_mb, load_avg_end=os.getloadavg()[0])
    return out
