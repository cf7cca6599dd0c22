"""Smoke tests of bench/train_step.py: its main function runs end to end in --quick mode and every configuration
gets finite positive timings (not a timed test: the figures themselves are not checked)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench" / "train_step.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_train_step", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def _check_rows(bench: ModuleType, rows: list, ks: tuple[int, ...]) -> None:
    assert [r.variant for r in rows] == bench.grid(ks)
    names = [r.variant.name for r in rows]
    assert len(set(names)) == len(names)
    for row in rows:
        assert len(row.round_ms) == 2
        assert all(math.isfinite(ms) and ms > 0 for ms in row.round_ms), row
        assert math.isfinite(row.ratio) and row.ratio > 0, row
        assert all(0 <= w < 1 for w in row.round_wait), row
        stored = row.variant.k > 0 or row.variant.monitor
        assert (row.wait > 0) == stored, row  # only configurations with a store spend time in it
        assert (row.monitor > 0) == row.variant.monitor, row  # and only those with the monitor in it
    assert rows[0].ratio == 1.0


def test_grid_covers_k_m_and_forwards() -> None:
    bench = _bench()
    names = [v.name for v in bench.grid((1, 4, 16, 64))]
    for name in ("TRADES", "TRADES + monitor", "K=1 all separate", "K=4 m=1 separate", "K=16 m=4 fused",
                 "K=64 all fused", "K=64 m=4 separate", "K=64 m=4 fused window", "K=64 m=4 fused window no-monitor"):
        assert name in names
    assert "K=1 all fused" not in names and "K=4 m=4 separate" not in names  # same as K=1 all / K=4 all


def test_quick_cpu_run_times_every_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench()
    rows = bench.main(["--quick", "--device", "cpu", "--batch-size", "8", "--steps", "2", "--warmup", "1",
                       "--ks", "1,2"])
    _check_rows(bench, rows, (1, 2))
    out = capsys.readouterr().out
    assert "K=2 m=1 fused window" in out and "TRADES + monitor" in out and "load average" in out


def test_too_small_n_is_refused() -> None:
    bench = _bench()
    with pytest.raises(bench.BenchError, match="--n 8 is too small"):
        bench.parse_config(["--device", "cpu", "--n", "8", "--batch-size", "8", "--steps", "2", "--warmup", "1"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA path (bf16, channels_last) needs a GPU")
def test_quick_cuda_run_times_every_configuration() -> None:
    bench = _bench()
    rows = bench.main(["--quick", "--device", "cuda", "--batch-size", "16", "--steps", "2", "--warmup", "1",
                       "--ks", "1"])
    _check_rows(bench, rows, (1,))


def test_ram_bench_child_reports_peak_rss(capsys: pytest.CaptureFixture[str]) -> None:
    """One child of bench/train_step_ram.py, in this process: a windowed Zarr store, m = 2 of K = 3 slots."""
    spec = importlib.util.spec_from_file_location("bench_train_step_ram", BENCH.parent / "train_step_ram.py")
    assert spec is not None and spec.loader is not None
    ram = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = ram
    spec.loader.exec_module(ram)
    ram.main(["--child", "3", "--backend", "zarr", "--n", "128", "--batch-size", "8", "--steps", "2",
              "--budget-mb", "1", "--block-size", "4"])
    import json

    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["k"] == 3 and got["m"] == 3 and not got["resident"] and got["windows"] > 1
    assert got["peak_mb"] >= got["rss_before_mb"] > 0
