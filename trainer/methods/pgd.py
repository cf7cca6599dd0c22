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

import torch
from torch import Tensor, nn

from memloss.trainer.methods.modes import attack_mode, clean_probs
from memloss.trainer.methods.objectives import Objective, kl_objective, resolve_objective
from memloss.trainer.methods.threat import PGDConfig, _ascent_step, _project, _random_start


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
    with attack_mode(model, cfg.bn):
        if p_clean is None and fn is kl_objective:
            p_clean = clean_probs(model, x, cfg.bn)
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
