"""Benchmark of training through torchrun (DDP): samples/s of the plain command, of one process under torchrun
(the DDP path's overhead: process group, DDP wrapper, rank-0 gather of the store writes, per-epoch reductions) and
of two processes (gloo on CPU, NCCL on CUDA) on the same run (prints figures; not a test).

Each configuration is a real `memloss train` run in a subprocess (synthetic data held by FFCV, MemLoss K=1 with
its Zarr store, PGD-20 on a few test points), one torch thread per process. The figure is the training throughput
of the last epoch (`samples_per_s` of metrics.jsonl: the global samples of the epoch over its training seconds,
the first epoch being warm-up) and the wall time of the whole command (start-up included). The configurations run
in rounds, interleaved in rotating order, and each figure is the median over rounds, so that load from other jobs
hits them alike; on a shared machine the figures are still noisy.

With `--aux-n N` every run also trains on N generated images (`--aux-data`, a random .npz made here; the
published 0.7 generated share of every batch): the mixed batches cut by rank under torchrun.

Usage: python bench/ddp.py [--device cpu|cuda] [--n 2048] [--resolution 16] [--batch-size 128] [--epochs 2]
       [--rounds 3] [--procs 1,2] [--aux-n 0]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONFIGS = ("plain", "torchrun-1", "torchrun-2")


def _command(config: str, args: argparse.Namespace, out: Path) -> list[str]:
    train = ["train", "--dataset", "synthetic", "--n", str(args.n), "--resolution", str(args.resolution),
             "--batch-size", str(args.batch_size), "--epochs", str(args.epochs), "--k", "1", "--eval-n", "64",
             "--attack-steps", str(args.attack_steps), "--threads", "1", "--device", args.device, "--out", str(out),
             "--data-dir", str(args.data_dir)]
    if args.aux_n:
        train += ["--aux-data", str(args.data_dir / "generated.npz")]
    if config == "plain":
        return [sys.executable, "-m", "memloss.cli.app", *train]
    nproc = config.split("-")[1]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "memloss.cli.app", "--", *train]


def _run(config: str, args: argparse.Namespace, root: Path, round_: int) -> tuple[float, float, float]:
    """(samples/s of the last epoch, wall seconds of the command, the last epoch's `rank_sync_s`: rank 0's wait
    for its commit plus the other ranks' reopening of the store; 0 with one process)."""
    out = root / f"{config}-{round_}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    done = subprocess.run(_command(config, args, out), env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{config} failed:\n{done.stderr[-3000:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return records[-1]["samples_per_s"], wall, records[-1].get("rank_sync_s", 0.0)


def _generated(path: Path, n: int, resolution: int) -> None:
    """n random generated images (uint8 [n, H, W, 3]) with labels in 0..9, as --aux-data reads them."""
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, image=rng.integers(0, 256, (n, resolution, resolution, 3), dtype=np.uint8),
             label=rng.integers(0, 10, n))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--resolution", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--attack-steps", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--procs", default="1,2", help="process counts under torchrun")
    p.add_argument("--aux-n", type=int, default=0, help="generated images mixed into every batch (0: none)")
    args = p.parse_args()
    configs = ["plain", *(f"torchrun-{k}" for k in args.procs.split(","))]
    with tempfile.TemporaryDirectory() as tmp:
        args.data_dir = Path(tmp) / "data"
        if args.aux_n:
            _generated(args.data_dir / "generated.npz", args.aux_n, args.resolution)
        _run("plain", args, Path(tmp), -1)  # converts the data once (not timed)
        figures: dict[str, list[tuple[float, float, float]]] = {c: [] for c in configs}
        for r in range(args.rounds):
            for c in configs[r % len(configs):] + configs[:r % len(configs)]:
                figures[c].append(_run(c, args, Path(tmp), r))
    print(f"training through torchrun on {args.device}: synthetic n={args.n} {args.resolution}×{args.resolution}, "
          f"batch {args.batch_size} (global), {args.epochs} epochs, K=1, {args.attack_steps} attack steps, "
          f"1 thread per process; medians of {args.rounds} rounds"
          + (f"; + {args.aux_n} generated images (0.7 of every batch)" if args.aux_n else ""))
    print(f"{'configuration':<14}{'samples/s':>12}{'wall s':>10}{'vs plain':>10}{'rank sync s':>13}")
    base = statistics.median(f[0] for f in figures["plain"])
    for c in configs:
        sps, wall, sync = (statistics.median(f[i] for f in figures[c]) for i in range(3))
        print(f"{c:<14}{sps:>12.0f}{wall:>10.1f}{sps / base:>9.2f}x{sync:>13.3f}")
    for c in configs:
        print(f"  {c} per round, samples/s: {', '.join(f'{f[0]:.0f}' for f in figures[c])}")
    ratios = [a[0] / b[0] for a, b in zip(figures.get("torchrun-1", []), figures["plain"])]
    if ratios:
        print(f"DDP-path overhead with one process (within-round ratio, median): "
              f"{100 * (1 - statistics.median(ratios)):.1f}% fewer samples/s")
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
