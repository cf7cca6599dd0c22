"""Smoke test of bench/store_s3.py: its latency proxy forwards requests to the S3 server, each one at least the
injected latency later, and bench/store.py's worker runs with its store on S3 behind the proxy (the figures
themselves are not checked)."""

from __future__ import annotations

import argparse
import sys
import time
import urllib.request
from pathlib import Path
from types import ModuleType

import numpy as np

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _bench() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        import store_s3
    finally:
        sys.path.remove(str(BENCH))
    return store_s3


def test_latency_proxy_and_worker_on_s3(s3, tmp_path: Path) -> None:  # noqa: ANN001
    bench = _bench()
    port = int(s3.endpoint.rsplit(":", 1)[1])
    proxy = bench.LatencyProxy(port, 0.05)
    t0 = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.port}/{s3.bucket}?list-type=2", timeout=30) as response:
        body = response.read()
    assert time.perf_counter() - t0 >= 0.05 and b"ListBucketResult" in body  # moto's answer, delayed once
    deltas = tmp_path / "deltas.npz"
    rng = np.random.default_rng(0)
    np.savez(deltas, codes=rng.integers(1, 256, (32, 3, 32, 32), dtype=np.uint8), scale=np.full(32, 8 / 255, np.float32))
    opts = argparse.Namespace(n=600, step_ms=1.0, epochs=1, steps=3)
    row = bench.run(f"s3://{s3.bucket}/bench-smoke", 1, 16, opts, deltas, f"http://127.0.0.1:{proxy.port}")
    assert row["steps"] == 3 and row["encode_s"] > 0 and row["fill_write_rows_per_s"] > 0
    lines = bench.table([row]).splitlines()
    assert len(lines) == 3 and "| 1 | 600 |" in lines[2]
