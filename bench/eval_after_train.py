"""Does an evaluation take longer after a training run in the same process than in a fresh process? Prints figures;
not a test.

Each round runs two child processes one after the other: "after training" trains the digits TRADES run of the demo
(K = 0 with the forgetting monitor, so a store, its threads and the FFCV loader all run first) for `--epochs` and
then evaluates its best checkpoint; "fresh" evaluates the same checkpoint in a new interpreter. Both evaluate with
the same attacks, points, seed and `--threads` (default auto, as the demo). Figures: each child's evaluation seconds
(the `evaluate` call alone, its modules imported before), the threads it used, and the median over rounds of the per-round ratio. `--load N`
starts N busy processes (`python -c "while True: pass"`) for the duration and kills them after; `--spin` gives the
children libgomp's own waiting (GOMP_SPINCOUNT=300000, its default when OMP_WAIT_POLICY is unset), as before
trainer/common/openmp.py.

Usage: python bench/eval_after_train.py [--rounds 2] [--epochs 2] [--n 48] [--attacks aa] [--threads auto]
       [--load 0] [--spin]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

HERE = Path(__file__).resolve()
BUSY = "while True: pass"


def _evaluate(checkpoint: Path, a: argparse.Namespace) -> dict[str, Any]:
    from memloss.trainer.evaluation.results import EvalConfig
    from memloss.trainer.evaluation.run import evaluate

    import pyautoattack  # noqa: F401  (imported before the clock starts in both children)

    cfg = EvalConfig(checkpoint, attacks=tuple(a.attacks.split(",")), n=a.n, seed=0, device="cpu",
                     threads=a.threads)
    t0 = time.perf_counter()
    result = evaluate(cfg)
    return {"eval_s": time.perf_counter() - t0, "threads": result.threads.threads if result.threads else None,
            "robust": [int(r.robust.sum()) for r in result.attacks]}


def child(a: argparse.Namespace) -> dict[str, Any]:
    import memloss  # noqa: F401  (first: the OpenMP wait policy is set before torch loads)

    run_dir = Path(a.run_dir)
    if a.child == "after":
        from memloss.trainer.config.defaults import resolve_config
        from memloss.trainer.training.fit import fit

        cfg = resolve_config({"dataset": "digits", "method": "trades", "k": 0, "epochs": a.epochs, "seed": 0,
                              "track_forgetting": True, "out": str(run_dir)})
        fit(cfg, threads=a.threads, quiet=True)
    return {**_evaluate(run_dir / "best.safetensors", a), "wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "spincount": os.environ.get("GOMP_SPINCOUNT")}


def _run_child(a: argparse.Namespace, which: str, run_dir: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    if a.spin:
        env["GOMP_SPINCOUNT"] = "300000"
    cmd = [sys.executable, str(HERE), "--child", which, "--run-dir", str(run_dir), "--epochs", str(a.epochs),
           "--n", str(a.n), "--attacks", a.attacks, "--threads", a.threads]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(a: argparse.Namespace) -> list[dict[str, dict[str, Any]]]:
    rounds = []
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(a.load)]
    try:
        with tempfile.TemporaryDirectory(prefix="memloss-eval-after-") as tmp:
            for r in range(a.rounds):
                run_dir = Path(tmp) / f"run{r}"
                after = _run_child(a, "after", run_dir)
                fresh = _run_child(a, "fresh", run_dir)
                rounds.append({"after training": after, "fresh process": fresh})
                print(f"round {r + 1}: after training {after['eval_s']:.1f} s ({after['threads']} threads), "
                      f"fresh process {fresh['eval_s']:.1f} s ({fresh['threads']} threads); robust "
                      f"{after['robust']} vs {fresh['robust']}; load {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    return rounds


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2, help="training epochs before the in-process evaluation")
    ap.add_argument("--n", type=int, default=48, help="test points evaluated")
    ap.add_argument("--attacks", default="aa")
    ap.add_argument("--threads", default="auto", help="--threads of training and evaluation")
    ap.add_argument("--load", type=int, default=0, help="busy processes beside the children")
    ap.add_argument("--spin", action="store_true", help="libgomp's default spinning waits (the state before)")
    ap.add_argument("--child", choices=("after", "fresh"), help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a)))
        return
    print(f"{os.cpu_count()} CPUs; load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"{a.load} busy processes; waits: {'spin (GOMP_SPINCOUNT=300000)' if a.spin else 'passive (memloss)'}; "
          f"attacks {a.attacks} on {a.n} points, --threads {a.threads}", flush=True)
    rounds = measure(a)
    ratio = statistics.median(r["after training"]["eval_s"] / r["fresh process"]["eval_s"] for r in rounds)
    print(f"evaluation after training / in a fresh process: {ratio:.2f}× (median of {len(rounds)} rounds)")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
