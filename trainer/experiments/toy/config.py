"""The toy experiment's settings (`ToyConfig`: the paper's values where it gives them, ours otherwise)."""

from __future__ import annotations

from dataclasses import dataclass

from memloss.errors import MemlossError

BASES = ("at", "trades")
BASE_NAMES = {"at": "AT", "trades": "TRADES"}


def run_names(base: str) -> tuple[str, str]:
    """The two runs of a toy experiment: the base method alone and with the MemLoss term."""
    name = BASE_NAMES[base]
    return name, f"{name}+MemLoss"


class ToyConfigError(MemlossError):
    """An impossible value in a toy-problem configuration."""


@dataclass(frozen=True)
class ToyConfig:
    """The toy experiment. Paper values: lr, momentum, weight decay, eps (Linf, on [0,1]² inputs) and 120 epochs.

    Our choices (the paper gives none): 400 training / 400 test points, moons noise 0.1 (moon units), two hidden
    layers of 64 units, batch 8 (at lr 0.005, batch 32 or 32 hidden units leave an almost straight boundary after
    120 epochs; 64 units in batches of 8 bend it along the moons, judged on the AT run alone), PGD-10 with step
    eps/4, PGD-20 for the test robust accuracy.
    `base`: the method MemLoss is added to: "trades" (default: the paper's MemLoss is MemLoss+TRADES; the attack,
    start and loss are the trainer's, β = 5 and β′ = 2 as in the paper's tables) or "at" (PGD-AT with a uniform
    start, the paper's toy training, which it never ran with MemLoss). `seeds`: runs per method, with seeds
    `seed`, `seed` + 1, …; each seed draws its own data, initial weights, batch order and attack starts.
    `panel_from` is the first epoch, as a fraction of the run, among which the plotted epoch (the one with the
    highest old-example error of the base run, first seed) is chosen; 0.5 mirrors the paper's epoch 116 of 120,
    after convergence. It is also where the "converged half" of the summaries starts.
    """

    epochs: int = 120
    n_train: int = 400
    n_test: int = 400
    noise: float = 0.1
    hidden: int = 64
    batch_size: int = 8
    lr: float = 0.005
    momentum: float = 0.9
    weight_decay: float = 5e-4
    eps: float = 0.1
    step_size: float = 0.025
    steps: int = 10
    eval_steps: int = 20
    beta_prime: float = 2.0
    beta: float = 5.0
    base: str = "trades"
    seed: int = 0
    seeds: int = 5
    grid: int = 200
    panel_from: float = 0.5

    def __post_init__(self) -> None:
        if self.base not in BASES:
            raise ToyConfigError(f"unknown base {self.base!r}; use one of: {', '.join(BASES)}")
        for name in ("epochs", "n_train", "n_test", "hidden", "batch_size", "steps", "eval_steps", "seeds"):
            if getattr(self, name) < 1:
                raise ToyConfigError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.epochs < 2:
            raise ToyConfigError(f"epochs must be ≥ 2 (forgetting compares two epochs), got {self.epochs}")
        for name in ("lr", "eps", "step_size"):
            if not getattr(self, name) > 0:
                raise ToyConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.eps < 0.5:
            raise ToyConfigError(f"eps must be < 0.5 (inputs live in [0,1]²), got {self.eps}")
        for name in ("noise", "weight_decay", "beta_prime", "beta"):
            if not getattr(self, name) >= 0:
                raise ToyConfigError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        if not 0 <= self.momentum < 1:
            raise ToyConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.grid < 2:
            raise ToyConfigError(f"grid must be ≥ 2 points per side, got {self.grid}")
        if not 0 <= self.panel_from < 1:
            raise ToyConfigError(f"panel_from must be in [0, 1), got {self.panel_from}")

    @property
    def names(self) -> tuple[str, str]:
        return run_names(self.base)

    @classmethod
    def quick(cls, seed: int = 0, base: str = "trades", seeds: int = 2) -> ToyConfig:
        """The CI preset: 12 epochs on 128 points in batches of 8 (enough SGD steps at lr 0.005 to leave the
        constant classifier), a coarse plot grid, 2 seeds; runs in a few seconds on a CPU."""
        return cls(epochs=12, n_train=128, n_test=128, batch_size=8, grid=60, seed=seed, base=base, seeds=seeds)
