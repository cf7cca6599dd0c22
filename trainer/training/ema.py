"""Weight averaging (`--ema DECAY`) as in the generated-data recipe (Gowal et al. 2020; DM-Improves-AT
gowal21uncovering/utils/watrain.py `ema_update` / `update_bn`, `--tau 0.995`).

After optimizer step t (t = 1, 2, ... counted over the whole run), with W warm-up steps:

    d_t = 0                                        if t < W  (the average is a copy of the model)
    d_t = min(decay, (1 + t − W) / (10 + t − W))   otherwise
    θ_avg ← d_t·θ_avg + (1 − d_t)·θ

for every parameter. W = 0.025 · epochs · steps per epoch (the published 0.025 · num_adv_epochs · update_steps,
whose update_steps is floor(N_base / B) + 1; ours counts the loader's real steps per epoch, ceil(N / B), the same
number unless B divides N). Buffers (BN running mean/var/count, the normalization constants) are not averaged: they
are copied from the model at the end of every epoch, before the averaged model is evaluated or saved, as
`update_bn` does. The decay is computed on the host from the step count: no device sync per step.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

# The published warm-up: 2.5 % of the run's optimizer steps.
WARMUP_FRACTION = 0.025
# The average's weights in the run directory, beside best.safetensors / last.safetensors.
EMA_BEST_WEIGHTS = "best-ema.safetensors"
EMA_LAST_WEIGHTS = "last-ema.safetensors"


def ema_decay(step: int, decay: float, warmup_steps: float) -> float:
    """The averaging weight d_t of the old average after optimizer step `step` (1-based), as published."""
    if step < warmup_steps:
        return 0.0
    delta = step - warmup_steps
    return min(decay, (1.0 + delta) / (10.0 + delta))


class WeightAverage:
    """An exponential moving average of a model's parameters, kept in its own copy of the model (`model`, eval
    mode, no gradients). `steps` is the number of updates so far; `best_robust`/`best_epoch` its model selection."""

    def __init__(self, model: nn.Module, decay: float, warmup_steps: float) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.warmup_steps = float(decay), float(warmup_steps)
        self.steps = 0
        self.best_robust, self.best_epoch = -1.0, 0
        self._mine = list(self.model.parameters())

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One averaging step after an optimizer step of `model` (same architecture as the copy)."""
        self.steps += 1
        d = ema_decay(self.steps, self.decay, self.warmup_steps)
        theirs = [p.detach() for p in model.parameters()]
        if d == 0.0:
            torch._foreach_copy_(self._mine, theirs)
        else:
            torch._foreach_mul_(self._mine, d)
            torch._foreach_add_(self._mine, theirs, alpha=1.0 - d)

    @torch.no_grad()
    def copy_buffers(self, model: nn.Module) -> None:
        """Copies every buffer (BN statistics, normalization) of `model` into the average."""
        for mine, theirs in zip(self.model.buffers(), model.buffers()):
            mine.copy_(theirs)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "steps": self.steps, "decay": self.decay,
                "warmup_steps": self.warmup_steps, "best_robust": self.best_robust, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.steps = int(state["steps"])
        self.best_robust, self.best_epoch = float(state["best_robust"]), int(state["best_epoch"])


def make_weight_average(model: nn.Module, decay: float | None, epochs: int, steps_per_epoch: int
                        ) -> WeightAverage | None:
    """The run's weight average (None when `decay` is None), with the published warm-up."""
    if decay is None:
        return None
    return WeightAverage(model, decay, WARMUP_FRACTION * epochs * steps_per_epoch)
