"""The gradient-masking figure of `memloss evaluate --sweep ... --plot` (paper Tables A.4/A.5): PGD-CE robust
accuracy against the number of steps and of restarts, one panel each, on one shared y range."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from memloss.trainer.plots.style import new_figure, save_figure, series_style, share_y, styled

if TYPE_CHECKING:
    from matplotlib.figure import Figure

XLABELS = {"steps": "PGD-CE steps (1 restart, log scale)", "restarts": "PGD-CE restarts (40 steps, log scale)"}


def sweep_figure(curves: dict[str, list[tuple[int, float]]], title: str) -> Figure:
    """`curves` maps a sweep kind (steps, restarts) → [(value, robust accuracy in [0,1])]; `title` names the
    model, dataset and ε. A flat curve is what a sound defense gives; a falling one means masked gradients."""
    with styled():
        fig, axes = new_figure(1, len(curves), panel=(4.2, 3.3))
        for i, (ax, (kind, points)) in enumerate(zip(axes, curves.items())):
            xs, ys = zip(*sorted(points))
            ax.plot(xs, [100 * v for v in ys], markersize=5, **series_style(i))
            ax.set_xscale("log")
            ax.set_xticks(xs, [str(v) for v in xs])
            ax.minorticks_off()
            ax.set_xlabel(XLABELS.get(kind, kind))
            ax.set_ylabel("robust accuracy (%)")
            ax.set_title(f"by number of {kind}")
        pad = [(ax.get_ylim()[0] - 2, ax.get_ylim()[1] + 2) for ax in axes]
        for ax, (low, high) in zip(axes, pad):
            ax.set_ylim(low, high)
        share_y(axes, 0.0, 100.0)
        fig.suptitle(title)
    return fig


def plot_sweeps(curves: dict[str, list[tuple[int, float]]], path: Path, title: str) -> list[Path]:
    """Writes `sweep_figure` to `path` (PNG and PDF; the folder is created); returns both paths."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(sweep_figure(curves, title), path)
