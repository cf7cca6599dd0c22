"""Running a model for an attack: eval mode with parameter gradients off, restored exactly afterwards."""

from __future__ import annotations

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


@torch.no_grad()
def clean_probs(model: nn.Module, x: Tensor) -> Tensor:
    """softmax(f(x)) in eval mode, float32 [B,C], detached (the constant target of the KL attack)."""
    with frozen_eval(model):
        return F.softmax(model(x).float(), dim=1)


@torch.no_grad()
def robust_mask(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """bool [B]: argmax f(x) == y, with the model in eval mode (restored afterwards)."""
    with frozen_eval(model):
        return model(x).argmax(dim=1) == y
