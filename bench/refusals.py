"""How long `memloss` takes to refuse a bad input that needs no data, as a user sees it: each early case of the
bad-input catalogue (tests/bad_inputs.py, `early=True`) run as a fresh `python -m memloss.cli.app` process, timed
from the start of the process to its exit; and how long a valid start takes to print its first line (what is being
prepared). Target (issue 22): every refusal under 1 s, the first line under 2 s.

Usage: .venv/bin/python bench/refusals.py [--repeat N]   (prints a table; the machine's load average first)
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from bad_inputs import CASES, Case  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=str(ROOT))
COMMAND = [sys.executable, "-m", "memloss.cli.app"]


def world(root: Path) -> dict[str, str]:
    """The catalogue's names that early cases use, without a trained run (they never read one)."""
    (root / "text.txt").write_text("not a model, not a store\n")
    (root / "empty").mkdir()
    (root / "data").mkdir()
    return {"data": str(root / "data"), "txt": str(root / "text.txt"), "dir": str(root / "empty"),
            "proc": "/proc/memloss-cannot-write-here", "root": str(root)}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_case(case: Case, names: dict[str, str], root: Path) -> tuple[float, float, int, str]:
    """(seconds from process start to exit, CPU seconds of the process, exit code, first stderr line)."""
    case_dir = Path(tempfile.mkdtemp(dir=root))
    local = {**names, "case": str(case_dir), "new": str(case_dir / "new-run")}
    if case.setup is not None:
        local.update(case.setup(case_dir, names))
    argv = [a.format(**local) for a in case.argv]
    cpu, t0 = _cpu(), time.perf_counter()
    done = subprocess.run([*COMMAND, *argv], capture_output=True, text=True, env=ENV, cwd=case_dir, timeout=120)
    seconds, cpu = time.perf_counter() - t0, _cpu() - cpu
    first = next((line for line in done.stderr.splitlines() if line.strip()), "")
    return seconds, cpu, done.returncode, first


def first_line(root: Path) -> float:
    """Seconds until a valid `memloss train` prints its first line (the process is then stopped)."""
    out = root / "start"
    argv = [*COMMAND, "train", "--dataset", "synthetic", "--n", "256", "--out", str(out), "--data-dir",
            str(root / "data")]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        seconds = time.perf_counter() - t0
    finally:
        proc.kill()
        proc.wait()
    if not line.startswith("preparing"):
        raise SystemExit(f"unexpected first line: {line!r}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per case (the table shows the median)")
    args = parser.parse_args()
    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())} ({os.cpu_count()} CPUs)")
    early = [c for c in CASES if c.early]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = world(root)
        for case in early:
            runs = [run_case(case, names, root) for _ in range(args.repeat)]
            seconds, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
            code, line = runs[-1][2], runs[-1][3]
            ok = code == 2 and line.startswith("error: ") and case.expect.format(**names) in line
            rows.append((case.id, seconds, cpu, code, ok))
        starts = [first_line(root) for _ in range(args.repeat)]
    width = max(len(r[0]) for r in rows)
    print(f"| {'case':<{width}} | wall s | CPU s | exit | as expected |")
    print(f"|{'-' * (width + 2)}|-------:|------:|-----:|-------------|")
    for case_id, seconds, cpu, code, ok in rows:
        print(f"| {case_id:<{width}} | {seconds:6.3f} | {cpu:5.3f} | {code:4d} | {'yes' if ok else 'NO':<11} |")
    times, cpus = [r[1] for r in rows], [r[2] for r in rows]
    over = [r[0] for r in rows if r[1] >= 1.0]
    print(f"{len(rows)} refusals: wall median {statistics.median(times):.3f} s, max {max(times):.3f} s; CPU median "
          f"{statistics.median(cpus):.3f} s, max {max(cpus):.3f} s; {len(over)} at or over 1 s wall"
          f"{': ' + ', '.join(over) if over else ''}")
    print(f"first line of a valid start: median {statistics.median(starts):.3f} s over {len(starts)} start(s)")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if not all(r[4] for r in rows):
        raise SystemExit("some cases did not end as the catalogue expects")


if __name__ == "__main__":
    main()
