"""A run with slot sampling and the forgetting monitor, stopped after an epoch and resumed, ends exactly like the
uninterrupted run: same weights, same sampled slots (the sampler's generator is in the state), same monitor figures
(its made-correct bits are in the state)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import memloss.trainer.training.fit as fit_module
from memloss.trainer.config.defaults import resolve_config
from memloss.trainer.training.fit import fit, resume_config

ARGS = {"dataset": "synthetic", "n": 96, "resolution": 8, "batch_size": 32, "eval_n": 16, "attack_steps": 2,
        "epochs": 4, "k": 3, "memory_slots_per_step": 2, "seed": 1}


class _Stop(Exception):
    pass


@pytest.mark.parametrize("draw", ["step", "window"])
def test_resume_with_sampling_and_monitor_is_exact(tmp_path: Path, data_dir: Path, draw: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = {**ARGS, "memory_slot_draw": draw, "data_dir": str(data_dir)}
    straight = fit(resolve_config({**cfg, "out": str(tmp_path / "a")}), quiet=True)

    real = fit_module.train_epoch

    def stop_at_3(s, epoch, reporter):  # noqa: ANN001, ANN202
        if epoch == 3:
            raise _Stop  # a crash after epoch 2's state was saved
        return real(s, epoch, reporter)

    monkeypatch.setattr(fit_module, "train_epoch", stop_at_3)
    with pytest.raises(_Stop):
        fit(resolve_config({**cfg, "out": str(tmp_path / "b")}), quiet=True)
    monkeypatch.setattr(fit_module, "train_epoch", real)
    resumed = fit(resume_config(tmp_path / "b", {}), resume=tmp_path / "b", quiet=True)

    a, b = load_file(str(tmp_path / "a" / "last.safetensors")), load_file(str(tmp_path / "b" / "last.safetensors"))
    assert all(torch.equal(a[key], b[key]) for key in a)
    for key in ("mem_loss", "mem_term_1", "mem_term_3", "forget_at_visit", "old_error_at_visit_by_age"):
        assert straight.records[-1][key] == resumed.records[-1][key], key
