"""Training with its memory store on S3 (a moto server in the test process): a run killed with SIGKILL mid-epoch
resumes with `--resume` and finishes, and `memloss inspect-store s3://...` reads its store. The heavy variant kills
at several points (between an epoch's chunks and its commit record among them) and checks that every retry ends
with exactly the weights, metrics and memory of an uninterrupted run."""

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
from safetensors.torch import load_file
from typer.testing import CliRunner

from memloss.cli.app import app
from memloss.memstore.location.options import ENV_VAR, store_location
from s3_server import S3Server
from test_kill_sweep import TIMING, _same

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--dataset", "digits", "--n", "256", "--batch-size", "64", "--eval-n", "64", "--attack-steps", "2",
        "--epochs", "3", "--k", "2", "--seed", "3", "--threads", "1"]  # 4 steps per epoch
runner = CliRunner()


def _train(run: Path, url: str, data_dir: Path, endpoint: str) -> list[str]:
    return ["train", *ARGS, "--store", url, "--store-option", f"endpoint_url={endpoint}", "--data-dir", str(data_dir),
            "--out", str(run)]


def _killed(point: str, args: list[str], env: dict[str, str]) -> None:
    """Runs `memloss ARGS` in a subprocess that kills itself with SIGKILL at `point` (tests/kill_driver.py)."""
    env = {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "tests" / "kill_driver.py"), point, "--", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == -signal.SIGKILL, f"{point} was never reached: {done.returncode} {done.stderr[-2000:]}"


def _resume(run: Path, endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`memloss train --resume RUN`, the endpoint given through MEMLOSS_STORE_OPTIONS this time."""
    monkeypatch.setenv(ENV_VAR, json.dumps({"endpoint_url": endpoint}))
    result = runner.invoke(app, ["train", "--resume", str(run), "--threads", "1"])
    monkeypatch.delenv(ENV_VAR)
    assert result.exit_code == 0, (result.output[-3000:], result.exception)


def _outcome(run: Path, url: str, endpoint: str) -> dict[str, Any]:
    from memloss.memstore.store import open_store

    weights = {name: load_file(str(run / name)) for name in ("last.safetensors", "best.safetensors")}
    records = [{k: v for k, v in json.loads(line).items() if k not in TIMING}
               for line in (run / "metrics.jsonl").read_text().splitlines()]
    with open_store(store_location(url, {"endpoint_url": endpoint}), read_only=True) as store:
        memory: dict[Any, Any] = {"committed": store.committed_epochs, "slots": store.slot_epochs}
        for slot, epoch in enumerate(store.slot_epochs):
            if epoch is not None:
                memory[slot] = {name: np.asarray(store.group[name][slot]) for name in ("codes", "scale", "info")}
    return {"weights": weights, "records": records, "memory": memory}


@pytest.mark.slow
def test_a_run_on_s3_killed_mid_epoch_resumes_and_is_inspected(s3: S3Server, tmp_path: Path, data_dir: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    run, url = tmp_path / "run", s3.url()
    _killed("before:step#6", _train(run, url, data_dir, s3.endpoint), s3.env)  # epoch 2, second step
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1]
    _resume(run, s3.endpoint, monkeypatch)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    result = runner.invoke(app, ["inspect-store", url, "--json", "--store-option", f"endpoint_url={s3.endpoint}"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["url"] == url and summary["committed_epochs"] == [1, 2, 3]
    result = runner.invoke(app, ["inspect-store", str(run), "--store-option", f"endpoint_url={s3.endpoint}"])
    assert result.exit_code == 0 and url in result.output, result.output  # the run directory names its S3 store


@pytest.fixture(scope="module")
def straight(s3: S3Server, tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Any]:
    run, url = tmp_path_factory.mktemp("straight") / "run", s3.url()
    result = runner.invoke(app, _train(run, url, data_dir, s3.endpoint))
    assert result.exit_code == 0, result.output
    return _outcome(run, url, s3.endpoint)


@pytest.mark.heavy
@pytest.mark.parametrize("point", ["after:chunks#1", "after:chunks#2", "before:step#6", "before:eval#2",
                                   "after:replace:last.state.pt#1", "before:step#10"])
def test_kill_9_on_s3_then_resume_is_bit_identical(point: str, s3: S3Server, tmp_path: Path, data_dir: Path,
                                                   straight: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    run, url = tmp_path / "run", s3.url()
    args = _train(run, url, data_dir, s3.endpoint)
    _killed(point, args, s3.env)
    if (run / "config.json").exists():
        _resume(run, s3.endpoint, monkeypatch)
    else:
        assert runner.invoke(app, args).exit_code == 0
    _same(straight, _outcome(run, url, s3.endpoint), point)
    assert os.path.isdir(run)
