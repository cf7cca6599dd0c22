"""Tests of trainer/methods (pgd, threat, objectives, modes): threat-model invariants, model-state hygiene, objectives, starts, restarts."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memloss.errors import MemlossError
from memloss.trainer.methods.modes import clean_probs, frozen_eval, robust_mask
from memloss.trainer.methods.objectives import OBJECTIVES, cw_objective
from memloss.trainer.methods.pgd import pgd, pgd_robust
from memloss.trainer.methods.threat import Norm, PGDConfig, Start

SHAPE = (3, 4, 4)
LINF = PGDConfig(norm="linf", eps=8 / 255, step_size=2 / 255, steps=5, start="uniform")
L2 = PGDConfig(norm="l2", eps=0.5, step_size=0.2, steps=5, start="uniform")


class TinyNet(nn.Module):
    """conv -> BN -> ReLU -> linear; input [B,3,4,4] in [0,1], 3 classes."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(F.relu(self.bn(self.conv(x))).flatten(1))


class Recorder(nn.Module):
    """Wraps a model and keeps a copy of every input it sees."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(x.detach().clone())
        return self.inner(x)


def _data(n: int = 16, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *SHAPE), generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    # Some pixels at the borders of [0, 1] so that the clamp matters.
    x[:, 0, 0, 0] = 0.0
    x[:, 1, 0, 0] = 1.0
    return x, y


@functools.cache
def _trained_model(seed: int = 0) -> tuple[nn.Module, Tensor, Tensor]:
    """A TinyNet fitted a little on a separable problem (class = brightest channel)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((64, *SHAPE), generator=g) * 0.8
    y = torch.randint(0, 3, (64,), generator=g)
    x[torch.arange(64), y] += 0.15
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), x, y


@pytest.mark.parametrize("cfg", [LINF, L2], ids=["linf", "l2"])
@pytest.mark.parametrize("objective", ["ce", "kl", "cw"])
def test_every_iterate_stays_in_ball_and_box(cfg: PGDConfig, objective: str) -> None:
    torch.manual_seed(0)
    x, y = _data()
    model = Recorder(TinyNet())
    big_steps = PGDConfig(norm=cfg.norm, eps=cfg.eps, step_size=cfg.eps, steps=cfg.steps, restarts=2,
                          start=cfg.start)
    x_adv = pgd(model, x, y, big_steps, objective, generator=torch.Generator().manual_seed(1))
    assert len(model.seen) >= big_steps.steps * big_steps.restarts
    for point in [*model.seen, x_adv]:
        delta = (point - x).flatten(1)
        if cfg.norm is Norm.LINF:
            assert delta.abs().max() <= cfg.eps + 1e-6
        else:
            assert torch.linalg.vector_norm(delta, dim=1).max() <= cfg.eps + 1e-5
        assert point.min() >= 0.0 and point.max() <= 1.0
    assert x_adv.dtype == x.dtype and not x_adv.requires_grad


def test_mode_requires_grad_bn_stats_grads_and_optimizer_untouched() -> None:
    torch.manual_seed(0)
    x, y = _data()
    model = TinyNet().train()
    model.fc.eval()  # a caller-frozen submodule must stay as it was
    model.conv.bias.requires_grad_(False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    F.cross_entropy(model(x), y).backward()
    opt.step()  # populate momentum buffers and .grad
    bn_before = {k: v.clone() for k, v in model.bn.state_dict().items()}
    grads_before = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    params_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt_before = {k: {n: t.clone() for n, t in v.items()} for k, v in opt.state.items()}
    modes_before = {n: m.training for n, m in model.named_modules()}
    flags_before = {n: p.requires_grad for n, p in model.named_parameters()}

    pgd(model, x, y, LINF, "ce")
    pgd_robust(model, x, y, LINF, "kl")

    assert {n: m.training for n, m in model.named_modules()} == modes_before
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags_before
    for k, v in model.bn.state_dict().items():
        assert torch.equal(v, bn_before[k]), k
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), params_before[n])
        if n in grads_before:
            assert torch.equal(p.grad, grads_before[n])
        else:
            assert p.grad is None
    for k, v in opt.state.items():
        for n, t in v.items():
            assert torch.equal(t, opt_before[k][n])


def test_frozen_eval_restores_on_exception() -> None:
    model = TinyNet().train()
    with pytest.raises(RuntimeError), frozen_eval(model):
        assert not model.training and not any(p.requires_grad for p in model.parameters())
        raise RuntimeError("boom")
    assert model.training and all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("cfg", [LINF, L2], ids=["linf", "l2"])
def test_pgd_increases_loss_of_trained_model(cfg: PGDConfig) -> None:
    model, x, y = _trained_model()
    big = PGDConfig(norm=cfg.norm, eps=cfg.eps * 2, step_size=cfg.step_size * 2, steps=10, start="zero")
    x_adv = pgd(model, x, y, big, "ce")
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y, reduction="none")
        adv = F.cross_entropy(model(x_adv), y, reduction="none")
    assert (adv >= clean - 1e-6).all()
    assert adv.mean() > 2 * clean.mean() + 0.05


def test_more_restarts_never_more_robust() -> None:
    model, x, y = _trained_model()
    base = dict(norm="linf", eps=0.1, step_size=0.02, steps=3, start="uniform")
    adv1, robust1 = pgd_robust(model, x, y, PGDConfig(**base, restarts=1), generator=torch.Generator().manual_seed(3))
    adv5, robust5 = pgd_robust(model, x, y, PGDConfig(**base, restarts=5), generator=torch.Generator().manual_seed(3))
    # Same seed: restart 0 of the 5 is the single run, so the robust set can only shrink, point by point.
    assert not (robust5 & ~robust1).any()
    assert robust5.sum() < robust1.sum()  # on this model the extra restarts do find more points
    assert torch.equal(robust5, robust_mask(model, adv5, y))
    assert torch.equal(robust1, robust_mask(model, adv1, y))


def test_restarts_keep_the_first_fooling_restart() -> None:
    model, x, y = _trained_model()
    cfg = PGDConfig(norm="linf", eps=0.2, step_size=0.05, steps=2, restarts=3, start="uniform")
    x_adv, robust = pgd_robust(model, x, y, cfg, generator=torch.Generator().manual_seed(0))
    assert (~robust).any()
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != y
    assert torch.equal(fooled, ~robust)


def test_start_kinds_with_zero_steps() -> None:
    x = torch.full((8, *SHAPE), 0.5)
    y = torch.zeros(8, dtype=torch.long)
    model = TinyNet()
    g = torch.Generator().manual_seed(0)
    zero = pgd(model, x, y, PGDConfig("linf", 0.1, 0.01, 0, start="zero"))
    assert torch.equal(zero, x)
    normal = pgd(model, x, y, PGDConfig("linf", 0.1, 0.01, 0, start="normal"), generator=g)
    assert 0 < (normal - x).abs().max() < 0.01
    assert (normal - x).std() == pytest.approx(0.001, rel=0.3)
    uni = pgd(model, x, y, PGDConfig("linf", 0.1, 0.01, 0, start="uniform"), generator=g)
    assert (uni - x).abs().max() <= 0.1 + 1e-6 and (uni - x).abs().max() > 0.09
    assert (uni - x).abs().mean() == pytest.approx(0.05, rel=0.2)
    uni2 = pgd(model, x, y, PGDConfig("l2", 0.3, 0.01, 0, start="uniform"), generator=g)
    norms = torch.linalg.vector_norm((uni2 - x).flatten(1), dim=1)
    assert (norms <= 0.3 + 1e-6).all() and (norms > 0.2).all()
    init = x + 0.5  # outside the ball: projected and clamped
    given = pgd(model, x, y, PGDConfig("linf", 0.1, 0.01, 0, start="zero"), init=init)
    assert torch.allclose(given, torch.full_like(x, 0.6))


def test_generator_gives_determinism() -> None:
    x, y = _data()
    model = TinyNet().eval()
    a = pgd(model, x, y, LINF, "ce", generator=torch.Generator().manual_seed(7))
    b = pgd(model, x, y, LINF, "ce", generator=torch.Generator().manual_seed(7))
    c = pgd(model, x, y, LINF, "ce", generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_kl_objective_p_clean_given_or_computed() -> None:
    x, y = _data()
    model = TinyNet().eval()
    given = pgd(model, x, y, LINF, "kl", p_clean=clean_probs(model, x), generator=torch.Generator().manual_seed(1))
    computed = pgd(model, x, y, LINF, "kl", generator=torch.Generator().manual_seed(1))
    assert torch.equal(given, computed)


def test_cw_margin_sign() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0], [1.0, 3.0, 2.0]])
    margin = cw_objective(logits, torch.tensor([1, 0]), None)
    assert torch.allclose(margin, torch.tensor([2.0 - 3.0, 3.0 - 1.0]))


class Linear(nn.Module):
    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1) @ self.weight.t()


def test_step_rules_l2_normalized_and_linf_sign() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, 48, generator=g)
    model = Linear(w)
    x = torch.full((2, *SHAPE), 0.5)
    y = torch.zeros(2, dtype=torch.long)

    def first_logit(logits: Tensor, labels: Tensor, p: Tensor | None) -> Tensor:
        return logits[:, 0]  # gradient w.r.t. x is w[0] for every sample

    l2 = pgd(model, x, y, PGDConfig("l2", eps=10.0, step_size=0.1, steps=1, start="zero"), first_logit)
    expected = 0.1 * w[0] / w[0].norm()
    assert torch.allclose((l2 - x).flatten(1), expected.expand(2, -1), atol=1e-6)
    linf = pgd(model, x, y, PGDConfig("linf", eps=0.3, step_size=0.01, steps=1, start="zero"), first_logit)
    assert torch.allclose((linf - x).flatten(1), 0.01 * w[0].sign().expand(2, -1), atol=1e-7)


def test_l2_zero_gradient_is_safe() -> None:
    model = Linear(torch.zeros(3, 48))
    x = torch.full((2, *SHAPE), 0.5)
    out = pgd(model, x, torch.zeros(2, dtype=torch.long), PGDConfig("l2", 0.5, 0.1, 3, start="zero"))
    assert torch.equal(out, x)


def test_works_under_bf16_autocast() -> None:
    x, y = _data()
    model = TinyNet().eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_adv = pgd(model, x, y, LINF, "kl")
    assert x_adv.dtype == torch.float32
    assert (x_adv - x).abs().max() <= LINF.eps + 1e-6


def test_config_validation_and_registry_errors() -> None:
    for bad in [dict(eps=0.0), dict(step_size=-1.0), dict(steps=-1), dict(restarts=0), dict(norm="l1"),
                dict(start="gauss")]:
        kwargs = dict(norm="linf", eps=0.1, step_size=0.01, steps=1, **{})
        kwargs.update(bad)
        with pytest.raises(MemlossError):
            PGDConfig(**kwargs)
    assert PGDConfig("L2", 0.1, 0.01, 1, start="ZERO").start is Start.ZERO
    with pytest.raises(MemlossError, match="ce, kl, cw"):
        pgd(TinyNet(), *_data(), LINF, "dlr")
    assert set(OBJECTIVES) == {"ce", "kl", "cw"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_autocast_without_host_syncs() -> None:
    from memloss.trainer.methods.losses import LossInputs, LossParams
    from memloss.trainer.methods.memloss import MemLossConfig, MemoryInputs
    from memloss.trainer.methods.total import total_loss

    x, y = (t.cuda() for t in _data())
    model = TinyNet().cuda().train()
    cfg = PGDConfig(norm="linf", eps=8 / 255, step_size=2 / 255, steps=3, restarts=2, start="uniform")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            for objective in OBJECTIVES:
                x_adv = pgd(model, x, y, cfg, objective, generator=torch.Generator(device="cuda").manual_seed(0))
            inputs = LossInputs(y=y, logits_clean=model(x), logits_adv=model(x_adv))
            memory = MemoryInputs(model(x_adv).unsqueeze(0), torch.ones(1, len(y), dtype=torch.bool, device="cuda"))
            out = total_loss("trades", inputs, LossParams(beta=6.0, gamma=0.0), memory=memory,
                             memloss=MemLossConfig(beta_prime=2.0))
            out.loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert x_adv.dtype == torch.float32 and (x_adv - x).abs().max().item() <= cfg.eps + 1e-6
    assert torch.isfinite(out.loss).item() and model.training
