"""Training losses of memloss: pure functions of logits and labels (no model, optimizer or attack in here).

Every loss returns ``LossOutput(loss, metrics)``: ``loss`` a float32 scalar tensor carrying the graph, ``metrics``
detached scalar tensors (no host sync; the trainer accumulates them). Shapes: B batch, C classes, K memory depth.
KL(p || q) = sum_c p_c (log p_c - log q_c), computed from log_softmax; "batchmean" = summed KL / B. Targets are
not detached (gradient flows through both arguments, as in the official TRADES/MART/HAT/MemLoss code).
Formulas: shared/spec/algorithms.md, Part A; constants of MART from its official code (Part B section 3).

- standard: CE(f(x), y)
- at:       CE(f(x_adv), y)
- label smoothing ε (``LossParams.label_smoothing``, default 0) applies to the clean-example term CE(f(x), y) only:
  standard, trades and hat (never the KL, the adversarial CE, HAT's helper CE or MemLoss), as the published
  TRADES/HAT code of the generated-data recipe does (DM-Improves-AT gowal21uncovering/utils/trades.py,
  imrahulr/hat gowal21uncovering/utils/hat.py: ``SmoothCrossEntropyLoss`` on the natural logits):
  (1-ε)·(-log p_y) + ε·mean_c(-log p_c), which is torch's ``cross_entropy(..., label_smoothing=ε)``
- trades:   CE(f(x), y) + beta·KL(p(x) || p(x_adv))
- mart:     BCE(f(x_adv), y) + beta·(1/B)·sum_i KL_i(p(x) || p(x_adv))·(1.0000001 - p_y(x)_i), with
            BCE = CE(f(x_adv), y) + NLL(log(1.0001 - p(x_adv) + 1e-12), y'), y' the most likely wrong class, and
            the KL's second argument taken as log(p(x_adv) + 1e-12) as in the official code
- hat:      CE(f(x), y) + beta·KL(p(x) || p(x_adv)) + gamma·CE(f(x_help), y_help)
- MemLoss term (``memloss_term``), summed over memory slots k = 1..K (slot k = epoch n-k):
  v1 (paper eq. 5, default): beta'_k·(1/B)·sum_i valid_ki·KL_i(p(x) || p(x''_k))·(1 - p_y(x''_k)_i)
                             (the weight comes from the same forward and is not detached)
  v2: the same without the weight
  v3: beta'_k·(1/B)·sum_i valid_ki·KL_i(p(x''_k) || p(x_adv))
  A slot without memory (valid False) contributes exactly 0 and no gradient (the paper replaces x''_k by x,
  which also gives KL = 0). The division is by the full B, valid or not. With slot sampling each drawn slot's
  beta'_k is multiplied by its importance weight S/m (unbiased); clean_grad "stop" detaches p(x) (v1, v2).

The trainer calls one function, ``total_loss(method, inputs, params, memory=..., memloss=..., extra=...)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from memloss.errors import MemlossError

# MART official constants (YisenWang/MART mart.py): keep log() finite and the weights strictly positive.
_MART_BCE_ONE = 1.0001
_MART_LOG_EPS = 1e-12
_MART_WEIGHT_ONE = 1.0000001


class LossConfigError(MemlossError):
    """A loss setting (method, variant, beta, beta_prime) is invalid."""


@dataclass(frozen=True)
class LossOutput:
    """``loss``: float32 scalar with graph; ``metrics``: name -> detached float32 scalar tensor."""

    loss: Tensor
    metrics: dict[str, Tensor]


@dataclass(frozen=True)
class LossInputs:
    """Logits of the train-mode forwards a method needs (None when not computed).

    y: int64 [B]; logits_clean, logits_adv, logits_help: [B,C] (any float dtype; losses compute in float32);
    y_help: int64 [B], the helper label of HAT.
    """

    y: Tensor
    logits_clean: Tensor | None = None
    logits_adv: Tensor | None = None
    logits_help: Tensor | None = None
    y_help: Tensor | None = None


def check_coefficient(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise LossConfigError(f"loss coefficient {name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class LossParams:
    """beta: weight of the robust (KL) term of TRADES/MART/HAT; gamma: weight of HAT's helper CE. Both >= 0;
    a method ignores what it does not use. label_smoothing in [0, 1): ε of the clean CE term (standard, trades,
    hat). Per-dataset values are the trainer configuration's job."""

    beta: float
    gamma: float
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        check_coefficient("beta", self.beta)
        check_coefficient("gamma", self.gamma)
        check_coefficient("label_smoothing", self.label_smoothing)
        if self.label_smoothing >= 1:
            raise LossConfigError(f"label_smoothing must be < 1, got {self.label_smoothing}")


def kl_rows(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """Per-row KL(softmax(logits_p) || softmax(logits_q)) in float32; inputs [..., C], output [...]."""
    log_p = F.log_softmax(logits_p.float(), dim=-1)
    log_q = F.log_softmax(logits_q.float(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def require(value: Tensor | None, name: str, method: str) -> Tensor:
    if value is None:
        raise ValueError(f"loss '{method}' needs {name}, which the caller did not provide")
    return value


def _accuracy(logits: Tensor, y: Tensor) -> Tensor:
    return (logits.detach().argmax(dim=-1) == y).float().mean()


def detached_metrics(**values: Tensor) -> dict[str, Tensor]:
    return {name: value.detach().float() for name, value in values.items()}


def _ce(logits: Tensor, y: Tensor, smoothing: float = 0.0) -> Tensor:
    return F.cross_entropy(logits.float(), y, label_smoothing=smoothing)


def standard_loss(inputs: LossInputs, params: LossParams) -> LossOutput:
    """CE(f(x), y) (the non-robust model, e.g. HAT's helper), label-smoothed by params.label_smoothing."""
    clean = require(inputs.logits_clean, "logits_clean", "standard")
    ce = _ce(clean, inputs.y, params.label_smoothing)
    return LossOutput(ce, detached_metrics(ce=ce, acc_clean=_accuracy(clean, inputs.y)))


def at_loss(inputs: LossInputs, params: LossParams) -> LossOutput:
    """Madry AT: CE(f(x_adv), y)."""
    adv = require(inputs.logits_adv, "logits_adv", "at")
    ce_adv = _ce(adv, inputs.y)
    metrics = detached_metrics(ce_adv=ce_adv, acc_adv=_accuracy(adv, inputs.y))
    if inputs.logits_clean is not None:
        metrics["acc_clean"] = _accuracy(inputs.logits_clean, inputs.y)
    return LossOutput(ce_adv, metrics)


def trades_loss(inputs: LossInputs, params: LossParams) -> LossOutput:
    """TRADES: CE(f(x), y) + beta·KL(p(x) || p(x_adv)) (batchmean); the CE label-smoothed by params.label_smoothing."""
    clean = require(inputs.logits_clean, "logits_clean", "trades")
    adv = require(inputs.logits_adv, "logits_adv", "trades")
    ce = _ce(clean, inputs.y, params.label_smoothing)
    kl = kl_rows(clean, adv).mean()
    metrics = detached_metrics(ce=ce, kl=kl, acc_clean=_accuracy(clean, inputs.y), acc_adv=_accuracy(adv, inputs.y))
    return LossOutput(ce + params.beta * kl, metrics)


def _mart_bce(adv: Tensor, y: Tensor) -> Tensor:
    """CE(f(x_adv), y) + NLL(log(1.0001 - p(x_adv) + 1e-12), y'), y' = most likely wrong class (both means)."""
    adv_probs = F.softmax(adv.float(), dim=1)
    top2 = adv_probs.topk(2, dim=1).indices
    wrong = torch.where(top2[:, 0] == y, top2[:, 1], top2[:, 0])
    return _ce(adv, y) + F.nll_loss(torch.log(_MART_BCE_ONE - adv_probs + _MART_LOG_EPS), wrong)


def mart_loss(inputs: LossInputs, params: LossParams) -> LossOutput:
    """MART: BCE + beta·(1/B)·sum_i KL_i(p(x) || p(x_adv))·(1.0000001 - p_y(x)_i), weight not detached."""
    clean = require(inputs.logits_clean, "logits_clean", "mart")
    adv = require(inputs.logits_adv, "logits_adv", "mart")
    bce = _mart_bce(adv, inputs.y)
    log_nat = F.log_softmax(clean.float(), dim=1)
    nat_probs = log_nat.exp()
    # Official: KLDivLoss(log(adv_probs + 1e-12), nat_probs), i.e. the adversarial log is taken with an epsilon.
    log_adv = torch.log(F.softmax(adv.float(), dim=1) + _MART_LOG_EPS)
    kl = (nat_probs * (log_nat - log_adv)).sum(dim=1)
    true_probs = nat_probs.gather(1, inputs.y[:, None]).squeeze(1)
    robust = (kl * (_MART_WEIGHT_ONE - true_probs)).mean()
    metrics = detached_metrics(bce=bce, kl_weighted=robust, acc_clean=_accuracy(clean, inputs.y),
                       acc_adv=_accuracy(adv, inputs.y))
    return LossOutput(bce + params.beta * robust, metrics)


def hat_loss(inputs: LossInputs, params: LossParams) -> LossOutput:
    """HAT: CE(f(x), y) + beta·KL(p(x) || p(x_adv)) + gamma·CE(f(x_help), y_help)."""
    help_logits = require(inputs.logits_help, "logits_help", "hat")
    y_help = require(inputs.y_help, "y_help", "hat")
    trades = trades_loss(inputs, params)
    ce_help = _ce(help_logits, y_help)
    metrics = {**trades.metrics, **detached_metrics(ce_help=ce_help)}
    return LossOutput(trades.loss + params.gamma * ce_help, metrics)
