"""Benchmark of the two batch loaders over the same `.beton`: FFCV's and memloss's numpy reader (samples/s; prints
figures, not a test).

A `.beton` of N random CIFAR-shaped images (uint8 3×32×32, seed 0) is written once under --dir with memloss's
writer. Each loader then runs in a fresh process (so the first epoch pays what a run's first epoch pays: FFCV's numba
compile, thread start-up) for --epochs epochs of a seeded random permutation (a new one per epoch, as training
without a store), batch --batch, the last partial batch kept, on the CPU; each batch is only received, not used.
The file is in the page cache in every epoch (it was just written). Figures: samples/s of the first epoch and the
median of the later ("warm") ones, and the check that both loaders yielded the same bytes (a digest of every
epoch's images, labels and indices).

Usage: python bench/loaders.py [--n 50000] [--batch 512] [--epochs 4] [--workers 2] [--dir /tmp/memloss-loaders]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def write(path: Path, n: int) -> float:
    """Writes the .beton (once); returns the seconds it took (0 if it was there)."""
    from memloss.trainer.data.beton import write_beton
    from memloss.trainer.data.sources import ArraySource

    if path.exists():
        return 0.0
    rng = np.random.default_rng(0)
    source = ArraySource(rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n), chunk=4096)
    start = time.perf_counter()
    write_beton(source, path.with_suffix(".tmp"), num_workers=2)
    os.replace(path.with_suffix(".tmp"), path)
    return time.perf_counter() - start


def run_one(loader: str, path: Path, n: int, batch: int, epochs: int, workers: int) -> dict:
    """In this process: `epochs` epochs of `loader`; seconds per epoch and a digest of what it yielded."""
    import torch

    from memloss.trainer.data.beton import PreparedSplit
    from memloss.trainer.data.loader import make_loader

    torch.set_num_threads(1)
    split = PreparedSplit(path, n, (3, 32, 32), 10, "")
    seconds, digest = [], hashlib.sha256()
    with make_loader(split, batch_size=batch, seed=0, num_workers=workers, loader=loader) as it:
        for _ in range(epochs):
            kept = []
            start = time.perf_counter()
            for k, b in enumerate(it):
                if k < 3:  # the digest covers the first batches of every epoch, computed outside the timing
                    kept.append(b)
            seconds.append(time.perf_counter() - start)
            for x, y, idx in kept:
                digest.update(x.numpy().tobytes() + y.numpy().tobytes() + idx.numpy().tobytes())
    return {"loader": loader, "seconds": seconds, "digest": digest.hexdigest()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="FFCV's decoding threads")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/memloss-loaders"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one loader in this process
    args = parser.parse_args()
    path = args.dir / f"cifar-shaped-{args.n}.beton"
    if args.one:
        print(json.dumps(run_one(args.one, path, args.n, args.batch, args.epochs, args.workers)))
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    took = write(path, args.n)
    print(f"{path}: {path.stat().st_size / 2**20:.0f} MiB" + (f", written in {took:.1f} s" if took else ""))
    print(f"load average {os.getloadavg()[0]:.2f} · batch {args.batch} · {args.epochs} epochs · "
          f"FFCV threads {args.workers} · {os.cpu_count()} cores")
    print("| loader | first epoch (samples/s) | warm epochs, median (samples/s) |\n|---|---|---|")
    digests = {}
    for loader in ("ffcv", "numpy"):
        cmd = [sys.executable, __file__, "--one", loader, *sys.argv[1:]]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        result = json.loads(out)
        rates = [args.n / s for s in result["seconds"]]
        print(f"| {loader} | {rates[0]:,.0f} | {float(np.median(rates[1:])):,.0f} |")
        digests[loader] = result["digest"]
    print("same batches:", len(set(digests.values())) == 1)


if __name__ == "__main__":
    main()
