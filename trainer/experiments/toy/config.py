"""The toy experiment's settings (`ToyConfig`) and its variants (the runs each seed trains)."""

from __future__ import annotations

from dataclasses import dataclass

from memloss.errors import MemlossError

BASES = ("at", "trades")
BASE_NAMES = {"at": "AT", "trades": "TRADES"}
SCHEDULES = ("constant", "cosine")


class ToyConfigError(MemlossError):
    """An impossible value in a toy-problem configuration."""


@dataclass(frozen=True)
class Variant:
    """One run per seed: `kind` "base" (the base method alone), "memloss" (+ β′·MemLoss-V1 on the previous
    epoch's adversarial examples, `weight` = β′) or "control" (+ `weight`·CE(f(x″), y): trains on the memory
    examples directly, the positive control)."""

    name: str
    kind: str
    weight: float


@dataclass(frozen=True)
class ToyConfig:
    """The toy experiment: the base method with and without MemLoss, paired by seed, plus a β′ sweep and a
    positive control, every run judged on the previous epoch's adversarial examples by end-of-epoch models.

    The paper (§3.3) gives: two classes in 2-D, a two-hidden-layer ReLU MLP with sigmoid output and BCE, SGD with
    lr 0.005, momentum 0.9, weight decay 5e-4, PGD with Linf ε = 0.1, 120 epochs. No data generator, size, width
    or batch size. Measured with that set-up (noisy moons, ε = 0.1), the toy was not an instrument: the errors on old
    adversarial examples were points whose ε-balls overlap the other class (never robust), forgetting equalled
    learning (churn), and nothing moved them. The default here is redesigned (docs/guide.md, "The toy as an
    instrument", gives the reasons and what it can and cannot show):

    - data: two moons without noise and ε = 0.05: the classes are ≥ 0.16 apart in Linf, more than 2ε, so every
      training point can be made robust and an error on an old adversarial example is a change of the boundary,
      not an impossible point;
    - 64 hidden units and a constant learning rate of 0.02 in batches of 8 (4× the paper's rate): the boundary
      bends along the moons within the run and keeps moving between epochs, which is what exposes the previous
      epoch's examples in the paper's argument (its figure 1); a decaying rate freezes it and leaves nothing to
      forget;
    - 40 epochs, the figures pooled over epochs 11–40 (`measure_from` 0.25: after the first fit), 20 seeds (with
      10, the interval of the AT base's control on the forgetting rate still contained 0).

    `base`: "trades" (the paper's MemLoss is MemLoss+TRADES, β = 5) or "at" (PGD-AT, the paper's toy training).
    `beta_prime`: the MemLoss weight of the main comparison (the paper's 2); `sweep`: the other β′ values run;
    `control_weight`: the weight of CE on the memory examples in the positive control (0: no control run).
    `seeds`: seeds `seed` … `seed` + seeds − 1; every variant of a seed shares its data, initial weights, batch
    order and attack starts (the pairing).
    """

    epochs: int = 40
    n_train: int = 256
    n_test: int = 512
    noise: float = 0.0
    hidden: int = 64
    batch_size: int = 8
    lr: float = 0.02
    schedule: str = "constant"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    eps: float = 0.05
    step_size: float = 0.0125
    steps: int = 10
    eval_steps: int = 20
    beta: float = 5.0
    beta_prime: float = 2.0
    sweep: tuple[float, ...] = (0.5, 8.0)
    control_weight: float = 2.0
    base: str = "trades"
    seed: int = 0
    seeds: int = 20
    measure_from: float = 0.25
    grid: int = 200

    def __post_init__(self) -> None:
        self._check_choices()
        for name in ("epochs", "n_train", "n_test", "hidden", "batch_size", "steps", "eval_steps", "seeds"):
            if getattr(self, name) < 1:
                raise ToyConfigError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.epochs < 3:
            raise ToyConfigError(f"epochs must be ≥ 3 (forgetting compares two epochs after the first), "
                                 f"got {self.epochs}")
        for name in ("lr", "eps", "step_size", "beta_prime"):
            if not getattr(self, name) > 0:
                raise ToyConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.eps < 0.5:
            raise ToyConfigError(f"eps must be < 0.5 (inputs live in [0,1]²), got {self.eps}")
        for name in ("noise", "weight_decay", "beta", "control_weight"):
            if not getattr(self, name) >= 0:
                raise ToyConfigError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        distinct = len(set(self.sweep)) == len(self.sweep)
        if any(not b > 0 for b in self.sweep) or self.beta_prime in self.sweep or not distinct:
            raise ToyConfigError(f"sweep needs distinct β′ > 0 other than beta_prime, got {self.sweep}")
        if not 0 <= self.momentum < 1:
            raise ToyConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.grid < 2:
            raise ToyConfigError(f"grid must be ≥ 2 points per side, got {self.grid}")
        if not 0 <= self.measure_from < 1 or int(self.measure_from * self.epochs) > self.epochs - 2:
            raise ToyConfigError(f"measure_from must be in [0, 1) and leave ≥ 2 epochs to measure, "
                                 f"got {self.measure_from}")

    def _check_choices(self) -> None:
        if self.base not in BASES:
            raise ToyConfigError(f"unknown base {self.base!r}; use one of: {', '.join(BASES)}")
        if self.schedule not in SCHEDULES:
            raise ToyConfigError(f"unknown schedule {self.schedule!r}; use one of: {', '.join(SCHEDULES)}")

    @property
    def base_name(self) -> str:
        return BASE_NAMES[self.base]

    @property
    def variants(self) -> tuple[Variant, ...]:
        """The runs of every seed: the base first, then MemLoss at `beta_prime`, the sweep (ascending), the control."""
        b = self.base_name
        out = [Variant(b, "base", 0.0), Variant(f"{b}+MemLoss β′={self.beta_prime:g}", "memloss", self.beta_prime)]
        out += [Variant(f"{b}+MemLoss β′={w:g}", "memloss", w) for w in sorted(self.sweep)]
        if self.control_weight > 0:
            out.append(Variant(f"{b}+{self.control_weight:g}·CE(x″) (control)", "control", self.control_weight))
        return tuple(out)

    @property
    def first_measured(self) -> int:
        """The first epoch n (1-based, ≥ 2) whose events enter the summaries."""
        return max(2, int(self.measure_from * self.epochs) + 1)

    @classmethod
    def quick(cls, seed: int = 0, base: str = "trades", seeds: int = 3) -> ToyConfig:
        """The CI preset: 6 epochs on 64 points, a coarse plot grid, 3 seeds (the fewest with a t-interval of
        2 degrees of freedom); runs in a few seconds on a CPU. Not a measurement."""
        return cls(epochs=6, n_train=64, n_test=64, grid=40, seed=seed, base=base, seeds=seeds, measure_from=0.0)
