"""kill -9 at many points of a run (store creation, the lock, chunk writes, manifests, commit records, checkpoint
writes, evaluation), then the obvious retry: `memloss train --resume RUN` if the run directory has its config.json,
else the same command again. Every retry must end with exactly the weights, metrics and memory of a run that was
never interrupted. The full sweep is `heavy` (scripts/test.sh -m heavy); three representative points run by default.
The heavy sweep also kills a run with generated data (a store of two parts) at nine points.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from memloss.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--dataset", "synthetic", "--n", "96", "--resolution", "8", "--batch-size", "32", "--eval-n", "16",
        "--attack-steps", "2", "--epochs", "4", "--k", "2", "--seed", "5", "--threads", "1"]
# --threads 1: CPU kernels may sum in another order with another thread count, and `auto` measures the machine,
# whose load changes between the run and its retry.
TIMING = {"epoch_seconds", "samples_per_s", "store_wait_s", "store_wait_frac", "store_commit_wait_s", "eval_seconds",
          "epoch_total_seconds", "time", "timestamp", "started"}  # clocks, not results

# Counts for this run (3 steps per epoch, 4 epochs, K = 2): root-json writes are #1 the creation marker, #2 the
# complete store, then per epoch e the epoch start (#2e+1) and its commit record (#2e+2).
SWEEP = [
    "after:flock#1", "after:lock#1",
    "before:set:root-json#1", "after:set:root-json#1", "after:set:array-json#1", "after:set:array-json#3",
    "before:set:members#1", "after:set:members#1", "before:set:root-json#2", "after:set:root-json#2",
    "before:replace:config.json#1", "after:replace:config.json#1",
    "after:set:root-json#3", "before:step#1", "before:step#2", "after:chunks#1", "after:chunks#3",
    "before:set:manifest#1", "after:set:manifest#1", "before:set:root-json#4", "after:set:root-json#4",
    "before:eval#1", "before:replace:metrics.jsonl#1", "after:replace:metrics.jsonl#1",
    "before:replace:last.safetensors#1", "before:replace:best.safetensors#1", "before:replace:last.state.pt#1",
    "after:replace:last.state.pt#1",
    "after:set:root-json#5", "before:step#5", "before:chunks#2", "before:set:root-json#6",
    "after:set:root-json#6", "before:replace:last.state.pt#2",
    "after:set:root-json#7", "before:set:manifest#3", "before:delete:manifest#1", "after:delete:manifest#1",
    "before:step#11", "before:replace:last.state.pt#4", "after:replace:last.state.pt#4",
]
DEFAULT_SUBSET = ["after:set:members#1", "after:set:root-json#4", "before:replace:last.state.pt#1"]


def _train(out: Path, data_dir: Path, extra: tuple[str, ...] = ()) -> list[str]:
    return ["train", *ARGS, *extra, "--data-dir", str(data_dir), "--out", str(out)]


def _outcome(run: Path) -> dict[str, Any]:
    """What must be identical: weights, metrics without timings, and every committed epoch of the store."""
    from memloss.memstore.store import open_store

    weights = {name: load_file(str(run / name)) for name in ("last.safetensors", "best.safetensors")}
    records = [{k: v for k, v in json.loads(line).items() if k not in TIMING}
               for line in (run / "metrics.jsonl").read_text().splitlines()]
    with open_store(str(run / "memory.zarr"), read_only=True) as store:
        memory = {"committed": store.committed_epochs, "slots": store.slot_epochs}
        for slot, epoch in enumerate(store.slot_epochs):
            if epoch is not None:
                memory[slot] = {name: store.group[name][slot] for name in ("codes", "scale", "info")}
    return {"weights": weights, "records": records, "memory": memory}


def _same(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), where
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Any]:
    run = tmp_path_factory.mktemp("straight") / "run"
    result = CliRunner().invoke(app, _train(run, data_dir))
    assert result.exit_code == 0, result.output
    return _outcome(run)


def kill_and_retry(point: str, run: Path, data_dir: Path, extra: tuple[str, ...] = ()) -> None:
    """Runs the training, killed at `point`, then retries as a user would until it finishes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "tests" / "kill_driver.py"), point, "--", *_train(run, data_dir, extra)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == -signal.SIGKILL, f"{point} was never reached: {done.returncode} {done.stderr[-2000:]}"
    resume = ["train", "--resume", str(run), "--threads", "1"]
    retry = resume if (run / "config.json").exists() else _train(run, data_dir, extra)
    result = CliRunner().invoke(app, retry)
    assert result.exit_code == 0, (point, retry[:3], result.output[-3000:], result.exception)


def _check(point: str, tmp_path: Path, data_dir: Path, straight: dict[str, Any], extra: tuple[str, ...] = ()) -> None:
    run = tmp_path / "run"
    kill_and_retry(point, run, data_dir, extra)
    _same(straight, _outcome(run), point)
    assert not [p for p in run.rglob("*") if p.name.endswith((".tmp", ".partial"))], "temporary files left"


@pytest.mark.slow
@pytest.mark.parametrize("point", DEFAULT_SUBSET)
def test_kill_9_then_retry_is_bit_identical(point: str, tmp_path: Path, data_dir: Path,
                                           straight: dict[str, Any]) -> None:
    _check(point, tmp_path, data_dir, straight)


@pytest.mark.heavy
@pytest.mark.parametrize("point", [p for p in SWEEP if p not in DEFAULT_SUBSET])
def test_kill_9_sweep(point: str, tmp_path: Path, data_dir: Path, straight: dict[str, Any]) -> None:
    _check(point, tmp_path, data_dir, straight)


# A store of two parts (96 base + 300 generated images, 13 mixed batches an epoch): its base part resident, its
# generated part windowed, unvisited generated blocks deleted at the commit.
GENERATED_SWEEP = ["after:set:members#1", "after:chunks#1", "after:chunks#4", "before:set:manifest#1",
                   "after:set:root-json#4", "before:step#20", "after:replace:last.state.pt#1", "before:set:manifest#3",
                   "before:step#40"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The options of a run with generated data, and its outcome uninterrupted."""
    path = tmp_path_factory.mktemp("gen") / "gen.npz"
    rng = np.random.default_rng(0)
    np.savez(path, image=rng.integers(0, 256, (300, 8, 8, 3), dtype=np.uint8), label=rng.integers(0, 10, 300))
    extra = ("--aux-data", str(path), "--aux-fraction", "0.5")
    run = tmp_path_factory.mktemp("straight-gen") / "run"
    result = CliRunner().invoke(app, _train(run, data_dir, extra))
    assert result.exit_code == 0, result.output
    return extra, _outcome(run)


@pytest.mark.heavy
@pytest.mark.parametrize("point", GENERATED_SWEEP)
def test_kill_9_sweep_with_generated_data(point: str, tmp_path: Path, data_dir: Path,
                                          generated: tuple[tuple[str, ...], dict[str, Any]]) -> None:
    extra, outcome = generated
    _check(point, tmp_path, data_dir, outcome, extra)


def test_the_sweep_covers_every_kind_of_point() -> None:
    assert len(SWEEP) >= 30 and set(DEFAULT_SUBSET) <= set(SWEEP)
    for needed in ("lock", "flock", "set:root-json", "set:members", "set:manifest", "chunks", "replace:config.json",
                   "replace:last.state.pt", "replace:best.safetensors", "step", "eval", "delete:manifest"):
        assert any(p.split(":", 1)[1].rsplit("#", 1)[0] == needed for p in SWEEP), needed
