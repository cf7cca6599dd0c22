"""Running a model for an attack: eval mode (or train mode with frozen BN statistics) with parameter gradients off,
restored exactly afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with ``requires_grad=False`` on every parameter; restore both on exit.

    Every module's own ``training`` flag is saved (not just the root's), so a caller that froze part of its
    model (e.g. BN layers kept in eval) gets exactly its state back.
    """
    modes = [(module, module.training) for module in model.modules()]
    flags = [(param, param.requires_grad) for param in model.parameters()]
    model.eval()
    for param, _ in flags:
        param.requires_grad_(False)
    try:
        yield model
    finally:
        for module, mode in modes:
            module.training = mode
        for param, flag in flags:
            param.requires_grad_(flag)


@contextmanager
def frozen_train(model: nn.Module) -> Iterator[nn.Module]:
    """Train mode with BN running statistics frozen (each BN layer normalizes with the batch's statistics and
    updates nothing: `track_running_stats` off, as DM-Improves-AT's `track_bn_stats(model, False)`), parameter
    gradients off; modes, flags and requires_grad restored on exit."""
    with frozen_eval(model):
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        tracking = [m.track_running_stats for m in norms]
        model.train()
        for m in norms:
            m.track_running_stats = False
        try:
            yield model
        finally:
            for m, flag in zip(norms, tracking):
                m.track_running_stats = flag


def attack_mode(model: nn.Module, bn: str = "eval") -> contextlib.AbstractContextManager[nn.Module]:
    """The model's mode for an attack: `frozen_eval` ("eval") or `frozen_train` ("train-frozen")."""
    return frozen_train(model) if bn == "train-frozen" else frozen_eval(model)


@torch.no_grad()
def clean_probs(model: nn.Module, x: Tensor, bn: str = "eval") -> Tensor:
    """softmax(f(x)) in the attack's mode (default eval), float32 [B,C], detached (the KL attack's constant
    target)."""
    with attack_mode(model, bn):
        return F.softmax(model(x).float(), dim=1)


@torch.no_grad()
def robust_mask(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """bool [B]: argmax f(x) == y, with the model in eval mode (restored afterwards)."""
    with frozen_eval(model):
        return model(x).argmax(dim=1) == y
