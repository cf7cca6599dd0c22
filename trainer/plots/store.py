"""The memory store figure (`memloss inspect-store --plot`, the demo's store.png): per ring slot (one committed
epoch each), the distribution of the stored perturbation δ relative to its sample's scale, and the distribution of
the per-sample scales s/ε."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from memloss.trainer.plots.style import new_figure, save_figure, series_style, styled, threat_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CODE_X = (np.arange(256) - 128) / 127  # δ / s of each uint8 code


def store_figure(dist: dict[str, Any], title: str | None = None) -> Figure:
    """Builds the figure from `memloss.memstore.inspection.summary.slot_distributions` output."""
    fractions = {slot: d["hist"].astype(float) / max(float(d["hist"].sum()), 1.0) for slot, d in dist["slots"].items()}
    positive = [f[f > 0].min() for f in fractions.values() if (f > 0).any()]
    floor = min(positive) / 3 if positive else 1e-7  # empty bins sit on the bottom axis of the log scale
    with styled():
        fig, (ax_codes, ax_scale) = new_figure(1, 2, panel=(4.6, 3.4))
        for i, (slot, d) in enumerate(dist["slots"].items()):
            label = f"ring slot {slot}: epoch {d['epoch']}"
            style = {**series_style(i), "marker": None}
            ax_codes.step(CODE_X, np.maximum(fractions[slot], floor), where="mid", label=label, linewidth=1.2,
                          alpha=0.85, **style)
            ratios = d["scale_over_eps"]
            if ratios.size:
                # Fixed edges: every scale may equal ε exactly (saturated PGD), which leaves no range for bins=50.
                edges = np.linspace(0.0, max(1.0, float(ratios.max())), 41)
                ax_scale.hist(ratios, bins=edges, histtype="step", linewidth=1.2, label=label,
                              weights=np.full(ratios.size, 1 / ratios.size), color=style["color"],
                              linestyle=style["linestyle"])
        ax_codes.set(yscale="log", xlabel="stored δ / s (s = the sample's max |δ|)",
                     ylabel="fraction of coordinates (log)", title="perturbation codes", xlim=(-1.05, 1.05))
        ax_codes.set_ylim(bottom=floor)
        ax_scale.set(xlabel="per-sample scale s / ε", ylabel="fraction of samples", title="per-sample scale")
        if dist["slots"]:
            ax_codes.legend(loc="upper center")
            ax_scale.legend(loc="upper left")
        else:
            ax_codes.text(0.5, 0.5, "no committed epoch yet", ha="center", transform=ax_codes.transAxes)
        where = Path(str(dist["url"]))
        head = title or f"memory store {where.parent.name + '/' if where.parent.name else ''}{where.name}"
        fig.suptitle(f"{head}: {dist['dataset']}, {threat_text(dist['norm'], dist['eps'])}, K = {dist['k']}")
    return fig


def plot_store(url: Any, path: Path | str, title: str | None = None) -> list[Path]:
    """Reads the store at `url` (read-only) and writes its figure to `path` (PNG and PDF); returns both paths."""
    from memloss.memstore.inspection.summary import slot_distributions

    return save_figure(store_figure(slot_distributions(url), title), path)
