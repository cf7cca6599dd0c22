"""The MemLoss term (paper eq. 5 and its variants), summed over the K memory slots; formulas in
methods/losses.py. A slot without memory contributes exactly 0 and no gradient."""

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
        adv = require(logits_adv, "logits_adv", "memloss v3")
        return kl_rows(logits_mem, adv.unsqueeze(0).expand_as(logits_mem))
    clean = require(logits_clean, "logits_clean", f"memloss {variant.value}")
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
    metrics = detached_metrics(mem_loss=loss, mem_correct=correct, mem_count=count, mem_acc=correct / count.clamp_min(1.0))
    metrics.update({f"mem_term_{k + 1}": per_slot[k].detach() for k in range(len(weights))})
    return LossOutput(loss, metrics)
