"""One configuration of bench/generated_scale.py (N generated rows, K, budget), in a fresh process so that its peak
RSS is its own; prints one JSON line.

1. Creates a two-part store (base set + N generated rows) and fills its K memory slots in steady state: every chunk
   of every slot holds the real perturbations (one encoded chunk per array and slot, copied to every chunk key: a
   full write through the store would encode the same bytes K·N/b times) and the ring state records epochs
   0 … K−1 as committed.
2. Opens it with the budget and trains the first `steps` batches of epoch K as the trainer does: the mixed order of
   `begin_epoch(K, mix=...)`, the next batch's memory gathered ahead on a worker thread (ReadAhead), a sleep for the
   step, the write handed to the same thread. Then the commit is started without waiting and timed until it
   lands. The epoch stops after `steps` batches, so this commit writes every block the epoch had not finished (all
   base blocks, the buffered generated blocks, and "no memory" for every generated block it did not reach): an
   upper bound of a whole epoch's commit, which overlaps the next epoch in training anyway.
3. Reports the store's waits on the training thread, the peak RSS, the bytes on disk of a filled slot per row and per
   coordinate, and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from memloss.memstore.zarrstore.chunks import run_all
from memloss.memstore.zarrstore.meta import open_handle, save_ring_state
from memloss.memstore.ahead import ReadAhead
from memloss.memstore.layout.mixing import BatchMix
from memloss.memstore.layout.ring import RingState
from memloss.memstore.spec import DatasetFingerprint, StoreSpec, ThreatModel
from memloss.memstore.store import create_store, open_store
from store_setup import PeakRss

SHAPE = (3, 32, 32)
ARRAYS = ("codes", "scale", "info")
COPY_BATCH = 512  # chunk keys set concurrently


def spec_for(args: argparse.Namespace) -> StoreSpec:
    parts = (args.base, args.n)
    fingerprint = DatasetFingerprint("cifar10+generated", sum(parts), SHAPE, "0" * 64, parts)
    return StoreSpec(fingerprint, ThreatModel("Linf", "8/255"), args.k)


def fill(url: str, spec: StoreSpec, codes: np.ndarray, scale: np.ndarray) -> float:
    """Steady state: epochs 0 … K−1 committed in slots 0 … K−1, every chunk holding real perturbations."""
    t0 = time.perf_counter()
    handle = open_handle(url, spec, read_only=False)
    b, blocks = handle.layout.block_size, handle.layout.num_blocks
    store, proto = handle.group.store, default_buffer_prototype()
    tiled = codes[np.arange(b) % codes.shape[0]]
    for epoch in range(spec.k):
        info = np.zeros((b, 4), np.int32)
        info[:, 0] = epoch
        handle.arrays["codes"][epoch, 0:b] = tiled
        handle.arrays["scale"][epoch, 0:b] = scale[np.arange(b) % scale.shape[0]]
        handle.arrays["info"][epoch, 0:b] = info
        for name in ARRAYS:
            array = handle.arrays[name]
            def key(block: int, array: Any = array) -> str:
                return f"{array.path}/{array.metadata.encode_chunk_key((epoch, block, *([0] * (array.ndim - 2))))}"

            data = sync(store.get(key(0), prototype=proto))
            keys = [key(j) for j in range(1, blocks)]
            for i in range(0, len(keys), COPY_BATCH):
                run_all([store.set(k, data) for k in keys[i:i + COPY_BATCH]])
    slots: list[int | None] = [*range(spec.k), None]
    save_ring_state(handle, RingState(slots, list(range(spec.k))))
    return time.perf_counter() - t0


def timed_epoch(store: Any, mix: BatchMix, args: argparse.Namespace, codes: np.ndarray,
                scale: np.ndarray) -> dict[str, Any]:
    """The first `steps` batches of epoch K as the trainer runs them; waits on this thread, then the commit."""
    wait = {"start": 0.0, "gather": 0.0, "write": 0.0, "drain": 0.0}
    ahead, step_s, b = ReadAhead(store), args.step_ms / 1000, mix.batch_size
    t0 = time.perf_counter()
    order = store.begin_epoch(args.k, mix=mix)
    ahead.prefetch(order[:b])
    wait["start"] += time.perf_counter() - t0
    steps = min(args.steps, mix.batches)
    held = np.zeros(args.k)
    cpu0, t_loop = time.process_time(), time.perf_counter()
    for i in range(steps):
        idx = order[i * b:(i + 1) * b]
        if i + 1 < mix.batches:
            ahead.prefetch(order[(i + 1) * b:(i + 2) * b])
        t0 = time.perf_counter()
        batch = ahead.read(idx)
        wait["start" if i == 0 else "gather"] += time.perf_counter() - t0
        held += batch.valid.numpy().mean(axis=1)
        time.sleep(step_s)  # the accelerator computing
        j = idx % codes.shape[0]
        args_w = (codes[j], scale[j], np.zeros((b, 2), np.int64), np.zeros(b, bool))  # the step's δ (off the clock)
        t0 = time.perf_counter()
        ahead.write(idx, *args_w)
        wait["write"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    ahead.drain()
    wait["drain"] += time.perf_counter() - t0
    loop_s, cpu_s = time.perf_counter() - t_loop, time.process_time() - cpu0
    t0 = time.perf_counter()
    store.commit_epoch(wait=False).result()
    commit_s = time.perf_counter() - t0
    ahead.close()
    total = sum(wait.values())
    return {**{f"wait_{k}_s": round(v, 3) for k, v in wait.items()}, "steps": steps, "loop_s": round(loop_s, 1),
            "wait_pct_of_step": round(100 * total / (steps * step_s), 2),
            "wait_pct_without_start": round(100 * (total - wait["start"]) / (steps * step_s), 2),
            "cpu_ms_per_step": round(1000 * cpu_s / steps, 2), "commit_s": round(commit_s, 2),
            "held_by_age": [round(float(h / steps), 3) for h in held]}


def disk_of_slot(root: Path, slot: int, rows: int, sample_bytes: int) -> dict[str, float]:
    """Bytes on disk of ring slot `slot` (all three arrays) per row, and of its codes per coordinate."""
    sizes = {}
    for name in ARRAYS:
        total = 0
        for folder, _, files in os.walk(root / name / "c" / str(slot)):
            total += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
        sizes[name] = total
    return {"disk_per_slot_gb": round(sum(sizes.values()) / 1e9, 3),
            "disk_bytes_per_row": round(sum(sizes.values()) / rows, 1),
            "bytes_per_coord": round(sizes["codes"] / (rows * sample_bytes), 4)}


def worker(args: argparse.Namespace) -> dict[str, Any]:
    with np.load(args.deltas) as src:
        codes, scale = src["codes"], src["scale"]
    spec = spec_for(args)
    url = str(Path(args.dir) / f"n{args.n}-k{args.k}.zarr")
    rss = PeakRss()
    create_store(url, spec, memory_budget=args.budget_mb << 20).close()
    fill_s = fill(url, spec, codes, scale)
    mix = BatchMix(args.batch, int(args.fraction * args.batch), -(-(args.base + args.n) // args.batch))
    store = open_store(url, expect=spec, memory_budget=args.budget_mb << 20)
    out: dict[str, Any] = {"n": args.n, "k": args.k, "budget_mb": args.budget_mb, "block_size": store.block_size,
                           "window_blocks": store.window_blocks, "resident_blocks": store.resident_blocks,
                           "batches_per_epoch": mix.batches, "fill_s": round(fill_s, 1),
                           "load_avg_start": os.getloadavg()[0]}
    out.update(timed_epoch(store, mix, args, codes, scale))
    rows = store.layout.rows
    store.close()
    base_mb, peak_mb = rss.stop()
    out.update(disk_of_slot(Path(url), 0, rows, int(np.prod(SHAPE))), rss_before_store_mb=base_mb,
               peak_rss_mb=peak_mb, store_rss_mb=peak_mb - base_mb, load_avg_end=os.getloadavg()[0])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    for name, kind in (("n", int), ("k", int), ("base", int), ("budget-mb", int), ("batch", int), ("steps", int),
                       ("step-ms", float), ("fraction", float), ("deltas", str), ("dir", str)):
        p.add_argument(f"--{name}", type=kind, required=True)
    print(json.dumps(worker(p.parse_args())))


if __name__ == "__main__":
    main()
