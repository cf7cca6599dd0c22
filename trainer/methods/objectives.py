"""The per-sample objectives an attack maximizes (CE, TRADES' KL, the CW margin), computed in float32."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from memloss.trainer.methods.threat import AttackConfigError

#: Per-sample objective to MAXIMIZE: ``(logits_adv [B,C] float32, y [B] int64, p_clean [B,C] | None) -> [B]``.
Objective = Callable[[Tensor, Tensor, Tensor | None], Tensor]


def ce_objective(logits: Tensor, y: Tensor, p_clean: Tensor | None = None) -> Tensor:
    """Cross-entropy CE(f(x_adv), y) per sample [B]."""
    return F.cross_entropy(logits.float(), y, reduction="none")


def kl_objective(logits: Tensor, y: Tensor, p_clean: Tensor | None = None) -> Tensor:
    """KL(p_clean || softmax(f(x_adv))) per sample [B] (the TRADES/HAT attack); ``p_clean`` is required."""
    if p_clean is None:
        raise ValueError("the 'kl' objective needs p_clean (softmax of the clean logits)")
    log_q = F.log_softmax(logits.float(), dim=1)
    return (torch.xlogy(p_clean, p_clean) - p_clean * log_q).sum(dim=1)


def cw_objective(logits: Tensor, y: Tensor, p_clean: Tensor | None = None) -> Tensor:
    """CW margin max_{j != y} z_j - z_y per sample [B]; > 0 iff the point is misclassified (ties aside)."""
    z = logits.float()
    z_true = z.gather(1, y[:, None]).squeeze(1)
    # scatter (not one_hot, whose range check syncs on CUDA) masks out the true class.
    z_other = z.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return z_other - z_true


OBJECTIVES: dict[str, Objective] = {"ce": ce_objective, "kl": kl_objective, "cw": cw_objective}


def resolve_objective(objective: str | Objective) -> Objective:
    """Return the callable for a registry name (``OBJECTIVES``) or the callable itself."""
    if callable(objective):
        return objective
    try:
        return OBJECTIVES[str(objective).lower()]
    except KeyError:
        valid = ", ".join(OBJECTIVES)
        raise AttackConfigError(
            f"unknown attack objective {objective!r}; use one of: {valid} (or pass a callable)"
        ) from None
