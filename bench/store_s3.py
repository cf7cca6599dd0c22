"""Benchmark: the store's wait on the training thread with the store on S3, per injected request latency, against
the same store on local disk (prints figures; not a test).

Each configuration is one run of bench/store.py's worker (bench/store_worker.py, in a fresh process): it fills
the K slots, runs a warm-up epoch and training-like epochs (a sleep per step, the next batch's memory gathered ahead,
the commit landing while the next epoch starts) and reports the store's wait as a % of the step time. The store
lives on local disk, or on S3: a moto server (moto[server], in this process, 127.0.0.1) behind a latency proxy.

Latency is injected by a TCP proxy between the store's S3 client and the server: every byte the client sends
reaches the server L ms after it was sent (a one-way delay, pipelined: a long upload is delayed once, not per
packet), and responses come back at once, so each request costs L more, as a link with an extra round-trip time L
would. The proxy is outside memloss (the worker only gets `endpoint_url` through MEMLOSS_STORE_OPTIONS), so the
store runs exactly the code a real bucket gets. Moto keeps objects in this process's RAM and spends CPU per request
(Python): "S3, 0 ms" is a local S3 with its own cost, not a free one.

Usage: python bench/store_s3.py [--n 10000] [--k 1 4] [--budgets 64 resident] [--latency-ms 0 5 20]
       [--step-ms 30] [--epochs 2] [--steps 0] [--m 512]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store import resident_budget_mb, table  # noqa: E402
from store_setup import real_perturbations  # noqa: E402

from memloss.memstore.zarrstore.codecs import DEFAULT_CODES_CODEC  # noqa: E402

STORE_BENCH = Path(__file__).resolve().parent / "store.py"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "memloss-bench"


class CpuSampler:
    """This process's CPU time (moto's server and the proxies run here), sampled every `period_s` on a thread:
    `cpu_between(t0, t1)` is the CPU seconds it spent between two wall-clock times (linear between samples)."""

    def __init__(self, period_s: float = 0.2) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        threading.Thread(target=self._run, args=(period_s,), daemon=True, name="cpu-sampler").start()

    def _run(self, period_s: float) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), time.process_time()))
            self._stop.wait(period_s)

    def cpu_between(self, t0: float, t1: float) -> float:
        times, cpus = zip(*self.samples)
        return float(np.interp(t1, times, cpus) - np.interp(t0, times, cpus))


def with_server_cpu(row: dict, sampler: CpuSampler) -> dict:
    """Adds the S3 server's (moto's and the proxies') CPU per timed step and its share of the machine's cores
    during the worker's training-like epochs: on a real bucket that CPU is not on the training machine."""
    t0, t1 = row.pop("loop_span_unix")
    cpu = sampler.cpu_between(t0, t1)
    row.update(server_cpu_ms_per_step=round(1000 * cpu / max(1, row["steps"]), 2),
               server_cores=round(cpu / max(1e-9, t1 - t0), 2))
    return row


class LatencyProxy:
    """A TCP proxy on 127.0.0.1 that delays every byte from client to server by `latency_s` (see module doc)."""

    def __init__(self, upstream_port: int, latency_s: float) -> None:
        self.upstream_port, self.latency_s = upstream_port, latency_s
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True, name="latency-proxy").start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        await asyncio.gather(self._delayed(client_r, server_w), self._pipe(server_r, client_w),
                             return_exceptions=True)

    async def _delayed(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Forwards src → dst, each chunk `latency_s` after it arrived (a queue keeps them in order)."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                dst.write(data)
                await dst.drain()
            dst.close()

        sender = asyncio.ensure_future(deliver())
        while data := await src.read(1 << 16):
            queue.put_nowait((time.monotonic() + self.latency_s, data))
        queue.put_nowait((0.0, b""))
        await sender

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while data := await src.read(1 << 16):
            dst.write(data)
            await dst.drain()
        dst.close()


def start_s3() -> tuple[int, object]:
    """moto's S3 server on 127.0.0.1 (a free port) with the bench bucket; returns (port, handle)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.environ.update(CREDENTIALS)
    handle = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    handle.start()
    _, port = handle.get_host_and_port()
    import s3fs

    s3fs.S3FileSystem(endpoint_url=f"http://127.0.0.1:{port}", skip_instance_cache=True).mkdir(BUCKET)
    return port, handle


def run(where: str, k: int, budget_mb: int, args: argparse.Namespace, deltas: Path, endpoint: str | None,
        sampler: CpuSampler) -> dict:
    """One worker of bench/store.py with its store in `where` (a directory, or an s3:// prefix)."""
    cmd = [sys.executable, str(STORE_BENCH), "--worker", "--backend", "zarr", "--k", str(k), "--n", str(args.n),
           "--budget-mb", str(budget_mb), "--step-ms", str(args.step_ms), "--epochs", str(args.epochs),
           "--steps", str(args.steps), "--deltas", str(deltas), "--dir", where, "--codec", DEFAULT_CODES_CODEC]
    env = dict(os.environ, **CREDENTIALS)
    if endpoint is not None:
        env["MEMLOSS_STORE_OPTIONS"] = json.dumps({"endpoint_url": endpoint})
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"worker failed: {res.stderr[-3000:]}")
    row = json.loads(res.stdout.strip().splitlines()[-1])
    time.sleep(0.3)  # one more CPU sample past the worker's last step
    return with_server_cpu(row, sampler)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--k", type=int, nargs="+", default=[1, 4])
    p.add_argument("--budgets", nargs="+", default=["64", "resident"], help="MB, or 'resident'")
    p.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 5.0, 20.0])
    p.add_argument("--m", type=int, default=512, help="real perturbations computed (tiled to n)")
    p.add_argument("--step-ms", type=float, default=30.0)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--steps", type=int, default=0, help="simulated steps per epoch (0: all)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, load {os.getloadavg()}")
    port, handle = start_s3()
    sampler = CpuSampler()
    proxies = {ms: LatencyProxy(port, ms / 1000) for ms in args.latency_ms}
    rows, labels = [], []
    with tempfile.TemporaryDirectory() as tmp:
        deltas = Path(tmp) / "deltas.npz"
        print("perturbations:", json.dumps(real_perturbations(args.m, deltas)), flush=True)
        for k in args.k:
            for budget in args.budgets:
                mb = resident_budget_mb(args.n, k) if budget == "resident" else int(budget)
                with tempfile.TemporaryDirectory(dir=tmp) as local:
                    rows.append(run(local, k, mb, args, deltas, None, sampler))
                labels.append("local disk")
                for ms, proxy in proxies.items():
                    prefix = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"
                    rows.append(run(prefix, k, mb, args, deltas, f"http://127.0.0.1:{proxy.port}", sampler))
                    labels.append(f"S3, +{ms:g} ms/request")
                print(json.dumps(rows[-1]), flush=True)
    handle.stop()
    lines = table(rows).splitlines()
    server = [f" {r['server_cpu_ms_per_step']} ({r['server_cores']}) |" for r in rows]
    print("\n".join([f"| where {lines[0]} S3 server CPU ms/step (cores) |", f"|---{lines[1]}---|"]
                    + [f"| {lab} {line}{srv}" for lab, line, srv in zip(labels, lines[2:], server)]))


if __name__ == "__main__":
    main()
