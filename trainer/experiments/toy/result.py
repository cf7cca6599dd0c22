"""What a toy experiment records (per-epoch arrays of every run, the plotted epoch's panel data), its per-run
summaries, the paired table (each variant minus the base, same seed, with a t-interval) and its JSON file."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memloss.trainer.experiments.toy.config import ToyConfig, ToyConfigError
from memloss.trainer.experiments.toy.stats import PairedDiff, paired_difference

# Per-epoch counts on the previous epoch's adversarial examples (epochs 2..E), as fractions of the training points.
COUNT_KEYS = ("made_correct", "forget_at_epoch_end", "learn_at_epoch_end", "old_error_at_epoch_end")

# The per-run summary figures, in table order: (key, label, unit note).
SUMMARY_KEYS = (
    ("forget_rate_at_epoch_end", "forgetting rate at epoch end | correct when made"),
    ("forget_at_epoch_end", "forgetting events at epoch end (share of points)"),
    ("learn_at_epoch_end", "learning events at epoch end (share of points)"),
    ("net_forget_at_epoch_end", "net forgetting at epoch end: old error(n) − own error(n−1)"),
    ("old_error_at_epoch_end", "old-example error at epoch end"),
    ("own_error", "own-example error at epoch end"),
    ("robust_acc", "test robust accuracy, mean over the measured epochs"),
    ("final_robust_acc", "test robust accuracy, last epoch"),
    ("clean_acc", "test clean accuracy, mean over the measured epochs"),
)


# The figures the positive control must move, and the sign of the move (−1: down, +1: up).
CONTROL_CHECKS = (("forget_rate_at_epoch_end", -1), ("old_error_at_epoch_end", -1), ("robust_acc", +1))


@dataclass(frozen=True)
class PanelData:
    """What figure 3 of the paper shows, for epoch n of the base run of the first seed: the boundaries of epochs
    n − 1 and n as σ(z) on a grid (float32 [G, G], row = x2, column = x1, over `axis` float32 [G] in [0, 1]), the
    clean points x [N, 2] / y [N], the adversarial examples of epochs n − 1 and n (float32 [N, 2]), and `wrong`
    (bool [3, N]): which of them the model misclassifies in panels (a) n−1 on n−1, (b) n on n, (c) n on n−1; and the boundary
    after the last epoch (`prob_last`, figure 2)."""

    epoch: int
    axis: np.ndarray
    prob_prev: np.ndarray
    prob_cur: np.ndarray
    x: np.ndarray
    y: np.ndarray
    adv_prev: np.ndarray
    adv_cur: np.ndarray
    wrong: np.ndarray
    prob_last: np.ndarray
    last_epoch: int


@dataclass(frozen=True)
class ToyResult:
    """Every run of the experiment. `arrays[key]`: float64 [T, R], R runs variant-major (run v·S + s = variant v
    of seed s). T = epochs for own_error, clean_acc, robust_acc (epochs 1..E) and T = epochs − 1 for
    COUNT_KEYS (epochs 2..E); counts and errors are fractions of the training points, accuracies fractions of the
    test points. Also the panel data, the wall time of the whole experiment (s) and the torch CPU threads used."""

    config: ToyConfig
    arrays: dict[str, np.ndarray]
    panels: PanelData
    wall_time_s: float
    threads: int | None = None

    def _by_variant(self, values: np.ndarray) -> np.ndarray:
        """[R] → [V, S]."""
        return values.reshape(len(self.config.variants), self.config.seeds)

    def per_run(self) -> dict[str, np.ndarray]:
        """Each SUMMARY_KEYS figure per run, as [V, S]: the count keys over the measured epochs (from
        config.first_measured on; the rate pooled: Σ forgetting / Σ made correct), errors averaged over the same
        epochs, accuracies of the last epoch."""
        cfg = self.config
        counts = {k: self.arrays[k][cfg.first_measured - 2:] for k in COUNT_KEYS}
        own = self.arrays["own_error"][cfg.first_measured - 1:]
        out = {"forget_rate_at_epoch_end": counts["forget_at_epoch_end"].sum(0)
               / np.maximum(counts["made_correct"].sum(0), 1e-12)}
        out |= {k: counts[k].mean(0) for k in COUNT_KEYS[1:]}
        out["net_forget_at_epoch_end"] = out["forget_at_epoch_end"] - out["learn_at_epoch_end"]
        window = slice(cfg.first_measured - 1, None)
        out |= {"own_error": own.mean(0), "robust_acc": self.arrays["robust_acc"][window].mean(0),
                "final_robust_acc": self.arrays["robust_acc"][-1],
                "clean_acc": self.arrays["clean_acc"][window].mean(0)}
        return {k: self._by_variant(v) for k, v in out.items()}

    def paired(self) -> dict[str, dict[str, PairedDiff]]:
        """Per non-base variant and summary figure: the paired difference variant − base over the seeds."""
        runs = self.per_run()
        names = [v.name for v in self.config.variants]
        return {name: {k: paired_difference(runs[k][v], runs[k][0]) for k, _ in SUMMARY_KEYS}
                for v, name in enumerate(names) if v > 0}

    def control_moves(self) -> dict[str, bool] | None:
        """Per CONTROL_CHECKS figure: whether the positive control moved it the way training on the memory examples
        must (forgetting and old-example error down, robust accuracy up) with a t-interval that excludes 0 (None:
        no control run). A figure the control does not move is one this toy cannot detect a change of."""
        control = [v.name for v in self.config.variants if v.kind == "control"]
        if not control:
            return None
        diffs = self.paired()[control[0]]
        return {key: (diffs[key].low > 0 if sign > 0 else diffs[key].high < 0) for key, sign in CONTROL_CHECKS}

    def control_moves_metric(self) -> bool | None:
        """Whether the control lowered the main figure, the forgetting rate at epoch end (None: no control run)."""
        moves = self.control_moves()
        return None if moves is None else moves["forget_rate_at_epoch_end"]

    def curves(self) -> dict[str, dict[str, list[float]]]:
        """Per variant and per-epoch key: the mean over seeds, epoch by epoch."""
        names = [v.name for v in self.config.variants]
        return {name: {k: [float(x) for x in self._by_variant_rows(a)[:, v].mean(1)] for k, a in self.arrays.items()}
                for v, name in enumerate(names)}

    def _by_variant_rows(self, a: np.ndarray) -> np.ndarray:
        """[T, R] → [T, V, S]."""
        return a.reshape(a.shape[0], len(self.config.variants), self.config.seeds)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: the config, the variants, every run's summary per seed, the paired table (mean, std, n,
        95 % t-interval of each variant − base), whether the control moved the metric, the mean curves, the
        plotted epoch and the wall time."""
        runs = self.per_run()
        variants = [dataclasses.asdict(v) for v in self.config.variants]
        return {
            "config": dataclasses.asdict(self.config),
            "variants": variants,
            "measured_epochs": [self.config.first_measured, self.config.epochs],
            "per_seed": {v["name"]: {k: [float(x) for x in runs[k][i]] for k in runs} for i, v in enumerate(variants)},
            "paired": {name: {k: {**dataclasses.asdict(d), "low": d.low, "high": d.high} for k, d in figures.items()}
                       for name, figures in self.paired().items()},
            "interval": "two-sided Student t, 95 %, over per-seed differences (variant − base, same seed)",
            "control_moves_metric": self.control_moves_metric(),
            "control_moves": self.control_moves(),
            "curves": self.curves(),
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
