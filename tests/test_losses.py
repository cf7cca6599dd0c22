"""Tests of trainer/methods (losses, memloss, total) against hand computations (numpy, float64) on tiny fixed logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memloss.errors import MemlossError
from memloss.trainer.methods.losses import LossInputs, LossParams
from memloss.trainer.methods.memloss import MemLossConfig, MemoryInputs, memloss_term
from memloss.trainer.methods.pgd import pgd
from memloss.trainer.methods.registry import METHODS, get_method
from memloss.trainer.methods.threat import PGDConfig
from memloss.trainer.methods.total import total_loss

Y = np.array([0, 1])
CLEAN = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 1.0]])
ADV = np.array([[1.0, 1.5, 0.2], [1.2, 0.3, 2.0]])
HELP = np.array([[0.3, 0.2, 1.9], [1.1, 0.0, -0.4]])
Y_HELP = np.array([2, 1])
# K = 2 memory slots.
MEM = np.array([[[0.0, 2.0, 1.0], [0.4, 1.4, 0.2]], [[3.0, -1.0, 0.5], [2.2, 0.1, 0.9]]])
VALID = np.array([[True, False], [True, True]])


def t(a: np.ndarray, grad: bool = False) -> Tensor:
    return torch.tensor(a, dtype=torch.float32, requires_grad=grad)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def ce_rows(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    return -np.log(softmax(z)[np.arange(len(y)), y])


def kl_rows(zp: np.ndarray, zq: np.ndarray) -> np.ndarray:
    p, q = softmax(zp), softmax(zq)
    return (p * (np.log(p) - np.log(q))).sum(axis=-1)


def inputs() -> LossInputs:
    return LossInputs(y=torch.tensor(Y), logits_clean=t(CLEAN), logits_adv=t(ADV), logits_help=t(HELP),
                      y_help=torch.tensor(Y_HELP))


PARAMS = LossParams(beta=3.0, gamma=0.5)


def hand_base(method: str, beta: float = 3.0, gamma: float = 0.5) -> float:
    if method == "standard":
        return ce_rows(CLEAN, Y).mean()
    if method == "at":
        return ce_rows(ADV, Y).mean()
    trades = ce_rows(CLEAN, Y).mean() + beta * kl_rows(CLEAN, ADV).mean()
    if method == "trades":
        return trades
    if method == "hat":
        return trades + gamma * ce_rows(HELP, Y_HELP).mean()
    # MART, written out with its official constants.
    pa, pn = softmax(ADV), softmax(CLEAN)
    wrong = np.array([np.argsort(row)[-2] if np.argmax(row) == y else np.argmax(row) for row, y in zip(pa, Y)])
    bce = ce_rows(ADV, Y).mean() - np.log(1.0001 - pa[np.arange(2), wrong] + 1e-12).mean()
    kl = (pn * (np.log(pn) - np.log(pa + 1e-12))).sum(axis=1)
    return bce + beta * (kl * (1.0000001 - pn[np.arange(2), Y])).mean()


@pytest.mark.parametrize("method", list(METHODS))
def test_base_methods_match_hand_computation(method: str) -> None:
    out = get_method(method).loss_fn(inputs(), PARAMS)
    assert out.loss.shape == () and out.loss.dtype == torch.float32
    assert out.loss.item() == pytest.approx(hand_base(method), rel=1e-5)
    assert all(not v.requires_grad and v.shape == () for v in out.metrics.values())


def test_trades_with_beta_zero_is_ce() -> None:
    out = METHODS["trades"].loss_fn(inputs(), LossParams(beta=0.0, gamma=0.0))
    assert torch.equal(out.loss, F.cross_entropy(t(CLEAN), torch.tensor(Y)))


def test_kl_targets_are_not_detached() -> None:
    clean = t(CLEAN, grad=True)
    out = METHODS["trades"].loss_fn(LossInputs(y=torch.tensor(Y), logits_clean=clean, logits_adv=t(ADV)),
                                    LossParams(beta=1.0, gamma=0.0))
    (g,) = torch.autograd.grad(out.loss, clean)
    ce_only = F.cross_entropy(clean, torch.tensor(Y))
    (g_ce,) = torch.autograd.grad(ce_only, clean)
    assert not torch.allclose(g, g_ce)  # the KL target p(x) carries gradient too


def hand_memloss(variant: str, beta_prime: list[float]) -> tuple[float, list[float]]:
    slots = []
    for k in range(2):
        if variant == "v3":  # x″ = x where the slot holds no memory (paper, Algorithm 1)
            rows = kl_rows(np.where(VALID[k][:, None], MEM[k], CLEAN), ADV)
        else:
            rows = kl_rows(CLEAN, MEM[k])
            if variant == "v1":
                rows = rows * (1.0 - softmax(MEM[k])[np.arange(2), Y])
        slots.append(float((rows * (VALID[k] if variant != "v3" else 1)).sum() / 2))
    return sum(b * s for b, s in zip(beta_prime, slots)), slots


@pytest.mark.parametrize("variant", ["v1", "v2", "v3"])
def test_memloss_variants_match_hand_computation(variant: str) -> None:
    out = memloss_term(t(CLEAN), t(MEM), torch.tensor(Y), torch.tensor(VALID), [2.0, 0.5], variant, t(ADV))
    total, slots = hand_memloss(variant, [2.0, 0.5])
    assert out.loss.item() == pytest.approx(total, rel=1e-5)
    assert out.metrics["mem_term_1"].item() == pytest.approx(slots[0], rel=1e-5)
    assert out.metrics["mem_term_2"].item() == pytest.approx(slots[1], rel=1e-5)
    # Valid memory examples: slot1/sample0 (argmax 1 != 0), slot2/sample0 (0 == 0), slot2/sample1 (0 != 1).
    assert out.metrics["mem_count"].item() == 3.0
    assert out.metrics["mem_acc"].item() == pytest.approx(1 / 3)


def test_scalar_beta_prime_broadcasts_and_bad_lengths_fail() -> None:
    args = (t(CLEAN), t(MEM), torch.tensor(Y), torch.tensor(VALID))
    scalar = memloss_term(*args, 1.5).loss.item()
    assert scalar == pytest.approx(hand_memloss("v1", [1.5, 1.5])[0], rel=1e-5)
    assert memloss_term(*args, [1.5]).loss.item() == pytest.approx(scalar)
    with pytest.raises(MemlossError, match="K is 2"):
        memloss_term(*args, [1.0, 2.0, 3.0])
    with pytest.raises(MemlossError):
        MemLossConfig(beta_prime=-1.0)
    with pytest.raises(MemlossError):
        MemLossConfig(beta_prime=())


def test_variant_registry_errors() -> None:
    with pytest.raises(MemlossError, match="v1, v2, v3"):
        MemLossConfig(beta_prime=1.0, variant="v4")
    with pytest.raises(MemlossError, match="v1, v2, v3"):
        memloss_term(t(CLEAN), t(MEM), torch.tensor(Y), torch.tensor(VALID), 1.0, "weighted")
    assert MemLossConfig(beta_prime=[1.0, 2.0], variant="V2").beta_prime == (1.0, 2.0)


def test_method_registry_errors_and_specs() -> None:
    with pytest.raises(MemlossError, match="standard, at, trades, mart, hat"):
        get_method("awp")
    assert METHODS["trades"].attack_objective == "kl" and METHODS["hat"].attack_objective == "kl"
    assert METHODS["at"].attack_objective == "ce" and METHODS["mart"].attack_objective == "ce"
    assert METHODS["standard"].attack_objective is None
    assert METHODS["at"].attack_start == "uniform" and METHODS["mart"].attack_start == "normal"
    assert METHODS["hat"].needs_helper and not METHODS["trades"].needs_helper
    with pytest.raises(MemlossError):
        LossParams(beta=float("nan"), gamma=0.0)


@pytest.mark.parametrize("method", ["trades", "hat", "mart", "at"])
def test_v3_without_memory_uses_the_clean_example(method: str) -> None:
    """Paper, Algorithm 1: a slot without memory is x″ = x, so V3 gives β′_k·KL(p(x)‖p(x_adv)), not 0, and no
    gradient reaches the (garbage) memory logits."""
    mem = t(MEM * 100.0, grad=True)
    memory = MemoryInputs(mem, torch.zeros(2, 2, dtype=torch.bool))
    out = total_loss(method, inputs(), PARAMS, memory=memory, memloss=MemLossConfig([1.0, 2.0], "v3"))
    base = total_loss(method, inputs(), PARAMS)
    kl = float(kl_rows(CLEAN, ADV).sum() / 2)
    assert kl > 0
    assert out.metrics["mem_loss"].item() == pytest.approx(3.0 * kl, rel=1e-5)
    assert out.loss.item() == pytest.approx(base.loss.item() + 3.0 * kl, rel=1e-5)
    (g,) = torch.autograd.grad(out.loss, mem, allow_unused=True)
    assert g is None or torch.count_nonzero(g) == 0


@pytest.mark.parametrize("variant", ["v1", "v2"])
@pytest.mark.parametrize("method", ["trades", "hat", "mart", "at"])
def test_all_invalid_memory_is_exactly_the_base_with_zero_gradient(method: str, variant: str) -> None:
    mem = t(MEM * 100.0, grad=True)  # garbage values in unused slots must not matter
    memory = MemoryInputs(mem, torch.zeros(2, 2, dtype=torch.bool))
    out = total_loss(method, inputs(), PARAMS, memory=memory, memloss=MemLossConfig([1.0, 2.0], variant))
    base = total_loss(method, inputs(), PARAMS)
    assert torch.equal(out.loss, base.loss)
    assert out.metrics["mem_loss"].item() == 0.0
    (g,) = torch.autograd.grad(out.loss, mem, allow_unused=True)
    assert g is None or torch.count_nonzero(g) == 0


def test_total_loss_adds_memory_and_extra_terms() -> None:
    cfg = MemLossConfig(beta_prime=(2.0, 0.5))
    memory = MemoryInputs(t(MEM), torch.tensor(VALID))
    extra = total_loss("standard", inputs(), PARAMS)  # any LossOutput works as an extra term
    out = total_loss("trades", inputs(), PARAMS, memory=memory, memloss=cfg, extra={"x": extra})
    expected = hand_base("trades") + hand_memloss("v1", [2.0, 0.5])[0] + hand_base("standard")
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert out.metrics["loss"].item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError):
        total_loss("trades", inputs(), PARAMS, memory=memory)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def _forward_all(model: nn.Module, method: str, x: Tensor, y: Tensor, x_adv: Tensor, mem: Tensor,
                 helper_y: Tensor) -> LossInputs:
    spec = METHODS[method]
    return LossInputs(
        y=y,
        logits_clean=model(x),  # the trainer forwards x whenever a memory term is on (v3: x″ = x without memory)
        logits_adv=model(x_adv) if spec.needs_adv_forward else None,
        logits_help=model(x + 2 * (x_adv - x)) if spec.needs_helper else None,
        y_help=helper_y if spec.needs_helper else None,
    )


@pytest.mark.parametrize("method", list(METHODS))
def test_loss_decreases_and_gradient_reaches_parameters(method: str) -> None:
    torch.manual_seed(0)
    x = torch.rand(32, 3, 2, 2)
    y = torch.randint(0, 3, (32,))
    model = Tiny()
    spec = METHODS[method]
    cfg = PGDConfig("linf", 0.05, 0.02, 3, start=spec.attack_start or "zero")
    x_adv = pgd(model, x, y, cfg, spec.attack_objective or "ce", generator=torch.Generator().manual_seed(0))
    mem = (x + 0.05 * torch.randn_like(x).sign()).clamp(0, 1)
    valid = torch.ones(1, 32, dtype=torch.bool)
    memloss = MemLossConfig(beta_prime=1.0, variant="v3" if spec.needs_adv_forward else "v1")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        batch = _forward_all(model, method, x, y, x_adv, mem, (y + 1) % 3)
        memory = MemoryInputs(model(mem).unsqueeze(0), valid)
        out = total_loss(method, batch, LossParams(beta=2.0, gamma=0.5), memory=memory, memloss=memloss)
        out.loss.backward()
        assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in model.parameters())
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0]
