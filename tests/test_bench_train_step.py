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
    expected = [(0, None)] + [(k, b) for k in ks for b in ("zarr", "ram")]
    assert [(r.variant.k, r.variant.backend) for r in rows] == expected
    for row in rows:
        assert len(row.round_ms) == 2
        assert all(math.isfinite(ms) and ms > 0 for ms in row.round_ms), row
        assert math.isfinite(row.ratio) and row.ratio > 0, row
        assert all(0 <= w < 1 for w in row.round_wait), row
        stored = row.variant.backend is not None
        assert (row.wait > 0) == stored, row  # only configurations with a store spend time in it
    assert rows[0].ratio == 1.0


def test_quick_cpu_run_times_every_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench()
    rows = bench.main(["--quick", "--device", "cpu", "--batch-size", "8", "--steps", "2", "--warmup", "1",
                       "--ks", "1,2"])
    _check_rows(bench, rows, (1, 2))
    out = capsys.readouterr().out
    assert "TRADES+MemLoss K=2 (zarr)" in out and "load average" in out


def test_too_small_n_is_refused() -> None:
    bench = _bench()
    with pytest.raises(bench.BenchError, match="--n 8 is too small"):
        bench.parse_config(["--device", "cpu", "--n", "8", "--batch-size", "8", "--steps", "2", "--warmup", "1"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA path (bf16, channels_last) needs a GPU")
def test_quick_cuda_run_times_every_configuration() -> None:
    bench = _bench()
    rows = bench.main(["--quick", "--device", "cuda", "--batch-size", "16", "--steps", "2", "--warmup", "1",
                       "--ks", "1"])
    _check_rows(bench, rows, (1,))
