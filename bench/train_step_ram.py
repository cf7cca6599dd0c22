"""Peak RAM of training steps against the memory depth K: the Zarr store at a fixed memory budget (windowed once
the K+1 slots no longer fit) against the in-RAM store ((K+1)·N rows), with m = 4 slots per step (per-step draws) and
the fused memory forward, so the step's own activations do not grow with K either. Prints figures; not a test.

Each (backend, K) runs in a fresh child process: it builds the session with the trainer's helpers (as
bench/train_step.py does), fills epochs 1..K through the real write path, begins epoch K+1, resets the kernel's
peak-RSS counter (/proc/self/clear_refs), runs the steps through `_train_batch` and reports VmHWM, the peak resident
set of those steps (model, optimizer, activations, store windows and buffers, Python and torch themselves).

Usage: python bench/train_step_ram.py [--ks 1,4,16,64] [--n 4096] [--budget-mb 128] [--block-size 16]
       [--batch-size 128] [--steps 6] [--draw step|window] [--backends zarr,ram]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step_setup import (  # noqa: E402
    BenchConfig,
    Variant,
    begin_timed_epoch,
    fill_memory,
    make_session,
    make_store,
)

from memloss.trainer.data.sources import load_tensors  # noqa: E402
from memloss.trainer.training.epoch import _train_batch  # noqa: E402
from memloss.trainer.training.metrics import MetricSums  # noqa: E402


def _kib(field: str) -> int:
    """A memory line of /proc/self/status (VmRSS, VmHWM, ...) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def child(a: argparse.Namespace) -> dict[str, Any]:
    """One (backend, K): peak RSS of `a.steps` steps in steady state."""
    torch.set_num_threads(1)
    k, n = a.child, max(a.n, a.batch_size * (a.steps + 1))
    m = min(4, k) if k > 1 else 0
    bc = BenchConfig(torch.device("cpu"), "small_cnn", n, a.batch_size, a.steps, 1, 1, (k,), 1)
    x, y = load_tensors("synthetic", "train", n=n)
    with tempfile.TemporaryDirectory(prefix="memloss-ram-") as tmp:
        store = make_store(k, y, a.backend, Path(tmp), a.budget_mb * 1024**2, a.block_size)
        v = Variant(k, m, "fused", a.draw if m else "step")
        s = make_session(bc, v, store, Path(tmp))
        fill_memory(s, x, k)
        order = begin_timed_epoch(s, k + 1)
        Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
        before = _kib("VmRSS")
        sums, wait = MetricSums(), [0.0]
        for i in range(a.steps + 1):
            idx = order[i * a.batch_size:(i + 1) * a.batch_size]
            _train_batch(s, x[idx], y[idx], torch.from_numpy(idx), idx, sums, wait)
        peak = _kib("VmHWM")
        resident = bool(getattr(store, "resident", True))
        windows = -(-store.layout.num_blocks // store.window_blocks)
        store.close()
    return {"backend": a.backend, "k": k, "m": m, "n": n, "rss_before_mb": before / 1024, "peak_mb": peak / 1024,
            "resident": resident, "windows": windows}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ks", default="1,4,16,64")
    p.add_argument("--n", type=int, default=4096, help="samples in the dataset and the store")
    p.add_argument("--budget-mb", type=int, default=128, help="the Zarr store's memory budget")
    p.add_argument("--block-size", type=int, default=16, help="samples per Zarr block (small: many windows)")
    p.add_argument("--draw", default="step", help="slot draws: step, or window (a batch that straddles two "
                   "windows then uses the drawn ages of both)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--backends", default="zarr,ram")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--backend", default="zarr", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    a = _parser().parse_args(argv)
    if a.child is not None:
        print(json.dumps(child(a)))
        return []
    print(f"load average before: {os.getloadavg()}; n {a.n}, budget {a.budget_mb} MiB, block {a.block_size} "
          f"samples, batch {a.batch_size}, {a.steps + 1} steps per child, {a.draw} draws", flush=True)
    rows = []
    for backend in a.backends.split(","):
        for k in (int(v) for v in a.ks.split(",")):
            cmd = [sys.executable, __file__, "--child", str(k), "--backend", backend, "--budget-mb", str(a.budget_mb),
                   "--block-size", str(a.block_size), "--batch-size", str(a.batch_size), "--steps", str(a.steps),
                   "--n", str(a.n), "--draw", a.draw]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ,
                                                                                       "OMP_NUM_THREADS": "1"})
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{backend:5s} K={k:<3d} m={r['m'] or 'all':<4} {'resident' if r['resident'] else 'windowed':9s} "
                  f"windows {r['windows']:4d}  RSS before steps {r['rss_before_mb']:7.0f} MB  "
                  f"peak during steps {r['peak_mb']:7.0f} MB", flush=True)
    print(f"load average after: {os.getloadavg()}")
    return rows


if __name__ == "__main__":
    main()
