"""Tests of trainer/methods/te.py and meow.py: TE (EMA, schedule, term, attack objective) and MeoW (weights, codebook)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from memloss.errors import MemlossError
from memloss.trainer.methods.losses import LossInputs, LossParams
from memloss.trainer.methods.meow import MeowBank, MeowConfig, MeowWeights, meow_loss
from memloss.trainer.methods.te import te_attack_objective, te_init, te_logits, te_term, te_update, te_weight, te_window
from memloss.trainer.methods.total import total_loss

CLEAN = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, 1.0]])
ADV = torch.tensor([[1.0, 1.5, 0.2], [1.2, 0.3, 2.0]])
Y = torch.tensor([0, 1])


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_te_weight_schedule_matches_official_values() -> None:
    assert te_weight(89, 90, 150) == 0.0
    assert te_weight(90, 90, 150) == pytest.approx(300 * math.exp(-5)) and te_weight(90, 90, 150) == pytest.approx(
        2.02, abs=0.01)
    assert te_weight(120, 90, 150) == pytest.approx(85.95, abs=0.01)
    assert te_weight(150, 90, 150) == 300.0
    assert te_weight(151, 90, 150) == 300.0
    assert te_window(200) == (90, 150)
    assert te_window(70) == (32, 52)
    with pytest.raises(MemlossError):
        te_weight(10, 5, 5)


def test_te_update_is_a_bias_corrected_ema() -> None:
    state = te_init(5, 3)
    p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    q = torch.tensor([[0.2, 0.6, 0.2], [0.3, 0.3, 0.4]])
    idx = torch.tensor([3, 1])
    target = te_update(state, idx, p, eta=0.9)
    assert torch.allclose(state[idx], 0.1 * p) and torch.allclose(target, p)
    assert torch.count_nonzero(state[[0, 2, 4]]) == 0
    target = te_update(state, idx, q, eta=0.9)
    expected = (0.09 * p + 0.1 * q) / 0.19
    assert torch.allclose(target, expected, atol=1e-6)
    assert torch.allclose(target.sum(1), torch.ones(2))


def test_te_term_and_which_logits() -> None:
    target = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    out = te_term(ADV, target, weight=10.0)
    hand = 10.0 * ((softmax(ADV.numpy().astype(np.float64)) - target.numpy()) ** 2).mean()
    assert out.loss.item() == pytest.approx(hand, rel=1e-5)
    inputs = LossInputs(y=Y, logits_clean=CLEAN, logits_adv=ADV)
    assert te_logits("at", inputs) is ADV and te_logits("trades", inputs) is CLEAN
    with pytest.raises(MemlossError):
        te_logits("standard", inputs)
    total = total_loss("trades", inputs, LossParams(beta=1.0, gamma=0.0),
                       extra={"te": te_term(te_logits("trades", inputs), target, 10.0)})
    base = total_loss("trades", inputs, LossParams(beta=1.0, gamma=0.0))
    hand_clean = 10.0 * ((softmax(CLEAN.numpy().astype(np.float64)) - target.numpy()) ** 2).mean()
    assert total.loss.item() == pytest.approx(base.loss.item() + hand_clean, rel=1e-5)
    assert "te_mse" in total.metrics


def test_te_attack_objectives_per_sample() -> None:
    target = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    pa = softmax(ADV.numpy().astype(np.float64))
    te = ((pa - target.numpy()) ** 2).mean(axis=1)
    at = te_attack_objective("at", target, weight=5.0, beta=6.0)(ADV, Y, None)
    ce = -np.log(pa[np.arange(2), Y.numpy()])
    assert np.allclose(at.numpy(), ce + 5.0 * te, rtol=1e-5)
    pc = softmax(CLEAN.numpy().astype(np.float64))
    trades = te_attack_objective("trades", target, weight=5.0, beta=6.0)(ADV, Y, torch.tensor(pc, dtype=torch.float32))
    kl = (pc * (np.log(pc) - np.log(pa))).sum(axis=1)
    assert np.allclose(trades.numpy(), 6.0 * kl + 5.0 * te, rtol=1e-5)


def _bank(codes: torch.Tensor, temperature: float = 10.0) -> MeowBank:
    bank = MeowBank(codes.shape[1], MeowConfig(num_codes=codes.shape[0], temperature=temperature, lr=0.1))
    with torch.no_grad():
        bank.codes.copy_(codes)
    return bank


def test_meow_weights_from_nearest_code_distance() -> None:
    codes = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 20.0]])
    bank = _bank(codes)
    nat = torch.tensor([[3.0, 4.0], [10.0, 1.0], [0.0, 30.0]])  # distances 5, 1, 10
    adv = torch.tensor([[0.0, 0.0], [6.0, 0.0], [0.0, 14.0]])  # distances 0, 4, 6
    assert torch.allclose(bank.distances(nat), torch.tensor([5.0, 1.0, 10.0]), atol=1e-4)
    w = bank.weights(nat, adv)
    plus = np.exp(np.array([5.0, 1.0, 10.0]) / 10)
    minus = np.exp(-np.array([0.0, 4.0, 6.0]) / 10)
    assert np.allclose(w.plus.numpy(), plus / plus.mean(), rtol=1e-4)
    assert np.allclose(w.minus.numpy(), minus / minus.mean(), rtol=1e-4)
    assert not w.plus.requires_grad and not w.minus.requires_grad


def test_meow_weights_do_not_overflow() -> None:
    bank = _bank(torch.zeros(2, 2), temperature=1.0)
    w = bank.weights(torch.tensor([[1000.0, 0.0], [0.0, 0.0]]), torch.tensor([[1000.0, 0.0], [0.0, 0.0]]))
    assert torch.isfinite(w.plus).all() and torch.isfinite(w.minus).all()
    assert torch.allclose(w.plus, torch.tensor([2.0, 0.0])) and torch.allclose(w.minus, torch.tensor([0.0, 2.0]))


def test_meow_codebook_updates_only_from_misclassified() -> None:
    codes = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [-10.0, -10.0]])
    nat = torch.tensor([[1.0, 1.0], [9.0, 1.0]])
    adv = torch.tensor([[1.0, 9.0], [-9.0, -9.0]])
    bank = _bank(codes)
    bank.update(nat, adv, torch.tensor([False, False]), torch.tensor([False, False]))
    assert torch.equal(bank.codes.detach(), codes)  # nothing wrong: nothing moves
    loss = bank.update(nat, adv, torch.tensor([False, True]), torch.tensor([True, False]))
    assert loss.item() == pytest.approx(2.0 + 2.0)  # ||(9,1)-(10,0)||^2 + ||(1,9)-(0,10)||^2
    moved = (bank.codes.detach() != codes).any(dim=1)
    assert moved.tolist() == [False, True, True, False]
    # Each moved code went towards its wrong feature.
    assert (bank.codes.detach()[1] - torch.tensor([9.0, 1.0])).norm() < 2 ** 0.5
    assert (bank.codes.detach()[2] - torch.tensor([1.0, 9.0])).norm() < 2 ** 0.5


def test_meow_state_dict_round_trip() -> None:
    bank = MeowBank(4, MeowConfig(num_codes=8), generator=torch.Generator().manual_seed(0))
    assert bank.codes.abs().max() <= 1 / 8
    bank.update(torch.ones(2, 4), torch.ones(2, 4), torch.tensor([True, True]), torch.tensor([False, True]))
    other = MeowBank(4, MeowConfig(num_codes=8))
    other.load_state_dict(bank.state_dict())
    assert torch.equal(other.codes, bank.codes)
    with pytest.raises(MemlossError):
        MeowBank(5, MeowConfig(num_codes=8)).load_state_dict(bank.state_dict())


def test_meow_loss_matches_paper_equations() -> None:
    w = MeowWeights(plus=torch.tensor([1.5, 0.5]), minus=torch.tensor([0.8, 1.2]))
    inputs = LossInputs(y=Y, logits_clean=CLEAN, logits_adv=ADV)
    pc, pa = softmax(CLEAN.numpy().astype(np.float64)), softmax(ADV.numpy().astype(np.float64))
    ce_nat = -np.log(pc[np.arange(2), Y.numpy()])
    ce_adv = -np.log(pa[np.arange(2), Y.numpy()])
    kl = (pc * (np.log(pc) - np.log(pa))).sum(axis=1)
    at = meow_loss("at", inputs, LossParams(beta=6.0, gamma=0.0), w, alpha=0.2)
    hand_at = 0.2 * (w.plus.numpy() * ce_nat).mean() + 0.8 * (w.minus.numpy() * ce_adv).mean()
    assert at.loss.item() == pytest.approx(hand_at, rel=1e-5)
    trades = meow_loss("trades", inputs, LossParams(beta=6.0, gamma=0.0), w, alpha=0.2)
    hand_trades = (w.plus.numpy() * ce_nat).mean() + 6.0 * (w.minus.numpy() * kl).mean()
    assert trades.loss.item() == pytest.approx(hand_trades, rel=1e-5)
    # Uniform weights give back the unweighted TRADES loss.
    ones = MeowWeights(torch.ones(2), torch.ones(2))
    plain = total_loss("trades", inputs, LossParams(beta=6.0, gamma=0.0))
    assert meow_loss("trades", inputs, LossParams(beta=6.0, gamma=0.0), ones, 0.2).loss.item() == pytest.approx(
        plain.loss.item(), rel=1e-6)
    with pytest.raises(MemlossError, match="at, trades"):
        meow_loss("hat", inputs, LossParams(beta=6.0, gamma=0.5), w, 0.2)
    with pytest.raises(MemlossError):
        MeowConfig(temperature=0.0)


def test_meow_training_steps_reduce_loss() -> None:
    torch.manual_seed(0)
    features = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU())
    head = torch.nn.Linear(5, 3)
    params = [*features.parameters(), *head.parameters()]
    opt = torch.optim.SGD(params, lr=0.3)
    x = torch.randn(32, 6)
    y = torch.randint(0, 3, (32,))
    x_adv = x + 0.1 * torch.randn_like(x)
    bank = MeowBank(5, MeowConfig(num_codes=16))
    losses = []
    for _ in range(10):
        opt.zero_grad()
        f_nat, f_adv = features(x), features(x_adv)
        inputs = LossInputs(y=y, logits_clean=head(f_nat), logits_adv=head(f_adv))
        w = bank.weights(f_nat, f_adv)
        out = total_loss("trades", inputs, LossParams(beta=6.0, gamma=0.0),
                         base=meow_loss("trades", inputs, LossParams(beta=6.0, gamma=0.0), w, 0.2))
        bank.update(f_nat, f_adv, inputs.logits_clean.argmax(1) != y, inputs.logits_adv.argmax(1) != y)
        out.loss.backward()
        assert all(p.grad is not None for p in params)
        opt.step()
        losses.append(F.cross_entropy(inputs.logits_clean, y).item())
    assert losses[-1] < losses[0]
