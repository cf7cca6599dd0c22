"""AutoAttack's progress moves inside each sub-attack (not only when one ends), with a moving ETA, in plain lines
when there is no terminal; watching leaves the AutoAttack objects as they were."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from torch import nn

from memloss.trainer.common.progress import PlainProgress
from memloss.trainer.evaluation.aa_log import autoattack_log
from memloss.trainer.evaluation.aa_progress import AttackProgress, planned_iterations
from memloss.trainer.evaluation.run import RunContext, batches, run_spec
from memloss.trainer.evaluation.state import EvalState
from memloss.trainer.methods.eval_attacks import ATTACKS, AttackName, ThreatModel

SUBATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")


def robust_points() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A linear model on 1×4×4 images that no ε = 8/255 perturbation can fool: image c lights pixel c, and class c's
    logit is 20 × pixel c (margin 20, moved at most 0.63), so every sub-attack runs all its iterations."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10, bias=False))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[:, :10] = 20 * torch.eye(10)
    y = torch.arange(4)
    x = torch.zeros(4, 1, 4, 4, dtype=torch.uint8)
    x.view(4, -1)[torch.arange(4), y] = 255
    return model.eval(), x, y


def test_autoattack_progress_moves_inside_each_subattack_in_plain_lines() -> None:
    torch.set_num_threads(1)
    model, x, y = robust_points()
    stream = io.StringIO()
    ctx = RunContext(torch.device("cpu"), 0, PlainProgress(stream, every_s=0.0))
    spec = ATTACKS[AttackName.AA](ThreatModel("Linf", "8/255"))
    with autoattack_log(None):
        result = run_spec(spec, model, x, y, np.ones(4, dtype=bool), batches(4, 4), EvalState(None, {}), ctx)
    assert result.robust.all()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    for sub in SUBATTACKS:
        inside = [line for line in lines if re.search(rf"  {sub} \d+%", line)]
        percents = [int(re.search(rf"{sub} (\d+)%", line).group(1)) for line in inside]
        assert len(set(percents)) >= 10 and 0 < min(percents) and max(percents) < 100, (sub, percents)
        etas = [line.split("eta ")[1] for line in inside]
        assert "-:--:--" not in etas[1:], (sub, etas)  # an ETA within the sub-attack, not only at its end
        secs = [sum(int(v) * 60**i for i, v in enumerate(reversed(eta.split(":")))) for eta in etas[1:]]
        assert secs[-1] <= secs[0], (sub, etas)  # it counts down (a fast machine may show the same second)
    done = [float(re.match(r"aa: (\d+)/4 points", line).group(1)) for line in lines if line.startswith("aa: ")
            and "/4 points" in line]
    assert done == sorted(done) and done[-1] == 4


def test_watching_restores_the_attack_objects_and_knows_their_iterations() -> None:
    pytest.importorskip("pyautoattack")
    from pyautoattack import AutoAttack

    model, _, _ = robust_points()
    adversary = AutoAttack(model, norm="Linf", eps=8 / 255, version="standard", seed=0, device="cpu")
    before = {name: vars(getattr(adversary, name)).copy() for name in ("apgd", "apgd_targeted", "fab", "square")}
    follow = AttackProgress(PlainProgress(io.StringIO()), "aa", SUBATTACKS)
    with follow.watch(adversary):
        assert adversary.apgd.model is not model and callable(adversary.square.margin_and_loss)
    after = {name: vars(getattr(adversary, name)) for name in before}
    assert all(after[n].keys() == before[n].keys() for n in before) and adversary.apgd.model is model
    assert "margin_and_loss" not in vars(adversary.square)  # the class's method again
    assert planned_iterations(adversary, "apgd-ce") == 101 and planned_iterations(adversary, "apgd-t") == 9 * 101
    assert planned_iterations(adversary, "fab-t") == 9 * 100 and planned_iterations(adversary, "square") == 5001


def test_pgd_progress_moves_inside_a_batch() -> None:
    torch.set_num_threads(1)
    model, x, y = robust_points()
    stream = io.StringIO()
    ctx = RunContext(torch.device("cpu"), 0, PlainProgress(stream, every_s=0.0))
    spec = ATTACKS[AttackName.PGD_PLUS](ThreatModel("Linf", "8/255"))  # 5 restarts × 40 steps
    result = run_spec(spec, model, x, y, np.ones(4, dtype=bool), batches(4, 4), EvalState(None, {}), ctx)
    assert result.robust.all()
    percents = [int(m.group(1)) for m in re.finditer(r"batch 1/1 (\d+)%", stream.getvalue())]
    assert len(set(percents)) >= 10 and 0 < min(percents) and max(percents) < 100, percents
    assert stream.getvalue().splitlines()[-1].startswith("pgd+: 4/4 points  robust 100.0%")
    assert not model._forward_pre_hooks  # the counter is gone
