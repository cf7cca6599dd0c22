"""Figures of the toy problem: the paper's figure 2 (clean boundary) and figure 3 (three panels) for the base run
of the first seed; the per-epoch curves of the base, MemLoss at the main β′ and the control (forgetting rate,
old- and own-example error at epoch end, test robust accuracy; mean over seeds with a ± 1 std band); and the paired
differences of every variant to the base with their 95 % t-intervals. House style (trainer/plots/style.py), PNG
and PDF. Regions: predicted class 0 light blue, class 1 light orange; points: class 0 blue, class 1 vermillion
(the Okabe-Ito palette); circles are clean points, crosses adversarial examples, red rings the misclassified ones."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from memloss.trainer.experiments.toy.result import PanelData, ToyResult, ensure_out_dir
from memloss.trainer.plots.style import PALETTE, color, epoch_axis, new_figure, save_figure, series_style, styled

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_POINT_COLORS = (PALETTE[0], PALETTE[3])  # blue, vermillion
_REGION_COLORS = ("#cfe3f1", "#f8e1b5")  # light blue, light orange
_AXES = ("x₁ (input, [0, 1])", "x₂ (input, [0, 1])")


def _draw_boundary(ax: Axes, axis: np.ndarray, prob: np.ndarray) -> None:
    """Filled predicted-class regions of σ(z) [G, G] over axis × axis, and the σ = 0.5 line."""
    from matplotlib.colors import ListedColormap

    ax.contourf(axis, axis, prob > 0.5, levels=[-0.5, 0.5, 1.5], cmap=ListedColormap(_REGION_COLORS))
    ax.contour(axis, axis, prob, levels=[0.5], colors="black", linewidths=1.2)
    ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", xlabel=_AXES[0], ylabel=_AXES[1])
    ax.grid(False)


def _draw_points(ax: Axes, points: np.ndarray, y: np.ndarray, wrong: np.ndarray | None, marker: str) -> None:
    """Points coloured by true class; misclassified ones (if `wrong` is given) ringed in red."""
    kind = "adv. example" if marker == "x" else "clean point"
    for label in (0, 1):
        sel = y == label
        ax.scatter(points[sel, 0], points[sel, 1], s=12, c=_POINT_COLORS[label], marker=marker, linewidths=0.9,
                   label=f"{kind}, class {label}")
    if wrong is not None and wrong.any():
        ax.scatter(points[wrong, 0], points[wrong, 1], s=42, facecolors="none", edgecolors="red", linewidths=0.8,
                   label="misclassified")


def _legend(fig: Figure, ax: Axes, ncols: int = 4) -> None:
    """One legend for the figure: the point kinds of `ax`, the two predicted regions and the boundary."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles, labels = ax.get_legend_handles_labels()
    handles += [Patch(color=_REGION_COLORS[0], label="predicted class 0"),
                Patch(color=_REGION_COLORS[1], label="predicted class 1"),
                Line2D([], [], color="black", label="decision boundary σ(z) = 0.5")]
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols)


def panels_figure(p: PanelData, eps: float, method: str = "AT") -> Figure:
    """Figure 3: (a) boundary n−1 with adversarial examples of n−1; (b) n with n; (c) n with n−1."""
    n = p.epoch
    titles = (f"(a) boundary of epoch {n - 1},\nadv. examples of epoch {n - 1}",
              f"(b) boundary of epoch {n},\nadv. examples of epoch {n}",
              f"(c) boundary of epoch {n},\nadv. examples of epoch {n - 1}")
    probs, advs = (p.prob_prev, p.prob_cur, p.prob_cur), (p.adv_prev, p.adv_cur, p.adv_prev)
    with styled():
        fig, axes = new_figure(1, 3, panel=(4.0, 4.9))
        for i, ax in enumerate(axes):
            _draw_boundary(ax, p.axis, probs[i])
            _draw_points(ax, advs[i], p.y, p.wrong[i], marker="x")
            ax.set_title(f"{titles[i]}: error {p.wrong[i].mean():.1%}")
        # Forgetting at epoch end: right in panel (a), wrong in panel (c).
        forgotten = p.wrong[2] & ~p.wrong[0]
        axes[2].scatter(p.adv_prev[forgotten, 0], p.adv_prev[forgotten, 1], s=90, marker="s", facecolors="none",
                        edgecolors="black", linewidths=1.2, label=f"forgotten: right in (a), wrong in (c)")
        axes[2].set_title(f"{titles[2]}: error {p.wrong[2].mean():.1%},\nforgotten {forgotten.mean():.1%}")
        _legend(fig, axes[2])
        fig.suptitle(f"2-D toy (two moons), {method} run (first seed), Linf ε = {eps:g}: forgetting at epoch end "
                     f"between epochs {n - 1} and {n}")
    return fig


def clean_boundary_figure(p: PanelData, eps: float, method: str = "AT") -> Figure:
    """Figure 2: the boundary after the last epoch on the clean training points."""
    with styled():
        fig, (ax,) = new_figure(1, 1, panel=(5.6, 6.4))
        _draw_boundary(ax, p.axis, p.prob_last)
        _draw_points(ax, p.x, p.y, None, marker="o")
        ax.set_title(f"clean training points, boundary after epoch {p.last_epoch}")
        _legend(fig, ax, ncols=2)
        fig.suptitle(f"2-D toy (two moons), {method} run (first seed), Linf ε = {eps:g}")
    return fig


def _per_epoch(result: ToyResult, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values [T, V, S] in %) of a per-epoch figure; the rate is per epoch Σ forgetting / Σ made correct."""
    cfg = result.config
    if key == "forget_rate":
        made = result.arrays["made_correct"]
        values = result.arrays["forget_at_epoch_end"] / np.maximum(made, 1e-12)
    else:
        values = result.arrays[key]
    first = 2 if values.shape[0] == cfg.epochs - 1 else 1
    shaped = values.reshape(values.shape[0], len(cfg.variants), cfg.seeds)
    return np.arange(first, first + values.shape[0]), 100 * shaped


# (per-epoch key, panel title, y label)
_CURVES = (("forget_rate", "forgetting at epoch end",
            "right under model n−1, wrong under n,\n% of those right under n−1"),
           ("old_error_at_epoch_end", "old-example error at epoch end",
            "epoch n−1's adv. examples wrong\nunder model n (% of points)"),
           ("own_error", "own-example error at epoch end",
            "epoch n's adv. examples wrong\nunder model n (% of points)"),
           ("robust_acc", "test robust accuracy (PGD-{steps})", "accuracy (%)"))


def _shown_variants(result: ToyResult) -> list[int]:
    """The base, MemLoss at the main β′ and the control (the sweep is in the paired figure)."""
    variants = result.config.variants
    return [i for i, v in enumerate(variants) if i <= 1 or v.kind == "control"]


def curves_figure(result: ToyResult) -> Figure:
    """Per epoch, base vs MemLoss (main β′) vs control: forgetting rate, old- and own-example error (training
    points, end-of-epoch models) and test robust accuracy; mean over seeds with a ± 1 std band; the measured
    epochs shaded."""
    cfg = result.config
    with styled():
        fig, axes = new_figure(1, len(_CURVES), panel=(4.0, 3.6))
        for ax, (key, title, ylabel) in zip(axes, _CURVES):
            epochs, values = _per_epoch(result, key)
            for j, v in enumerate(_shown_variants(result)):
                mean, std = values[:, v].mean(axis=1), values[:, v].std(axis=1, ddof=1)
                style = {**series_style(j), "marker": None}
                ax.plot(epochs, mean, label=cfg.variants[v].name, linewidth=1.2, **style)
                ax.fill_between(epochs, mean - std, mean + std, color=style["color"], alpha=0.15, linewidth=0)
            ax.axvspan(cfg.first_measured - 0.5, cfg.epochs + 0.5, color="0.5", alpha=0.08, linewidth=0)
            if key == "robust_acc":
                ax.set_ylim(top=min(ax.get_ylim()[1], 100.5))  # a ± 1 std band is no reason to draw past 100 %
            ax.set(ylabel=ylabel, title=title.format(steps=cfg.eval_steps))
            epoch_axis(ax, "epoch n")
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=len(labels))
        fig.suptitle(f"2-D toy (two moons), {cfg.base_name} base, Linf ε = {cfg.eps:g}, {cfg.epochs} epochs, "
                     f"mean over {cfg.seeds} seeds, band ± 1 std; grey: epochs {cfg.first_measured}–{cfg.epochs} "
                     "(measured)")
    return fig


# (summary key, x label)
_PAIRED = (("forget_rate_at_epoch_end", "forgetting rate at epoch end\n(points of %, variant − base)"),
           ("old_error_at_epoch_end", "old-example error at epoch end\n(points of %, variant − base)"),
           ("robust_acc", "test robust accuracy, mean over the\nmeasured epochs (points of %, variant − base)"))


def paired_figure(result: ToyResult) -> Figure:
    """Per variant (rows) and figure (panels): the mean paired difference to the base over the seeds with its
    95 % t-interval; a dashed line at 0."""
    cfg = result.config
    paired = result.paired()
    order = sorted(cfg.variants[1:], key=lambda v: (v.kind == "control", v.weight))  # β′ ascending, control last
    names = [v.name for v in order]
    with styled():
        fig, axes = new_figure(1, len(_PAIRED), panel=(3.9, 0.55 * len(names) + 1.4), sharey=True)
        for ax, (key, xlabel) in zip(axes, _PAIRED):
            for row, name in enumerate(names):
                d = paired[name][key]
                ax.errorbar(100 * d.mean, row, xerr=100 * d.half_width, fmt="o", color=color(row + 1),
                            capsize=3, markersize=5)
                # The value as text too: the control's scale can dwarf the MemLoss rows' intervals.
                ax.annotate(f"{100 * d.mean:+.2f} ± {100 * d.half_width:.2f}" + (" *" if d.excludes_zero else ""),
                            (100 * d.mean, row), xytext=(0, 7), textcoords="offset points", ha="center",
                            fontsize=7.5, bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.5})
            ax.axvline(0, color="black", linestyle="--", linewidth=0.8)
            ax.set(xlabel=xlabel)
            ax.set_yticks(range(len(names)), names)
            ax.invert_yaxis()
            ax.margins(x=0.15)
        fig.suptitle(f"2-D toy, {cfg.base_name} base: paired differences (same seed) over {cfg.seeds} seeds, "
                     "mean ± 95 % t-interval (* excludes 0)")
    return fig


def plot_toy(result: ToyResult, out_dir: Path) -> list[Path]:
    """Writes toy_panels (figure 3), toy_clean_boundary (figure 2), toy_forgetting (the curves) and toy_paired
    (the paired differences) as PNG and PDF into out_dir (created if missing; existing files of these names are
    overwritten) and returns the PNG paths."""
    ensure_out_dir(out_dir)
    eps, method = result.config.eps, result.config.base_name
    figures = {"toy_panels": panels_figure(result.panels, eps, method),
               "toy_clean_boundary": clean_boundary_figure(result.panels, eps, method),
               "toy_forgetting": curves_figure(result),
               "toy_paired": paired_figure(result)}
    return [save_figure(fig, out_dir / f"{name}.png")[0] for name, fig in figures.items()]
