"""The GPU check: every figure a lent GPU machine should give, in one call, within 8 minutes, written to
OUTDIR/gpu_check.json and OUTDIR/gpu_check.md, with every section's output in OUTDIR/gpu_check.log (prints the
Markdown too; not a test).

Sections (bench/gpu_check_sections.py): the environment; the CUDA tests (`pytest -m gpu`); steps/s of TRADES and
MemLoss+TRADES (K = 1, 4, and 64 with m = 4, separate and fused forwards) on ResNet-18 at batch 128 and WRN-28-10 at
batch 512, in fp32 and bf16; a ResNet-18 TRADES epoch on CIFAR-shaped synthetic data; the Zarr store's wait beside
real steps at K = 16 with per-window slot draws, on all the machine's cores; torchrun with one process against the
plain command; AutoAttack on 1,000 points. Each section runs in a child process under its own time cap, so a section
that fails, hangs or crashes is recorded as failed (with its error) and the others still run. A section that cannot
run in this build (e.g. fp32 steps without a --precision option) is recorded as "n/a" with the reason.

Usage: python bench/gpu_check.py OUTDIR [--device cuda|cpu] [--smoke] [--only NAME,NAME] [--cap-scale X]
  --smoke: tiny sizes (small_cnn, a few steps) so the whole check runs in CI-sized time on the CPU.
Normally started through bench/gpu_check.sh, which first installs the carried wheels (scripts/device_kit.sh).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check_sections import SECTIONS, Context, NotApplicable, SectionFailed  # noqa: E402

STATUSES = ("ok", "failed", "n/a")


def _child(name: str, ctx: Context, result: Path) -> int:
    """Runs one section in this (child) process and writes {"status", "figures", "error"/"reason"} to `result`."""
    section = {s.name: s for s in SECTIONS}[name]
    if ctx.smoke:
        import torch

        # One torch thread: on a shared 2-core box two OpenMP threads per process spin against every other job.
        torch.set_num_threads(1)
    try:
        out: dict[str, Any] = {"status": "ok", "figures": section.run(ctx)}
    except NotApplicable as exc:
        out = {"status": "n/a", "reason": str(exc)}
    except SectionFailed as exc:
        out = {"status": "failed", "error": str(exc), "figures": exc.figures}
    except BaseException as exc:  # noqa: BLE001  (SystemExit from a bench included: the section failed)
        out = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
               "traceback": traceback.format_exc()[-4000:]}
    result.write_text(json.dumps(out, default=float))
    return 0


def _run_section(name: str, cap: int, ctx: Context) -> dict[str, Any]:
    """Starts the child for one section, kills it at `cap` seconds, and returns its record with its wall time."""
    result = ctx.work / f"{name}.result.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, str(ctx.work), "--child", name, "--device", ctx.device,
           "--work", str(ctx.work), *(["--smoke"] if ctx.smoke else [])]
    log = ctx.work / f"{name}.log"
    t0 = time.perf_counter()
    with open(log, "wb") as f:
        rc = _forked(name, ctx, result, f, cap) if ctx.device == "cpu" else _spawned(cmd, f, cap)
    if rc is None:
        record = {"status": "failed", "error": f"timed out: stopped at its cap of {cap} s"}
    elif result.exists():
        record = json.loads(result.read_text())
    else:
        tail = log.read_text(errors="replace").strip()[-1500:]
        record = {"status": "failed", "error": f"the section's process exited with status {rc} and no result: {tail}"}
    record["seconds"] = time.perf_counter() - t0
    record["cap_s"] = cap
    return record


def _spawned(cmd: list[str], log: IO[bytes], cap: int) -> int | None:
    """Runs the section in a fresh interpreter (CUDA: nothing initialized before); its exit status, None at the cap.
    A session of its own, so that a timeout stops the section's whole process group (torchrun's workers, pytest's
    children), and output to a file, so that no pipe held by a grandchild can hang the driver."""
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        rc: int | None = proc.wait(timeout=cap)
    except subprocess.TimeoutExpired:
        rc = None
    _kill_group(proc.pid)
    proc.wait()
    return rc


def _forked(name: str, ctx: Context, result: Path, log: IO[bytes], cap: int) -> int | None:
    """On the CPU: runs the section in a fork of this process, which has imported torch and memloss once already
    (a fresh interpreter per section would spend most of a smoke run importing). Exit status, None at the cap."""
    pid = os.fork()
    if pid == 0:  # the child: its own process group, output to the log, never returns
        os.setsid()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        code = 1
        try:
            code = _child(name, ctx, result)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + cap
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            _kill_group(pid)
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    _kill_group(pid)
    os.waitpid(pid, 0)
    return None


def _preload() -> None:
    """Imports what the sections use, once, before forking them (CPU runs): torch, memloss's trainer, the benches.
    Only imports: no torch op runs here, so no thread pool exists yet that a fork could break."""
    import torch  # noqa: F401

    import ddp  # noqa: F401
    import train_step  # noqa: F401

    import memloss.trainer.evaluation.run  # noqa: F401
    import memloss.trainer.training.fit  # noqa: F401


def _kill_group(pgid: int) -> None:
    """Kills whatever is left of the section's process group `pgid` (nothing, when it ended cleanly)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    """The Markdown summary: one heading per section with its status, figures and rows (or its error/reason)."""
    lines = [f"# GPU check ({'smoke, ' if report['smoke'] else ''}device {report['device']})", "",
             f"Started {report['started']} UTC; {report['wall_s']:.0f} s in all. Command: `{report['command']}`", ""]
    titles = {s.name: s.title for s in SECTIONS}
    for name, rec in report["sections"].items():
        lines += [f"## {titles[name]}", "", f"status: **{rec['status']}** ({rec['seconds']:.1f} s of a "
                  f"{rec['cap_s']} s cap)", ""]
        if rec["status"] == "n/a":
            lines += [f"n/a: {rec['reason']}", ""]
        if rec["status"] == "failed":
            lines += ["error: `" + rec["error"].replace("`", "'").replace("\n", " ")[:1500] + "`", ""]
        figures = dict(rec.get("figures", {}))
        rows = figures.pop("rows", None)
        if figures:
            lines += ["| figure | value |", "|---|---|", *(f"| {k} | {_cell(v)} |" for k, v in figures.items()), ""]
        if rows:
            keys = list(rows[0])
            lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys),
                      *("| " + " | ".join(_cell(r[k]) for k in keys) + " |" for r in rows), ""]
    return "\n".join(lines)


def check_report(report: dict[str, Any]) -> list[str]:
    """Problems with a report: a section missing, an unknown status, a failure without its error, an n/a without
    its reason, or a figure that is neither a finite number nor a string. Empty when the report is whole."""
    problems = [f"section {s.name} missing" for s in SECTIONS if s.name not in report.get("sections", {})]
    for name, rec in report.get("sections", {}).items():
        if rec.get("status") not in STATUSES:
            problems.append(f"{name}: status {rec.get('status')!r}")
        if rec.get("status") == "failed" and not rec.get("error"):
            problems.append(f"{name}: failed without an error")
        if rec.get("status") == "n/a" and not rec.get("reason"):
            problems.append(f"{name}: n/a without a reason")
        figures = rec.get("figures", {})
        values = [v for k, v in figures.items() if k != "rows"]
        values += [v for r in figures.get("rows", []) for v in r.values()]
        problems += [f"{name}: figure {v!r} is not a finite number or a text" for v in values
                     if not (isinstance(v, str) or (isinstance(v, (int, float)) and math.isfinite(v)))]
        if rec.get("status") == "ok" and not figures:
            problems.append(f"{name}: ok without figures")
    return problems


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("outdir", type=Path)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for CI on the CPU")
    p.add_argument("--only", default="", help="comma-separated section names (default: all)")
    p.add_argument("--cap-scale", type=float, default=1.0,
                   help="multiply every section's time cap (e.g. on a loaded shared machine; the test suite uses 10)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        sys.exit(_child(a.child, Context(a.device, a.smoke, a.work), a.work / f"{a.child}.result.json"))
    known = [s.name for s in SECTIONS]
    only = [n for n in a.only.split(",") if n]
    if unknown := sorted(set(only) - set(known)):
        sys.exit(f"gpu_check: unknown section(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    a.outdir.mkdir(parents=True, exist_ok=True)
    # The sections' scratch (datasets, runs, stores) lives outside OUTDIR, which keeps only the three results.
    work = Path(tempfile.mkdtemp(prefix="memloss-gpu-check-"))
    ctx = Context(a.device, a.smoke, work)
    if a.device == "cpu":
        _preload()
    (a.outdir / "gpu_check.log").write_text("")
    t0, started = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    report: dict[str, Any] = {"device": a.device, "smoke": a.smoke, "started": started,
                              "command": " ".join(["bench/gpu_check.sh", *(argv or sys.argv[1:])]), "sections": {}}
    for s in SECTIONS:
        if only and s.name not in only:
            report["sections"][s.name] = {"status": "n/a", "reason": "not selected (--only)", "seconds": 0.0,
                                          "cap_s": 0}
            continue
        cap = max(1, round((s.smoke_cap_s if a.smoke else s.cap_s) * a.cap_scale))
        print(f"gpu_check: {s.name} (cap {cap} s) ...", flush=True)
        rec = _run_section(s.name, cap, ctx)
        report["sections"][s.name] = rec
        log = (work / f"{s.name}.log").read_text(errors="replace") if (work / f"{s.name}.log").exists() else ""
        with open(a.outdir / "gpu_check.log", "a") as f:
            f.write(f"===== {s.name}: {rec['status']} =====\n{log[-20000:]}\n")
        print(f"gpu_check: {s.name}: {rec['status']} in {rec['seconds']:.1f} s"
              + (f" — {rec['error'][:300]}" if rec["status"] == "failed" else ""), flush=True)
    report["wall_s"] = time.perf_counter() - t0
    shutil.rmtree(work, ignore_errors=True)
    (a.outdir / "gpu_check.json").write_text(json.dumps(report, indent=1, default=float))
    (a.outdir / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
