"""--label-smoothing: the published SmoothCrossEntropyLoss on the clean CE term of standard/trades/hat only (not the
KL, HAT's helper CE or the MemLoss term), refused where there is no clean CE term."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from memloss.errors import ConfigError
from memloss.trainer.config.defaults import resolve_config
from memloss.trainer.methods.losses import LossConfigError, LossInputs, LossParams, kl_rows
from memloss.trainer.methods.registry import METHODS


def _published_smooth_ce(logits: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
    """DM-Improves-AT core/utils/utils.py SmoothCrossEntropyLoss (reduction mean)."""
    logprobs = F.log_softmax(logits, dim=-1)
    nll = -logprobs.gather(dim=-1, index=y.unsqueeze(1)).squeeze(1)
    return ((1.0 - smoothing) * nll + smoothing * -logprobs.mean(dim=-1)).mean()


@pytest.fixture
def batch() -> LossInputs:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (16,), generator=g)
    logits = [torch.randn(16, 10, generator=g) for _ in range(3)]
    return LossInputs(y, logits[0], logits[1], logits[2], torch.randint(0, 10, (16,), generator=g))


def test_trades_smooths_the_clean_ce_only(batch: LossInputs) -> None:
    out = METHODS["trades"].loss_fn(batch, LossParams(beta=5.0, gamma=0.0, label_smoothing=0.1))
    ce = _published_smooth_ce(batch.logits_clean, batch.y, 0.1)
    kl = kl_rows(batch.logits_clean, batch.logits_adv).mean()  # the robust term is not smoothed
    assert out.metrics["ce"] == pytest.approx(ce.item(), abs=1e-6)
    assert out.loss.item() == pytest.approx((ce + 5.0 * kl).item(), abs=1e-5)


def test_hat_leaves_the_helper_ce_unsmoothed_and_standard_smooths(batch: LossInputs) -> None:
    out = METHODS["hat"].loss_fn(batch, LossParams(beta=2.0, gamma=0.5, label_smoothing=0.2))
    assert out.metrics["ce"] == pytest.approx(_published_smooth_ce(batch.logits_clean, batch.y, 0.2).item(), abs=1e-6)
    assert out.metrics["ce_help"] == pytest.approx(F.cross_entropy(batch.logits_help, batch.y_help).item(), abs=1e-6)
    std = METHODS["standard"].loss_fn(batch, LossParams(beta=0.0, gamma=0.0, label_smoothing=0.2))
    assert std.loss.item() == pytest.approx(_published_smooth_ce(batch.logits_clean, batch.y, 0.2).item(), abs=1e-6)


def test_zero_smoothing_is_the_plain_loss(batch: LossInputs) -> None:
    plain = METHODS["trades"].loss_fn(batch, LossParams(beta=5.0, gamma=0.0))
    zero = METHODS["trades"].loss_fn(batch, LossParams(beta=5.0, gamma=0.0, label_smoothing=0.0))
    assert torch.equal(plain.loss, zero.loss)
    with pytest.raises(LossConfigError):
        LossParams(beta=1.0, gamma=0.0, label_smoothing=1.0)


@pytest.mark.parametrize("options, message", [
    ({"method": "at"}, "--method at has none"),
    ({"method": "mart"}, "--method mart has none"),
    ({"method": "trades", "reg": "meow"}, "--reg meow has none"),
    ({"method": "trades", "label_smoothing": 1.5}, r"in \[0, 1\)"),
])
def test_the_config_refuses_smoothing_without_a_clean_ce_term(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config({"dataset": "digits", "label_smoothing": 0.1, **options})


def test_the_config_carries_it_to_the_loss() -> None:
    cfg = resolve_config({"dataset": "digits", "label_smoothing": 0.1})
    assert cfg.method.label_smoothing == 0.1 and resolve_config({"dataset": "digits"}).method.label_smoothing == 0.0
