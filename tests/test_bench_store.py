"""Smoke test of bench/store.py: one windowed and one resident configuration run end to end on a tiny store and
report consistent figures (not a timed test: the timings themselves are not checked)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

BENCH = Path(__file__).resolve().parents[1] / "bench" / "store.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_store", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_store_bench_runs_windowed_and_resident(tmp_path: Path) -> None:
    bench = _bench()
    rng = np.random.default_rng(0)
    deltas = tmp_path / "deltas.npz"
    np.savez(deltas, codes=rng.integers(1, 256, (64, 3, 32, 32), dtype=np.uint8),
             scale=np.full(64, 8 / 255, np.float32))
    n, k = 1500, 2
    rows = []
    for budget in (16, bench.resident_budget_mb(n, k)):
        cmd = [sys.executable, str(BENCH), "--worker", "--k", str(k), "--n", str(n), "--budget-mb", str(budget),
               "--step-ms", "1", "--epochs", "2", "--steps", "5", "--deltas", str(deltas), "--dir", str(tmp_path),
               "--codec", "zstd-1"]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    windowed, resident = rows
    assert not windowed["resident"] and windowed["window_blocks"] < math.ceil(n / windowed["block_size"])
    assert resident["resident"]
    for r in rows:
        assert r["steps"] == 2 * 5 and r["wait_pct_of_step"] >= 0 and r["cpu_ms_per_step"] > 0
        assert r["encode_s"] > 0 and r["warmup_rows_per_s_allK"] > 0 and r["peak_rss_mb"] >= r["store_rss_mb"]
    assert windowed["decode_s"] > 0 and resident["decode_s"] == 0  # a resident store never reads back its writes
    text = bench.table(rows)
    assert text.count("\n") == 3 and "resident" in text and "windowed" in text
    assert len(windowed["wait_s_by_epoch"]) == 2 and sum(windowed["wait_s_by_epoch"]) <= windowed["wait_s"] + 1e-3
    waits = bench.wait_table(rows)
    assert waits.count("\n") == 2 and " / ".join(map(str, windowed["wait_s_by_epoch"])) in waits  # the windowed row


def test_slot_check_bench_times_every_committed_slot(tmp_path: Path) -> None:
    cmd = [sys.executable, str(BENCH.parent / "slot_check.py"), "--k", "2", "--n", "300", "--repeats", "2",
           "--dir", str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["slots"] == 3 and len(out["wall_cpu_s"]) == 2 and all(w > 0 for w, _ in out["wall_cpu_s"])


def test_chunk_layout_bench_times_both_layouts(tmp_path: Path) -> None:
    """bench/chunk_layout.py (in its own process: it sets zarr's pipeline globally) prints a row per layout and
    read, twice, with the packed layout storing each row in fewer bytes than its raw 3092."""
    script = BENCH.parent / "chunk_layout.py"
    cmd = [sys.executable, str(script), "--k", "2", "--blocks", "2", "--repeats", "1", "--m", "64", "--dir",
           str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=BENCH.parent)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in res.stdout.splitlines() if line.startswith("| codes") or
            line.startswith("| one packed")]
    assert [r[0].strip() for r in rows] == ["codes + scale + info", "one packed array (decode only)",
                                            "one packed array (decode + split)"] * 2
    assert all(float(r[1].split("/")[0]) > 0 and float(r[2].split("/")[0]) >= 0 for r in rows)
    assert all(0 < int(r[3]) < 3072 + 20 for r in rows)
