"""The threat model of an attack (`PGDConfig`: norm, ε, step, steps, restarts, start) and its geometry: projection
onto the ε-ball and [0, 1], the ascent step, and the random start."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import torch
from torch import Tensor

from memloss.errors import MemlossError

# Standard deviation of the "normal" start (TRADES/HAT/MART official code: x + 0.001 * randn).
_NORMAL_START_STD = 0.001
ATTACK_BN_MODES = ("eval", "train-frozen")


class AttackConfigError(MemlossError):
    """An attack setting (norm, eps, steps, start, objective) is invalid."""


class Norm(StrEnum):
    """Threat model of the attack."""

    LINF = "linf"
    L2 = "l2"


class Start(StrEnum):
    """How the first iterate is drawn when no ``init`` is given."""

    NORMAL = "normal"  # x + 0.001 * N(0, I)
    UNIFORM = "uniform"  # uniform in the eps-ball
    ZERO = "zero"  # x itself


_E = TypeVar("_E", bound=StrEnum)


def _enum_value(enum: type[_E], value: object, field: str) -> _E:
    try:
        return enum(str(value).lower())
    except ValueError:
        valid = ", ".join(e.value for e in enum)
        raise AttackConfigError(f"unknown attack {field} {value!r}; use one of: {valid}") from None


@dataclass(frozen=True)
class PGDConfig:
    """Settings of one PGD attack.

    Parameters
    ----------
    norm: ``Norm`` (or its string value) — the threat model.
    eps: radius of the ball, in [0, 1] pixel units (e.g. 8/255 for Linf, 128/255 for L2); > 0.
    step_size: alpha, same units as eps; > 0.
    steps: number of gradient steps; >= 0 (0 returns the projected start point).
    restarts: number of independent runs; >= 1.
    start: ``Start`` (or its string value) — the first iterate when no ``init`` is passed.
    bn: how the model runs during the attack: "eval" (eval mode, running BN statistics; TRADES/HAT/MemLoss
        official) or "train-frozen" (train mode, BN on the batch's statistics, running statistics not updated;
        DM-Improves-AT's `track_bn_stats(model, False)`); methods/modes.py.
    """

    norm: Norm
    eps: float
    step_size: float
    steps: int
    restarts: int = 1
    start: Start = Start.NORMAL
    bn: str = "eval"

    def __post_init__(self) -> None:
        if self.bn not in ATTACK_BN_MODES:
            raise AttackConfigError(f"unknown attack BN mode {self.bn!r}; valid: {', '.join(ATTACK_BN_MODES)}")
        object.__setattr__(self, "norm", _enum_value(Norm, self.norm, "norm"))
        object.__setattr__(self, "start", _enum_value(Start, self.start, "start"))
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise AttackConfigError(f"attack eps must be a finite number > 0, got {self.eps}")
        if not (math.isfinite(self.step_size) and self.step_size > 0):
            raise AttackConfigError(f"attack step_size must be a finite number > 0, got {self.step_size}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise AttackConfigError(f"attack steps must be an integer >= 0, got {self.steps!r}")
        if isinstance(self.restarts, bool) or not isinstance(self.restarts, int) or self.restarts < 1:
            raise AttackConfigError(f"attack restarts must be an integer >= 1, got {self.restarts!r}")


def _per_sample_l2(t: Tensor) -> Tensor:
    """L2 norm per sample, shaped [B, 1, ..., 1] to broadcast against ``t``."""
    norms = torch.linalg.vector_norm(t.flatten(1), dim=1)
    return norms.view(-1, *([1] * (t.dim() - 1)))


def _project(x_adv: Tensor, x: Tensor, cfg: PGDConfig) -> Tensor:
    """Project onto the eps-ball around x, then clamp to [0, 1] (clamping keeps a point of the ball inside it
    because x is in [0, 1]: it only shrinks |x_adv - x| coordinate-wise)."""
    if cfg.norm is Norm.LINF:
        x_adv = torch.clamp(x_adv, x - cfg.eps, x + cfg.eps)
    else:
        delta = x_adv - x
        factor = torch.clamp(cfg.eps / _per_sample_l2(delta).clamp_min(1e-12), max=1.0)
        x_adv = x + delta * factor
    return x_adv.clamp(0.0, 1.0)


def _ascent_step(x_adv: Tensor, grad: Tensor, cfg: PGDConfig) -> Tensor:
    """Linf: x + alpha·sign(g). L2: x + alpha·g/||g|| per sample (a zero gradient gives a zero step)."""
    if cfg.norm is Norm.LINF:
        return x_adv + cfg.step_size * grad.sign()
    return x_adv + cfg.step_size * grad / _per_sample_l2(grad).clamp_min(1e-12)


def _random_start(x: Tensor, cfg: PGDConfig, generator: torch.Generator | None) -> Tensor:
    """First iterate drawn per ``cfg.start``, projected and clamped like every iterate."""
    if cfg.start is Start.ZERO:
        return x.clone()
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if cfg.start is Start.NORMAL:
        return _project(x + _NORMAL_START_STD * noise, x, cfg)
    if cfg.norm is Norm.LINF:
        uniform = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return _project(x + cfg.eps * (2.0 * uniform - 1.0), x, cfg)
    # Uniform in the L2 ball: an isotropic direction times eps·u^(1/d).
    dim = x[0].numel()
    u = torch.rand((x.shape[0],), generator=generator, device=x.device, dtype=x.dtype)
    radius = (cfg.eps * u.pow(1.0 / dim)).view(-1, *([1] * (x.dim() - 1)))
    direction = noise / _per_sample_l2(noise).clamp_min(1e-12)
    return _project(x + radius * direction, x, cfg)
