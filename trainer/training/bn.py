"""Batch-norm handling of the optimizer and the schedule (DM-Improves-AT, gowal21uncovering/utils/watrain.py):
weight-decay groups without the BN parameters (`group_weight`: every parameter whose name holds 'batchnorm', i.e.
all BN weights and biases of its WRN-swish), the BN running-statistics momentum, and momentum 1.0 on the run's first
optimizer step (`set_bn_momentum(model, 1.0)` at global step 0, then 0.01: the running statistics start as the
first batch's, as Haiku initialises them)."""

from __future__ import annotations

from typing import Any

from torch import nn

# The momentum of the run's first optimizer step with --bn-first-step: the statistics become the batch's.
FIRST_STEP_MOMENTUM = 1.0


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def set_bn_momentum(model: nn.Module, momentum: float | list[float | None]) -> list[float | None]:
    """Sets every BN layer's momentum (one value, or one per layer as returned); returns the previous values."""
    norms = batch_norms(model)
    before = [m.momentum for m in norms]
    values = momentum if isinstance(momentum, list) else [momentum] * len(norms)
    for m, value in zip(norms, values):
        m.momentum = value
    return before


def parameter_groups(model: nn.Module, weight_decay: float, bn_decay: bool) -> list[dict[str, Any]]:
    """SGD parameter groups: one with `weight_decay`, and without `bn_decay` one of the BN weights and biases with
    none (every parameter appears once)."""
    if bn_decay:
        return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    bn_params = {id(p) for m in batch_norms(model) for p in m.parameters(recurse=False)}
    decay = [p for p in model.parameters() if id(p) not in bn_params]
    exempt = [p for p in model.parameters() if id(p) in bn_params]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]
