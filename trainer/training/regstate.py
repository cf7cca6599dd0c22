"""The trainer-side state of the TE and MeoW regularizers (the pure terms live in trainer/methods/te.py and meow.py), saved in the
training state so that a resumed run continues them exactly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from memloss.trainer.methods.meow import MeowBank, MeowConfig
from memloss.trainer.methods.te import te_init, te_update, te_weight, te_window


class TEState:
    """Per-sample EMA of eval-mode clean predictions [N,C] and the ramp of the TE weight over the run."""

    def __init__(self, n: int, num_classes: int, epochs: int, device: torch.device) -> None:
        self.ema = te_init(n, num_classes, device)
        self.window = te_window(epochs)
        self.weight = 0.0

    def begin_epoch(self, epoch: int) -> None:
        # The official code counts epochs from 1 and starts the EMA together with the ramp.
        self.weight = te_weight(epoch, *self.window)

    def target(self, model: nn.Module, x: Tensor, idx: Tensor) -> Tensor | None:
        """Updates the EMA of the batch's samples and returns p̂ [B,C], or None before the ramp starts."""
        if self.weight <= 0:
            return None
        was_training = model.training
        model.eval()
        with torch.no_grad():
            probs = torch.softmax(model(x).float(), dim=1)
        model.train(was_training)
        return te_update(self.ema, idx, probs)

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.ema}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema.copy_(state["ema"])


class MeowState:
    """The MeoW codebook over the model's penultimate features, with its own optimizer."""

    def __init__(self, model: nn.Module, sample: Tensor, device: torch.device, seed: int) -> None:
        with torch.no_grad():
            dim = model.features(sample[:1]).shape[1]  # type: ignore[operator]
        gen = torch.Generator(device=device).manual_seed(seed + 4)
        self.bank = MeowBank(dim, MeowConfig(), device=device, generator=gen)

    def state_dict(self) -> dict[str, Any]:
        return self.bank.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bank.load_state_dict(state)


@dataclass
class Forward:
    """Logits (and penultimate features when MeoW needs them) of one train-mode forward."""

    logits: Tensor
    features: Tensor | None


def forward(model: nn.Module, x: Tensor, with_features: bool) -> Forward:
    """model(x), or head(features(x)) keeping the features (the same computation)."""
    if not with_features:
        return Forward(model(x), None)
    feats = model.features(x)  # type: ignore[operator]
    return Forward(model.head(feats), feats)  # type: ignore[operator]
