"""bench/gpu_check.sh, the one-call GPU check, run here as CI can: `--device cpu --smoke` end to end (every section
present in the JSON and the Markdown, each ok with numeric figures, or n/a with its reason), and the report checks
and time caps of its driver on made-up sections."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _driver() -> ModuleType:
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("bench_gpu_check", ROOT / "bench" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _numbers(figures: dict) -> list:
    return [v for k, v in figures.items() if k != "rows"] + [v for r in figures.get("rows", []) for v in r.values()]


@pytest.mark.slow
def test_smoke_run_on_cpu_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "MEMLOSS_KIT": str(tmp_path / "no-kit")}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), str(out), "--device", "cpu", "--smoke",
                           "--cap-scale", "10"],  # the caps are for a quiet machine; CI's box is shared
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    md = (out / "gpu_check.md").read_text()
    gc = _driver()
    assert gc.check_report(report) == []
    assert list(report["sections"]) == [s.name for s in gc.SECTIONS]
    for s in gc.SECTIONS:
        rec = report["sections"][s.name]
        assert f"## {s.title}" in md
        # On the CPU the bf16 steps are n/a unless the build has a --precision option; everything else must run.
        allowed = ("ok", "n/a") if s.name.endswith("_bf16") else ("ok",)
        assert rec["status"] in allowed, (s.name, rec.get("error"), rec.get("traceback"))
        if rec["status"] == "ok":
            assert all(isinstance(v, str) or math.isfinite(v) for v in _numbers(rec["figures"])), s.name
        else:
            assert rec["reason"] and f"n/a: {rec['reason']}" in md
    steps = report["sections"]["steps_resnet18_fp32"]["figures"]["rows"]
    assert [r["configuration"] for r in steps][0] == "TRADES" and len(steps) == 6
    assert all(r["steps_per_s"] > 0 for r in steps)
    assert report["sections"]["cuda_tests"]["figures"]["failed"] == 0
    assert report["sections"]["store_wait"]["figures"]["windows"].startswith("1 of 5 blocks")


def test_report_check_names_what_is_missing_or_not_a_number() -> None:
    gc = _driver()
    good = {"sections": {s.name: {"status": "n/a", "reason": "not selected"} for s in gc.SECTIONS}}
    assert gc.check_report(good) == []
    bad = json.loads(json.dumps(good))
    del bad["sections"]["epoch"]
    bad["sections"]["env"] = {"status": "failed"}
    bad["sections"]["torchrun"] = {"status": "ok", "figures": {"plain_samples_per_s": float("nan")}}
    bad["sections"]["autoattack"] = {"status": "done", "figures": {"rows": [{"x": None}]}}
    problems = gc.check_report(bad)
    assert "section epoch missing" in problems
    assert "env: failed without an error" in problems
    assert any(p.startswith("torchrun: figure nan") for p in problems)
    assert any(p.startswith("autoattack: status") for p in problems)
    assert any(p.startswith("autoattack: figure None") for p in problems)


def test_a_section_past_its_cap_is_recorded_as_failed_and_the_rest_runs(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    gc = _driver()
    import time

    from gpu_check_sections import Section

    def slow(ctx: object) -> dict:
        time.sleep(30)
        return {"never": 1}

    def broken(ctx: object) -> dict:
        raise RuntimeError("boom")

    sections = (Section("env", "Slow", 1, 1, slow), Section("epoch", "Broken", 5, 5, broken),
                Section("torchrun", "Fine", 5, 5, lambda ctx: {"answer": 42.0}))
    monkeypatch.setattr(gc, "SECTIONS", sections)
    t0 = time.perf_counter()
    report = gc.main([str(tmp_path), "--device", "cpu", "--smoke"])
    assert time.perf_counter() - t0 < 20
    recs = report["sections"]
    assert recs["env"]["status"] == "failed" and "cap of 1 s" in recs["env"]["error"]
    assert recs["epoch"]["status"] == "failed" and recs["epoch"]["error"] == "RuntimeError: boom"
    assert recs["torchrun"] == {**recs["torchrun"], "status": "ok", "figures": {"answer": 42.0}}
    assert "status: **failed**" in (tmp_path / "gpu_check.md").read_text()
