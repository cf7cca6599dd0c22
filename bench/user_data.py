"""Benchmark of the user's own data (`--dataset PATH`, trainer/data/userdata.py): the first `prepare_user` of an
.npz and of an image folder (checks, statistics pass, .beton conversion, test split decoded) against a second one
that finds the cache (prints figures; not a test).

Data: N random 32×32×3 uint8 images with 10 classes, as a stored .npz and as the first `--folder-n` of them as PNG
files in an ImageFolder tree; no test file, so 10 % is held out. Everything lives in a fresh temporary folder.

Usage: python bench/user_data.py [--n 10000] [--folder-n 2000] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def make_data(root: Path, n: int, folder_n: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    np.savez(root / "train.npz", image=x, label=np.arange(n) % 10)
    for i in range(folder_n):
        folder = root / "imgs" / f"c{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i]).save(folder / f"{i}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--folder-n", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    from memloss.trainer.data.userdata import prepare_user

    root = Path(tempfile.mkdtemp(prefix="memloss-user-"))
    make_data(root, args.n, args.folder_n)
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores, data in {root}")
    for name in ("train.npz", "imgs"):
        for attempt in ("first (convert)", "again (cached)"):
            start = time.perf_counter()
            data = prepare_user(root / name, None, root / "data", num_workers=args.workers)
            print(f"{name}: {attempt}: {time.perf_counter() - start:.2f} s, {data.base.n} train / "
                  f"{len(data.test_y)} test samples")


if __name__ == "__main__":
    main()
