"""Weight averaging (--ema): the published decay rule, a hand-computed average, BN buffers copied not averaged, and
through the trainer: its own PGD-20, its own files, and a resumed run that ends exactly as an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from memloss.trainer.config.defaults import resolve_config
from memloss.trainer.training import fit as fit_module
from memloss.trainer.training.ema import WeightAverage, ema_decay, make_weight_average
from memloss.trainer.training.fit import fit, resume_config


def _published_decay(global_step: float, decay_rate: float, warmup_steps: float) -> float:
    """DM-Improves-AT gowal21uncovering/utils/watrain.py ema_update, the decay part, verbatim in logic."""
    factor = int(global_step >= warmup_steps)
    delta = global_step - warmup_steps
    decay = min(decay_rate, (1. + delta) / (10. + delta)) if 10. + delta != 0 else decay_rate
    return decay * factor


def test_decay_is_the_published_rule() -> None:
    for warmup in (0.0, 0.15, 5.0, 171.5):
        for step in range(1, 400):
            assert ema_decay(step, 0.995, warmup) == _published_decay(step, 0.995, warmup)
    assert ema_decay(4, 0.995, 5) == 0.0 and ema_decay(5, 0.995, 5) == pytest.approx(0.1)
    assert ema_decay(10_000, 0.995, 5) == 0.995


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


def test_the_average_equals_a_hand_computed_one_and_buffers_are_copied() -> None:
    model = _tiny()
    ema = WeightAverage(model, decay=0.9, warmup_steps=2.0)
    expected = [p.detach().double().clone() for p in model.parameters()]
    gen = torch.Generator().manual_seed(1)
    for step in range(1, 9):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
            model[1].running_mean.add_(1.0)  # as a train-mode forward would
        ema.update(model)
        d = 0.0 if step < 2 else min(0.9, (1 + step - 2) / (10 + step - 2))
        expected = [d * e + (1 - d) * p.detach().double() for e, p in zip(expected, model.parameters())]
        for mine, want in zip(ema.model.parameters(), expected):
            assert torch.allclose(mine.double(), want, atol=1e-6)
    assert torch.equal(ema.model[1].running_mean, torch.zeros(2))  # buffers are not averaged
    ema.copy_buffers(model)
    assert torch.equal(ema.model[1].running_mean, model[1].running_mean)
    assert torch.equal(ema.model[1].num_batches_tracked, model[1].num_batches_tracked)
    assert not any(p.requires_grad for p in ema.model.parameters()) and not ema.model.training


def test_state_round_trip_and_the_published_warmup() -> None:
    model = _tiny()
    ema = make_weight_average(model, 0.995, epochs=400, steps_per_epoch=98)
    assert ema is not None and ema.warmup_steps == pytest.approx(0.025 * 400 * 98)
    assert make_weight_average(model, None, 400, 98) is None
    ema.update(model)
    ema.best_robust, ema.best_epoch = 0.5, 3
    other = WeightAverage(_tiny(), 0.995, ema.warmup_steps)
    other.load_state_dict(ema.state_dict())
    assert other.steps == 1 and other.best_epoch == 3 and other.best_robust == 0.5


TINY = {"dataset": "synthetic", "n": 96, "resolution": 8, "batch_size": 32, "eval_n": 16, "attack_steps": 1,
        "epochs": 2, "k": 1, "ema": 0.9, "label_smoothing": 0.1, "seed": 5}


def _cfg(data_dir: Path, out: Path) -> Any:
    return resolve_config({**TINY, "data_dir": str(data_dir), "out": str(out)})


def test_trainer_evaluates_selects_saves_and_resumes_the_average_exactly(tmp_path: Path, data_dir: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    straight = fit(_cfg(data_dir, tmp_path / "a"), quiet=True)
    records = straight.records
    assert all({"ema_test_clean_acc", "ema_test_pgd20_acc"} <= r.keys() for r in records)
    best = max(range(len(records)), key=lambda i: (records[i]["ema_test_pgd20_acc"], i))
    with safe_open(str(straight.run_dir / "best-ema.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["weights"] == "ema" and int(meta["epoch"]) == records[best]["epoch"]
    averaged, raw = load_file(str(straight.run_dir / "last-ema.safetensors")), load_file(
        str(straight.run_dir / "last.safetensors"))
    assert averaged.keys() == raw.keys() and any(not torch.equal(averaged[k], raw[k]) for k in raw)
    state = torch.load(straight.run_dir / "last.state.pt", weights_only=True)
    assert state["ema"]["steps"] == 2 * 3  # every optimizer step of 2 epochs × 3 batches

    original = fit_module.finish_epoch

    def stop_after_first(s: Any, epoch: int, record: dict[str, Any], *commit: Any) -> None:
        original(s, epoch, record, *commit)  # the files land on the way out (the committer thread is drained)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(fit_module, "finish_epoch", stop_after_first)
    with pytest.raises(KeyboardInterrupt):
        fit(_cfg(data_dir, tmp_path / "b"), quiet=True)
    monkeypatch.setattr(fit_module, "finish_epoch", original)
    resumed = fit(resume_config(tmp_path / "b", {}), resume=tmp_path / "b", quiet=True)
    for name in ("last-ema.safetensors", "best-ema.safetensors", "last.safetensors"):
        a, b = load_file(str(straight.run_dir / name)), load_file(str(tmp_path / "b" / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert [r["ema_test_pgd20_acc"] for r in resumed.records] == [r["ema_test_pgd20_acc"] for r in records]
    metrics = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in metrics] == [1, 2]
