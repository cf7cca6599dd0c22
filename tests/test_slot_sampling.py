"""Large K at bounded cost: slot sampling is unbiased (exactly over all draws, and numerically over the sampler's
own draws, per step and per window), the fused memory forward equals the separate one on a model without BN (and
differs with BN), and `--memloss-clean-grad stop` sends no MemLoss gradient into p(x)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from memloss.trainer.methods.losses import LossInputs, LossParams
from memloss.trainer.methods.memloss import MemLossConfig, MemoryInputs, memloss_term
from memloss.trainer.methods.registry import get_method
from memloss.trainer.methods.threat import PGDConfig
from memloss.trainer.methods.total import total_loss
from memloss.trainer.training.memory import MemoryExamples
from memloss.trainer.training.slots import SlotSampler
from memloss.trainer.training.step import StepSetup, train_step

K, B, C = 5, 6, 4
BETA = (2.0, 1.5, 1.0, 0.7, 0.3)


def _memory() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Clean logits [B,C], memory logits [K,B,C], labels [B] and validity [K,B]; slot 3 holds no memory at all and
    slot 4 only part of the batch."""
    g = torch.Generator().manual_seed(0)
    valid = torch.ones(K, B, dtype=torch.bool)
    valid[3] = False
    valid[4, :3] = False
    return torch.randn(B, C, generator=g), torch.randn(K, B, C, generator=g), torch.randint(0, C, (B,), generator=g), valid


def _term(slots: tuple[int, ...], weight: float) -> float:
    clean, mem, y, valid = _memory()
    s = list(slots)
    return memloss_term(clean, mem[s], y, valid[s], [BETA[k] for k in s], slots=slots,
                        slot_weights=[weight] * len(s)).loss.item()


def _full() -> float:
    clean, mem, y, valid = _memory()
    return memloss_term(clean, mem, y, valid, BETA).loss.item()


HELD = (0, 1, 2, 4)  # slots with at least one valid row


@pytest.mark.parametrize("m", [1, 2, 3])
def test_weighted_draws_average_exactly_to_the_full_term(m: int) -> None:
    draws = list(itertools.combinations(HELD, m))
    mean = sum(_term(d, len(HELD) / m) for d in draws) / len(draws)
    assert mean == pytest.approx(_full(), rel=1e-5)


def test_step_draws_are_uniform_and_unbiased_numerically() -> None:
    sampler = SlotSampler(K, 2, "step", seed=1)
    counts = [B, B, B, 0, 3]
    values, seen = [], np.zeros(K)
    for _ in range(3000):
        slots, weight = sampler.choose(counts)
        assert len(slots) == 2 and weight == 2.0 and 3 not in slots
        seen[list(slots)] += 1
        values.append(_term(slots, weight))
    assert np.allclose(seen[list(HELD)] / 3000, 0.5, atol=0.04)
    standard_error = np.std(values) / math.sqrt(len(values))
    assert abs(np.mean(values) - _full()) < 4 * standard_error


def test_window_draws_are_uniform_and_unbiased_numerically() -> None:
    sampler = SlotSampler(K, 2, "window", seed=2)
    ages = sampler.epoch_ages(epoch=9, committed=[4, 5, 6, 7, 8])  # epochs 8, 7, 6, 5, 4 = ages 0..4
    assert ages is not None
    values, seen = [], np.zeros(K)
    clean, mem, y, valid = _memory()
    for window in range(3000):
        drawn = ages(window)
        assert len(drawn) == 2 and drawn == ages(window)  # deterministic per (seed, epoch, window)
        seen[drawn] += 1
        # The store marks undrawn ages invalid; the trainer then uses every slot left, with the epoch's weight.
        masked = valid & torch.isin(torch.arange(K), torch.tensor(drawn))[:, None]
        slots, weight = sampler.choose(masked.sum(dim=1).tolist())
        assert weight == 2.5
        s = list(slots)
        values.append(memloss_term(clean, mem[s], y, masked[s], [BETA[k] for k in s],
                                   slot_weights=[weight] * len(s)).loss.item())
    assert np.allclose(seen / 3000, 0.4, atol=0.04)
    standard_error = np.std(values) / math.sqrt(len(values))
    assert abs(np.mean(values) - _full()) < 4 * standard_error


def test_window_draws_use_only_committed_ages_and_weight_them() -> None:
    sampler = SlotSampler(4, 2, "window", seed=0)
    ages = sampler.epoch_ages(epoch=2, committed=[1])  # only epoch 1 (age 0) exists yet
    assert ages is not None and ages(0) == [0] and sampler.choose([5, 0, 0, 0]) == ((0,), 1.0)
    assert SlotSampler(4, 2, "step", seed=0).epoch_ages(2, [1]) is None


def test_the_next_epochs_draws_are_known_ahead_and_change_nothing() -> None:
    """`next_epoch_ages(e, committed)` (passed to begin_epoch(e) so the store can load epoch e+1's first window
    early) gives the draws that `epoch_ages(e + 1, ...)` gives once e is committed, and leaves the weight as is."""
    sampler = SlotSampler(6, 2, "window", seed=3)
    sampler.epoch_ages(epoch=3, committed=[0, 1, 2])  # weight 3/2
    ahead = sampler.next_epoch_ages(3, [0, 1, 2])
    assert ahead is not None and sampler.choose([1] * 6)[1] == 1.5  # unchanged by the look-ahead
    later = sampler.epoch_ages(epoch=4, committed=[0, 1, 2, 3])
    assert later is not None and [ahead(w) for w in range(20)] == [later(w) for w in range(20)]
    assert sampler.choose([1] * 6)[1] == 2.0  # 4 ages committed, 2 drawn
    assert SlotSampler(6, 2, "step", seed=3).next_epoch_ages(3, [0, 1, 2]) is None


def test_all_slots_without_sampling_and_state_round_trip() -> None:
    assert SlotSampler(4, 0, "step", seed=0).choose([3, 0, 2, 1]) == ((0, 2, 3), 1.0)
    assert SlotSampler(4, 4, "step", seed=0).choose([3, 1, 2, 1]) == ((0, 1, 2, 3), 1.0)
    assert SlotSampler(4, 3, "step", seed=0).choose([3, 0, 2, 1]) == ((0, 2, 3), 1.0)  # m ≥ slots held
    a = SlotSampler(8, 3, "step", seed=5)
    a.choose([1] * 8)
    b = SlotSampler(8, 3, "step", seed=5)
    b.load_state_dict(a.state_dict())
    assert [a.choose([1] * 8) for _ in range(5)] == [b.choose([1] * 8) for _ in range(5)]


class _Net(nn.Module):
    def __init__(self, bn: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        norm: nn.Module = nn.BatchNorm1d(16) if bn else nn.Identity()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(48, 16), norm, nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def _step_loss(model: nn.Module, forward: str) -> float:
    g = torch.Generator().manual_seed(3)
    x = torch.rand(8, 3, 4, 4, generator=g)
    y = torch.randint(0, 10, (8,), generator=g)
    mem = (x + 0.03 * torch.randn(3, 8, 3, 4, 4, generator=g)).clamp(0, 1)
    valid = torch.ones(3, 8, dtype=torch.bool)
    valid[2, :4] = False
    memory = MemoryExamples(mem, valid, (0, 1, 2), (8, 8, 4), weight=1.5)
    setup = StepSetup(model, get_method("trades"), LossParams(5.0, 0.5), PGDConfig("Linf", 8 / 255, 2 / 255, 2),
                      (2.0, 1.0, 0.5), "v1", None, autocast=False, memory_forward=forward)
    model.train()
    return train_step(setup, x, y, torch.arange(8), memory, torch.Generator().manual_seed(4)).loss.item()


def test_fused_and_separate_forwards_agree_without_bn_and_differ_with_bn() -> None:
    assert _step_loss(_Net(bn=False), "fused") == pytest.approx(_step_loss(_Net(bn=False), "separate"), rel=1e-6)
    # With BN, fused computes batch statistics over all 3·B memory examples instead of per slot.
    assert abs(_step_loss(_Net(bn=True), "fused") - _step_loss(_Net(bn=True), "separate")) > 1e-4


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_stop_sends_no_memloss_gradient_into_the_clean_prediction(variant: str) -> None:
    clean, mem, y, valid = _memory()
    grads = {}
    for mode in ("through", "stop"):
        logits = clean.clone().requires_grad_(True)
        term = memloss_term(logits, mem.clone().requires_grad_(True), y, valid, BETA, variant, clean_grad=mode).loss
        (grads[mode],) = torch.autograd.grad(term, logits, allow_unused=True)
    assert grads["through"] is not None and grads["through"].abs().sum() > 0
    assert grads["stop"] is None or grads["stop"].abs().sum() == 0
    # In the total loss, p(x) then gets exactly the base method's gradient.
    logits = clean.clone().requires_grad_(True)
    inputs = LossInputs(y, logits, torch.randn(B, C, generator=torch.Generator().manual_seed(9)))
    memory = MemoryInputs(mem.clone().requires_grad_(True), valid)
    out = total_loss("trades", inputs, LossParams(5.0, 0.5), memory=memory,
                     memloss=MemLossConfig(BETA, variant, "stop"))
    base = total_loss("trades", inputs, LossParams(5.0, 0.5))
    (g_total,) = torch.autograd.grad(out.loss, logits)
    (g_base,) = torch.autograd.grad(base.loss, logits)
    assert torch.allclose(g_total, g_base, atol=1e-7)
    # The memory logits still get the MemLoss gradient.
    assert torch.autograd.grad(out.loss, memory.logits_mem)[0].abs().sum() > 0
