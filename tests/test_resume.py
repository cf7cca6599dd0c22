"""A run killed with SIGKILL and resumed ends with exactly the weights of an uninterrupted run (CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from memloss.trainer.config.defaults import resolve_config
from memloss.trainer.training.fit import fit, resume_config

ARGS = {"dataset": "synthetic", "n": 512, "resolution": 8, "batch_size": 32, "eval_n": 32, "attack_steps": 3,
        "epochs": 3, "k": 1, "seed": 3}


def _cli_args(data_dir: Path, out: Path) -> list[str]:
    args = ["train", "--out", str(out), "--data-dir", str(data_dir)]
    for key, value in ARGS.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def _wait_for_epochs(run: Path, epochs: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    metrics = run / "metrics.jsonl"
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= epochs:
            return
        if proc.poll() is not None:
            raise AssertionError(f"training exited early: {proc.stdout.read() if proc.stdout else ''}")
        time.sleep(0.05)
    raise AssertionError("training did not reach the epoch in time")


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_uninterrupted_weights(tmp_path: Path, data_dir: Path) -> None:
    straight = fit(resolve_config({**ARGS, "data_dir": str(data_dir), "out": str(tmp_path / "a")}), quiet=True)

    run = tmp_path / "b"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    code = "import torch; torch.set_num_threads(1); from cli.app import main; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, *_cli_args(data_dir, run)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for_epochs(run, 1, proc)
    time.sleep(0.3)  # well inside epoch 2: its store slot is half written
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert len((run / "metrics.jsonl").read_text().splitlines()) < 3

    resumed = fit(resume_config(run, {}), resume=run, quiet=True)
    assert [r["epoch"] for r in resumed.records] == [1, 2, 3]
    a, b = load_file(str(straight.run_dir / "last.safetensors")), load_file(str(run / "last.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [r["test_pgd20_acc"] for r in straight.records] == [r["test_pgd20_acc"] for r in resumed.records]
