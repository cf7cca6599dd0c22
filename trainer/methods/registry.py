"""The base methods by name: what each needs from the trainer (attack objective and start, which forwards) and its
loss function."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from memloss.trainer.methods.losses import (
    LossConfigError,
    LossInputs,
    LossOutput,
    LossParams,
    at_loss,
    hat_loss,
    mart_loss,
    standard_loss,
    trades_loss,
)

LossFn = Callable[[LossInputs, LossParams], LossOutput]


@dataclass(frozen=True)
class MethodSpec:
    """What a base method needs from the trainer.

    attack_objective: name in ``memloss.trainer.methods.objectives.OBJECTIVES`` for the training attack, None = no attack.
    attack_start: ``memloss.trainer.methods.threat.Start`` value of the training attack ("normal" / "uniform"), None = no attack.
    needs_clean_forward / needs_adv_forward / needs_helper: which train-mode forwards (and HAT's helper model
    and helper example x + 2·(x_adv - x), label = argmax of the helper on x_adv) ``loss_fn`` reads.
    """

    name: str
    attack_objective: str | None
    attack_start: str | None
    needs_clean_forward: bool
    needs_adv_forward: bool
    needs_helper: bool
    loss_fn: LossFn


# MART trains with the official x + 0.001·randn start (mart.py L18); the uniform start of Part A is MART's eval.
METHODS: dict[str, MethodSpec] = {
    "standard": MethodSpec("standard", None, None, True, False, False, standard_loss),
    "at": MethodSpec("at", "ce", "uniform", False, True, False, at_loss),
    "trades": MethodSpec("trades", "kl", "normal", True, True, False, trades_loss),
    "mart": MethodSpec("mart", "ce", "normal", True, True, False, mart_loss),
    "hat": MethodSpec("hat", "kl", "normal", True, True, True, hat_loss),
}


def get_method(name: str | MethodSpec) -> MethodSpec:
    """The ``MethodSpec`` for a registry name (case-insensitive), or the spec itself."""
    if isinstance(name, MethodSpec):
        return name
    try:
        return METHODS[str(name).lower()]
    except KeyError:
        raise LossConfigError(f"unknown training method {name!r}; use one of: {', '.join(METHODS)}") from None
