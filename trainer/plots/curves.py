"""Training curves of several runs in one figure (the demo's curves.png, `memloss compare`): one panel per metric of
metrics.jsonl, one colour per series, and for a series of several seeds the mean with a band of ± one standard
deviation across seeds. Accuracy panels share one y range so they can be compared at a glance."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from memloss.trainer.common.metric_keys import SPLIT_NAMES
from memloss.trainer.plots.style import epoch_axis, new_figure, series_style, share_y, styled

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# The selection accuracies (trainer/common/metric_keys.py): a run logs them on the test points, or with
# --val-split on held-out training images. Each split gets its own panels (test first, as most runs use it), so a
# mixed set of runs never draws a val curve beside a test curve on one axis.
_ATTACK_NAMES = {"pgd20": "PGD-20", "pgd40_cw": "PGD-40 CW"}
ACCURACY_PANELS: tuple[tuple[str, str, bool], ...] = tuple(
    (f"{split}_{metric}_acc", f"{name} accuracy, {SPLIT_NAMES[split]} (%)", True)
    for split in ("test", "val") for metric, name in (("clean", "clean"), *_ATTACK_NAMES.items()))
# (metrics.jsonl key, y-axis label, is an accuracy/rate shown in percent)
PANELS: tuple[tuple[str, str, bool], ...] = (
    *ACCURACY_PANELS,
    ("forget_at_visit", "forgetting at visit: epoch n−1's adv.\nexamples right when made, wrong now (%)", True),
    ("learn_at_visit", "learning at visit: epoch n−1's adv.\nexamples wrong when made, right now (%)", True),
    ("old_error_at_visit", "old-example error at visit: epoch\nn−1's adv. examples wrong now (%)", True),
    ("loss", "training loss (mean per sample)", False),
    ("mem_loss", "MemLoss term (mean per sample)", False),
)


@dataclass(frozen=True)
class Series:
    """One line of the figure: `label` and the metrics records (metrics.jsonl rows) of each of its seed runs."""

    label: str
    runs: Sequence[Sequence[dict[str, Any]]]


def mean_std(series: Series, key: str, scale: float) -> tuple[list[int], list[float], list[float]]:
    """Epochs with a value in any run, the mean over runs at each, and the sample std (0 for one run)."""
    by_epoch: dict[int, list[float]] = {}
    for records in series.runs:
        for r in records:
            if r.get(key) is not None and math.isfinite(r[key]):
                by_epoch.setdefault(int(r["epoch"]), []).append(scale * r[key])
    epochs = sorted(by_epoch)
    means = [statistics.fmean(by_epoch[e]) for e in epochs]
    stds = [statistics.stdev(by_epoch[e]) if len(by_epoch[e]) > 1 else 0.0 for e in epochs]
    return epochs, means, stds


def _draw(ax: Axes, series: Sequence[Series], key: str, label: str, percent: bool) -> None:
    for i, s in enumerate(series):
        epochs, means, stds = mean_std(s, key, 100.0 if percent else 1.0)
        if not epochs:
            continue
        style = series_style(i)
        seeds = f" ({len(s.runs)} seeds)" if len(s.runs) > 1 else ""
        ax.plot(epochs, means, label=s.label + seeds, gid=str(i), markersize=4, linewidth=1.4, **style)
        if len(s.runs) > 1:
            low = [m - d for m, d in zip(means, stds)]
            high = [m + d for m, d in zip(means, stds)]
            ax.fill_between(epochs, low, high, color=style["color"], alpha=0.2, linewidth=0)
    ax.set_ylabel(label)
    epoch_axis(ax)


def drawable_panels(series: Sequence[Series]) -> list[tuple[str, str, bool]]:
    """The panels with at least two epochs of data in some series (a one-point curve shows no trend)."""
    return [p for p in PANELS if any(len(mean_std(s, p[0], 1.0)[0]) >= 2 for s in series)]


def _legend_entries(axes: Sequence[Axes]) -> tuple[list[Any], list[str]]:
    """Each series once, in the order of the series, from whichever panel draws it (a run selected on held-out
    val has no test panels)."""
    entries: dict[str, tuple[int, Any]] = {}
    for ax in axes:
        for line, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, (int(line.get_gid()), line))
    ordered = sorted(entries.items(), key=lambda item: item[1][0])
    return [line for _, (_, line) in ordered], [label for label, _ in ordered]


def curves_figure(series: Sequence[Series], title: str) -> Figure:
    """The figure; `title` names the runs, the dataset and ε. Bands are ± one std across the seeds of a series."""
    panels = drawable_panels(series) or list(ACCURACY_PANELS[:2])
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    with styled():
        fig, axes = new_figure(rows, cols, panel=(4.0, 3.0))
        for ax, (key, label, percent) in zip(axes, panels):
            _draw(ax, series, key, label, percent)
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        accuracy_axes = [ax for ax, p in zip(axes, panels) if p in ACCURACY_PANELS]
        if len(accuracy_axes) > 1:
            share_y(accuracy_axes, 0.0, 100.0)
        handles, labels = _legend_entries(axes[:len(panels)])
        if handles:
            band = " · bands: ± 1 std over seeds" if any(len(s.runs) > 1 for s in series) else ""
            fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)),
                       title=f"run{band}")
        fig.suptitle(title)
    return fig
