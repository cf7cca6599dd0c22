"""What a toy run records (per-epoch traces, the plotted epoch's panel data) and its JSON file."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memloss.trainer.experiments.toy.config import ToyConfig, ToyConfigError


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
    """Both runs, the panel data of the AT run, the wall time of the whole experiment in seconds and the torch
    CPU threads it ran with."""

    config: ToyConfig
    runs: dict[str, RunTrace]
    panels: PanelData
    wall_time_s: float
    threads: int | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: the config, the summaries, the per-epoch curves, the plotted epoch and the wall time."""
        return {
            "config": dataclasses.asdict(self.config),
            "summary": {name: run.summary() for name, run in self.runs.items()},
            "curves": {name: dataclasses.asdict(run) for name, run in self.runs.items()},
            "panel_epoch": self.panels.epoch,
            "wall_time_s": self.wall_time_s,
            "threads": self.threads,
        }


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
