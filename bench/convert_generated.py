"""Benchmark of the generated-data conversion (`prepare_generated`): time and peak memory against N (prints figures;
not a test).

For each N, a stored `.npz` of N random 32×32×3 uint8 images and int64 labels is written in slices (the published
`np.savez` layout; made once under --dir and reused), then converted into a fresh `.beton` with --workers writer
processes. Peak memory is the proportional set size (PSS) summed over this process and its children, polled every
20 ms (PSS splits shared pages, so forked processes are not counted twice). For comparison, --ffcv converts with
FFCV's own `DatasetWriter.from_indexed_dataset` instead of memloss's bounded writer.

Usage: python bench/convert_generated.py [--n 50000 200000 800000] [--workers 2] [--dir /tmp/memloss-gen] [--ffcv]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import psutil

ROWS_PER_WRITE = 10_000


def make_npz(path: Path, n: int) -> None:
    """A stored .npz with image uint8 [n, 32, 32, 3] and label int64 [n], written without holding it in RAM."""
    from numpy.lib import format as npy

    if path.exists():
        return
    rng = np.random.default_rng(0)
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        with archive.open("image.npy", "w", force_zip64=True) as member:
            npy.write_array_header_2_0(member, {"descr": "|u1", "fortran_order": False, "shape": (n, 32, 32, 3)})
            for a in range(0, n, ROWS_PER_WRITE):
                member.write(rng.integers(0, 256, (min(ROWS_PER_WRITE, n - a), 32, 32, 3), dtype=np.uint8).tobytes())
        with archive.open("label.npy", "w", force_zip64=True) as member:
            npy.write_array_header_2_0(member, {"descr": "<i8", "fortran_order": False, "shape": (n,)})
            member.write(rng.integers(0, 10, n).astype("<i8").tobytes())
    os.replace(tmp, path)


class PeakPss:
    """Polls the PSS of this process and its children in a thread; `peak` in bytes."""

    def __init__(self) -> None:
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            try:
                total = sum(p.memory_full_info().pss for p in [me, *me.children(recursive=True)])
            except psutil.Error:  # a child exited between the listing and the read
                continue
            self.peak = max(self.peak, total)
            time.sleep(0.02)

    def __enter__(self) -> "PeakPss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def convert_with_ffcv(npz: Path, out: Path, workers: int) -> None:
    """The same conversion through FFCV's DatasetWriter.from_indexed_dataset (the baseline)."""
    from ffcv.fields import IntField, NDArrayField
    from ffcv.writer import DatasetWriter

    from memloss.trainer.data.beton import _Samples
    from memloss.trainer.data.generated import GeneratedSource
    from memloss.trainer.data.registry import dataset_info

    source = GeneratedSource([npz], dataset_info("cifar10"))
    fields = {"image": NDArrayField(dtype=np.dtype("uint8"), shape=source.shape), "label": IntField(),
              "index": IntField()}
    out.mkdir(parents=True, exist_ok=True)
    writer = DatasetWriter(str(out / "ffcv.beton"), fields, num_workers=workers)
    writer.from_indexed_dataset(_Samples(source), chunksize=source.chunk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[50_000, 200_000, 800_000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/memloss-gen"))
    parser.add_argument("--ffcv", action="store_true", help="convert with FFCV's own writer instead")
    args = parser.parse_args()
    from memloss.trainer.data.generated import prepare_generated

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    args.dir.mkdir(parents=True, exist_ok=True)
    make_npz(args.dir / "warmup.npz", 2000)  # first conversion JIT-compiles FFCV's numba code: not timed
    prepare_generated([args.dir / "warmup.npz"], "cifar10", args.dir / "data-warmup", num_workers=args.workers)
    shutil.rmtree(args.dir / "data-warmup")
    for n in args.n:
        npz = args.dir / f"gen-{n}.npz"
        make_npz(npz, n)
        out = args.dir / f"data-{n}"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        with PeakPss() as pss:
            if args.ffcv:
                convert_with_ffcv(npz, out, args.workers)
            else:
                prepare_generated([npz], "cifar10", out, num_workers=args.workers)
        seconds = time.perf_counter() - t0
        writer = "ffcv DatasetWriter" if args.ffcv else "memloss bounded writer"
        print(f"N={n:>9} {writer}: {seconds:6.1f} s ({n / seconds:7.0f} images/s), peak PSS "
              f"{pss.peak / 2**20:6.0f} MiB, load average {os.getloadavg()[0]:.2f}")
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
