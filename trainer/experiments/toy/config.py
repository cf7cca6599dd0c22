"""The toy experiment's settings (`ToyConfig`: the paper's values where it gives them, ours otherwise)."""

from __future__ import annotations

from dataclasses import dataclass

from memloss.errors import MemlossError

RUN_NAMES = ("AT", "AT+MemLoss")


class ToyConfigError(MemlossError):
    """An impossible value in a toy-problem configuration."""


@dataclass(frozen=True)
class ToyConfig:
    """The toy experiment. Paper values: lr, momentum, weight decay, eps (Linf, on [0,1]² inputs) and 120 epochs.

    Our choices (the paper gives none): 400 training / 400 test points, moons noise 0.1 (moon units), two hidden
    layers of 64 units, batch 8 (at lr 0.005, batch 32 or 32 hidden units leave an almost straight boundary after
    120 epochs; 64 units in batches of 8 bend it along the moons, judged on the AT run alone), PGD-10 with step
    eps/4 and a uniform start (PGD-AT, as in the project's training), β′ = 2 (the paper's MemLoss weight on every
    dataset), PGD-20 for the test robust accuracy.
    `panel_from` is the first epoch, as a fraction of the run, among which the plotted epoch (the one with the
    highest forgetting of the AT run) is chosen; 0.5 mirrors the paper's epoch 116 of 120, after convergence.
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
    seed: int = 0
    grid: int = 200
    panel_from: float = 0.5

    def __post_init__(self) -> None:
        for name in ("epochs", "n_train", "n_test", "hidden", "batch_size", "steps", "eval_steps"):
            if getattr(self, name) < 1:
                raise ToyConfigError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.epochs < 2:
            raise ToyConfigError(f"epochs must be ≥ 2 (forgetting compares two epochs), got {self.epochs}")
        for name in ("lr", "eps", "step_size"):
            if not getattr(self, name) > 0:
                raise ToyConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.eps < 0.5:
            raise ToyConfigError(f"eps must be < 0.5 (inputs live in [0,1]²), got {self.eps}")
        for name in ("noise", "weight_decay", "beta_prime"):
            if not getattr(self, name) >= 0:
                raise ToyConfigError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        if not 0 <= self.momentum < 1:
            raise ToyConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.grid < 2:
            raise ToyConfigError(f"grid must be ≥ 2 points per side, got {self.grid}")
        if not 0 <= self.panel_from < 1:
            raise ToyConfigError(f"panel_from must be in [0, 1), got {self.panel_from}")

    @classmethod
    def quick(cls, seed: int = 0) -> ToyConfig:
        """The CI preset: 12 epochs on 128 points in batches of 8 (enough SGD steps at lr 0.005 to leave the
        constant classifier), a coarse plot grid; runs in about a second on a CPU."""
        return cls(epochs=12, n_train=128, n_test=128, batch_size=8, grid=60, seed=seed)
