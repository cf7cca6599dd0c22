"""`memloss demo` beside CPU-bound load: starts `--load` busy processes (`python -c "while True: pass"`), runs the
demo (TRADES, then MemLoss+TRADES, in one process), kills the busy processes and prints both runs' training and
evaluation times from demo.json, their ratio and the load averages. Prints figures; not a test.

Why: an evaluation must take as long after another run in the same process as in a fresh one. Before the fix in
trainer/common/openmp.py, on a loaded 2-core box the demo's first evaluation took 2 779 s and its second 161 s.

Usage: python bench/demo_load.py [--load 2] [--out DIR] [-- extra `memloss demo` options, e.g. --quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

BUSY = "while True: pass"


def _loads() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def run(load: int, out: Path, extra: list[str]) -> dict:
    """The demo's demo.json, run beside `load` busy processes (killed afterwards, whatever happens)."""
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(load)]
    try:
        cmd = [sys.executable, "-m", "memloss.cli.app", "demo", "--out", str(out), *extra]
        print("running:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    return json.loads((out / "demo.json").read_text())


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--load", type=int, default=2, help="busy processes beside the demo")
    ap.add_argument("--out", type=Path, default=None, help="demo directory (default: a new temporary one)")
    ap.add_argument("extra", nargs="*", help="options passed on to `memloss demo` (after --)")
    a = ap.parse_args(argv)
    out = a.out or Path(tempfile.mkdtemp(prefix="memloss-demo-load-")) / "demo"
    print(f"{os.cpu_count()} CPUs; load average before: {_loads()}; {a.load} busy processes beside", flush=True)
    t0 = time.perf_counter()
    rows = run(a.load, out, a.extra)["rows"]
    wall = time.perf_counter() - t0
    print(f"load average after: {_loads()}; demo wall time {wall:.0f} s; demo directory {out}")
    for row in rows:
        print(f"{row['run']:<16} train {row['train s']:8.1f} s   evaluation {row['eval s']:8.1f} s")
    first, second = (row["eval s"] for row in rows[:2])
    print(f"evaluation times, larger / smaller: {max(first, second) / min(first, second):.2f}×")


if __name__ == "__main__":
    main()
