"""Temporal Ensembling (TE), a baseline regularizer compared against MemLoss. It plugs into
``memloss.trainer.methods.total.total_loss`` as an ``extra`` term (MeoW, the other baseline, is in meow.py).

TE — Dong et al., "Exploring Memorization in Adversarial Training" (ICLR 2022), official code
dongyp13/memorization-AT (loss.py ``PGD_TE``/``TRADES_TE``, train_te.py):
- state: ``te_init(N, C)`` zeros float32 [N,C], one EMA row per training sample (dataset index);
- each visit (from the start epoch on): clean logits in EVAL mode, ``te_update(state, idx, softmax, eta=0.9)``:
  state[idx] = eta·state[idx] + (1 - eta)·p, target p_hat = state[idx] / sum_c state[idx] (renormalised; with the
  zero start this is a bias correction). The official code normalises by the sum (the slides write the L2 norm);
  we follow the code;
- term ``te_term``: w·mean_{i,c}(softmax(logits) - p_hat)^2 (mean over B·C elements, as ``.mean()`` in the code)
  with w = ``te_weight(epoch, start, end)`` = 300·exp(-5(1 - t)^2), t = (epoch - start)/(end - start);
  0 before start and 300 after end (official start 90, end 150 of 200 epochs; ``te_window`` scales that);
- applied to f(x_adv) for AT and to the clean train-mode f(x) for TRADES (``TE_TARGET``, ``te_logits``). MART and
  HAT are not in the paper: by analogy MART (adversarial CE base) regularises f(x_adv) and HAT (TRADES base)
  f(x). This is our extension;
- the official attack also maximises the TE term. ``te_attack_objective`` gives that objective as a callable
  for ``memloss.trainer.methods.pgd.pgd`` (per sample: CE_i + w·mean_c(...)^2 for AT/MART, beta·KL_i + w·mean_c(...)^2 for
  TRADES/HAT; the official batch means differ by the constant 1/B, which neither the sign step nor the
  per-sample L2 step sees). Using the plain objective instead is the trainer's choice and a documented deviation;
- duplicate indices within one batch are not supported (the loader yields a permutation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from memloss.errors import MemlossError
from memloss.trainer.methods.losses import LossInputs, LossOutput
from memloss.trainer.methods.objectives import Objective
from memloss.trainer.methods.registry import get_method

TE_ETA = 0.9  # EMA momentum (official --te-alpha)
TE_MAX_WEIGHT = 300.0  # official --reg-weight

# Official window: epochs 90 -> 150 of 200.
_TE_START_FRACTION = 90 / 200
_TE_END_FRACTION = 150 / 200

#: Which logits TE regularises for each base method: "adv" = f(x_adv), "clean" = train-mode f(x).
TE_TARGET: dict[str, str] = {"at": "adv", "trades": "clean", "mart": "adv", "hat": "clean"}


class RegularizerError(MemlossError):
    """A TE or MeoW setting is invalid or does not apply to the chosen method."""


def te_init(n: int, num_classes: int, device: torch.device | str = "cpu") -> Tensor:
    """The EMA state: float32 zeros [n, num_classes] (row = dataset index)."""
    return torch.zeros(n, num_classes, dtype=torch.float32, device=device)


def te_update(state: Tensor, idx: Tensor, probs: Tensor, eta: float = TE_ETA) -> Tensor:
    """EMA step in place on ``state[idx]`` and return the target p_hat [B,C] (rows sum to 1, detached).

    state: float32 [N,C]; idx: int64 [B] distinct indices; probs: [B,C] eval-mode clean softmax.
    """
    if not 0.0 <= eta < 1.0:
        raise RegularizerError(f"TE eta must be in [0, 1), got {eta}")
    rows = eta * state[idx] + (1.0 - eta) * probs.detach().float()
    state[idx] = rows
    return rows / rows.sum(dim=1, keepdim=True)


def te_weight(epoch: float, start: float, end: float, max_weight: float = TE_MAX_WEIGHT) -> float:
    """max_weight·exp(-5(1 - t)^2), t = (epoch - start)/(end - start); 0 before start, max_weight after end.

    With start 90, end 150: w(90) = 2.02, w(120) = 85.95, w(150) = 300 (official ``sigmoid_rampup``).
    """
    if not end > start:
        raise RegularizerError(f"TE window must have end > start, got start={start}, end={end}")
    if epoch < start:
        return 0.0
    if epoch > end:
        return float(max_weight)
    phase = 1.0 - (epoch - start) / (end - start)
    return float(max_weight) * math.exp(-5.0 * phase * phase)


def te_window(total_epochs: int) -> tuple[int, int]:
    """The official 90->150-of-200 window scaled to ``total_epochs`` (e.g. 70 -> (32, 52))."""
    if total_epochs < 2:
        raise RegularizerError(f"TE needs at least 2 epochs to ramp up, got {total_epochs}")
    start = round(_TE_START_FRACTION * total_epochs)
    end = max(round(_TE_END_FRACTION * total_epochs), start + 1)
    return start, end


def te_term(logits: Tensor, target: Tensor, weight: float) -> LossOutput:
    """weight·mean_{i,c}(softmax(logits) - target)^2; logits [B,C], target [B,C] (detached p_hat)."""
    mse = (F.softmax(logits.float(), dim=1) - target.detach()).pow(2).mean()
    return LossOutput(weight * mse, {"te_mse": mse.detach()})


def _te_kind(method: str) -> str:
    try:
        return TE_TARGET[get_method(method).name]
    except KeyError:
        raise RegularizerError(f"TE does not apply to method {method!r}; use one of: {', '.join(TE_TARGET)}") from None


def te_logits(method: str, inputs: LossInputs) -> Tensor:
    """The logits TE regularises for ``method``: f(x_adv) for at/mart, the clean f(x) for trades/hat."""
    logits = inputs.logits_adv if _te_kind(method) == "adv" else inputs.logits_clean
    if logits is None:
        raise ValueError(f"TE on {method!r} needs the {_te_kind(method)} logits, which the caller did not provide")
    return logits


def te_attack_objective(method: str, target: Tensor, weight: float, beta: float) -> Objective:
    """Per-sample attack objective of the official TE code (to pass to ``memloss.trainer.methods.pgd.pgd``).

    at/mart: CE_i(f(x_adv), y) + w·mean_c(p(x_adv) - p_hat)^2; trades/hat: beta·KL_i(p_clean || p(x_adv)) +
    w·mean_c(...)^2, where p_clean is the ``p_clean`` argument pgd passes (computed once in eval mode).
    """
    kind = _te_kind(method)
    target = target.detach()

    def objective(logits: Tensor, y: Tensor, p_clean: Tensor | None) -> Tensor:
        logits = logits.float()
        te = (F.softmax(logits, dim=1) - target).pow(2).mean(dim=1)
        if kind == "adv":
            return F.cross_entropy(logits, y, reduction="none") + weight * te
        if p_clean is None:
            raise ValueError("the TE attack objective for a TRADES-like method needs p_clean")
        kl = (torch.xlogy(p_clean, p_clean) - p_clean * F.log_softmax(logits, dim=1)).sum(dim=1)
        return beta * kl + weight * te

    return objective
