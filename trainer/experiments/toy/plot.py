"""Figures of the toy problem: the paper's figure 2 (clean boundary) and figure 3 (three panels) for the AT run,
and the forgetting curves of both runs. Colours follow the paper: sky-blue region = predicted class 0 (blue
points), orange region = predicted class 1 (green points)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from memloss.trainer.experiments.toy.result import PanelData, ToyResult, ensure_out_dir

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_POINT_COLORS = ("tab:blue", "tab:green")
_REGION_COLORS = ("lightskyblue", "orange")


def _draw_boundary(ax: Axes, axis: np.ndarray, prob: np.ndarray) -> None:
    """Filled predicted-class regions of σ(z) [G, G] over axis × axis, and the σ = 0.5 line."""
    from matplotlib.colors import ListedColormap

    ax.contourf(axis, axis, prob > 0.5, levels=[-0.5, 0.5, 1.5], cmap=ListedColormap(_REGION_COLORS), alpha=0.45)
    ax.contour(axis, axis, prob, levels=[0.5], colors="black", linewidths=1.2)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")


def _draw_points(ax: Axes, points: np.ndarray, y: np.ndarray, wrong: np.ndarray | None, marker: str) -> None:
    """Points coloured by true class; misclassified ones (if `wrong` is given) ringed in red."""
    for label in (0, 1):
        sel = y == label
        ax.scatter(points[sel, 0], points[sel, 1], s=10, c=_POINT_COLORS[label], marker=marker, linewidths=0.8)
    if wrong is not None and wrong.any():
        ax.scatter(points[wrong, 0], points[wrong, 1], s=40, facecolors="none", edgecolors="red", linewidths=0.8,
                   label="misclassified")
        ax.legend(loc="lower left", fontsize=7)


def _panel(ax: Axes, p: PanelData, prob: np.ndarray, adv: np.ndarray, wrong: np.ndarray, title: str) -> None:
    _draw_boundary(ax, p.axis, prob)
    _draw_points(ax, adv, p.y, wrong, marker="x")
    ax.set_title(f"{title}\nerror {wrong.mean():.1%}", fontsize=9)


def plot_panels(p: PanelData, path: Path) -> Path:
    """Figure 3: (a) boundary n−1 with adversarial examples of n−1; (b) n with n; (c) n with n−1."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.6))
    axes = fig.subplots(1, 3)
    n = p.epoch
    _panel(axes[0], p, p.prob_prev, p.adv_prev, p.wrong[0],
           f"(a) boundary of epoch {n - 1}, adv. examples of epoch {n - 1}")
    _panel(axes[1], p, p.prob_cur, p.adv_cur, p.wrong[1], f"(b) boundary of epoch {n}, adv. examples of epoch {n}")
    _panel(axes[2], p, p.prob_cur, p.adv_prev, p.wrong[2], f"(c) boundary of epoch {n}, adv. examples of epoch {n - 1}")
    fig.suptitle("PGD-AT on the 2-D toy: boundaries of two consecutive epochs and their adversarial examples")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_clean_boundary(p: PanelData, path: Path) -> Path:
    """Figure 2: the boundary of epoch n on the clean training points."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    _draw_boundary(ax, p.axis, p.prob_cur)
    _draw_points(ax, p.x, p.y, None, marker="o")
    ax.set_title(f"Decision boundary on clean data after epoch {p.epoch} (AT)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_curves(result: ToyResult, path: Path) -> Path:
    """Forgetting per epoch (left) and test robust accuracy per epoch (right) of both runs."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    left, right = fig.subplots(1, 2)
    for name, run in result.runs.items():
        left.plot(range(2, len(run.forgetting) + 2), run.forgetting, label=name, linewidth=1)
        right.plot(range(1, len(run.robust_acc) + 1), run.robust_acc, label=name, linewidth=1)
    left.axvline(result.panels.epoch, color="gray", linestyle=":", label=f"plotted epoch {result.panels.epoch}")
    left.set(xlabel="epoch n", ylabel="error of epoch n−1's adv. examples under epoch n", title="Forgetting")
    right.set(xlabel="epoch", ylabel="accuracy", title=f"Test robust accuracy (PGD-{result.config.eval_steps})")
    for ax in (left, right):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_toy(result: ToyResult, out_dir: Path) -> list[Path]:
    """Writes toy_panels.png (figure 3), toy_clean_boundary.png (figure 2) and toy_forgetting.png into out_dir
    (created if missing; existing files of these names are overwritten) and returns their paths."""
    ensure_out_dir(out_dir)
    return [
        plot_panels(result.panels, out_dir / "toy_panels.png"),
        plot_clean_boundary(result.panels, out_dir / "toy_clean_boundary.png"),
        plot_curves(result, out_dir / "toy_forgetting.png"),
    ]
