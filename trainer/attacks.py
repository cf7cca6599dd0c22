"""One projected-gradient attack (PGD) for every training and evaluation use in memloss.

The loop is parametrized by the threat model (``Norm``: Linf or L2), the objective it maximizes (a name from
``OBJECTIVES`` or any callable), the start point (``Start`` or an explicit ``init=``), the number of steps, the
step size and the number of restarts. All tensors are images in [0, 1]; normalization lives inside the model.

Guarantees (tested in tests/test_attacks.py):
- every iterate lies in the eps-ball around ``x`` and in [0, 1] (``x`` itself must be in [0, 1]);
- the attack runs with the model in eval mode and with ``requires_grad`` off for every parameter, and restores the
  caller's per-module ``training`` flags and per-parameter ``requires_grad`` afterwards (``frozen_eval``);
- gradients are taken with ``torch.autograd.grad`` w.r.t. the input only: no parameter ``.grad`` and no optimizer
  is touched; BatchNorm running statistics are not updated (eval mode);
- no host synchronisation inside the step loop;
- it works under a caller's bf16 autocast: objectives are evaluated on ``logits.float()``.

Choices where the references differ (see docs/../shared/spec/algorithms.md, Part A and B):
- "normal" start is x + 0.001·N(0, I) (TRADES/HAT/MART official), "uniform" is U(-eps, eps) per coordinate for
  Linf and uniform in the L2 ball for L2; every start is projected and clamped like an iterate.
- The L2 step is x + alpha·g/||g||_2 per sample; a zero gradient gives a zero step (TRADES' L2 code draws a
  random direction instead).
- The CW objective is the unclamped logit margin max_{j != y} z_j - z_y (HAT's CWLoss clamps it at 0, which only
  stops the ascent once a point is fooled).
- With ``restarts > 1`` the first restart starts from ``init`` when given, later ones from ``cfg.start``; per
  point the first restart whose result is misclassified is kept (else the first restart's result), so a point
  counts robust only if every restart fails.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memstore.errors import MemlossError

__all__ = [
    "AttackConfigError",
    "Norm",
    "Start",
    "PGDConfig",
    "Objective",
    "OBJECTIVES",
    "ce_objective",
    "kl_objective",
    "cw_objective",
    "resolve_objective",
    "frozen_eval",
    "clean_probs",
    "robust_mask",
    "pgd",
    "pgd_robust",
]

#: Per-sample objective to MAXIMIZE: ``(logits_adv [B,C] float32, y [B] int64, p_clean [B,C] | None) -> [B]``.
Objective = Callable[[Tensor, Tensor, Tensor | None], Tensor]

# Standard deviation of the "normal" start (TRADES/HAT/MART official code: x + 0.001 * randn).
_NORMAL_START_STD = 0.001


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
    """

    norm: Norm
    eps: float
    step_size: float
    steps: int
    restarts: int = 1
    start: Start = Start.NORMAL

    def __post_init__(self) -> None:
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


# ---------------------------------------------------------------------------------------------------------------
# Objectives: per-sample losses the attack maximizes, computed in float32.


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


# ---------------------------------------------------------------------------------------------------------------
# Model state handling.


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


# ---------------------------------------------------------------------------------------------------------------
# Threat-model geometry. Shapes: x, x_adv, grad [B, ...]; per-sample norms are over all non-batch dims.


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


# ---------------------------------------------------------------------------------------------------------------
# The loop.


def _run_once(
    model: nn.Module, x: Tensor, y: Tensor, cfg: PGDConfig, objective: Objective, p_clean: Tensor | None,
    start: Tensor,
) -> Tensor:
    """``cfg.steps`` ascent steps from ``start``; the model must already be frozen in eval mode."""
    x_adv = start.detach()
    with torch.enable_grad():
        for _ in range(cfg.steps):
            x_adv.requires_grad_(True)
            loss = objective(model(x_adv).float(), y, p_clean).sum()
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = _project(_ascent_step(x_adv.detach(), grad, cfg), x, cfg)
    return x_adv.detach()


def _check_inputs(x: Tensor, y: Tensor, init: Tensor | None) -> None:
    if not x.is_floating_point() or x.dim() < 2:
        raise ValueError(f"pgd needs float images [B, ...] in [0, 1], got dtype {x.dtype} shape {tuple(x.shape)}")
    if y.shape != x.shape[:1]:
        raise ValueError(f"labels must be [B]={tuple(x.shape[:1])}, got {tuple(y.shape)}")
    if init is not None and init.shape != x.shape:
        raise ValueError(f"init must have the shape of x {tuple(x.shape)}, got {tuple(init.shape)}")


def _attack(
    model: nn.Module, x: Tensor, y: Tensor, cfg: PGDConfig, objective: str | Objective,
    p_clean: Tensor | None, init: Tensor | None, generator: torch.Generator | None, want_fooled: bool,
) -> tuple[Tensor, Tensor | None]:
    """Run all restarts; returns (x_adv, fooled-by-any-restart bool [B] or None when not requested)."""
    _check_inputs(x, y, init)
    fn = resolve_objective(objective)
    x = x.detach()
    with frozen_eval(model):
        if p_clean is None and fn is kl_objective:
            p_clean = clean_probs(model, x)
        best: Tensor | None = None
        fooled: Tensor | None = None
        for restart in range(cfg.restarts):
            if init is not None and restart == 0:
                start = _project(init.detach().to(x.dtype), x, cfg)
            else:
                start = _random_start(x, cfg, generator)
            x_adv = _run_once(model, x, y, cfg, fn, p_clean, start)
            if cfg.restarts == 1 and not want_fooled:
                return x_adv, None
            with torch.no_grad():
                now = model(x_adv).argmax(dim=1) != y
            if best is None or fooled is None:
                best, fooled = x_adv, now
                continue
            # Keep, per point, the first restart that fools the model.
            take = now & ~fooled
            best = torch.where(take.view(-1, *([1] * (x.dim() - 1))), x_adv, best)
            fooled = fooled | now
    assert best is not None
    return best, fooled


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    cfg: PGDConfig,
    objective: str | Objective = "ce",
    *,
    p_clean: Tensor | None = None,
    init: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Projected gradient ascent of ``objective`` within the ``cfg`` threat model.

    Parameters
    ----------
    model: maps float [B,C,H,W] in [0,1] to logits [B,K]; its modes and requires_grad are restored on return.
    x: float [B,C,H,W] in [0,1], the clean points (ball centres).
    y: int64 [B] labels.
    cfg: ``PGDConfig``.
    objective: "ce", "kl", "cw" or a callable ``(logits_adv [B,K], y [B], p_clean [B,K] | None) -> [B]``.
    p_clean: float [B,K], softmax of the clean prediction; for "kl" it is computed once in eval mode when None.
    init: float [B,C,H,W], the first iterate of the first restart (projected and clamped); None = ``cfg.start``.
    generator: ``torch.Generator`` on x's device for the random starts (determinism).

    Returns
    -------
    x_adv: float [B,C,H,W] in [0,1] and in the eps-ball around x, detached, same dtype/device as x.

    Example
    -------
    >>> cfg = PGDConfig(norm="linf", eps=8/255, step_size=2/255, steps=10, start="uniform")
    >>> x_adv = pgd(model, x, y, cfg, "ce")  # doctest: +SKIP
    """
    x_adv, _ = _attack(model, x, y, cfg, objective, p_clean, init, generator, want_fooled=False)
    return x_adv


def pgd_robust(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    cfg: PGDConfig,
    objective: str | Objective = "ce",
    *,
    p_clean: Tensor | None = None,
    init: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Like ``pgd``, and also returns ``robust`` bool [B]: True iff the model (eval mode) classifies the result
    of every restart correctly; then ``x_adv`` holds the first restart's result, else the first fooling one, so
    ``robust == robust_mask(model, x_adv, y)``. Evaluators compute clean accuracy separately."""
    x_adv, fooled = _attack(model, x, y, cfg, objective, p_clean, init, generator, want_fooled=True)
    assert fooled is not None
    return x_adv, ~fooled
