"""MeoW — Zhang, Hong, Zhao, "Memorization Weights for Instance Reweighting in Adversarial Training" (AAAI 2023).
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

It plugs into ``total_loss`` as a ``base`` replacement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from memloss.trainer.methods.losses import LossInputs, LossOutput, LossParams, kl_rows
from memloss.trainer.methods.registry import get_method
from memloss.trainer.methods.te import RegularizerError

MEOW_METHODS: tuple[str, ...] = ("at", "trades")


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
