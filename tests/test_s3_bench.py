"""Smoke test of bench/store_s3.py: its latency proxy forwards requests to the S3 server, each one at least the
injected latency later, and (heavy) bench/store.py's worker runs with its store on S3 behind the proxy (the figures
themselves are not checked)."""

from __future__ import annotations

import argparse
import sys
import time
import urllib.request
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from s3_server import S3Server

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _bench() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        import store_s3
    finally:
        sys.path.remove(str(BENCH))
    return store_s3


def _proxy(bench: ModuleType, s3: S3Server, latency_s: float):  # noqa: ANN202
    return bench.LatencyProxy(int(s3.endpoint.rsplit(":", 1)[1]), latency_s)


def test_latency_proxy_delays_each_request(s3: S3Server) -> None:
    proxy = _proxy(_bench(), s3, 0.05)
    for _ in range(2):  # a new connection each time: every request is delayed, not just a connection's first
        t0 = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{proxy.port}/{s3.bucket}?list-type=2", timeout=30) as response:
            body = response.read()
        assert time.perf_counter() - t0 >= 0.05 and b"ListBucketResult" in body  # moto's answer, delayed


def test_server_cpu_is_the_span_of_the_timed_steps() -> None:
    bench = _bench()
    sampler = bench.CpuSampler(3600)  # one sample now; the test sets them
    sampler.samples[:] = [(100.0, 1.0), (110.0, 6.0), (120.0, 6.0)]  # 0.5 CPU s per s, then idle
    row = bench.with_server_cpu({"steps": 4, "loop_span_unix": [104.0, 112.0]}, sampler)
    assert row == {"steps": 4, "server_cpu_ms_per_step": 750.0, "server_cores": 0.38}  # 3 CPU s over 8 s, 4 steps


@pytest.mark.heavy
def test_worker_on_s3_behind_the_proxy(s3: S3Server, tmp_path: Path) -> None:
    bench = _bench()
    proxy = _proxy(bench, s3, 0.005)
    deltas = tmp_path / "deltas.npz"
    rng = np.random.default_rng(0)
    codes = rng.integers(1, 256, (32, 3, 32, 32), dtype=np.uint8)
    np.savez(deltas, codes=codes, scale=np.full(32, 8 / 255, np.float32))
    opts = argparse.Namespace(n=600, step_ms=1.0, epochs=1, steps=3)
    row = bench.run(f"s3://{s3.bucket}/bench-smoke", 1, 16, opts, deltas, f"http://127.0.0.1:{proxy.port}",
                    bench.CpuSampler(0.05))
    assert row["steps"] == 3 and row["encode_s"] > 0 and row["fill_write_rows_per_s"] > 0
    assert row["server_cpu_ms_per_step"] >= 0 and "loop_span_unix" not in row
    lines = bench.table([row]).splitlines()
    assert len(lines) == 3 and "| 1 | 600 |" in lines[2]
