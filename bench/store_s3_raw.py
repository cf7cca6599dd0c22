"""Benchmark: the raw throughput of bench/store_s3.py's S3 server (moto behind its latency proxy) for obstore alone,
without memloss: 64 objects of 512 KB (a chunk of CIFAR codes) put, then read, 16 requests in flight. It bounds what
the store can read from that server (prints figures; not a test).

Usage: python bench/store_s3_raw.py [--latency-ms 0 20] [--objects 64] [--in-flight 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import obstore
from obstore.store import S3Store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_s3 import BUCKET, CREDENTIALS, LatencyProxy, start_s3  # noqa: E402

CHUNK_BYTES = 512 * 1024


async def _all(store: S3Store, keys: list[str], in_flight: int, data: bytes | None) -> None:
    """Puts `data` under every key (data given) or reads every key whole, `in_flight` requests at a time."""
    gate = asyncio.Semaphore(in_flight)

    async def one(key: str) -> None:
        async with gate:
            if data is not None:
                await obstore.put_async(store, key, data)
            else:
                await (await obstore.get_async(store, key)).bytes_async()

    await asyncio.gather(*(one(key) for key in keys))


def measure(port: int, latency_ms: float, args: argparse.Namespace) -> dict[str, Any]:
    proxy = LatencyProxy(port, latency_ms / 1000)
    store = S3Store(BUCKET, prefix=f"raw-{latency_ms:g}", client_options={"allow_http": True},
                    config={"endpoint": f"http://127.0.0.1:{proxy.port}", "region": "us-east-1",
                            "access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            "secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"]})
    keys, data = [f"k{i}" for i in range(args.objects)], os.urandom(CHUNK_BYTES)
    out: dict[str, Any] = {"latency_ms": latency_ms, "load_avg": os.getloadavg()[0]}
    for name, payload in (("put", data), ("get", None)):
        start = time.perf_counter()
        asyncio.run(_all(store, keys, args.in_flight, payload))
        seconds = time.perf_counter() - start
        out[f"{name}_per_s"] = round(args.objects / seconds, 1)
        out[f"{name}_MBps"] = round(args.objects * CHUNK_BYTES / 1e6 / seconds, 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 20.0])
    p.add_argument("--objects", type=int, default=64)
    p.add_argument("--in-flight", type=int, default=16)
    args = p.parse_args()
    port, handle = start_s3()
    for latency_ms in args.latency_ms:
        print(measure(port, latency_ms, args), flush=True)
    handle.stop()


if __name__ == "__main__":
    main()
