"""The training configuration: a tree of frozen dataclasses, resolved once from per-dataset defaults (the paper's
Appendix A.1), an optional TOML file and command-line overrides, and validated at construction.

Flat option names (`epochs`, `beta_prime`, ...) are what the CLI and a TOML file use; `SECTION_OF` maps each to
its section. Unknown names and impossible values raise `ConfigError` (one line, exit code 2 in the CLI). The
`data` section lives in data.py and the names choice options accept in choices.py; both are importable from here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from memloss.errors import ConfigError
from memloss.trainer.common.units import parse_fraction
from memloss.trainer.config.checks import check_radius, check_seed, check_step, finite
from memloss.trainer.config.choices import (ARCH_NAMES, ATTACK_BN_NAMES, ATTACK_STARTS, CLEAN_GRADS, EPOCH_RULES,
                                            MEMORY_FORWARDS, MEMORY_VIEWS, METHOD_NAMES, NORM_NAMES, PRECISIONS,
                                            REG_NAMES, SCHEDULE_STEPS, SELECT_ATTACKS, SLOT_DRAWS, VARIANT_NAMES,
                                            choice)
from memloss.trainer.config.data import DataConfig


@dataclass(frozen=True)
class ThreatConfig:
    """The threat model of training. eps and step_size are exact fraction strings of the [0,1] pixel scale."""

    norm: str = "Linf"
    eps: str = "8/255"
    step_size: str = "2/255"
    attack_steps: int = 10

    def __post_init__(self) -> None:
        choice(self.norm, NORM_NAMES, "norm")
        if self.attack_steps < 1:
            raise ConfigError(f"attack_steps must be ≥ 1, got {self.attack_steps}")
        eps = parse_fraction(self.eps, "eps")
        check_radius(self.norm, eps, self.eps)
        check_step(parse_fraction(self.step_size, "step_size"), eps, self.attack_steps, self.step_size, self.eps)

    @property
    def eps_float(self) -> float:
        return float(parse_fraction(self.eps, "eps"))

    @property
    def step_float(self) -> float:
        return float(parse_fraction(self.step_size, "step_size"))


@dataclass(frozen=True)
class MethodConfig:
    """The base method and the MemLoss term on top of it (k = 0: no memory term)."""

    method: str = "trades"
    k: int = 1
    beta: float = 5.0
    beta_prime: tuple[float, ...] = (2.0,)
    gamma: float = 0.5
    memloss_variant: str = "v1"
    reg: str = "none"
    helper: str | None = None
    memory_view: str = "recorded"
    label_smoothing: float = 0.0
    memory_slots_per_step: int = 0  # m: memory slots each step uses (0 = all, the paper)
    memory_slot_draw: str = "step"  # step: m slots drawn per step; window: per store window (decodes only those)
    memory_forward: str = "separate"  # separate: one train-mode forward per slot (official BN); fused: one forward
    beta_prime_decay: float | None = None  # γ: β′_k = β′·γ^(k−1)
    memloss_clean_grad: str = "through"  # through: the MemLoss KL trains p(x) (paper eq. 5); stop: p(x) detached
    attack_bn: str = "eval"  # eval: the attack in eval mode (official TRADES/HAT); train-frozen: DM-Improves-AT
    attack_start: str | None = None  # normal | uniform; None: the method's own (normal for trades/hat/mart)

    def __post_init__(self) -> None:
        choice(self.method, METHOD_NAMES, "method")
        choice(self.attack_bn, ATTACK_BN_NAMES, "--attack-bn")
        if self.attack_start is not None:
            choice(self.attack_start, ATTACK_STARTS, "--attack-start")
        choice(self.memloss_variant, VARIANT_NAMES, "memloss variant")
        choice(self.reg, REG_NAMES, "reg")
        choice(self.memory_view, MEMORY_VIEWS, "memory view")
        choice(self.memory_slot_draw, SLOT_DRAWS, "memory slot draw")
        choice(self.memory_forward, MEMORY_FORWARDS, "memory forward")
        choice(self.memloss_clean_grad, CLEAN_GRADS, "memloss clean gradient")
        if self.k < 0:
            raise ConfigError(f"k must be ≥ 0 (0 = no memory term), got {self.k}")
        if self.k > 0 and len(self.beta_prime) > self.k:
            raise ConfigError(f"--beta-prime has {len(self.beta_prime)} values but k = {self.k}; give at most k values")
        for name, value in (("beta", self.beta), ("gamma", self.gamma), *(("beta_prime", b) for b in self.beta_prime)):
            finite(name, value, low=0)
        if self.method == "hat" and not self.helper:
            raise ConfigError("--method hat needs --helper CHECKPOINT (a model trained with --method standard)")
        self._check_label_smoothing()
        self._check_memory_options()

    def _check_label_smoothing(self) -> None:
        """Label smoothing acts on the clean CE term only (the published TRADES/HAT code): at and mart have none,
        and MeoW's reweighted loss is computed without it."""
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.label_smoothing > 0 and (self.method in ("at", "mart") or self.reg == "meow"):
            which = f"--method {self.method}" if self.method in ("at", "mart") else "--reg meow"
            raise ConfigError(f"--label-smoothing smooths the clean CE term of standard, trades and hat; {which} "
                              f"has none to smooth: drop --label-smoothing or use --method trades")

    def _check_memory_options(self) -> None:
        m = self.memory_slots_per_step
        if m and self.k == 0:
            raise ConfigError("--memory-slots-per-step needs a memory term (--k ≥ 1)")
        if m < 0 or m > self.k:
            raise ConfigError(f"--memory-slots-per-step must be between 1 and k = {self.k} (leave it out for all "
                              f"slots), got {m}")
        if m and self.memloss_variant == "v3":
            raise ConfigError("--memory-slots-per-step needs --memloss-variant v1 or v2 (v3 puts x″ = x in every "
                              "slot without memory, which slot sampling does not draw)")
        if self.memory_slot_draw == "window" and m == 0:
            raise ConfigError("--memory-slot-draw window needs --memory-slots-per-step m (the slots each window uses)")
        decay = self.beta_prime_decay
        if decay is not None:
            if not 0 <= decay < float("inf"):
                raise ConfigError(f"--beta-prime-decay must be a finite number ≥ 0, got {decay}")
            if len(self.beta_prime) > 1:
                raise ConfigError("give either --beta-prime-decay or one --beta-prime value per slot, not both")
        if self.memloss_clean_grad == "stop" and self.memloss_variant == "v3":
            raise ConfigError("--memloss-clean-grad stop needs --memloss-variant v1 or v2 (v3 has no p(x) in its KL)")

    def beta_prime_per_slot(self) -> tuple[float, ...]:
        """β′_k for k = 1..K: a single value applies to every slot (times γ^(k−1) with `beta_prime_decay` γ); a
        shorter list leaves later slots at 0."""
        if self.beta_prime_decay is not None:
            return tuple(self.beta_prime[0] * self.beta_prime_decay**k for k in range(self.k))
        if len(self.beta_prime) == 1:
            return self.beta_prime * self.k
        return self.beta_prime + (0.0,) * (self.k - len(self.beta_prime))


@dataclass(frozen=True)
class OptimConfig:
    """SGD with Nesterov momentum and a OneCycle (cosine) schedule stepped per batch (`schedule_step` "epoch": once an
    epoch, its length the number of epochs, as DM-Improves-AT's 'cosinew'); `ema`: decay of the weight average kept
    beside the model (None = none; training/ema.py). `bn_weight_decay` False: no weight decay on BN weights and
    biases; `bn_momentum`: the BN layers' running-statistics momentum (None: the architecture's own);
    `bn_first_step`: momentum 1.0 on the run's first optimizer step (statistics start as that batch's, as Haiku and
    DM-Improves-AT); training/bn.py."""

    epochs: int = 10
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    pct_start: float = 0.25
    ema: float | None = None
    schedule_step: str = "batch"
    bn_weight_decay: bool = True
    bn_momentum: float | None = None
    bn_first_step: bool = False

    def __post_init__(self) -> None:
        choice(self.schedule_step, SCHEDULE_STEPS, "--schedule-step")
        if self.bn_momentum is not None:
            finite("bn_momentum", self.bn_momentum, low=0, high=1)
        if self.epochs < 1:
            raise ConfigError(f"epochs must be ≥ 1, got {self.epochs}")
        finite("lr", self.lr, low=0, low_open=True)
        finite("weight_decay", self.weight_decay, low=0)
        finite("momentum", self.momentum, low=0, high=1)
        finite("pct_start", self.pct_start, low=0, low_open=True)
        if not self.pct_start < 1:
            raise ConfigError(f"pct_start must be in (0, 1), got {self.pct_start}")
        if self.ema is not None and not 0 < self.ema < 1:
            raise ConfigError(f"ema (the averaging decay) must be in (0, 1), e.g. --ema 0.995, got {self.ema}")


@dataclass(frozen=True)
class RunConfig:
    """Where the run lives and what it logs. memory_budget is in bytes."""

    out: str | None = None
    store: str | None = None
    memory_budget: int = 2 * 1024**3
    model: str | None = None
    device: str = "auto"
    seed: int = 0
    eval_n: int | None = None
    track_forgetting: bool = False
    sync_bn: bool = False  # torchrun: BN statistics synchronized over ranks (SyncBatchNorm); else per rank
    precision: str = "fp32"  # training forwards: fp32, or bf16 autocast on CUDA (the selection is always fp32)
    deterministic: bool = False  # deterministic CUDA kernels: bit-identical resumes on a GPU, at a speed cost
    select_attack: str = "pgd20"  # the per-epoch attack that picks best/best-ema (training/selection.py)

    def __post_init__(self) -> None:
        choice(self.precision, PRECISIONS, "precision")
        if not isinstance(self.deterministic, bool):
            raise ConfigError(f"deterministic must be true or false, got {self.deterministic!r}")
        choice(self.select_attack, SELECT_ATTACKS, "--select-attack")
        if self.model is not None:
            choice(self.model, ARCH_NAMES, "architecture")
        if self.memory_budget < 1024**2:
            raise ConfigError(f"memory_budget must be ≥ 1 MiB, got {self.memory_budget} bytes")
        if self.eval_n is not None and self.eval_n < 1:
            raise ConfigError(f"eval_n must be ≥ 1, got {self.eval_n}")
        check_seed(self.seed)


@dataclass(frozen=True)
class TrainConfig:
    """The whole resolved configuration of one training run."""

    data: DataConfig = field(default_factory=DataConfig)
    threat: ThreatConfig = field(default_factory=ThreatConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def __post_init__(self) -> None:
        if self.data.val_split and self.run.eval_n is not None:
            raise ConfigError("--eval-n sets the test points of per-epoch selection; with --val-split the held-out "
                              "training images select and the test set is left to `memloss evaluate`: drop --eval-n")

    @property
    def uses_store(self) -> bool:
        """A store is kept for the memory term, or just for the forgetting monitor."""
        return self.method.k > 0 or self.run.track_forgetting


SECTIONS: dict[str, type] = {
    "data": DataConfig, "threat": ThreatConfig, "method": MethodConfig, "optim": OptimConfig, "run": RunConfig,
}
SECTION_OF: dict[str, str] = {f.name: s for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)}

__all__ = ["TrainConfig", "DataConfig", "ThreatConfig", "MethodConfig", "OptimConfig", "RunConfig", "SECTIONS",
           "SECTION_OF", "ARCH_NAMES", "ATTACK_BN_NAMES", "ATTACK_STARTS", "CLEAN_GRADS", "EPOCH_RULES",
           "MEMORY_FORWARDS", "MEMORY_VIEWS", "METHOD_NAMES", "NORM_NAMES", "PRECISIONS", "REG_NAMES",
           "SCHEDULE_STEPS", "SELECT_ATTACKS", "SLOT_DRAWS", "VARIANT_NAMES"]
