"""Training losses of memloss: pure functions of logits and labels (no model, optimizer or attack in here).

Every loss returns ``LossOutput(loss, metrics)``: ``loss`` a float32 scalar tensor carrying the graph, ``metrics``
detached scalar tensors (no host sync; the trainer accumulates them). Shapes: B batch, C classes, K memory depth.
KL(p || q) = sum_c p_c (log p_c - log q_c), computed from log_softmax; "batchmean" = summed KL / B. Targets are
not detached (gradient flows through both arguments, as in the official TRADES/MART/HAT/MemLoss code).
Formulas: shared/spec/algorithms.md, Part A; constants of MART from its official code (Part B section 3).

- standard: CE(f(x), y)
- at:       CE(f(x_adv), y)
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
  which also gives KL = 0). The division is by the full B, valid or not.

The trainer calls one function, ``total_loss(method, inputs, params, memory=..., memloss=..., extra=...)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import torch
import torch.nn.functional as F
from torch import Tensor

from memstore.errors import MemlossError

__all__ = [
    "LossConfigError",
    "LossOutput",
    "LossInputs",
    "LossParams",
    "MethodSpec",
    "METHODS",
    "get_method",
    "MemLossVariant",
    "MEMLOSS_VARIANTS",
    "MemLossConfig",
    "MemoryInputs",
    "kl_rows",
    "broadcast_beta_prime",
    "memloss_term",
    "total_loss",
    "standard_loss",
    "at_loss",
    "trades_loss",
    "mart_loss",
    "hat_loss",
]

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


def _check_coefficient(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise LossConfigError(f"loss coefficient {name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class LossParams:
    """beta: weight of the robust (KL) term of TRADES/MART/HAT; gamma: weight of HAT's helper CE. Both >= 0;
    a method ignores what it does not use. Per-dataset values are the trainer configuration's job."""

    beta: float
    gamma: float

    def __post_init__(self) -> None:
        _check_coefficient("beta", self.beta)
        _check_coefficient("gamma", self.gamma)


# ---------------------------------------------------------------------------------------------------------------
# Building blocks.


def kl_rows(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """Per-row KL(softmax(logits_p) || softmax(logits_q)) in float32; inputs [..., C], output [...]."""
    log_p = F.log_softmax(logits_p.float(), dim=-1)
    log_q = F.log_softmax(logits_q.float(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def _need(value: Tensor | None, name: str, method: str) -> Tensor:
    if value is None:
        raise ValueError(f"loss '{method}' needs {name}, which the caller did not provide")
    return value


def _accuracy(logits: Tensor, y: Tensor) -> Tensor:
    return (logits.detach().argmax(dim=-1) == y).float().mean()


def _metrics(**values: Tensor) -> dict[str, Tensor]:
    return {name: value.detach().float() for name, value in values.items()}


def _ce(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits.float(), y)


# ---------------------------------------------------------------------------------------------------------------
# Base methods. Signature: fn(inputs: LossInputs, params: LossParams) -> LossOutput.


def standard_loss(inputs: LossInputs, params: LossParams) -> LossOutput:
    """CE(f(x), y) (the non-robust model, e.g. HAT's helper)."""
    clean = _need(inputs.logits_clean, "logits_clean", "standard")
    ce = _ce(clean, inputs.y)
    return LossOutput(ce, _metrics(ce=ce, acc_clean=_accuracy(clean, inputs.y)))


def at_loss(inputs: LossInputs, params: LossParams) -> LossOutput:
    """Madry AT: CE(f(x_adv), y)."""
    adv = _need(inputs.logits_adv, "logits_adv", "at")
    ce_adv = _ce(adv, inputs.y)
    metrics = _metrics(ce_adv=ce_adv, acc_adv=_accuracy(adv, inputs.y))
    if inputs.logits_clean is not None:
        metrics["acc_clean"] = _accuracy(inputs.logits_clean, inputs.y)
    return LossOutput(ce_adv, metrics)


def trades_loss(inputs: LossInputs, params: LossParams) -> LossOutput:
    """TRADES: CE(f(x), y) + beta·KL(p(x) || p(x_adv)) (batchmean)."""
    clean = _need(inputs.logits_clean, "logits_clean", "trades")
    adv = _need(inputs.logits_adv, "logits_adv", "trades")
    ce = _ce(clean, inputs.y)
    kl = kl_rows(clean, adv).mean()
    metrics = _metrics(ce=ce, kl=kl, acc_clean=_accuracy(clean, inputs.y), acc_adv=_accuracy(adv, inputs.y))
    return LossOutput(ce + params.beta * kl, metrics)


def _mart_bce(adv: Tensor, y: Tensor) -> Tensor:
    """CE(f(x_adv), y) + NLL(log(1.0001 - p(x_adv) + 1e-12), y'), y' = most likely wrong class (both means)."""
    adv_probs = F.softmax(adv.float(), dim=1)
    top2 = adv_probs.topk(2, dim=1).indices
    wrong = torch.where(top2[:, 0] == y, top2[:, 1], top2[:, 0])
    return _ce(adv, y) + F.nll_loss(torch.log(_MART_BCE_ONE - adv_probs + _MART_LOG_EPS), wrong)


def mart_loss(inputs: LossInputs, params: LossParams) -> LossOutput:
    """MART: BCE + beta·(1/B)·sum_i KL_i(p(x) || p(x_adv))·(1.0000001 - p_y(x)_i), weight not detached."""
    clean = _need(inputs.logits_clean, "logits_clean", "mart")
    adv = _need(inputs.logits_adv, "logits_adv", "mart")
    bce = _mart_bce(adv, inputs.y)
    log_nat = F.log_softmax(clean.float(), dim=1)
    nat_probs = log_nat.exp()
    # Official: KLDivLoss(log(adv_probs + 1e-12), nat_probs), i.e. the adversarial log is taken with an epsilon.
    log_adv = torch.log(F.softmax(adv.float(), dim=1) + _MART_LOG_EPS)
    kl = (nat_probs * (log_nat - log_adv)).sum(dim=1)
    true_probs = nat_probs.gather(1, inputs.y[:, None]).squeeze(1)
    robust = (kl * (_MART_WEIGHT_ONE - true_probs)).mean()
    metrics = _metrics(bce=bce, kl_weighted=robust, acc_clean=_accuracy(clean, inputs.y),
                       acc_adv=_accuracy(adv, inputs.y))
    return LossOutput(bce + params.beta * robust, metrics)


def hat_loss(inputs: LossInputs, params: LossParams) -> LossOutput:
    """HAT: CE(f(x), y) + beta·KL(p(x) || p(x_adv)) + gamma·CE(f(x_help), y_help)."""
    help_logits = _need(inputs.logits_help, "logits_help", "hat")
    y_help = _need(inputs.y_help, "y_help", "hat")
    trades = trades_loss(inputs, params)
    ce_help = _ce(help_logits, y_help)
    metrics = {**trades.metrics, **_metrics(ce_help=ce_help)}
    return LossOutput(trades.loss + params.gamma * ce_help, metrics)


LossFn = Callable[[LossInputs, LossParams], LossOutput]


@dataclass(frozen=True)
class MethodSpec:
    """What a base method needs from the trainer.

    attack_objective: name in ``trainer.attacks.OBJECTIVES`` for the training attack, None = no attack.
    attack_start: ``trainer.attacks.Start`` value of the training attack ("normal" / "uniform"), None = no attack.
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


# ---------------------------------------------------------------------------------------------------------------
# MemLoss term.


class MemLossVariant(StrEnum):
    """v1: paper eq. 5 (weighted); v2: without the weight (A.1); v3: KL(p(x'') || p(x_adv)) (A.2)."""

    V1 = "v1"
    V2 = "v2"
    V3 = "v3"


MEMLOSS_VARIANTS: tuple[str, ...] = tuple(v.value for v in MemLossVariant)


def _variant(value: object) -> MemLossVariant:
    try:
        return MemLossVariant(str(value).lower())
    except ValueError:
        raise LossConfigError(
            f"unknown MemLoss variant {value!r}; use one of: {', '.join(MEMLOSS_VARIANTS)}"
        ) from None


@dataclass(frozen=True)
class MemLossConfig:
    """beta_prime: one value for all K slots, or a sequence of K values (slot 1 = epoch n-1 first), each >= 0;
    variant: ``MemLossVariant`` or its string."""

    beta_prime: float | tuple[float, ...]
    variant: MemLossVariant = MemLossVariant.V1

    def __post_init__(self) -> None:
        object.__setattr__(self, "variant", _variant(self.variant))
        if isinstance(self.beta_prime, Sequence) and not isinstance(self.beta_prime, str):
            values = tuple(self.beta_prime)
            if not values:
                raise LossConfigError("beta_prime is empty; give one value or one per memory slot")
            object.__setattr__(self, "beta_prime", values)
        else:
            values = (self.beta_prime,)  # type: ignore[assignment]
        for value in values:
            _check_coefficient("beta_prime", value)

    def per_slot(self, k: int) -> tuple[float, ...]:
        """beta'_1..beta'_K for a memory of depth ``k``: a scalar (or 1-element list) is broadcast."""
        return broadcast_beta_prime(self.beta_prime, k)


def broadcast_beta_prime(beta_prime: float | Sequence[float], k: int) -> tuple[float, ...]:
    """A scalar or 1-sequence repeated K times, or a sequence of exactly K values; anything else is an error."""
    values = tuple(float(v) for v in beta_prime) if isinstance(beta_prime, Sequence) else (float(beta_prime),)
    if len(values) == 1:
        return values * k
    if len(values) != k:
        raise LossConfigError(
            f"beta_prime has {len(values)} values but the memory depth K is {k}; give 1 value or exactly {k}"
        )
    return values


@dataclass(frozen=True)
class MemoryInputs:
    """Logits of the K memory examples of the batch: ``logits_mem`` [K,B,C] (slot 0 = epoch n-1, stack the K
    train-mode forwards), ``valid`` bool [K,B] (False where slot k of sample i has no committed memory yet)."""

    logits_mem: Tensor
    valid: Tensor

    def __post_init__(self) -> None:
        if self.logits_mem.dim() != 3:
            raise ValueError(f"logits_mem must be [K,B,C], got shape {tuple(self.logits_mem.shape)}")
        if self.valid.dtype != torch.bool or self.valid.shape != self.logits_mem.shape[:2]:
            raise ValueError(
                f"valid must be bool [K,B]={tuple(self.logits_mem.shape[:2])}, "
                f"got {self.valid.dtype} {tuple(self.valid.shape)}"
            )


def _memory_rows(
    logits_clean: Tensor | None, logits_mem: Tensor, y: Tensor, variant: MemLossVariant, logits_adv: Tensor | None,
) -> Tensor:
    """Per-slot, per-sample term before masking and beta': float32 [K,B]."""
    if variant is MemLossVariant.V3:
        adv = _need(logits_adv, "logits_adv", "memloss v3")
        return kl_rows(logits_mem, adv.unsqueeze(0).expand_as(logits_mem))
    clean = _need(logits_clean, "logits_clean", f"memloss {variant.value}")
    kl = kl_rows(clean.unsqueeze(0).expand_as(logits_mem), logits_mem)
    if variant is MemLossVariant.V2:
        return kl
    p_true = F.softmax(logits_mem.float(), dim=-1).gather(2, y.view(1, -1, 1).expand(logits_mem.shape[0], -1, 1))
    return kl * (1.0 - p_true.squeeze(2))


def memloss_term(
    logits_clean: Tensor | None,
    logits_mem: Tensor,
    y: Tensor,
    valid: Tensor,
    beta_prime: float | Sequence[float],
    variant: str | MemLossVariant = MemLossVariant.V1,
    logits_adv: Tensor | None = None,
) -> LossOutput:
    """The MemLoss term summed over the K memory slots (formulas in the module docstring).

    logits_clean [B,C] (v1, v2), logits_mem [K,B,C], y int64 [B], valid bool [K,B], beta_prime scalar or K values,
    logits_adv [B,C] (v3). Metrics: ``mem_loss`` (the weighted sum), ``mem_term_k`` for k = 1..K (slot term
    before beta'), ``mem_correct``/``mem_count`` (argmax == y and count over valid memory examples) and
    ``mem_acc`` = correct / max(count, 1).
    """
    memory = MemoryInputs(logits_mem, valid)
    weights = broadcast_beta_prime(beta_prime, logits_mem.shape[0])
    rows = _memory_rows(logits_clean, logits_mem, y, _variant(variant), logits_adv)
    # where() (not a multiply) so that garbage logits in an invalid slot give exactly 0 and a zero gradient.
    per_slot = torch.where(memory.valid, rows, torch.zeros_like(rows)).sum(dim=1) / y.shape[0]
    loss = sum((w * per_slot[k] for k, w in enumerate(weights)), start=torch.zeros((), device=rows.device))
    correct = ((logits_mem.detach().argmax(dim=-1) == y) & valid).sum().float()
    count = valid.sum().float()
    metrics = _metrics(mem_loss=loss, mem_correct=correct, mem_count=count, mem_acc=correct / count.clamp_min(1.0))
    metrics.update({f"mem_term_{k + 1}": per_slot[k].detach() for k in range(len(weights))})
    return LossOutput(loss, metrics)


# ---------------------------------------------------------------------------------------------------------------
# The one call of the trainer.


def total_loss(
    method: str | MethodSpec,
    inputs: LossInputs,
    params: LossParams,
    *,
    memory: MemoryInputs | None = None,
    memloss: MemLossConfig | None = None,
    extra: Mapping[str, LossOutput] | None = None,
    base: LossOutput | None = None,
) -> LossOutput:
    """base method loss (+ MemLoss term when ``memory`` is given) (+ every ``extra`` regularizer term).

    ``base`` replaces the registry loss of ``method`` (used by MeoW, whose reweighted AT/TRADES loss comes from
    ``trainer.regularizers.meow_loss``). ``extra`` maps a name to a term (e.g. TE's ``te_term``); its metrics are
    merged under their own names. ``metrics["loss"]`` is the total.
    """
    out = base if base is not None else get_method(method).loss_fn(inputs, params)
    loss, metrics = out.loss, dict(out.metrics)
    if memory is not None:
        if memloss is None:
            raise ValueError("total_loss got memory inputs but no MemLossConfig")
        term = memloss_term(inputs.logits_clean, memory.logits_mem, inputs.y, memory.valid, memloss.beta_prime,
                            memloss.variant, inputs.logits_adv)
        loss = loss + term.loss
        metrics.update(term.metrics)
    for term in (extra or {}).values():
        loss = loss + term.loss
        metrics.update(term.metrics)
    metrics["loss"] = loss.detach().float()
    return LossOutput(loss, metrics)
