"""One training step: attack, the train-mode forwards the method needs, and the loss. The trainer owns the model's
modes, the optimizer and the devices; this module only composes attacks, pure losses and regularizer state."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from memloss.trainer.methods.losses import LossInputs, LossOutput, LossParams
from memloss.trainer.methods.memloss import MemLossConfig, MemoryInputs
from memloss.trainer.methods.meow import meow_loss
from memloss.trainer.methods.modes import clean_probs
from memloss.trainer.methods.objectives import Objective
from memloss.trainer.methods.pgd import pgd
from memloss.trainer.methods.registry import MethodSpec
from memloss.trainer.methods.te import te_attack_objective, te_logits, te_term
from memloss.trainer.methods.threat import PGDConfig
from memloss.trainer.methods.total import total_loss
from memloss.trainer.training.memory import MemoryExamples
from memloss.trainer.training.regstate import MeowState, TEState, forward

# HAT's helper example x + h·(x_adv − x) with the official h = 2 (not clamped, not projected).
HAT_HELPER_SCALE = 2.0


@dataclass(frozen=True)
class StepSetup:
    """Everything a step needs that does not change between steps."""

    model: nn.Module
    method: MethodSpec
    params: LossParams
    attack: PGDConfig | None
    beta_prime: tuple[float, ...] | None  # β′ per slot (slot 0 = epoch n−1); None = no MemLoss term
    variant: str
    helper: nn.Module | None
    autocast: bool
    te: TEState | None = None
    meow: MeowState | None = None
    memory_forward: str = "separate"  # separate: one train-mode forward per slot; fused: one for all slots
    clean_grad: str = "through"  # whether the MemLoss KL back-propagates into p(x)
    train_model: nn.Module | None = None  # the train-mode forwards' module (DDP's wrapper under torchrun); None: model

    @property
    def trained(self) -> nn.Module:
        """The module of the train-mode forwards; the attack and the eval-mode forwards use `model` itself."""
        return self.model if self.train_model is None else self.train_model


@dataclass
class StepResult:
    """loss: scalar with graph; x_adv: float [B,C,H,W] (None for standard training); metrics: detached scalars."""

    loss: torch.Tensor
    x_adv: torch.Tensor | None
    metrics: dict[str, torch.Tensor]


@contextlib.contextmanager
def maybe_autocast(enabled: bool, device: torch.device) -> Iterator[None]:
    """bf16 autocast on CUDA when enabled; a no-op elsewhere."""
    if enabled and device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


@dataclass
class _Forwards:
    inputs: LossInputs
    feat_clean: torch.Tensor | None = None
    feat_adv: torch.Tensor | None = None


def _attack(s: StepSetup, x: torch.Tensor, y: torch.Tensor, te_target: torch.Tensor | None,
            generator: torch.Generator) -> torch.Tensor | None:
    if s.attack is None:
        return None
    objective: str | Objective = s.method.attack_objective or "ce"
    p_clean = None
    if te_target is not None and s.te is not None:
        # The official TE code also puts its term into the attack objective.
        objective = te_attack_objective(s.method.name, te_target, s.te.weight, s.params.beta)
        p_clean = clean_probs(s.model, x, s.attack.bn) if s.method.attack_objective == "kl" else None
    return pgd(s.model, x, y, s.attack, objective, p_clean=p_clean, generator=generator)


def _forwards(s: StepSetup, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor | None,
              needs_clean: bool) -> _Forwards:
    """Separate train-mode forwards per input kind, as the official codes do (BN statistics per forward)."""
    feats = s.meow is not None
    clean = forward(s.trained, x, feats) if needs_clean or feats else None
    adv = forward(s.trained, x_adv, feats) if x_adv is not None and (s.method.needs_adv_forward or feats) else None
    logits_help = y_help = None
    if s.method.needs_helper and x_adv is not None and s.helper is not None:
        with torch.no_grad():
            y_help = s.helper(x_adv).argmax(dim=1)  # the standard model's label of x_adv
        logits_help = s.trained(x + HAT_HELPER_SCALE * (x_adv - x))
    inputs = LossInputs(y, clean.logits if clean else None, adv.logits if adv else None, logits_help, y_help)
    return _Forwards(inputs, clean.features if clean else None, adv.features if adv else None)


def _memory_logits(s: StepSetup, x_mem: torch.Tensor) -> torch.Tensor:
    """Train-mode logits [S,B,C] of the memory examples x_mem [S,B,C,H,W]. `separate`: one forward per slot, BN
    statistics per slot (the official code's one forward per input kind); `fused`: one forward of all S·B examples,
    BN statistics over all of them (fewer, larger kernels; the same logits for a model without BN)."""
    if s.memory_forward == "fused" and x_mem.shape[0] > 1:
        logits = s.trained(x_mem.flatten(0, 1))
        return logits.view(x_mem.shape[0], x_mem.shape[1], -1)
    return torch.stack([s.trained(xm) for xm in x_mem])


def _memory_inputs(s: StepSetup, memory: MemoryExamples | None, logits_clean: torch.Tensor | None
                   ) -> tuple[MemoryInputs, MemLossConfig] | None:
    if s.beta_prime is None:
        return None
    if s.variant == "v3":
        return _v3_inputs(s, memory, logits_clean)
    if memory is None:
        return None
    weights = (memory.weight,) * len(memory.slots)
    inputs = MemoryInputs(_memory_logits(s, memory.x), memory.valid, memory.slots, weights)
    config = MemLossConfig(tuple(s.beta_prime[k] for k in memory.slots), s.variant, s.clean_grad)
    return inputs, config


def _v3_inputs(s: StepSetup, memory: MemoryExamples | None, logits_clean: torch.Tensor | None
               ) -> tuple[MemoryInputs, MemLossConfig] | None:
    """V3 over all K slots: a slot with no memory in the batch is not forwarded; its rows are x″ = x (the paper's
    first K epochs), whose logits the loss takes from the clean forward (methods/memloss.py)."""
    if logits_clean is None:
        return None
    assert s.beta_prime is not None
    k, (b, c) = len(s.beta_prime), logits_clean.shape
    built = () if memory is None else memory.slots
    logits = torch.zeros(k, b, c, dtype=logits_clean.dtype, device=logits_clean.device)
    valid = torch.zeros(k, b, dtype=torch.bool, device=logits_clean.device)
    weights = [1.0] * k
    if memory is not None:
        forwarded = _memory_logits(s, memory.x)
        logits = logits.index_put((torch.tensor(built, device=logits.device),), forwarded.to(logits.dtype))
        valid[list(built)] = memory.valid
        for slot in built:
            weights[slot] = memory.weight
    return MemoryInputs(logits, valid, tuple(range(k)), tuple(weights)), MemLossConfig(s.beta_prime, s.variant,
                                                                                         s.clean_grad)


def _meow_base(s: StepSetup, f: _Forwards) -> LossOutput | None:
    if s.meow is None or f.feat_clean is None or f.feat_adv is None:
        return None
    weights = s.meow.bank.weights(f.feat_clean, f.feat_adv)
    return meow_loss(s.method.name, f.inputs, s.params, weights, s.meow.bank.cfg.alpha)


def _meow_update(s: StepSetup, f: _Forwards) -> dict[str, torch.Tensor]:
    if s.meow is None or f.feat_clean is None or f.feat_adv is None:
        return {}
    y = f.inputs.y
    wrong_clean = f.inputs.logits_clean.detach().argmax(1) != y  # type: ignore[union-attr]
    wrong_adv = f.inputs.logits_adv.detach().argmax(1) != y  # type: ignore[union-attr]
    return {"meow_vq": s.meow.bank.update(f.feat_clean, f.feat_adv, wrong_clean, wrong_adv)}


def train_step(s: StepSetup, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, memory: MemoryExamples | None,
               generator: torch.Generator) -> StepResult:
    """Attack (eval mode, inside pgd), forwards in train mode, and the total loss.

    x: float [B,C,H,W] in [0,1], the current augmented view; y: int64 [B]; idx: int64 [B] dataset indices on the
    device (TE's per-sample state); memory: rebuilt memory examples of the slots that hold any (None = no term).
    """
    with maybe_autocast(s.autocast, x.device):
        te_target = s.te.target(s.model, x, idx) if s.te is not None else None
        x_adv = _attack(s, x, y, te_target, generator)
        v3 = s.beta_prime is not None and s.variant == "v3"  # x″ = x where a slot holds no memory: needs f(x)
        needs_clean = s.method.needs_clean_forward or memory is not None or te_target is not None or v3
        f = _forwards(s, x, y, x_adv, needs_clean)
        mem = _memory_inputs(s, memory, f.inputs.logits_clean)
    extra = {}
    if te_target is not None and s.te is not None:
        extra["te"] = te_term(te_logits(s.method.name, f.inputs), te_target, s.te.weight)
    out = total_loss(s.method, f.inputs, s.params, memory=mem[0] if mem else None, memloss=mem[1] if mem else None,
                     extra=extra, base=_meow_base(s, f))
    return StepResult(out.loss, x_adv, {**out.metrics, **_meow_update(s, f)})
