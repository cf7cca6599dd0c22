"""Cost of the store's integrity machinery (prints figures; not a test): per commit, the manifest (one listing of the
slot, a 4-byte read of each chunk's checksum, one small write); per epoch start, the check of the K read slots
against their manifests (one listing per slot); at a resumed start, the check of every committed epoch; the writer
lock; and, for scale, `repair-store`'s full check, which reads every chunk. Codes are random in [1, 255] (the
worst case for compression, so chunks are as large as they get).

Usage: python bench/integrity.py [--n 50000] [--k 4] [--dir /tmp] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from memloss.memstore.integrity.manifest import check_bytes, write_manifest
from memloss.memstore.zarrstore.meta import verify_read_slots
from memloss.memstore.spec import DatasetFingerprint, StoreSpec, ThreatModel
from memloss.memstore.store import create_store, open_store


def fill(url: Path, n: int, k: int) -> None:
    """Writes and commits K+1 epochs of random codes (3x32x32) into a new store at `url`."""
    spec = StoreSpec(DatasetFingerprint("bench", n, (3, 32, 32), "0" * 64), ThreatModel("Linf", "8/255"), k)
    rng = np.random.default_rng(0)
    with create_store(url, spec) as store:
        for epoch in range(1, k + 2):
            order = store.begin_epoch(epoch)
            for start in range(0, n, 1024):
                idx = order[start:start + 1024]
                b = len(idx)
                store.write(idx, rng.integers(1, 256, (b, 3, 32, 32), dtype=np.uint8), np.full(b, 0.03, np.float32),
                            np.zeros((b, 2), np.int64), np.zeros(b, bool))
            store.commit_epoch()


def best_of(repeat: int, fn) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        url = Path(tmp) / "s.zarr"
        t0 = time.perf_counter()
        fill(url, args.n, args.k)
        print(f"filled N={args.n} K={args.k} (3x32x32, random codes) in {time.perf_counter() - t0:.1f} s; "
              f"{sum(p.stat().st_size for p in url.rglob('*') if p.is_file()) / 1e6:.0f} MB on disk")
        t_lock = best_of(args.repeat, lambda: open_store(url).close())
        with open_store(url) as store:
            handle = store._handle  # noqa: SLF001
            slots = [s for s, e in enumerate(handle.state.slot_epochs) if e is not None]
            chunks = len([p for p in (url / "codes" / "c" / str(slots[0])).rglob("*") if p.is_file()]) * 3
            last = handle.state.committed[-1]
            t_manifest = best_of(args.repeat, lambda: write_manifest(handle.store, last, last % (args.k + 1)))
            t_start = best_of(args.repeat, lambda: verify_read_slots(handle, handle.state, slots[:args.k]))
            t_resume = best_of(args.repeat, lambda: verify_read_slots(handle, handle.state, slots))
            t_full = best_of(1, lambda: [check_bytes(handle.store, e, s, handle.meta["manifests"][str(e)])
                                         for s, e in enumerate(handle.state.slot_epochs) if e is not None])
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}")
    print(f"chunks per slot (codes+scale+info): {chunks}")
    print(f"manifest at commit (list 1 slot, read {chunks} checksums, write): {1000 * t_manifest:.1f} ms")
    print(f"check at epoch start (list K={args.k} slots vs manifests):   {1000 * t_start:.1f} ms")
    print(f"check at resume (every committed epoch):              {1000 * t_resume:.1f} ms")
    print(f"writer lock + open + close:                           {1000 * t_lock:.1f} ms")
    print(f"repair-store full check (read + CRC every chunk):     {t_full:.2f} s")


if __name__ == "__main__":
    main()
