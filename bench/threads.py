"""One step on 1 and on 2 torch threads, with OpenMP's waiting policy as memloss sets it (OMP_WAIT_POLICY=PASSIVE,
trainer/common/openmp.py) and as libgomp has it when the variable is unset (spin up to GOMP_SPINCOUNT = 300 000
iterations before sleeping), optionally beside busy processes this script starts and kills. Prints figures; not a
test.

The step is what `--threads auto` times and what training and every attack repeat: forward and backward of the
cross-entropy with respect to the input and every parameter (`model_probe`), on the digits `small_cnn` with a
batch of 128 (the demo's model) or, with `--model resnet18`, on a synthetic 3×32×32 batch of 32. Each wait policy
runs in its own child process (libgomp reads the variable once, when torch loads it); the children run in turns
(`--rounds`), each timing 1 and 2 threads alternately (`--steps` per count and turn), and every figure is the median
over the turns, so other jobs' load hits both policies and both counts alike. Each child also reports its process
CPU time per wall second at 2 threads: 2.0 means both threads ran flat out, spinning included.

Usage: python bench/threads.py [--load 2] [--rounds 5] [--steps 20] [--model small_cnn|resnet18]
       [--spincounts 1000,10000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

HERE = Path(__file__).resolve()
# libgomp's own default when OMP_WAIT_POLICY is unset (its env.c): spin 300 000 times, then sleep.
POLICIES = {"spin (libgomp default)": {"GOMP_SPINCOUNT": "300000"}, "passive (memloss)": {}}
BUSY = "while True: pass"


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    return {**env, **extra}


def child(a: argparse.Namespace) -> dict[str, Any]:
    """Times `a.steps` steps at 1 and at 2 threads, alternately; per count: median ms of the step."""
    import memloss  # noqa: F401  (first: sets the wait policy before torch loads libgomp)
    import torch

    from memloss.trainer.common.threads import model_probe
    from memloss.trainer.data.registry import dataset_info
    from memloss.trainer.data.sources import load_tensors
    from memloss.trainer.models.registry import build_model

    dataset, n = ("digits", 128) if a.model == "small_cnn" else ("synthetic", 32)
    x, y = load_tensors(dataset, "test", n=n)
    probe = model_probe(build_model(a.model, dataset_info(dataset)), x.float() / 255, y)
    times: dict[int, list[float]] = {1: [], 2: []}
    cpu_per_wall = []
    for n_threads in (1, 2):  # warm-up of each count (the thread team is created on first use)
        torch.set_num_threads(n_threads)
        probe()
    for _ in range(a.steps):
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            t0, c0 = time.perf_counter(), time.process_time()
            probe()
            wall = time.perf_counter() - t0
            times[n_threads].append(wall)
            if n_threads == 2:
                cpu_per_wall.append((time.process_time() - c0) / wall)
    return {"ms": {str(k): 1000 * statistics.median(v) for k, v in times.items()},
            "cpu_per_wall_2": statistics.median(cpu_per_wall),
            "wait_policy": os.environ.get("OMP_WAIT_POLICY"), "spincount": os.environ.get("GOMP_SPINCOUNT")}


def _run_child(a: argparse.Namespace, extra: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE), "--child", "--steps", str(a.steps), "--model", a.model]
    out = subprocess.run(cmd, env=_child_env(extra), capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _busy(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(count)]


def policies(spincounts: str) -> dict[str, dict[str, str]]:
    """The two policies compared, plus one per extra spin count asked for (e.g. '1000,10000')."""
    extra = {f"spin {n}": {"GOMP_SPINCOUNT": n} for n in filter(None, spincounts.split(","))}
    return {**POLICIES, **extra}


def measure(a: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """Every policy's child `a.rounds` times, in turns, beside `a.load` busy processes."""
    chosen = policies(a.spincounts)
    results: dict[str, list[dict[str, Any]]] = {p: [] for p in chosen}
    busy = _busy(a.load)
    try:
        for _ in range(a.rounds):
            for policy, extra in chosen.items():
                results[policy].append(_run_child(a, extra))
    finally:
        for p in busy:
            p.kill()
            p.wait()
    return results


def report(results: dict[str, list[dict[str, Any]]]) -> None:
    print(f"{'OpenMP waits':<24} {'1 thread':>10} {'2 threads':>10} {'2 / 1':>7} {'CPU s per s at 2':>17}")
    for policy, runs in results.items():
        one = statistics.median(r["ms"]["1"] for r in runs)
        two = statistics.median(r["ms"]["2"] for r in runs)
        ratio = statistics.median(r["ms"]["2"] / r["ms"]["1"] for r in runs)
        cpu = statistics.median(r["cpu_per_wall_2"] for r in runs)
        print(f"{policy:<24} {one:>8.1f}ms {two:>8.1f}ms {ratio:>6.2f}× {cpu:>17.2f}")
    print("(medians over turns of per-turn medians; 2 / 1 is the median of the per-turn ratios)")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--load", type=int, default=0, help="busy processes (python -c 'while True: pass') beside it")
    ap.add_argument("--rounds", type=int, default=5, help="turns of each policy's child process")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per thread count in each turn")
    ap.add_argument("--spincounts", default="", help="extra GOMP_SPINCOUNT values to compare, e.g. 1000,10000")
    ap.add_argument("--model", choices=("small_cnn", "resnet18"), default="small_cnn")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a)))
        return
    print(f"{os.cpu_count()} CPUs; load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"{a.load} busy processes beside; model {a.model}")
    results = measure(a)
    report(results)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
