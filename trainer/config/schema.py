"""The training configuration: a tree of frozen dataclasses, resolved once from per-dataset defaults (the paper's
Appendix A.1), an optional TOML file and command-line overrides, and validated at construction.

Flat option names (`epochs`, `beta_prime`, ...) are what the CLI and a TOML file use; `SECTION_OF` maps each to
its section. Unknown names and impossible values raise `ConfigError` (one line, exit code 2 in the CLI).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from memloss.errors import ConfigError
from memloss.trainer.common.units import parse_fraction
from memloss.trainer.config.checks import check_radius, check_seed, check_step, finite
from memloss.trainer.data.registry import DATASETS

METHOD_NAMES = ("standard", "at", "trades", "mart", "hat")
VARIANT_NAMES = ("v1", "v2", "v3")
REG_NAMES = ("none", "te", "meow")
NORM_NAMES = ("Linf", "L2")
MEMORY_VIEWS = ("recorded", "aligned")
SLOT_DRAWS = ("step", "window")
MEMORY_FORWARDS = ("separate", "fused")
CLEAN_GRADS = ("through", "stop")
PRECISIONS = ("fp32", "bf16")  # training compute: fp32, or bf16 autocast (CUDA only)
EPOCH_RULES = ("pass", "total")  # trainer/data/mixed.py batch_mix
ATTACK_BN_NAMES = ("eval", "train-frozen")  # methods/threat.py ATTACK_BN_MODES
ATTACK_STARTS = ("normal", "uniform")
SCHEDULE_STEPS = ("batch", "epoch")
SELECT_ATTACKS = ("pgd20", "pgd40-cw")
ARCH_NAMES = ("resnet18", "preact_resnet18", "small_cnn", "wrn-28-10", "wrn-34-10", "wrn-70-16", "wrn-28-10-swish",
              "wrn-34-10-swish", "wrn-70-16-swish")


def _choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; valid: {', '.join(choices)}")


@dataclass(frozen=True)
class DataConfig:
    """Which data and how it is batched. `dataset`: a built-in name or the absolute path of the user's data (an .npz
    or an image folder, trainer/data/userdata.py), `test_data` its test split (None: the folder's test/ or val/, else
    a seeded held-out share). `resolution` only applies to the synthetic dataset. `aux_data`:
    generated-image .npz part files forming one set, mixed into every batch at `aux_fraction` (default 0.7 with
    aux_data); `aux_take`: a seeded subset of them; `epoch_samples`: samples per epoch, ceil(epoch_samples / B)
    batches (default: `aux_epoch`'s rule: ``pass``, one pass over the larger part, every sample visited at least
    once; ``total``, ceil(N_total / B), the epoch of older runs); `aux_draw`: ``without`` (generated rows as even as
    possible) or ``with-replacement`` (uniform, as the published sampler); memstore/layout/mixing.py. `val_split`: base
    training images held out (seeded by `val_seed`) for model selection (trainer/data/holdout.py)."""

    dataset: str = "digits"
    test_data: str | None = None
    data_dir: str | None = None
    n: int | None = None
    resolution: int | None = None
    batch_size: int = 128
    num_workers: int | None = None
    aux_data: tuple[str, ...] = ()
    aux_take: int | None = None
    aux_fraction: float | None = None
    epoch_samples: int | None = None
    aux_draw: str | None = None
    aux_epoch: str | None = None
    val_split: int = 0
    val_seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1, got {self.batch_size}")
        if self.n is not None and self.n < 2:
            raise ConfigError(f"n must be ≥ 2, got {self.n}")
        if self.resolution is not None and self.resolution < 4:
            raise ConfigError(f"resolution must be ≥ 4 pixels, got {self.resolution}")
        if self.resolution is not None and self.dataset != "synthetic":
            raise ConfigError(f"--resolution applies to the synthetic dataset only; {self.dataset} has a fixed "
                              "resolution: drop --resolution")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"num_workers must be ≥ 0, got {self.num_workers}")
        object.__setattr__(self, "aux_data", tuple(str(f) for f in self.aux_data))
        self._check_user_data()
        self._check_aux()

    def _check_user_data(self) -> None:
        builtin = self.dataset in DATASETS
        if builtin and self.test_data is not None:
            raise ConfigError(f"--test-data goes with your own --dataset PATH; {self.dataset} has its own test split: "
                              "drop --test-data")
        if not builtin and self.aux_data:
            raise ConfigError("--aux-data mixes generated images into a built-in dataset; with your own --dataset "
                              "PATH it is not supported yet: drop --aux-data")
        if not builtin and self.val_split:
            raise ConfigError("--val-split holds out images of a built-in dataset; with your own --dataset PATH give "
                              "your validation images as --test-data (selection runs on them): drop --val-split")

    def _check_aux(self) -> None:
        given = [name for name in ("aux_take", "aux_fraction", "epoch_samples", "aux_draw", "aux_epoch")
                 if getattr(self, name) is not None]
        if given and not self.aux_data:
            raise ConfigError(f"--{given[0].replace('_', '-')} needs generated data: add --aux-data FILE [FILE ...]")
        if self.val_split < 0:
            raise ConfigError(f"--val-split must be ≥ 0 held-out training images (0 = none), got {self.val_split}")
        check_seed(self.val_seed)
        if not self.aux_data:
            return
        from memloss.memstore.layout.mixing import AUX_DRAWS  # here: it loads numpy (the CLI checks first)

        _choice(self.aux_draw or "without", AUX_DRAWS, "--aux-draw")
        _choice(self.aux_epoch or "pass", EPOCH_RULES, "--aux-epoch")
        if self.epoch_samples is not None and self.aux_epoch is not None:
            raise ConfigError("give either --epoch-samples (a fixed epoch) or --aux-epoch (a rule), not both")
        object.__setattr__(self, "aux_draw", self.aux_draw or "without")
        if self.epoch_samples is None:
            object.__setattr__(self, "aux_epoch", self.aux_epoch or "pass")
        if self.aux_fraction is None:
            from memloss.memstore.layout.mixing import PUBLISHED_AUX_FRACTION  # here: it loads numpy (the CLI checks first)

            object.__setattr__(self, "aux_fraction", PUBLISHED_AUX_FRACTION)
        f = float(self.aux_fraction)  # type: ignore[arg-type]
        if not 0 < f < 1 or not 1 <= int(f * self.batch_size) < self.batch_size:
            raise ConfigError(f"--aux-fraction {f} must leave both generated and base samples in a batch of "
                              f"{self.batch_size} (int(f·B) between 1 and B−1), e.g. 0.7")
        if self.aux_take is not None and self.aux_take < 1:
            raise ConfigError(f"--aux-take must be ≥ 1 generated images, got {self.aux_take}")
        if self.epoch_samples is not None and self.epoch_samples < 1:
            raise ConfigError(f"--epoch-samples must be ≥ 1, got {self.epoch_samples}")


@dataclass(frozen=True)
class ThreatConfig:
    """The threat model of training. eps and step_size are exact fraction strings of the [0,1] pixel scale."""

    norm: str = "Linf"
    eps: str = "8/255"
    step_size: str = "2/255"
    attack_steps: int = 10

    def __post_init__(self) -> None:
        _choice(self.norm, NORM_NAMES, "norm")
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
        _choice(self.method, METHOD_NAMES, "method")
        _choice(self.attack_bn, ATTACK_BN_NAMES, "--attack-bn")
        if self.attack_start is not None:
            _choice(self.attack_start, ATTACK_STARTS, "--attack-start")
        _choice(self.memloss_variant, VARIANT_NAMES, "memloss variant")
        _choice(self.reg, REG_NAMES, "reg")
        _choice(self.memory_view, MEMORY_VIEWS, "memory view")
        _choice(self.memory_slot_draw, SLOT_DRAWS, "memory slot draw")
        _choice(self.memory_forward, MEMORY_FORWARDS, "memory forward")
        _choice(self.memloss_clean_grad, CLEAN_GRADS, "memloss clean gradient")
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
            raise ConfigError("--memory-slots-per-step needs --memloss-variant v1 or v2 (v3 puts x″ = x in every slot "
                              "without memory, which slot sampling does not draw)")
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
        _choice(self.schedule_step, SCHEDULE_STEPS, "--schedule-step")
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
        _choice(self.precision, PRECISIONS, "precision")
        if not isinstance(self.deterministic, bool):
            raise ConfigError(f"deterministic must be true or false, got {self.deterministic!r}")
        _choice(self.select_attack, SELECT_ATTACKS, "--select-attack")
        if self.model is not None:
            _choice(self.model, ARCH_NAMES, "architecture")
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
