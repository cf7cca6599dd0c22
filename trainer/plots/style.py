"""The house style of every memloss figure: a colour-blind-safe palette (Okabe & Ito) with a marker and line style
per series (readable in grey too), titles naming run/dataset/ε, labelled axes with units, integer epoch ticks,
shared y ranges where panels are compared, and every figure written as PNG and PDF.

Figures are `matplotlib.figure.Figure` objects made without pyplot (no global state, safe in threads and
notebooks); builders return them so that tests and notebooks can inspect axes and labels before saving.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from memloss.errors import MemlossError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")
DPI = 150
RC = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8, "xtick.labelsize": 8,
      "ytick.labelsize": 8, "figure.titlesize": 11, "axes.grid": True, "grid.alpha": 0.3,
      "axes.spines.top": False, "axes.spines.right": False}


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def series_style(i: int) -> dict[str, Any]:
    """Colour, marker and line style of the i-th series (the same i means the same run in every panel)."""
    return {"color": color(i), "marker": MARKERS[i % len(MARKERS)],
            "linestyle": LINESTYLES[i % len(LINESTYLES)]}


def styled() -> Any:
    """The house rc settings, as a context manager: build a whole figure inside it (matplotlib reads font sizes
    when each text is created)."""
    import matplotlib

    return matplotlib.rc_context(RC)


def new_figure(rows: int = 1, cols: int = 1, panel: tuple[float, float] = (4.2, 3.2),
               sharey: bool = False) -> tuple[Figure, list[Axes]]:
    """A figure of rows × cols panels of `panel` inches each (call inside `styled()`); returns (figure, flat
    axes)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel[0] * cols, panel[1] * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharey=sharey)
    return fig, list(axes.flat)


def epoch_axis(ax: Axes, label: str = "epoch") -> None:
    """Integer ticks only on an epoch axis."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(label)


def share_y(axes: Sequence[Axes], low: float | None = None, high: float | None = None) -> None:
    """One y range over `axes` (panels that are compared), optionally clamped to [low, high]."""
    lows, highs = zip(*(ax.get_ylim() for ax in axes))
    bottom, top = min(lows), max(highs)
    bottom = bottom if low is None else max(bottom, low)
    top = top if high is None else min(top, high)
    for ax in axes:
        ax.set_ylim(bottom, top)


def threat_text(norm: str, eps: str) -> str:
    """'Linf ε = 8/255' as every title writes a threat model."""
    return f"{norm} ε = {eps}"


def save_figure(fig: Figure, path: Path | str) -> list[Path]:
    """Writes the figure as PNG and PDF (the given name, and the same stem with the other suffix); returns both
    paths, the given one first. The folder must exist."""
    path = Path(path)
    if not path.parent.exists():
        raise MemlossError(f"directory {path.parent} does not exist; create it or choose another path")
    if path.suffix.lower() not in (".png", ".pdf"):
        raise MemlossError(f"figure path {path} must end in .png or .pdf (both are written)")
    other = path.with_suffix(".pdf" if path.suffix.lower() == ".png" else ".png")
    for target in (path, other):
        fig.savefig(target, dpi=DPI)
    return [path, other]
