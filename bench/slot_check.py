"""The check of an epoch's read slots against their manifests (memstore/integrity/manifest.py), timed alone: the
work `begin_epoch` or the early check (memstore/zarrstore/early.py) does for every committed read slot each epoch.

Fills a local store of N CIFAR-shaped rows for K+1 epochs (writes only, random codes), then times
`verify_read_slots` over every committed slot `--repeats` times (wall and process CPU). Prints one JSON line.

Usage: python bench/slot_check.py [--k 64] [--n 10000] [--repeats 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

from memloss.memstore.spec import DatasetFingerprint, StoreSpec, ThreatModel
from memloss.memstore.store import create_store
from memloss.memstore.zarrstore.meta import verify_read_slots

SHAPE = (3, 32, 32)


def fill(url: str, k: int, n: int) -> None:
    """K+1 committed epochs of random rows (every ring slot holds one)."""
    spec = StoreSpec(DatasetFingerprint("bench", n, SHAPE, "0" * 64), ThreatModel("Linf", "8/255"), k)
    codes = np.random.default_rng(0).integers(0, 256, (n, *SHAPE), dtype=np.uint8)
    with create_store(url, spec, memory_budget=1 << 30) as store:
        for epoch in range(k + 1):
            order = store.begin_epoch(epoch)
            for s in range(0, n, 1024):
                i = order[s:s + 1024]
                store.write(i, codes[i], np.ones(len(i), np.float32), np.zeros((len(i), 2), np.int64),
                            np.zeros(len(i), bool))
            store.commit_epoch()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dir", default=None)
    args = p.parse_args()
    from memloss.memstore.store import open_store

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        url = os.path.join(tmp, "s.zarr")
        fill(url, args.k, args.n)
        with open_store(url, read_only=True, memory_budget=1 << 30) as store:
            handle, state = store._handle, store._state  # noqa: SLF001  (the store's own check, without an epoch)
            slots = [s for s, e in enumerate(state.slot_epochs) if e is not None]
            runs = []
            for _ in range(args.repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                verify_read_slots(handle, state, slots)
                runs.append((round(time.perf_counter() - t0, 6), round(time.process_time() - c0, 6)))
    print(json.dumps({"k": args.k, "n": args.n, "slots": len(slots), "wall_cpu_s": runs,
                      "load_avg": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
