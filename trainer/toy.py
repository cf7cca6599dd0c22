"""The 2-D toy problem of the MemLoss paper (§3.3, figures 2-3): how much PGD adversarial training forgets the
adversarial examples of the previous epoch, with and without the MemLoss term.

Two runs share the seed, the data, the initial weights, the batch order and the PGD random starts:
- "AT": PGD-AT, loss CE(f(x_adv), y);
- "AT+MemLoss": the same plus β′ · MemLoss-V1 with K = 1, the memory example x″ of a sample being its adversarial
  example of the previous epoch (no augmentation in 2-D, so it is kept as is in an [N, 2] tensor).

The paper's network is a two-layer ReLU MLP with a sigmoid output and binary cross-entropy. `TwoLogitMLP` returns
the logits [0, z] instead of z: softmax([0, z]) = [1 − σ(z), σ(z)], so cross-entropy on them *is* the paper's BCE
and the project's PGD and MemLoss term apply unchanged.

Forgetting of epoch n (n ≥ 2) = the error rate, under the model at the end of epoch n, of the adversarial examples
made during epoch n − 1 (each made by the model of its own training step, exactly the memory examples).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memstore.errors import MemlossError
from trainer.attacks import PGDConfig, pgd
from trainer.losses import memloss_term
from trainer.toy_data import ToyData, make_toy_data

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


class TwoLogitMLP(nn.Module):
    """Two hidden ReLU layers and one output unit z; forward returns logits [B, 2] = [0, z] for inputs [B, 2]
    in [0,1]² (float32), so that softmax gives [1 − σ(z), σ(z)] = the paper's sigmoid output."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        z = self.body(x)
        return torch.cat([torch.zeros_like(z), z], dim=1)


def build_toy_model(hidden: int, seed: int) -> TwoLogitMLP:
    """PyTorch's default initialization, drawn from `seed` without touching the global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TwoLogitMLP(hidden)


@torch.no_grad()
def wrong_mask(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """bool [N]: the predicted class of x [N, 2] (argmax of the logits; a tie z = 0 counts as class 0) is not y."""
    return model(x).argmax(dim=1) != y


def error_rate(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Fraction (0-dim float tensor in [0, 1]) of points x [N, 2] misclassified by the model.
    Forgetting of epoch n = error_rate(model_n, x_adv_{n−1}, y)."""
    return wrong_mask(model, x, y).float().mean()


@dataclass(frozen=True)
class RunTrace:
    """One run, epoch by epoch. Lists of floats indexed by epoch − 1 (epochs 1..E), except `forgetting` and
    `forgotten`, indexed by epoch − 2 (epochs 2..E). Rates and accuracies are fractions in [0, 1]; `train_loss` is
    the mean batch loss.

    forgetting[n]: error of epoch n−1's adversarial examples under the model of epoch n (the paper's panel c);
    forgotten[n]: fraction of them right under the model of epoch n−1 but wrong under epoch n (a → c flips);
    own_error[n]: error of epoch n's adversarial examples under the model of epoch n (panel b)."""

    name: str
    forgetting: list[float]
    forgotten: list[float]
    own_error: list[float]
    clean_acc: list[float]
    robust_acc: list[float]
    train_loss: list[float]

    def summary(self) -> dict[str, float]:
        """Final and mean forgetting (mean over all epochs ≥ 2 and over the second half), final accuracies."""
        half = self.forgetting[len(self.forgetting) // 2 :]
        return {
            "final_forgetting": self.forgetting[-1],
            "final_forgotten": self.forgotten[-1],
            "mean_forgetting": float(np.mean(self.forgetting)),
            "mean_forgetting_second_half": float(np.mean(half)),
            "mean_forgotten": float(np.mean(self.forgotten)),
            "final_clean_acc": self.clean_acc[-1],
            "final_robust_acc": self.robust_acc[-1],
        }


@dataclass(frozen=True)
class PanelData:
    """What figure 3 of the paper shows, for epoch n of the AT run: the boundaries of epochs n − 1 and n as
    σ(z) on a grid (float32 [G, G], row = x2, column = x1, over `axis` float32 [G] in [0, 1]), the clean points
    x [N, 2] / y [N], the adversarial examples of epochs n − 1 and n (float32 [N, 2]), and `wrong` (bool [3, N]):
    which of them the model misclassifies in panels (a) n−1 on n−1, (b) n on n, (c) n on n−1."""

    epoch: int
    axis: np.ndarray
    prob_prev: np.ndarray
    prob_cur: np.ndarray
    x: np.ndarray
    y: np.ndarray
    adv_prev: np.ndarray
    adv_cur: np.ndarray
    wrong: np.ndarray


@dataclass(frozen=True)
class ToyResult:
    """Both runs, the panel data of the AT run and the wall time of the whole experiment in seconds."""

    config: ToyConfig
    runs: dict[str, RunTrace]
    panels: PanelData
    wall_time_s: float

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: the config, the summaries, the per-epoch curves, the plotted epoch and the wall time."""
        return {
            "config": dataclasses.asdict(self.config),
            "summary": {name: run.summary() for name, run in self.runs.items()},
            "curves": {name: dataclasses.asdict(run) for name, run in self.runs.items()},
            "panel_epoch": self.panels.epoch,
            "wall_time_s": self.wall_time_s,
        }


@dataclass
class _Snapshots:
    """Per-epoch weights and adversarial examples of one run (the panels need two consecutive epochs)."""

    states: list[dict[str, Tensor]]
    adv: list[Tensor]


def _attack_config(cfg: ToyConfig, steps: int) -> PGDConfig:
    return PGDConfig(norm="Linf", eps=cfg.eps, step_size=cfg.step_size, steps=steps, start="uniform")


def _train_step(
    model: nn.Module, opt: torch.optim.Optimizer, batch: tuple[Tensor, Tensor, Tensor],
    memory: Tensor | None, beta_prime: float,
) -> Tensor:
    """One SGD step on CE(f(x_adv), y), plus β′·MemLoss-V1(x, x″) when a memory batch x″ [B, 2] is given.
    Returns the detached loss."""
    x, y, x_adv = batch
    logits_adv = model(x_adv)
    loss = F.cross_entropy(logits_adv, y)
    if memory is not None:
        logits_mem = model(memory).unsqueeze(0)  # [K=1, B, 2]
        valid = torch.ones(1, len(y), dtype=torch.bool)
        loss = loss + memloss_term(model(x), logits_mem, y, valid, beta_prime, "v1", logits_adv).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def _run_epoch(
    model: nn.Module, opt: torch.optim.Optimizer, data: ToyData, cfg: ToyConfig,
    generators: tuple[torch.Generator, torch.Generator], memory: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Trains one epoch in a seeded random order; returns (adversarial examples [N, 2] made this epoch, mean loss).
    `memory` [N, 2] is the previous epoch's adversarial examples (None: plain AT, or the first epoch)."""
    order_gen, attack_gen = generators
    attack = _attack_config(cfg, cfg.steps)
    adv = torch.empty_like(data.x)
    losses = []
    for idx in torch.randperm(len(data.y), generator=order_gen).split(cfg.batch_size):
        x, y = data.x[idx], data.y[idx]
        x_adv = pgd(model, x, y, attack, "ce", generator=attack_gen).detach()
        adv[idx] = x_adv
        mem = None if memory is None else memory[idx]
        losses.append(_train_step(model, opt, (x, y, x_adv), mem, cfg.beta_prime))
    return adv, torch.stack(losses).mean()


def _forgetting_metrics(model: nn.Module, prev_adv: Tensor, prev_wrong: Tensor, y: Tensor) -> dict[str, Tensor]:
    """forgetting and forgotten of the current model on the previous epoch's adversarial examples [N, 2], given
    which of them the previous model got wrong (`prev_wrong` bool [N])."""
    now_wrong = wrong_mask(model, prev_adv, y)
    return {"forgetting": now_wrong.float().mean(), "forgotten": (now_wrong & ~prev_wrong).float().mean()}


def _test_metrics(model: nn.Module, test: ToyData, attack: PGDConfig, gen: torch.Generator) -> dict[str, Tensor]:
    """Clean and PGD robust accuracy on the test points (0-dim tensors in [0, 1])."""
    test_adv = pgd(model, test.x, test.y, attack, "ce", generator=gen)
    return {"clean": 1 - error_rate(model, test.x, test.y), "robust": 1 - error_rate(model, test_adv, test.y)}


def _train_run(
    name: str, cfg: ToyConfig, train: ToyData, test: ToyData, use_memloss: bool
) -> tuple[RunTrace, _Snapshots]:
    """One full run from the shared initial weights; metrics are tensors until the end (no per-step syncs)."""
    model = build_toy_model(cfg.hidden, cfg.seed)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    generators = (torch.Generator().manual_seed(cfg.seed + 1), torch.Generator().manual_seed(cfg.seed + 2))
    eval_gen, eval_attack = torch.Generator().manual_seed(cfg.seed + 3), _attack_config(cfg, cfg.eval_steps)
    snaps = _Snapshots(states=[], adv=[])
    rows: dict[str, list[Tensor]] = defaultdict(list)
    own_wrong = torch.zeros(0, dtype=torch.bool)
    for _ in range(cfg.epochs):
        memory = snaps.adv[-1] if (use_memloss and snaps.adv) else None
        adv, loss = _run_epoch(model, opt, train, cfg, generators, memory)
        metrics = _forgetting_metrics(model, snaps.adv[-1], own_wrong, train.y) if snaps.adv else {}
        own_wrong = wrong_mask(model, adv, train.y)
        metrics |= {"own_error": own_wrong.float().mean(), "loss": loss}
        metrics |= _test_metrics(model, test, eval_attack, eval_gen)
        for key, value in metrics.items():
            rows[key].append(value)
        snaps.states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        snaps.adv.append(adv)
    c = {k: torch.stack(v).tolist() for k, v in rows.items()}
    trace = RunTrace(name, c["forgetting"], c["forgotten"], c["own_error"], c["clean"], c["robust"], c["loss"])
    return trace, snaps


def _model_from(state: dict[str, Tensor], hidden: int) -> TwoLogitMLP:
    model = TwoLogitMLP(hidden)
    model.load_state_dict(state)
    return model


def _grid_probability(model: nn.Module, axis: Tensor) -> np.ndarray:
    """σ(z) of the model on the grid axis × axis; float32 [G, G], row = x2, column = x1."""
    x1, x2 = torch.meshgrid(axis, axis, indexing="xy")
    with torch.no_grad():
        logits = model(torch.stack([x1.reshape(-1), x2.reshape(-1)], dim=1))
    return logits.softmax(dim=1)[:, 1].reshape(len(axis), len(axis)).numpy()


def pick_panel_epoch(forgetting: list[float], panel_from: float) -> int:
    """The epoch n (≥ 2, 1-based) with the highest forgetting among the last (1 − panel_from) of the run; the
    earliest on a tie. `forgetting[i]` belongs to epoch i + 2."""
    start = int(panel_from * len(forgetting))
    return start + int(np.argmax(forgetting[start:])) + 2


def _panel_data(cfg: ToyConfig, train: ToyData, trace: RunTrace, snaps: _Snapshots) -> PanelData:
    epoch = pick_panel_epoch(trace.forgetting, cfg.panel_from)
    axis = torch.linspace(0, 1, cfg.grid)
    prev, cur = (_model_from(snaps.states[e], cfg.hidden) for e in (epoch - 2, epoch - 1))
    adv_prev, adv_cur = snaps.adv[epoch - 2], snaps.adv[epoch - 1]
    pairs = ((prev, adv_prev), (cur, adv_cur), (cur, adv_prev))
    with torch.no_grad():
        wrong = torch.stack([wrong_mask(model, adv, train.y) for model, adv in pairs])
    return PanelData(
        epoch=epoch, axis=axis.numpy(), prob_prev=_grid_probability(prev, axis),
        prob_cur=_grid_probability(cur, axis), x=train.x.numpy(), y=train.y.numpy(),
        adv_prev=adv_prev.numpy(), adv_cur=adv_cur.numpy(), wrong=wrong.numpy(),
    )


def run_toy(cfg: ToyConfig) -> ToyResult:
    """Runs AT and AT+MemLoss on the same two-moons data (train seed `cfg.seed`, test seed `cfg.seed + 1000`)
    on the CPU and returns their per-epoch forgetting and accuracies, and the panel data of the AT run."""
    start = time.perf_counter()
    train = make_toy_data(cfg.n_train, cfg.noise, cfg.seed)
    test = make_toy_data(cfg.n_test, cfg.noise, cfg.seed + 1000)
    with _single_thread():
        at, at_snaps = _train_run(RUN_NAMES[0], cfg, train, test, use_memloss=False)
        mem, _ = _train_run(RUN_NAMES[1], cfg, train, test, use_memloss=True)
        panels = _panel_data(cfg, train, at, at_snaps)
    return ToyResult(cfg, {at.name: at, mem.name: mem}, panels, time.perf_counter() - start)


@contextmanager
def _single_thread() -> Iterator[None]:
    """One intra-op thread, restored on exit: the toy's [8, 64] matrices gain nothing from threads, and on a busy
    machine idle-spinning OpenMP workers made the same run 35x slower (measured: 12 epochs, 8.7 s vs 314 s)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def save_toy_result(result: ToyResult, out_dir: Path) -> Path:
    """Writes `result.to_json()` to out_dir/toy_result.json (written to a temporary file, then renamed, so an
    interrupted write never leaves a truncated file); returns its path."""
    ensure_out_dir(out_dir)
    path = out_dir / "toy_result.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    tmp.replace(path)
    return path


def ensure_out_dir(out_dir: Path) -> None:
    """Creates out_dir (and parents) if missing; raises ToyConfigError when the path exists and is not a folder."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ToyConfigError(f"output path {out_dir} exists and is not a folder; pass another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
