"""Baseline regularizers compared against MemLoss: Temporal Ensembling (TE) and Memorization Weights (MeoW).

Both plug into ``trainer.losses.total_loss``: TE as an ``extra`` term, MeoW as a ``base`` replacement.

TE — Dong et al., "Exploring Memorization in Adversarial Training" (ICLR 2022), official code
dongyp13/memorization-AT (loss.py ``PGD_TE``/``TRADES_TE``, train_te.py):
- state: ``te_init(N, C)`` zeros float32 [N,C], one EMA row per training sample (dataset index);
- each visit (from the start epoch on): clean logits in EVAL mode, ``te_update(state, idx, softmax, eta=0.9)``:
  state[idx] = eta·state[idx] + (1 - eta)·p, target p_hat = state[idx] / sum_c state[idx] (renormalised; with the
  zero start this is a bias correction). The official code normalises by the sum (the slides write the L2 norm);
  we follow the code;
- term ``te_term``: w·mean_{i,c}(softmax(logits) - p_hat)^2 (mean over B·C elements, as ``.mean()`` in the code)
  with w = ``te_weight(epoch, start, end)`` = 300·exp(-5(1 - t)^2), t = (epoch - start)/(end - start);
  0 before start and 300 after end (official start 90, end 150 of 200 epochs; ``te_window`` scales that);
- applied to f(x_adv) for AT and to the clean train-mode f(x) for TRADES (``TE_TARGET``, ``te_logits``). MART and
  HAT are not in the paper: by analogy MART (adversarial CE base) regularises f(x_adv) and HAT (TRADES base)
  f(x). This is our extension;
- the official attack also maximises the TE term. ``te_attack_objective`` gives that objective as a callable
  for ``trainer.attacks.pgd`` (per sample: CE_i + w·mean_c(...)^2 for AT/MART, beta·KL_i + w·mean_c(...)^2 for
  TRADES/HAT; the official batch means differ by the constant 1/B, which neither the sign step nor the
  per-sample L2 step sees). Using the plain objective instead is the trainer's choice and a documented deviation;
- duplicate indices within one batch are not supported (the loader yields a permutation).

MeoW — Zhang, Hong, Zhao, "Memorization Weights for Instance Reweighting in Adversarial Training" (AAAI 2023).
No public code exists; from the paper text (sections 3.1-3.4, 4.1):
- a codebook of N = 2048 codes e_k over penultimate features F = g(x) (dim D), trained with the VQ loss
  l_m = sum_i ||sg[F_i] - e_{k_i}||^2, k_i = argmin_j ||F_i - e_j||, on the WRONG natural and WRONG adversarial
  features of the batch only (argmax != y); no gradient reaches the network;
- d(F) = Euclidean distance to the nearest code; w+ = exp(d(F)/T) on natural terms, w- = exp(-d(F_adv)/T) on
  adversarial terms, T = 10;
- AT (eq. 5): alpha·w+·CE(f(x), y) + (1 - alpha)·w-·CE(f(x_adv), y), alpha = 0.2 (so AT+MeoW needs the clean
  forward too); TRADES (eq. 6): w+·CE(f(x), y) + lambda·w-·KL(p(x) || p(x_adv)), lambda = the TRADES beta;
- order per batch: attack, forwards, weights from the current codebook, then codebook update and network update.
Choices the paper leaves open (ours):
- codebook update: its own ``torch.optim.Adam`` (lr ``MeowConfig.lr`` = 1e-3) on l_m, one step per batch, applied
  whatever the number of wrong samples (no host sync; with none, the gradient is zero and only Adam's momentum
  moves codes). Codes start uniform in [-1/N, 1/N] as in VQ-VAE / taming-transformers. Like any VQ codebook it
  may use few codes (collapse); then d is the distance to the few popular prototypes, which is still the
  "typicalness" the paper measures;
- features: the train-mode penultimate features of the loss forwards (``model.features``), detached, float32;
- weights are detached (a per-sample reweighting, as in GAIRAT/MAIL) and normalised over the batch to mean 1
  (the paper's constraint sum_i omega_i = 1, times B so that uniform weights give the unweighted loss). We
  compute them as B·softmax(±d/T), which equals w / mean(w) without overflowing exp;
- MeoW is defined for "at" and "trades" only (``MEOW_METHODS``); other bases raise an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from memstore.errors import MemlossError
from trainer.attacks import Objective
from trainer.losses import LossInputs, LossOutput, LossParams, get_method, kl_rows

__all__ = [
    "RegularizerError",
    "TE_ETA",
    "TE_MAX_WEIGHT",
    "TE_TARGET",
    "te_init",
    "te_update",
    "te_weight",
    "te_window",
    "te_term",
    "te_logits",
    "te_attack_objective",
    "MEOW_METHODS",
    "MeowConfig",
    "MeowWeights",
    "MeowBank",
    "meow_loss",
]

TE_ETA = 0.9  # EMA momentum (official --te-alpha)
TE_MAX_WEIGHT = 300.0  # official --reg-weight
# Official window: epochs 90 -> 150 of 200.
_TE_START_FRACTION = 90 / 200
_TE_END_FRACTION = 150 / 200

#: Which logits TE regularises for each base method: "adv" = f(x_adv), "clean" = train-mode f(x).
TE_TARGET: dict[str, str] = {"at": "adv", "trades": "clean", "mart": "adv", "hat": "clean"}

MEOW_METHODS: tuple[str, ...] = ("at", "trades")


class RegularizerError(MemlossError):
    """A TE or MeoW setting is invalid or does not apply to the chosen method."""


# ---------------------------------------------------------------------------------------------------------------
# Temporal Ensembling.


def te_init(n: int, num_classes: int, device: torch.device | str = "cpu") -> Tensor:
    """The EMA state: float32 zeros [n, num_classes] (row = dataset index)."""
    return torch.zeros(n, num_classes, dtype=torch.float32, device=device)


def te_update(state: Tensor, idx: Tensor, probs: Tensor, eta: float = TE_ETA) -> Tensor:
    """EMA step in place on ``state[idx]`` and return the target p_hat [B,C] (rows sum to 1, detached).

    state: float32 [N,C]; idx: int64 [B] distinct indices; probs: [B,C] eval-mode clean softmax.
    """
    if not 0.0 <= eta < 1.0:
        raise RegularizerError(f"TE eta must be in [0, 1), got {eta}")
    rows = eta * state[idx] + (1.0 - eta) * probs.detach().float()
    state[idx] = rows
    return rows / rows.sum(dim=1, keepdim=True)


def te_weight(epoch: float, start: float, end: float, max_weight: float = TE_MAX_WEIGHT) -> float:
    """max_weight·exp(-5(1 - t)^2), t = (epoch - start)/(end - start); 0 before start, max_weight after end.

    With start 90, end 150: w(90) = 2.02, w(120) = 85.95, w(150) = 300 (official ``sigmoid_rampup``).
    """
    if not end > start:
        raise RegularizerError(f"TE window must have end > start, got start={start}, end={end}")
    if epoch < start:
        return 0.0
    if epoch > end:
        return float(max_weight)
    phase = 1.0 - (epoch - start) / (end - start)
    return float(max_weight) * math.exp(-5.0 * phase * phase)


def te_window(total_epochs: int) -> tuple[int, int]:
    """The official 90->150-of-200 window scaled to ``total_epochs`` (e.g. 70 -> (32, 52))."""
    if total_epochs < 2:
        raise RegularizerError(f"TE needs at least 2 epochs to ramp up, got {total_epochs}")
    start = round(_TE_START_FRACTION * total_epochs)
    end = max(round(_TE_END_FRACTION * total_epochs), start + 1)
    return start, end


def te_term(logits: Tensor, target: Tensor, weight: float) -> LossOutput:
    """weight·mean_{i,c}(softmax(logits) - target)^2; logits [B,C], target [B,C] (detached p_hat)."""
    mse = (F.softmax(logits.float(), dim=1) - target.detach()).pow(2).mean()
    return LossOutput(weight * mse, {"te_mse": mse.detach()})


def _te_kind(method: str) -> str:
    try:
        return TE_TARGET[get_method(method).name]
    except KeyError:
        raise RegularizerError(f"TE does not apply to method {method!r}; use one of: {', '.join(TE_TARGET)}") from None


def te_logits(method: str, inputs: LossInputs) -> Tensor:
    """The logits TE regularises for ``method``: f(x_adv) for at/mart, the clean f(x) for trades/hat."""
    logits = inputs.logits_adv if _te_kind(method) == "adv" else inputs.logits_clean
    if logits is None:
        raise ValueError(f"TE on {method!r} needs the {_te_kind(method)} logits, which the caller did not provide")
    return logits


def te_attack_objective(method: str, target: Tensor, weight: float, beta: float) -> Objective:
    """Per-sample attack objective of the official TE code (to pass to ``trainer.attacks.pgd``).

    at/mart: CE_i(f(x_adv), y) + w·mean_c(p(x_adv) - p_hat)^2; trades/hat: beta·KL_i(p_clean || p(x_adv)) +
    w·mean_c(...)^2, where p_clean is the ``p_clean`` argument pgd passes (computed once in eval mode).
    """
    kind = _te_kind(method)
    target = target.detach()

    def objective(logits: Tensor, y: Tensor, p_clean: Tensor | None) -> Tensor:
        logits = logits.float()
        te = (F.softmax(logits, dim=1) - target).pow(2).mean(dim=1)
        if kind == "adv":
            return F.cross_entropy(logits, y, reduction="none") + weight * te
        if p_clean is None:
            raise ValueError("the TE attack objective for a TRADES-like method needs p_clean")
        kl = (torch.xlogy(p_clean, p_clean) - p_clean * F.log_softmax(logits, dim=1)).sum(dim=1)
        return beta * kl + weight * te

    return objective


# ---------------------------------------------------------------------------------------------------------------
# MeoW.


@dataclass(frozen=True)
class MeowConfig:
    """num_codes N (paper 2048), temperature T (paper 10), alpha of AT+MeoW eq. 5 (paper 0.2), lr of the
    codebook's own Adam (not in the paper; our choice)."""

    num_codes: int = 2048
    temperature: float = 10.0
    alpha: float = 0.2
    lr: float = 1e-3

    def __post_init__(self) -> None:
        if isinstance(self.num_codes, bool) or not isinstance(self.num_codes, int) or self.num_codes < 1:
            raise RegularizerError(f"MeoW num_codes must be an integer >= 1, got {self.num_codes!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise RegularizerError(f"MeoW temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise RegularizerError(f"MeoW alpha must be in [0, 1], got {self.alpha}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise RegularizerError(f"MeoW codebook lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class MeowWeights:
    """Detached per-sample weights, each float32 [B] with batch mean 1: ``plus`` = normalised exp(d(F)/T) for
    natural terms, ``minus`` = normalised exp(-d(F_adv)/T) for adversarial terms."""

    plus: Tensor
    minus: Tensor


class MeowBank:
    """The MeoW codebook (memory bank) and its own optimizer.

    codes: float32 [N, D] leaf tensor on ``device``; ``dim`` = D, the model's penultimate feature size.
    """

    def __init__(self, dim: int, cfg: MeowConfig, *, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> None:
        n = cfg.num_codes
        codes = torch.empty(n, dim, dtype=torch.float32, device=device)
        codes.uniform_(-1.0 / n, 1.0 / n, generator=generator)
        self.cfg = cfg
        self.codes = codes.requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.codes], lr=cfg.lr)

    def _nearest(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """(distance float32 [B], code index int64 [B]) of each feature row to its nearest code."""
        dist = torch.cdist(features.detach().float(), self.codes.detach())
        values, index = dist.min(dim=1)
        return values, index

    def distances(self, features: Tensor) -> Tensor:
        """d(F, codebook): float32 [B] for features [B, D]."""
        with torch.no_grad(), torch.autocast(self.codes.device.type, enabled=False):
            return self._nearest(features)[0]

    def weights(self, feat_clean: Tensor, feat_adv: Tensor) -> MeowWeights:
        """w+ from natural features [B,D] and w- from adversarial features [B,D], normalised to batch mean 1."""
        t = self.cfg.temperature
        d_nat, d_adv = self.distances(feat_clean), self.distances(feat_adv)
        plus = d_nat.shape[0] * F.softmax(d_nat / t, dim=0)
        minus = d_adv.shape[0] * F.softmax(-d_adv / t, dim=0)
        return MeowWeights(plus, minus)

    def update(self, feat_clean: Tensor, feat_adv: Tensor, wrong_clean: Tensor, wrong_adv: Tensor) -> Tensor:
        """One Adam step on l_m = sum over WRONG samples of ||sg[F_i] - e_{k_i}||^2; returns l_m detached.

        feat_*: [B,D]; wrong_*: bool [B] (argmax f != y). Correct samples never move a code.
        """
        features = torch.cat([feat_clean, feat_adv]).detach().float()
        mask = torch.cat([wrong_clean, wrong_adv]).float()
        with torch.enable_grad(), torch.autocast(self.codes.device.type, enabled=False):
            _, index = self._nearest(features)
            sq = (features - self.codes[index]).pow(2).sum(dim=1)
            loss = (mask * sq).sum()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return loss.detach()

    def state_dict(self) -> dict[str, Any]:
        """Codes and optimizer state, for checkpoints."""
        return {"codes": self.codes.detach().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` output; the code shape must match."""
        codes = state["codes"]
        if codes.shape != self.codes.shape:
            raise RegularizerError(
                f"MeoW codebook in the checkpoint has shape {tuple(codes.shape)}, expected {tuple(self.codes.shape)}"
            )
        with torch.no_grad():
            self.codes.copy_(codes)
        self.optimizer.load_state_dict(state["optimizer"])


def meow_loss(method: str, inputs: LossInputs, params: LossParams, weights: MeowWeights, alpha: float) -> LossOutput:
    """MeoW-reweighted base loss (pass as ``total_loss(..., base=...)``).

    at (eq. 5): alpha·mean_i(w+_i·CE_i(f(x))) + (1 - alpha)·mean_i(w-_i·CE_i(f(x_adv)));
    trades (eq. 6): mean_i(w+_i·CE_i(f(x))) + beta·mean_i(w-_i·KL_i(p(x) || p(x_adv))).
    Needs logits_clean and logits_adv [B,C] in ``inputs``.
    """
    name = get_method(method).name
    if name not in MEOW_METHODS:
        raise RegularizerError(f"MeoW is defined for methods {', '.join(MEOW_METHODS)}, not {method!r}")
    if inputs.logits_clean is None or inputs.logits_adv is None:
        raise ValueError("MeoW needs both logits_clean and logits_adv")
    y = inputs.y
    ce_nat = F.cross_entropy(inputs.logits_clean.float(), y, reduction="none")
    nat = (weights.plus.detach() * ce_nat).mean()
    if name == "at":
        ce_adv = F.cross_entropy(inputs.logits_adv.float(), y, reduction="none")
        adv = (weights.minus.detach() * ce_adv).mean()
        loss = alpha * nat + (1.0 - alpha) * adv
    else:
        adv = (weights.minus.detach() * kl_rows(inputs.logits_clean, inputs.logits_adv)).mean()
        loss = nat + params.beta * adv
    metrics = {"meow_nat": nat.detach(), "meow_adv": adv.detach(),
               "meow_w_plus_max": weights.plus.detach().max(), "meow_w_minus_max": weights.minus.detach().max()}
    return LossOutput(loss, metrics)
