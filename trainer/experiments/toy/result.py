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
    """One run (one method, one seed), epoch by epoch. Lists of floats indexed by epoch − 1 (epochs 1..E), except
    `old_error`, `forgetting_events` and `learning_events`, indexed by epoch − 2 (epochs 2..E). Rates and accuracies
    are fractions in [0, 1] of the training points; `train_loss` is the mean batch loss. Models are those at the
    end of each epoch (the paper's figure 3), adversarial examples those made during the epoch:

    old_error[n]: epoch n−1's adversarial examples misclassified by model n (the paper's panel c);
    forgetting_events[n]: right under model n−1 (panel a) and wrong under model n (panel c) (Toneva et al.);
    learning_events[n]: wrong under model n−1 and right under model n;
    own_error[n]: epoch n's adversarial examples misclassified by model n (panel b)."""

    name: str
    seed: int
    old_error: list[float]
    forgetting_events: list[float]
    learning_events: list[float]
    own_error: list[float]
    clean_acc: list[float]
    robust_acc: list[float]
    train_loss: list[float]

    def summary(self, converged_from: float) -> dict[str, float]:
        """Final accuracies and old-example error, and the means over the converged part of the run (epochs from
        `converged_from` of the run on, e.g. 0.5: the second half) of the events and the old-example error."""
        start = int(converged_from * len(self.old_error))
        return {
            "final_robust_acc": self.robust_acc[-1],
            "final_clean_acc": self.clean_acc[-1],
            "final_old_error": self.old_error[-1],
            "forgetting_events": float(np.mean(self.forgetting_events[start:])),
            "learning_events": float(np.mean(self.learning_events[start:])),
            "old_error": float(np.mean(self.old_error[start:])),
        }


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


@dataclass(frozen=True)
class PanelData:
    """What figure 3 of the paper shows, for epoch n of the base run (first seed): the boundaries of epochs n − 1 and n as
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
    """Both methods over all seeds (`runs[name]`: one trace per seed, in seed order), the panel data of the base
    run of the first seed, the wall time of the whole experiment in seconds and the torch CPU threads it ran with."""

    config: ToyConfig
    runs: dict[str, list[RunTrace]]
    panels: PanelData
    wall_time_s: float
    threads: int | None = None

    def summary(self) -> dict[str, dict[str, tuple[float, float]]]:
        """Per method: (mean, std) over seeds of every per-seed summary figure."""
        out = {}
        for name, traces in self.runs.items():
            per_seed = [t.summary(self.config.panel_from) for t in traces]
            out[name] = {key: mean_std([s[key] for s in per_seed]) for key in per_seed[0]}
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: the config, the summaries (mean and std over seeds, and per seed), the per-epoch curves of
        every seed, the plotted epoch and the wall time."""
        return {
            "config": dataclasses.asdict(self.config),
            "summary": {name: {key: {"mean": m, "std": sd} for key, (m, sd) in figures.items()}
                        for name, figures in self.summary().items()},
            "per_seed": {name: [t.summary(self.config.panel_from) for t in traces] for name, traces in self.runs.items()},
            "curves": {name: [dataclasses.asdict(t) for t in traces] for name, traces in self.runs.items()},
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
