"""Starting again and resuming: a failed start is retried with new options, the resolved config is recorded, a moved
run directory resumes, a finished run says so, a memory:// run says it cannot be resumed, and a run whose store was
repaired continues without the dropped memory. (kill -9 at many points: tests/test_kill_sweep.py.)"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import fsspec
import pytest
from typer.testing import CliRunner

from memloss.cli.app import app
from memloss.errors import ConfigError, MemlossError
from memloss.memstore.integrity.manifest import DamagedMemoryError
from memloss.memstore.integrity.repair import repair_store
from memloss.memstore.store import open_store
from memloss.trainer.config.defaults import resolve_config
from memloss.trainer.training import fit as fit_module
from memloss.trainer.training.fit import fit, resume_config

TINY = {"dataset": "synthetic", "n": 96, "resolution": 8, "batch_size": 32, "eval_n": 16, "attack_steps": 1,
        "epochs": 2, "k": 1}


class _Stop(MemlossError):
    """Stops a run at the end of epoch 1, after its commit and before its resume point (a failed epoch)."""


def _cfg(data_dir: Path, out: Path, **extra: Any):  # noqa: ANN202
    return resolve_config({**TINY, "data_dir": str(data_dir), "out": str(out), **extra})


def _stopped(monkeypatch: pytest.MonkeyPatch, cfg: Any, after_state: bool) -> None:
    """Runs `cfg` and stops it in its first epoch's end: after saving the resume point, or just before it."""
    real = fit_module.finish_epoch

    def finish(s: Any, epoch: int, *args: Any) -> None:
        if after_state:
            real(s, epoch, *args)
        raise _Stop("stopped")

    with monkeypatch.context() as mp:
        mp.setattr(fit_module, "finish_epoch", finish)
        with pytest.raises(_Stop):
            fit(cfg, quiet=True)


def test_a_failed_start_is_retried_with_new_options(tmp_path: Path, data_dir: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    _stopped(monkeypatch, _cfg(data_dir, run), after_state=False)  # epoch 1 committed, no resume point
    with pytest.raises(ConfigError, match="never completed an epoch, so start it again"):
        resume_config(run, {"k": 2})
    result = fit(_cfg(data_dir, run, k=2), quiet=True)  # the obvious retry, with another K
    assert [r["epoch"] for r in result.records] == [1, 2]
    with open_store(str(run / "memory.zarr"), read_only=True) as store:
        assert store.k == 2 and store.committed_epochs == [1, 2]
    record = json.loads((run / "config.json").read_text())["config"]
    assert record["run"]["out"] == str(run.absolute()) and record["run"]["store"] == str(run / "memory.zarr")
    assert record["data"]["data_dir"] == str(data_dir.absolute())
    assert (record["run"]["model"], record["run"]["device"], record["run"]["eval_n"]) == ("small_cnn", "cpu", 16)


def test_a_moved_run_resumes_and_a_finished_run_says_so(tmp_path: Path, data_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _stopped(monkeypatch, _cfg(data_dir, tmp_path / "a"), after_state=True)
    moved = tmp_path / "b"
    shutil.move(tmp_path / "a", moved)
    result = CliRunner().invoke(app, ["train", "--resume", str(moved)])
    assert result.exit_code == 0, result.output
    with open_store(str(moved / "memory.zarr"), read_only=True) as store:
        assert store.committed_epochs == [1, 2]
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in moved.rglob("*") if p.is_file()}
    again = CliRunner().invoke(app, ["train", "--resume", str(moved)])
    assert again.exit_code == 0 and "is finished: 2 of 2 epochs trained" in again.output
    assert str(moved / "best.safetensors") in " ".join(again.output.split())
    assert before == {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in moved.rglob("*") if p.is_file()}


def test_a_memory_url_run_says_it_cannot_be_resumed(tmp_path: Path, data_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    url = f"memory://resume-{tmp_path.name}"
    run = tmp_path / "run"
    _stopped(monkeypatch, _cfg(data_dir, run, store=url), after_state=True)
    fsspec.filesystem("memory").rm(url.removeprefix("memory://"), recursive=True)  # the process has ended
    with pytest.raises(ConfigError, match="memory:// store cannot be resumed"):
        fit(resume_config(run, {}), resume=run, quiet=True)
    fit(_cfg(data_dir, tmp_path / "other", store=f"{url}-2", epochs=1), quiet=False)
    assert "this run cannot be resumed after it stops" in capsys.readouterr().out


def test_a_repaired_store_lets_the_run_continue_without_the_dropped_memory(tmp_path: Path, data_dir: Path,
                                                                            monkeypatch: pytest.MonkeyPatch,
                                                                            capsys: Any) -> None:
    run = tmp_path / "run"
    _stopped(monkeypatch, _cfg(data_dir, run), after_state=True)
    store = run / "memory.zarr"
    next(p for p in sorted((store / "info" / "c" / "1").rglob("*")) if p.is_file()).unlink()
    with pytest.raises(DamagedMemoryError, match=r"epoch 1 \(ring slot 1\).*memloss repair-store"):
        fit(resume_config(run, {}), resume=run, quiet=True)
    assert repair_store(str(store)).dropped == [1]
    result = fit(resume_config(run, {}), resume=run, quiet=False)
    assert [r["epoch"] for r in result.records] == [1, 2]
    assert "memory of epoch(s) [1] was dropped by repair-store" in capsys.readouterr().out
