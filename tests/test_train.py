"""memloss train end to end on CPU: every method and variant runs, the run directory is complete, memory examples
are rebuilt exactly, NaN stops the run, and resume refuses a changed config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from memloss.errors import ConfigError
from memloss.trainer.config.defaults import resolve_config
from memloss.trainer.training.epoch import TrainingDiverged
from memloss.trainer.training.fit import fit, resume_config

TINY = {"dataset": "synthetic", "n": 96, "resolution": 8, "batch_size": 32, "eval_n": 32, "attack_steps": 2,
        "epochs": 2}


def _fit(tmp_path: Path, data_dir: Path, name: str, **overrides: Any):
    cfg = resolve_config({**TINY, "data_dir": str(data_dir), "out": str(tmp_path / name), **overrides})
    return fit(cfg, quiet=True)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The issue's acceptance run: digits, K = 3, three epochs."""
    root = tmp_path_factory.mktemp("digits")
    cfg = resolve_config({"dataset": "digits", "k": 3, "epochs": 3, "store": str(root / "mem.zarr"),
                          "out": str(root / "run"), "data_dir": str(root / "data")})
    fit(cfg, quiet=True)
    return root


def test_digits_k3_trains_commits_three_epochs_and_beats_chance(digits_run: Path) -> None:
    from memloss.memstore.store import open_store

    run = digits_run / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[-1]["test_clean_acc"] > 0.5  # chance is 0.1
    assert records[-1]["test_pgd20_acc"] > 0.2
    assert 0.0 <= records[-1]["old_error_at_visit"] <= 1.0 and records[-1]["mem_loss"] > 0
    assert 0.0 <= records[-1]["forget_at_visit"] <= records[-1]["old_error_at_visit"]
    assert len(records[-1]["old_error_at_visit_by_age"]) == 3 and records[-1]["old_error_at_visit_by_age"][2] is None
    assert "mem_loss" not in records[0]  # no memory exists in the first epoch
    for name in ("config.json", "best.safetensors", "last.safetensors", "last.state.pt"):
        assert (run / name).exists()
    with open_store(str(digits_run / "mem.zarr"), read_only=True) as store:
        assert store.committed_epochs == [1, 2, 3]
    state = torch.load(run / "last.state.pt", weights_only=True)
    assert state["epoch"] == 3
    meta = json.loads((run / "config.json").read_text())
    assert meta["config"]["method"]["k"] == 3 and meta["versions"]["torch"]


@pytest.mark.parametrize("overrides", [
    {"method": "standard", "k": 0},
    {"method": "at", "k": 1},
    {"method": "trades", "k": 2, "beta_prime": "2,1", "memloss_variant": "v1"},
    {"method": "trades", "k": 1, "memloss_variant": "v2"},
    {"method": "trades", "k": 1, "memloss_variant": "v3", "memory_view": "aligned"},
    {"method": "mart", "k": 1},
    {"method": "trades", "k": 0, "track_forgetting": True},
    {"method": "trades", "k": 1, "reg": "te"},
    {"method": "at", "k": 0, "reg": "meow"},
    {"method": "trades", "k": 1, "norm": "L2", "eps": "128/255", "step_size": "15/255"},
    {"method": "trades", "k": 3, "epochs": 4, "memory_slots_per_step": 2, "memory_forward": "fused",
     "beta_prime_decay": 0.5},
    {"method": "at", "k": 3, "epochs": 4, "memory_slots_per_step": 1, "memory_slot_draw": "window",
     "memloss_clean_grad": "stop"},
], ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_every_method_runs(tmp_path: Path, data_dir: Path, overrides: dict[str, Any]) -> None:
    result = _fit(tmp_path, data_dir, "run", **overrides)
    last = result.records[-1]
    assert all(torch.isfinite(torch.tensor(last[k])) for k in ("loss", "test_clean_acc", "test_pgd20_acc"))
    if overrides.get("k", 0) > 0 or overrides.get("track_forgetting"):
        # With per-window draws and one window (a resident store), an epoch may not have drawn age 1: then only
        # the per-age lists are there.
        by_age = overrides.get("memory_slot_draw") == "window"
        names = ("forget_at_visit", "learn_at_visit", "old_error_at_visit")
        assert {f"{n}_by_age" if by_age else n for n in names} <= set(last)
    if overrides.get("k", 0) > 0:
        assert "mem_loss" in last


def test_hat_with_a_helper_trained_by_memloss(tmp_path: Path, data_dir: Path) -> None:
    helper = _fit(tmp_path, data_dir, "std", method="standard", k=0, epochs=1)
    result = _fit(tmp_path, data_dir, "hat", method="hat", k=1, helper=str(helper.run_dir / "best.safetensors"))
    assert "ce_help" in result.records[-1] or "loss" in result.records[-1]


def test_weights_carry_metadata_and_best_is_kept(tmp_path: Path, data_dir: Path) -> None:
    from safetensors import safe_open

    result = _fit(tmp_path, data_dir, "run", k=1)
    with safe_open(str(result.run_dir / "best.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["dataset"] == "synthetic" and meta["norm"] == "Linf" and meta["eps"] == "8/255"
    assert int(meta["epoch"]) == result.best_epoch
    assert load_file(str(result.run_dir / "last.safetensors"))


def test_nan_loss_stops_with_a_clear_message_after_saving(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(TrainingDiverged, match="NaN/Inf") as err:
        _fit(tmp_path, data_dir, "run", lr=1e12, k=0, epochs=2)
    assert (tmp_path / "run" / "diverged.safetensors").exists()
    assert "\n" not in str(err.value)


def test_resume_refuses_a_changed_config(tmp_path: Path, data_dir: Path) -> None:
    result = _fit(tmp_path, data_dir, "run", k=1, epochs=1)
    with pytest.raises(ConfigError, match="refuses a changed config: epochs"):
        resume_config(result.run_dir, {"epochs": 5, "k": None})
    same = resume_config(result.run_dir, {"k": 1, "device": "cpu"})
    assert same.method.k == 1


def test_new_run_refuses_an_existing_run_directory(tmp_path: Path, data_dir: Path) -> None:
    _fit(tmp_path, data_dir, "run", k=0, epochs=1)
    with pytest.raises(ConfigError, match="already holds a run"):
        _fit(tmp_path, data_dir, "run", k=0, epochs=1)


def test_a_failing_commit_stops_the_run_before_its_state_is_saved(tmp_path: Path, data_dir: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The commit lands in the background; its error still reaches the trainer, and no state claims the epoch."""
    from concurrent.futures import Future

    from memloss.memstore.base import MemStore
    from memloss.memstore.errors import StoreError

    def fail(self: MemStore, wait: bool = True) -> Future[None]:
        landed: Future[None] = Future()
        landed.set_exception(StoreError("No space left on device"))
        return landed

    monkeypatch.setattr(MemStore, "commit_epoch", fail)
    with pytest.raises(StoreError, match="No space left"):
        _fit(tmp_path, data_dir, "run", k=1, epochs=1)
    assert not (tmp_path / "run" / "last.state.pt").exists()
