"""Benchmark of the memory store with real PGD perturbations (prints figures; not a test).

1. Trains small_cnn on the synthetic 3x32x32 dataset for one epoch, runs memloss.trainer.methods.pgd.pgd (Linf,
   eps 8/255, alpha 2/255, 10 steps, uniform start) on M samples and quantizes delta = x_adv - x.
2. With --sweep: codec sweep on those codes (whole 512 KB chunks): bytes/coord, write and read MB/s.
3. For each K and budget, a fresh process (bench/store_worker.py) fills a store of N samples (the M perturbations
   tiled), measures a warm-up epoch without step, and runs training-like epochs with a simulated step (a sleep), the next batch's
   memory gathered ahead and the commit landing while the next epoch starts, as the trainer does. It reports the
   store's wait on the training thread (% of the simulated step time) and its split, the decode and encode
   throughput, and the peak RSS. --ram adds the in-RAM store as a baseline.

Budgets are MB or "resident" (the smallest budget that keeps every slot in RAM). A budget that holds every slot is
resident whatever its size: the table says which mode each row ran.

Usage: python bench/store.py [--n 50000] [--k 1 4 16 32] [--budgets 256 1024 resident] [--step-ms 30]
       [--epochs 2] [--steps 0] [--quick] [--sweep] [--ram] [--dir DIR] [--window-draws M] [--ahead-rows R]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_setup import codec_sweep, real_perturbations  # noqa: E402

from memloss.memstore.zarrstore.codecs import DEFAULT_CODES_CODEC  # noqa: E402
from memloss.memstore.layout.budget import fits_resident
from memloss.memstore.layout.order import default_block_size

SAMPLE_BYTES, ROW_BYTES = 3 * 32 * 32, 3 * 32 * 32 + 20


def resident_budget_mb(n: int, k: int) -> int:
    """The smallest budget in MB that keeps all K+1 slots of n CIFAR-shaped rows resident."""
    block = default_block_size(n, SAMPLE_BYTES)
    mb = ((k + 1) * n * ROW_BYTES) >> 20
    while not fits_resident(mb << 20, k, n, block, ROW_BYTES):
        mb += 1
    return mb


def run_worker(backend: str, k: int, budget_mb: int, args: argparse.Namespace, deltas: Path) -> dict:
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        cmd = [sys.executable, __file__, "--worker", "--backend", backend, "--k", str(k), "--n", str(args.n),
               "--budget-mb", str(budget_mb), "--step-ms", str(args.step_ms), "--epochs", str(args.epochs),
               "--steps", str(args.steps), "--deltas", str(deltas), "--dir", tmp, "--codec", args.codec,
               "--window-draws", str(args.window_draws)]
        cmd += [] if args.ahead_rows is None else ["--ahead-rows", str(args.ahead_rows)]
        res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"worker failed: {res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    """The results as a markdown table (waits in seconds on the training thread)."""
    head = ("| K | N | budget MB | mode | wait % of step | epoch start s | gather s | write s | commit s | "
            "store CPU ms/step | decode MB/s (rows/s) | encode MB/s | read+write rows/s, no step | "
            "store RSS / peak RSS MB | load avg |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        mode = "in-RAM" if r["backend"] == "ram" else (
            "resident" if r["resident"] else f"windowed ({r['window_blocks']} blocks)")
        decode = f"{r['decode_MBps']} ({r['decode_rows_per_s']})" if r["decode_s"] > 0 else "—"
        encode = f"{r['encode_MBps']}" if r["encode_s"] > 0 else "—"
        k = f"{r['k']} (m = {r['window_draws']} per window)" if r.get("window_draws") else f"{r['k']}"
        lines.append(f"| {k} | {r['n']} | {r['budget_mb']} | {mode} | {r['wait_pct_of_step']} | "
                     f"{r['wait_start_s']} | {r['wait_gather_s']} | {r['wait_write_s']} | {r['wait_commit_s']} | "
                     f"{r['cpu_ms_per_step']} | "
                     f"{decode} | {encode} | {r['warmup_rows_per_s_allK']} | {r['store_rss_mb']} / {r['peak_rss_mb']} | "
                     f"{r['load_avg_start']:.1f}–{r['load_avg_end']:.1f} |")
    return "\n".join(lines)


def wait_table(rows: list[dict]) -> str:
    """Where the wait comes from: each timed epoch's wait (the first follows the unpaced warm-up epoch), the
    read-ahead's depth, each step's wait, and the window loads against the time a window trains (window load CPU:
    the whole process's, all threads, while a load ran; — when every window was loaded early)."""
    head = ("| K | budget MB | wait s by epoch | read-ahead batches | step wait ms p50 / p99 / max | "
            "steps waiting > 1/10 step | window loads | window load s mean / max | window load CPU s | "
            "window trains s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if r["backend"] == "ram" or r.get("resident"):
            continue
        loads = (f"{r['window_loads']} | {' / '.join(map(str, r['window_load_s_mean_max']))} | "
                 f"{r['window_load_cpu_s_mean']} | {r['window_train_s']}") if "window_loads" in r else "0 | — | — | —"
        lines.append(f"| {r['k']} | {r['budget_mb']} | {' / '.join(map(str, r.get('wait_s_by_epoch', [])))} | "
                     f"{r['ahead_depth']} | {' / '.join(map(str, r['step_wait_ms_p50_p99_max']))} | "
                     f"{r['steps_waiting_over_tenth']} | {loads} |")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--k", type=int, nargs="+", default=[1, 4, 16, 32])
    p.add_argument("--budgets", nargs="+", default=["256", "1024", "resident"], help="MB, or 'resident'")
    p.add_argument("--m", type=int, default=1024, help="real perturbations computed (tiled to n)")
    p.add_argument("--step-ms", type=float, default=30.0)
    p.add_argument("--epochs", type=int, default=2, help="training-like epochs (the first commit overlaps the next)")
    p.add_argument("--steps", type=int, default=0, help="simulated steps per epoch (0: all; the rest runs unslept)")
    p.add_argument("--quick", action="store_true", help="n=10000, K=1 4, budgets 64 MB and resident, m=512")
    p.add_argument("--sweep", action="store_true", help="also run the codec sweep")
    p.add_argument("--ram", action="store_true", help="also run the in-RAM store (baseline) per K")
    p.add_argument("--dir", default=None, help="where the stores are written (default: the system's temp folder)")
    p.add_argument("--codec", default=DEFAULT_CODES_CODEC)
    p.add_argument("--window-draws", type=int, default=0,
                   help="m: each store window decodes m of the K ages it drew (--memory-slot-draw window); 0: all")
    p.add_argument("--ahead-rows", type=int, default=None,
                   help="rows the read-ahead keeps gathered (default: the store's budget's; 0: one batch, as before)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--backend", default="zarr", help=argparse.SUPPRESS)
    p.add_argument("--budget-mb", type=int, default=1024, help=argparse.SUPPRESS)
    p.add_argument("--deltas", help=argparse.SUPPRESS)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.worker:
        from store_worker import worker

        args.k = args.k[0]
        print(json.dumps(worker(args)), flush=True)
        return
    if args.quick:
        args.n, args.k, args.m, args.budgets = 10_000, [1, 4], 512, ["64", "resident"]
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"cuda={torch.cuda.is_available()}, python {platform.python_version()}, load {os.getloadavg()}")
    results = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        deltas = Path(tmp) / "deltas.npz"
        print("perturbations:", json.dumps(real_perturbations(args.m, deltas)), flush=True)
        if args.sweep:
            for r in codec_sweep(np.load(deltas)["codes"]):
                print("codec:", json.dumps(r), flush=True)
        for k in args.k:
            for budget in args.budgets:
                mb = resident_budget_mb(args.n, k) if budget == "resident" else int(budget)
                results.append(run_worker("zarr", k, mb, args, deltas))
                print(json.dumps(results[-1]), flush=True)
            if args.ram:
                results.append(run_worker("ram", k, 0, args, deltas))
                print(json.dumps(results[-1]), flush=True)
    print(table(results))
    print(wait_table(results))


if __name__ == "__main__":
    main()
