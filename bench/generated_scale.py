"""Scale benchmark of training on generated data (prints figures; not a test): CIFAR-sized base set plus N generated
rows, K memory slots, a RAM budget.

For each N:
1. writes a synthetic generated set as the published format (one stored .npz, `image` uint8 [N, 32, 32, 3] and
   `label`), streamed to disk in slices, and times its conversion to a verified .beton (`prepare_generated`, in a
   fresh process); the .npz and the .beton are deleted afterwards unless --keep (the store part needs neither);
2. for each K, runs bench/generated_scale_worker.py in a fresh process: a two-part store (base + N generated rows)
   filled to steady state with real PGD perturbations, then the first --steps batches of an epoch as the trainer
   runs them (mixed order, memory gathered ahead, a sleep for the step, writes behind), and the commit.

It prints peak RSS (and the store's share of it), the store's wait on the training thread as a share of the step
time (with and without the epoch's start, which in training overlaps the previous epoch's last window), the store
CPU per step, the commit time, the disk per slot, bytes per coordinate and the conversion time, with the load
averages. Disk: about 6.3 GB per million rows during the conversion (.npz and .beton), then about
(K+1)·N·1 KB for the store; the benchmark checks the free space of --dir first.

Usage: python bench/generated_scale.py [--n 1000000 5000000] [--k 1 4] [--budget-mb 1024] [--steps 300]
       [--step-ms 30] [--dir /var/tmp/memloss-scale] [--quick] [--no-convert] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_setup import real_perturbations  # noqa: E402

HERE = Path(__file__).resolve().parent
IMAGE_BYTES = 32 * 32 * 3
WRITE_ROWS = 1 << 15  # rows per slice of the .npz writer


def write_npz(path: Path, n: int, seed: int = 0) -> float:
    """A stored .npz of n random 32×32×3 images and labels, written a slice at a time (RAM stays small)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    block = rng.integers(0, 256, (WRITE_ROWS, 32, 32, 3), dtype=np.uint8)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("image.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False,
                                                     "shape": (n, 32, 32, 3)})
            for start in range(0, n, WRITE_ROWS):
                f.write(np.roll(block, start % 97, axis=1)[: min(WRITE_ROWS, n - start)].tobytes())
        with zf.open("label.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, rng.integers(0, 10, n).astype(np.int64))
    return time.perf_counter() - t0


def convert(npz: Path, data_dir: Path) -> dict:
    """Times prepare_generated of `npz` in a fresh process (the first conversion: nothing cached)."""
    code = ("import json, time; t0 = time.perf_counter(); "
            "from memloss.trainer.data.generated import prepare_generated; "
            f"s = prepare_generated([{str(npz)!r}], 'cifar10', {str(data_dir)!r}); "
            "print(json.dumps({'convert_s': round(time.perf_counter() - t0, 1), 'beton_gb': "
            "round(s.beton.stat().st_size / 1e9, 2), 'n': s.n}))")
    load = os.getloadavg()[0]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"conversion failed: {done.stderr[-2000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "convert_load_avg": f"{load:.1f}–{os.getloadavg()[0]:.1f}"}


def check_disk(folder: Path, need_gb: float) -> None:
    free = shutil.disk_usage(folder).free / 1e9
    if free < need_gb:
        raise SystemExit(f"{folder} has {free:.1f} GB free, this run needs about {need_gb:.1f} GB; pass another --dir")


def run_worker(n: int, k: int, args: argparse.Namespace, deltas: Path, folder: Path) -> dict:
    cmd = [sys.executable, str(HERE / "generated_scale_worker.py"), "--n", str(n), "--k", str(k), "--base",
           str(args.base), "--budget-mb", str(args.budget_mb), "--batch", str(args.batch), "--steps", str(args.steps),
           "--step-ms", str(args.step_ms), "--fraction", str(args.fraction), "--deltas", str(deltas), "--dir",
           str(folder)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    shutil.rmtree(folder / f"n{n}-k{k}.zarr", ignore_errors=True)
    if done.returncode != 0:
        raise SystemExit(f"worker failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    head = ("| N generated | K | window blocks | peak RSS MB (store) | wait % of step (w/o start) | start / gather / "
            "write / drain s | store CPU ms/step | commit s | disk per slot GB | B/row | B/coord | memory held "
            "(age 1) | conversion s (.beton GB) | load avg |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        conv = f"{r['convert_s']} ({r['beton_gb']})" if "convert_s" in r else "—"
        lines.append(
            f"| {r['n']:,} | {r['k']} | {r['window_blocks']} | {r['peak_rss_mb']} ({r['store_rss_mb']}) | "
            f"{r['wait_pct_of_step']} ({r['wait_pct_without_start']}) | {r['wait_start_s']} / {r['wait_gather_s']} / "
            f"{r['wait_write_s']} / {r['wait_drain_s']} | {r['cpu_ms_per_step']} | {r['commit_s']} | "
            f"{r['disk_per_slot_gb']} | {r['disk_bytes_per_row']} | {r['bytes_per_coord']} | {r['held_by_age'][0]} | "
            f"{conv} | {r['load_avg_start']:.1f}–{r['load_avg_end']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[1_000_000, 5_000_000])
    p.add_argument("--k", type=int, nargs="+", default=[1, 4])
    p.add_argument("--base", type=int, default=50_000)
    p.add_argument("--budget-mb", type=int, default=1024)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--fraction", type=float, default=0.7)
    p.add_argument("--steps", type=int, default=300, help="timed batches per configuration")
    p.add_argument("--step-ms", type=float, default=30.0)
    p.add_argument("--dir", type=Path, default=Path("/var/tmp/memloss-scale"))
    p.add_argument("--quick", action="store_true", help="N = 1M and K = 1 only, 100 steps")
    p.add_argument("--no-convert", action="store_true", help="skip writing and converting the .npz")
    p.add_argument("--keep", action="store_true", help="keep the .npz and .beton files")
    args = p.parse_args()
    if args.quick:
        args.n, args.k, args.steps = [1_000_000], [1], 100
    args.dir.mkdir(parents=True, exist_ok=True)
    deltas = args.dir / "deltas.npz"
    if not deltas.exists():
        print("real perturbations:", real_perturbations(1024, deltas), flush=True)
    rows = []
    for n in args.n:
        store_gb = (max(args.k) + 1) * n * 1.1e3 / 1e9
        check_disk(args.dir, store_gb + (0 if args.no_convert else 6.3 * n / 1e6) + 1)
        conv: dict = {}
        if not args.no_convert:
            npz, data_dir = args.dir / f"gen-{n}.npz", args.dir / "data"
            conv = {"npz_write_s": round(write_npz(npz, n), 1), **convert(npz, data_dir)}
            print(f"N = {n:,}: {conv}", flush=True)
            if not args.keep:
                npz.unlink()
                shutil.rmtree(data_dir / "ffcv", ignore_errors=True)
        for k in args.k:
            row = {**run_worker(n, k, args, deltas, args.dir), **conv}
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"\nbase {args.base:,}, batch {args.batch} ({int(args.fraction * args.batch)} generated), budget "
          f"{args.budget_mb} MB, {args.steps} timed steps of {args.step_ms:g} ms, machine {os.cpu_count()} cores")
    print(table(rows))


if __name__ == "__main__":
    main()
