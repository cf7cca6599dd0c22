"""Set-up of bench/store.py: real PGD perturbations to store, the codec sweep, and a peak-RSS sampler."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from memloss.memstore.zarrstore.codecs import make_codecs
from memloss.memstore.quant import quantize

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
    """Whole-chunk write and read MB/s and size of each codec in CODECS on the codes uint8 [M, C, H, W]."""
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


