"""The MemLoss term (paper eq. 5 and its variants), summed over the K memory slots; formulas in
methods/losses.py.

A slot without memory (the first K epochs, or a sample the epoch before did not visit) is, as the paper's Algorithm 1
says, the clean example itself: x″ = x. For V1 and V2 the term is then KL(p(x)‖p(x)) = 0, so such a row contributes
exactly 0 and no gradient (masked, so garbage logits of an empty row cannot leak in). For V3 it is
KL(p(x)‖p(x_adv)), not 0: the logits of x from the clean train-mode forward stand in for the row's memory logits
(the logits a forward of x″ = x would give when no row of the slot holds memory, as in the first K epochs).

Two options change what the term computes, both passed in (this module stays pure):
- slot weights: when the trainer uses only m of the S slots holding memory (slot sampling), each drawn slot's term
  is multiplied by its importance weight S/m, so the expected term equals the full S-slot term;
- clean gradient: ``through`` (paper eq. 5) back-propagates the KL into p(x); ``stop`` treats p(x) as a constant
  target of the MemLoss term (the base loss still trains p(x)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import torch
import torch.nn.functional as F
from torch import Tensor

from memloss.trainer.methods.losses import (
    LossConfigError,
    LossOutput,
    check_coefficient,
    detached_metrics,
    kl_rows,
    require,
)


class MemLossVariant(StrEnum):
    """v1: paper eq. 5 (weighted); v2: without the weight (A.1); v3: KL(p(x'') || p(x_adv)) (A.2)."""

    V1 = "v1"
    V2 = "v2"
    V3 = "v3"


MEMLOSS_VARIANTS: tuple[str, ...] = tuple(v.value for v in MemLossVariant)


class CleanGrad(StrEnum):
    """Whether the MemLoss KL back-propagates into p(x): through (paper eq. 5) or stop (p(x) detached)."""

    THROUGH = "through"
    STOP = "stop"


CLEAN_GRADS: tuple[str, ...] = tuple(v.value for v in CleanGrad)


def _variant(value: object) -> MemLossVariant:
    try:
        return MemLossVariant(str(value).lower())
    except ValueError:
        raise LossConfigError(
            f"unknown MemLoss variant {value!r}; use one of: {', '.join(MEMLOSS_VARIANTS)}"
        ) from None


def _clean_grad(value: object, variant: MemLossVariant) -> CleanGrad:
    try:
        grad = CleanGrad(str(value).lower())
    except ValueError:
        raise LossConfigError(f"unknown clean gradient {value!r}; use one of: {', '.join(CLEAN_GRADS)}") from None
    if grad is CleanGrad.STOP and variant is MemLossVariant.V3:
        raise LossConfigError("memloss variant v3 has no p(x) in its KL; use clean_grad 'through' with v3")
    return grad


@dataclass(frozen=True)
class MemLossConfig:
    """beta_prime: one value for all K slots, or a sequence of K values (slot 1 = epoch n-1 first), each >= 0;
    variant: ``MemLossVariant`` or its string; clean_grad: ``CleanGrad`` or its string (``stop`` needs v1 or v2)."""

    beta_prime: float | tuple[float, ...]
    variant: MemLossVariant = MemLossVariant.V1
    clean_grad: CleanGrad = CleanGrad.THROUGH

    def __post_init__(self) -> None:
        object.__setattr__(self, "variant", _variant(self.variant))
        object.__setattr__(self, "clean_grad", _clean_grad(self.clean_grad, self.variant))
        if isinstance(self.beta_prime, Sequence) and not isinstance(self.beta_prime, str):
            values = tuple(self.beta_prime)
            if not values:
                raise LossConfigError("beta_prime is empty; give one value or one per memory slot")
            object.__setattr__(self, "beta_prime", values)
        else:
            values = (self.beta_prime,)  # type: ignore[assignment]
        for value in values:
            check_coefficient("beta_prime", value)

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
    """Logits of the K memory examples of the batch: ``logits_mem`` [K,B,C] (stack the K train-mode forwards),
    ``valid`` bool [K,B] (False where slot k of sample i has no committed memory yet).

    slots: the memory age of each of the K rows (0 = epoch n-1, ...; None = 0..K-1), used to name the per-slot
    metrics; slot_weights: K importance weights (None = all 1) multiplying beta' (slot sampling: S/m)."""

    logits_mem: Tensor
    valid: Tensor
    slots: tuple[int, ...] | None = None
    slot_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.logits_mem.dim() != 3:
            raise ValueError(f"logits_mem must be [K,B,C], got shape {tuple(self.logits_mem.shape)}")
        if self.valid.dtype != torch.bool or self.valid.shape != self.logits_mem.shape[:2]:
            raise ValueError(
                f"valid must be bool [K,B]={tuple(self.logits_mem.shape[:2])}, "
                f"got {self.valid.dtype} {tuple(self.valid.shape)}"
            )
        k = self.logits_mem.shape[0]
        for name in ("slots", "slot_weights"):
            value = getattr(self, name)
            if value is not None and len(value) != k:
                raise ValueError(f"{name} must have one entry per memory slot (K={k}), got {len(value)}")


def _memory_rows(
    logits_clean: Tensor | None, logits_mem: Tensor, y: Tensor, valid: Tensor, variant: MemLossVariant,
    logits_adv: Tensor | None, clean_grad: CleanGrad = CleanGrad.THROUGH,
) -> Tensor:
    """Per-slot, per-sample term before masking and beta': float32 [K,B] (V3: rows without memory use x″ = x)."""
    if variant is MemLossVariant.V3:
        adv = require(logits_adv, "logits_adv", "memloss v3")
        clean = require(logits_clean, "logits_clean", "memloss v3 (x″ = x where a slot holds no memory)")
        mem = torch.where(valid.unsqueeze(-1), logits_mem, clean.unsqueeze(0).to(logits_mem.dtype))
        return kl_rows(mem, adv.unsqueeze(0).expand_as(logits_mem))
    clean = require(logits_clean, "logits_clean", f"memloss {variant.value}")
    if clean_grad is CleanGrad.STOP:
        clean = clean.detach()
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
    *,
    slots: Sequence[int] | None = None,
    slot_weights: Sequence[float] | None = None,
    clean_grad: str | CleanGrad = CleanGrad.THROUGH,
) -> LossOutput:
    """The MemLoss term summed over the K memory slots (formulas in the module docstring).

    logits_clean [B,C] (v1, v2), logits_mem [K,B,C], y int64 [B], valid bool [K,B], beta_prime scalar or K values,
    logits_adv [B,C] (v3); slots: the memory age of each row of logits_mem (0 = epoch n-1; default 0..K-1);
    slot_weights: K importance weights multiplying beta' (default 1; slot sampling passes S/m); clean_grad:
    ``stop`` detaches p(x) in the KL. Metrics: ``mem_loss`` (the weighted sum), ``mem_term_<a+1>`` for each memory
    age a (the slot's term before beta', times its importance weight: its epoch mean estimates the full term
    without bias), ``mem_correct``/``mem_count`` (argmax == y and count over valid memory examples) and
    ``mem_acc`` = correct / max(count, 1).
    """
    memory = MemoryInputs(logits_mem, valid, tuple(slots) if slots is not None else None,
                          tuple(slot_weights) if slot_weights is not None else None)
    k = logits_mem.shape[0]
    beta = broadcast_beta_prime(beta_prime, k)
    importance = memory.slot_weights or (1.0,) * k
    variant = _variant(variant)
    rows = _memory_rows(logits_clean, logits_mem, y, memory.valid, variant, logits_adv,
                        _clean_grad(clean_grad, variant))
    if variant is not MemLossVariant.V3:
        # where() (not a multiply) so that garbage logits in an invalid slot give exactly 0 and a zero gradient.
        rows = torch.where(memory.valid, rows, torch.zeros_like(rows))
    per_slot = rows.sum(dim=1) / y.shape[0]
    estimate = [importance[j] * per_slot[j] for j in range(k)]
    loss = sum((b * e for b, e in zip(beta, estimate)), start=torch.zeros((), device=rows.device))
    correct = ((logits_mem.detach().argmax(dim=-1) == y) & valid).sum().float()
    count = valid.sum().float()
    metrics = detached_metrics(mem_loss=loss, mem_correct=correct, mem_count=count, mem_acc=correct / count.clamp_min(1.0))
    ages = memory.slots or tuple(range(k))
    metrics.update({f"mem_term_{age + 1}": estimate[j].detach() for j, age in enumerate(ages)})
    return LossOutput(loss, metrics)
