"""Benchmark of the memory store with real PGD perturbations (prints figures; not a test).

1. Trains the small_cnn model on the synthetic 3x32x32 dataset for one epoch, runs memloss.trainer.methods.pgd.pgd
   (Linf, eps 8/255, alpha 2/255, 10 steps, uniform start) on M samples and quantizes delta = x_adv - x.
2. Codec sweep on those codes (whole 512 KB chunks): bytes/coord, ratio to float32, write and read MB/s.
3. For each K: a fresh process fills a store of N samples (the M real perturbations tiled), then measures raw
   write and read rows/s and a training-like epoch (begin_epoch, read + write per batch of 128, a fixed simulated
   compute per step, commit), reporting the time spent waiting on the store and the peak RSS. The in-RAM store is
   the baseline.

Usage: python bench/store.py [--n 50000] [--k 1 4 16] [--budget-mb 512] [--step-ms 30] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from memloss.memstore.codecs import make_codecs  # noqa: E402
from memloss.memstore.quant import quantize
from memloss.memstore.spec import DatasetFingerprint, StoreSpec, ThreatModel
from memloss.memstore.store import create_memory_store, create_store

EPS = 8 / 255
CODECS = ["none", "blosc-zstd-1-noshuffle", "blosc-zstd-1-shuffle", "blosc-zstd-1-bitshuffle",
          "blosc-zstd-3-noshuffle", "blosc-lz4-1-noshuffle", "blosc-lz4-5-bitshuffle", "zstd-1", "zstd-3", "zstd-9"]


def real_perturbations(m: int, out: Path) -> dict[str, float]:
    """Trains small_cnn one epoch, attacks m training samples, saves codes/scale to `out` (npz)."""
    from memloss.trainer.data.registry import dataset_info
    from memloss.trainer.data.sources import load_tensors
    from memloss.trainer.methods.pgd import pgd
    from memloss.trainer.methods.threat import PGDConfig
    from memloss.trainer.models.registry import build_model

    torch.manual_seed(0)
    info = dataset_info("synthetic", 32)
    x_u8, y = load_tensors("synthetic", "train", n=m)
    x = x_u8.float() / 255
    model = build_model("small_cnn", info)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    model.train()
    for start in range(0, m, 128):
        loss = torch.nn.functional.cross_entropy(model(x[start : start + 128]), y[start : start + 128])
        opt.zero_grad()
        loss.backward()
        opt.step()
    cfg = PGDConfig(norm="Linf", eps=EPS, step_size=2 / 255, steps=10, start="uniform")
    g = torch.Generator().manual_seed(1)
    codes, scales = [], []
    for start in range(0, m, 256):
        xb = x[start : start + 256]
        delta = pgd(model, xb, y[start : start + 256], cfg, generator=g) - xb
        c, s = quantize(delta, eps=EPS)
        codes.append(c.numpy())
        scales.append(s.numpy())
    np.savez(out, codes=np.concatenate(codes), scale=np.concatenate(scales))
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    return {"samples": m, "seconds": round(time.perf_counter() - t0, 1), "clean_train_acc": round(acc, 3)}


def codec_sweep(codes: np.ndarray, block: int = 170) -> list[dict[str, float]]:
    import zarr

    rows = (codes.shape[0] // block) * block
    data = codes[:rows]
    results = []
    for name in CODECS:
        with tempfile.TemporaryDirectory() as tmp:
            arr = zarr.create_array(tmp + "/a", shape=data.shape, chunks=(block, *data.shape[1:]), dtype="uint8",
                                    compressors=make_codecs(name), fill_value=0)
            t0 = time.perf_counter()
            for s in range(0, rows, block):
                arr[s : s + block] = data[s : s + block]
            tw = time.perf_counter() - t0
            t0 = time.perf_counter()
            for s in range(0, rows, block):
                arr[s : s + block]
            tr = time.perf_counter() - t0
            nbytes = sum(f.stat().st_size for f in Path(tmp, "a", "c").rglob("*") if f.is_file())
        bpc = nbytes / data.size
        results.append({"codec": name, "bytes_per_coord": round(bpc, 4), "ratio_vs_f32": round(4 / bpc, 2),
                        "write_MBps": round(data.nbytes / tw / 1e6), "read_MBps": round(data.nbytes / tr / 1e6)})
    return results


def pick_codec(results: list[dict[str, float]]) -> str:
    """Fastest writer among codecs within 5 % of the smallest size (never a bitshuffle one for uint8 codes)."""
    best = min(r["bytes_per_coord"] for r in results)
    near = [r for r in results if r["bytes_per_coord"] <= 1.05 * best and "bitshuffle" not in r["codec"]]
    return max(near, key=lambda r: r["write_MBps"])["codec"]


class PeakRss:
    """Samples this process's RSS every 10 ms on a thread (ru_maxrss would include the parent's peak)."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.base = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def stop(self) -> tuple[int, int]:
        self._stop.set()
        self._thread.join()
        return self.base >> 20, self.peak >> 20


def worker(args: argparse.Namespace) -> None:
    """One configuration in a fresh process (so peak RSS is its own); prints one JSON line."""
    with np.load(args.deltas) as src:  # into RAM once: an NpzFile reads (and unzips) on every key access
        src_codes, src_scale = src["codes"], src["scale"]
    m = src_codes.shape[0]
    spec = StoreSpec(DatasetFingerprint("bench", args.n, (3, 32, 32), "0" * 64), ThreatModel("Linf", "8/255"), args.k)
    rss = PeakRss()
    if args.backend == "ram":
        store = create_memory_store(spec)
    else:
        store = create_store(Path(args.dir) / f"k{args.k}.zarr", spec, memory_budget=args.budget_mb << 20,
                             codec=args.codec)

    def batch_args(idx: np.ndarray) -> tuple:
        j = idx % m
        return (src_codes[j], src_scale[j], np.zeros((idx.shape[0], 2), np.int64), np.zeros(idx.shape[0], bool))

    out: dict[str, float] = {"backend": args.backend, "k": args.k, "n": args.n}
    t_fill = time.perf_counter()
    for epoch in range(args.k):  # fill K slots; time the first (write-only) epoch
        t0 = time.perf_counter()
        order = store.begin_epoch(epoch)
        for s in range(0, args.n, 128):
            store.write(order[s : s + 128], *batch_args(order[s : s + 128]))
        store.commit_epoch()
        if epoch == 0:
            out["write_rows_per_s"] = round(args.n / (time.perf_counter() - t0))
    out["fill_s"] = round(time.perf_counter() - t_fill, 1)
    epoch = args.k
    t0 = time.perf_counter()  # raw read throughput, all K slots valid
    order = store.begin_epoch(epoch)
    for s in range(0, args.n, 128):
        store.read(order[s : s + 128])
    out["read_rows_per_s_allK"] = round(args.n / (time.perf_counter() - t0))
    store.begin_epoch(epoch)  # abandon; the training-like epoch below rewrites it
    wait, steps = 0.0, 0
    t_epoch = time.perf_counter()
    t0 = time.perf_counter()
    order = store.begin_epoch(epoch)
    wait += time.perf_counter() - t0
    for s in range(0, args.n, 128):
        idx = order[s : s + 128]
        t0 = time.perf_counter()
        mb = store.read(idx)
        wait += time.perf_counter() - t0
        if s == 0:
            out["wait_epoch_start_s"] = round(wait, 2)  # begin_epoch + first read (loads the first window)
        time.sleep(args.step_ms / 1000)  # the accelerator computing; the CPU is free for the store's threads
        t0 = time.perf_counter()
        store.write(idx, *batch_args(idx))
        wait += time.perf_counter() - t0
        steps += 1
    t0 = time.perf_counter()
    store.commit_epoch()
    out["wait_commit_s"] = round(time.perf_counter() - t0, 2)  # write-behind backlog drained by the commit
    wait += time.perf_counter() - t0
    assert bool(mb.valid.all())
    epoch_s = time.perf_counter() - t_epoch
    store.close()
    base_mb, peak_mb = rss.stop()
    out.update(steps=steps, epoch_s=round(epoch_s, 1), wait_s=round(wait, 2),
               wait_pct_of_step=round(100 * wait / (steps * args.step_ms / 1000), 2),
               rss_before_store_mb=base_mb, peak_rss_mb=peak_mb)
    if args.backend == "zarr":
        from memloss.memstore.inspect import summarize

        s = summarize(Path(args.dir) / f"k{args.k}.zarr", sample_coords=5_000_000)
        slot = s["per_slot"][0]
        out.update(bytes_per_coord=slot["bytes_per_coord"], ratio_vs_f32=slot["ratio_vs_float32"],
                   at_eps=slot["at_eps_fraction"], code_entropy_bits=slot["code_entropy_bits"])
    print(json.dumps(out), flush=True)


def run_worker(backend: str, k: int, args: argparse.Namespace, deltas: Path, tmp: str, codec: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--backend", backend, "--k", str(k), "--n", str(args.n),
           "--budget-mb", str(args.budget_mb), "--step-ms", str(args.step_ms), "--deltas", str(deltas),
           "--dir", tmp, "--codec", codec]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"worker failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--k", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--m", type=int, default=1024, help="real perturbations computed (tiled to n)")
    p.add_argument("--budget-mb", type=int, default=512)
    p.add_argument("--step-ms", type=float, default=30.0)
    p.add_argument("--quick", action="store_true", help="n=10000, K=1 4, m=512")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--backend", default="zarr", help=argparse.SUPPRESS)
    p.add_argument("--deltas", help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    p.add_argument("--codec", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.k = args.k[0]
        worker(args)
        return
    if args.quick:
        args.n, args.k, args.m = 10_000, [1, 4], 512
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"cuda={torch.cuda.is_available()}, python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        deltas = Path(tmp) / "deltas.npz"
        print("perturbations:", json.dumps(real_perturbations(args.m, deltas)))
        codes = np.load(deltas)["codes"]
        sweep = codec_sweep(codes)
        print(f"{'codec':28s} {'B/coord':>8s} {'x f32':>6s} {'write MB/s':>10s} {'read MB/s':>9s}")
        for r in sweep:
            print(f"{r['codec']:28s} {r['bytes_per_coord']:8.4f} {r['ratio_vs_f32']:6.2f} {r['write_MBps']:10d} "
                  f"{r['read_MBps']:9d}")
        codec = pick_codec(sweep)
        print(f"picked codec: {codec}")
        for k in args.k:
            for backend in ("zarr", "ram"):
                print(json.dumps(run_worker(backend, k, args, deltas, tmp, codec)), flush=True)


if __name__ == "__main__":
    main()
