"""Per-epoch cost of a torchrun rank ≠ 0's memory (prints figures; not a test): before, such a rank reopened the
store after every commit and loaded the K read slots of a resident store from storage; now it keeps rank 0's rows
in RAM (`MemStore.mirror`) and only confirms the commit (`mirror_commit`: one read of the ring state).

One process plays both ranks: a writer (rank 0) and a read-only store (rank ≠ 0) over one local store, CIFAR-shaped
rows with smooth δ codes. For each epoch after the first K it times, on the read-only side, what lies between rank
0's commit and the first batch of the next epoch: `reopen` (close, open_store, begin_epoch, first read: the
resident load of K slots) against `mirror` (mirror_commit, begin_epoch, first read).

With --budget-mib below what every slot needs (a windowed store, which cannot mirror), it compares `reopen` with
`follow` (`follow_commit`: the ring state read again; the store, its layout and its threads kept): the cost of
opening a store grows with its rows (bench/layout_scale.py: 265 s at 300M rows, paid by every rank ≠ 0 each epoch
before follow_commit).

Usage: python bench/mirror.py [--n 20000] [--k 4] [--epochs 7] [--batch 512] [--budget-mib 4096]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from memloss.memstore.spec import DatasetFingerprint, StoreSpec, ThreatModel
from memloss.memstore.store import create_store, open_store

SHAPE = (3, 32, 32)


def _rows(rng: np.random.Generator, b: int) -> tuple[np.ndarray, ...]:
    """Codes that compress like PGD δ (smooth around 128), scales, views."""
    base = rng.integers(100, 156, size=(b, 1, 8, 8), dtype=np.uint8)
    codes = np.repeat(np.repeat(base, 4, axis=2), 4, axis=3).repeat(3, axis=1)
    return codes, rng.random(b, dtype=np.float32) * 0.03, rng.integers(0, 9, size=(b, 2)), rng.random(b) < 0.5


def run(args: argparse.Namespace, mode: str) -> list[float]:
    """Seconds of the read-only side's take-up of each epoch that reads K committed slots; mode: reopen, mirror
    (a resident store) or follow (a windowed one)."""
    rng = np.random.default_rng(0)
    spec = StoreSpec(DatasetFingerprint("bench", args.n, SHAPE, "0" * 64), ThreatModel("Linf", "8/255"), args.k)
    budget = args.budget_mib << 20
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        url = Path(tmp) / "m.zarr"
        writer = create_store(url, spec, memory_budget=budget)
        reader = open_store(url, read_only=True, memory_budget=budget)
        assert reader.mirrors == (mode == "mirror") or mode == "reopen", "mirror: a resident store; follow: windowed"
        mirror = mode == "mirror"
        after_commit = 0.0
        for epoch in range(args.epochs):
            order = writer.begin_epoch(epoch)
            t0 = time.perf_counter()
            reader.begin_epoch(epoch)
            reader.read(order[:args.batch])  # the first batch: waits for the resident load, if any
            if epoch > args.k:
                times.append(after_commit + time.perf_counter() - t0)
            for start in range(0, order.shape[0], args.batch):
                idx = order[start:start + args.batch]
                reader.read(idx)
                rows = _rows(rng, idx.shape[0])
                writer.write(idx, *rows)
                if mirror:
                    reader.mirror(idx, *rows)
            writer.commit_epoch()
            t1 = time.perf_counter()
            if mirror:
                reader.mirror_commit()
            elif mode == "follow":
                reader.follow_commit()
            else:
                reader.close()
                reader = open_store(url, read_only=True, memory_budget=budget)
            after_commit = time.perf_counter() - t1
        writer.close()
        reader.close()
    return times


def open_mode(args: argparse.Namespace) -> bool:
    """True when the budget keeps every slot in RAM (the reader mirrors), False for a windowed store."""
    spec = StoreSpec(DatasetFingerprint("bench", args.n, SHAPE, "0" * 64), ThreatModel("Linf", "8/255"), args.k)
    with tempfile.TemporaryDirectory() as tmp, create_store(Path(tmp) / "p.zarr", spec,
                                                           memory_budget=args.budget_mib << 20) as store:
        return bool(store.resident)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--epochs", type=int, default=7)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--budget-mib", type=int, default=4096)
    args = p.parse_args()
    print(f"n={args.n} rows of {SHAPE}, K={args.k}, batch {args.batch}; seconds from rank 0's commit to the "
          "read-only side's first batch of the next epoch (epochs that read K slots)")
    resident = open_mode(args)
    for name, mode in (("reopen (before)", "reopen"), ("mirror (now)" if resident else "follow (now)",
                                                       "mirror" if resident else "follow")):
        times = run(args, mode)
        print(f"{name:16s} median {statistics.median(times):.3f} s  each: {', '.join(f'{t:.3f}' for t in times)}")


if __name__ == "__main__":
    main()
