"""RAM and time of a store's index arrays at scale, without any memory data (prints figures; not a test).

Builds, for a two-part store (a CIFAR-sized base set plus `--rows` generated rows, the default block size of
3×32×32 codes) as the store does:
1. the layout: `layout_members` (the membership fixed at creation) and `BlockLayout.from_members` (its inverse);
2. epoch 0's compact plan (`epoch_plan(..., compact=True)`, the store's plan thread), then the int64 order
   `begin_epoch` hands the caller (the plan then keeps its windows and visits only, as in the store);
3. epoch 1's plan while epoch 0's is held (the next epoch's plan, built during the current one).
For each step it prints the wall time, the RSS it added and the peak RSS above the start (sampled every 5 ms on a
thread), in MB and in bytes per storage row, next to what the memory budget counts for these rows
(memstore/layout/order.py `index_bytes`).

Usage: python bench/layout_scale.py [--rows 300000000] [--base 50000] [--window-blocks 64] [--batch 512]
       [--fraction 0.7]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import psutil

from memloss.memstore.layout.mixing import BatchMix, epoch_plan
from memloss.memstore.layout.budget import index_bytes
from memloss.memstore.layout.order import BlockLayout, default_block_size, layout_members, storage_rows

SAMPLE_BYTES = 3 * 32 * 32  # uint8 codes of a CIFAR image: sets the default block size (512 KB chunks)


class Sampler:
    """The process's RSS, sampled every 5 ms on a thread: `mark()` starts a step, `peak` is its highest RSS."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self.start = self.peak = self.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def rss(self) -> int:
        return int(self._proc.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.rss())

    def mark(self) -> int:
        self.peak = now = self.rss()
        return now

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def step(name: str, fn: Callable[[], Any], rss: Sampler, rows: int) -> Any:
    """Runs fn, prints one JSON line of its time and RAM (MB and B/row), returns its result."""
    before, t0 = rss.mark(), time.perf_counter()
    out = fn()
    seconds, after = time.perf_counter() - t0, rss.rss()
    peak = max(rss.peak, after)
    print(json.dumps({"step": name, "s": round(seconds, 2), "added_mb": round((after - before) / 2**20),
                      "peak_above_step_mb": round((peak - before) / 2**20),
                      "held_mb": round((after - rss.start) / 2**20), "peak_mb": round((peak - rss.start) / 2**20),
                      "held_b_per_row": round((after - rss.start) / rows, 1),
                      "peak_b_per_row": round((peak - rss.start) / rows, 1)}), flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=300_000_000, help="generated rows")
    p.add_argument("--base", type=int, default=50_000)
    p.add_argument("--window-blocks", type=int, default=64)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--fraction", type=float, default=0.7)
    a = p.parse_args()
    parts = (a.base, a.rows)
    block = default_block_size(min(parts), SAMPLE_BYTES)
    rows = storage_rows(parts, block)
    mix = BatchMix(a.batch, int(a.fraction * a.batch), -(-rows // a.batch))
    load = os.getloadavg()[0]
    print(json.dumps({"rows": rows, "block_size": block, "window_blocks": a.window_blocks, "batches": mix.batches,
                      "budget_counts_mb": round(index_bytes(rows) / 2**20),
                      "budget_counts_b_per_row": index_bytes(rows) / rows}), flush=True)
    rss = Sampler()
    members = step("layout_members", lambda: layout_members(parts, block, 0), rss, rows)
    layout = step("BlockLayout.from_members", lambda: BlockLayout.from_members(members, block, parts), rss, rows)
    del members  # the layout holds it
    plans = []
    for epoch in range(2):
        plans.append(step(f"plan epoch {epoch} (compact)", lambda e=epoch: epoch_plan(
            layout, a.window_blocks, 0, e, mix, compact=True), rss, rows))
        if epoch == 0:
            order = step("int64 order for the caller", lambda: plans[0].order.astype(np.int64), rss, rows)
            order_dtype = str(plans[0].order.dtype)
            plans[0] = replace(plans[0], order=order[:0])  # as begin_epoch: the store keeps windows and visits
    rss.close()
    print(json.dumps({"order_dtype": order_dtype, "order_len": int(order.shape[0]),
                      "load_avg": f"{load:.1f}–{os.getloadavg()[0]:.1f}", "cores": os.cpu_count()}))


if __name__ == "__main__":
    main()
