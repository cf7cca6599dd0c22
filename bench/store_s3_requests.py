"""Benchmark: the S3 requests of a resident store's epoch start and commit, and which of them wait on each other
(prints figures; not a test).

The server (moto, behind bench/store_s3.py's latency proxy: +L ms per request) logs every request it receives; a
worker process (this file with --worker) runs a resident store as bench/store_worker.py does (fill, a warm-up
epoch, then training-like epochs: one sleep of --step-ms per batch) and marks, with wall-clock times, the phases:
`begin_epoch` and the first read (training thread), the state save `begin_epoch` queues (writer thread),
`commit_epoch(wait=False)` (training thread) and its landing (writer thread: the last chunks, the manifest, the
commit record). The phases are run one after the other (each waits for the previous one's requests to land), so
that the server's requests can be counted per phase; in training the landings overlap the next epoch. Last, the
store is opened again (a resume): the lease and checks of opening, the first epoch's check of the K read slots
against their manifests, and its load of them.

For each phase: its seconds, the requests the server received meanwhile by method, and "rounds", the longest
chain of requests each received at least 0.75 L after the previous one was answered (a lower bound on the round
trips the phase waited for one after the other; with L = 0 it also counts requests the server merely served in turn). The worker also lists the calls memloss made on each thread (its own I/O helpers,
the group attribute put): which request waited for which.

Usage: python bench/store_s3_requests.py [--n 3000] [--k 4] [--latency-ms 20] [--step-ms 30] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store import resident_budget_mb  # noqa: E402
from store_s3 import BUCKET, CREDENTIALS, LatencyProxy  # noqa: E402


class ServerLog:
    """moto's server on 127.0.0.1 with every request logged: (received, answered, method, path), wall-clock s."""

    def __init__(self) -> None:
        import logging

        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        os.environ.update(CREDENTIALS)
        self.requests: list[tuple[float, float, str, str]] = []
        app = DomainDispatcherApplication(create_backend_app)

        def logged(environ: dict[str, Any], start_response: Any) -> Any:
            t0 = time.time()
            body = list(app(environ, start_response))
            self.requests.append((t0, time.time(), environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")))
            return body

        self._server = make_server("127.0.0.1", 0, logged, True, request_handler=MotoRequestHandler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        import s3fs

        s3fs.S3FileSystem(endpoint_url=f"http://127.0.0.1:{self.port}", skip_instance_cache=True).mkdir(BUCKET)


def rounds(requests: list[tuple[float, float, str, str]], gap_s: float) -> int:
    """The longest chain of requests each received at least `gap_s` after the previous one was answered (greedy by
    answer time). A request sent only once another was answered reaches the server a proxy delay after it; requests
    sent together but served one after the other by the server (moto serves one at a time) are not a chain."""
    count, free_at = 0, float("-inf")
    for t0, t1, _, _ in sorted(requests, key=lambda r: r[1]):
        if t0 >= free_at:
            count, free_at = count + 1, t1 + gap_s
    return count


def summarize(phases: list[dict[str, Any]], log: list[tuple[float, float, str, str]], latency_s: float) -> None:
    """Prints one line per phase: seconds, requests by method, rounds; then the memloss calls of each phase."""
    print("| epoch | phase | s | requests (by method) | rounds |\n|---|---|---|---|---|")
    for ph in phases:
        inside = [r for r in log if ph["t0"] <= r[0] <= ph["t1"]]
        methods = ", ".join(f"{m} {c}" for m, c in sorted(Counter(r[2] for r in inside).items()))
        print(f"| {ph['epoch']} | {ph['name']} | {ph['t1'] - ph['t0']:.3f} | {len(inside)}: {methods or '-'} | "
              f"{rounds(inside, 0.75 * latency_s)} |")
    for ph in phases:
        if ph["calls"]:
            print(f"\nepoch {ph['epoch']}, {ph['name']}:")
            for t0, t1, thread, what in ph["calls"]:
                print(f"  +{(t0 - ph['t0']) * 1000:6.0f} ms {(t1 - t0) * 1000:5.0f} ms  {thread:<16} {what}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--latency-ms", type=float, default=20.0)
    p.add_argument("--step-ms", type=float, default=30.0)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        from store_s3_trace import run_worker

        print(json.dumps(run_worker(args.url, args.n, args.k, resident_budget_mb(args.n, args.k), args.step_ms,
                                    args.epochs)))
        return
    print(f"load {os.getloadavg()}")
    server = ServerLog()
    proxy = LatencyProxy(server.port, args.latency_ms / 1000)
    url = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}/mem.zarr"
    env = dict(os.environ, **CREDENTIALS, MEMLOSS_STORE_OPTIONS=json.dumps(
        {"endpoint_url": f"http://127.0.0.1:{proxy.port}"}))
    cmd = [sys.executable, __file__, "--worker", "--url", url, "--n", str(args.n), "--k", str(args.k),
           "--step-ms", str(args.step_ms), "--epochs", str(args.epochs)]
    with tempfile.TemporaryDirectory():
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"worker failed: {res.stderr[-3000:]}")
    summarize(json.loads(res.stdout.strip().splitlines()[-1]), server.requests, args.latency_ms / 1000)


if __name__ == "__main__":
    main()
