"""Every figure memloss draws, built and saved: titles naming run/dataset/ε, labelled axes with units, integer epoch
ticks, legends, shared y ranges where panels are compared, the colour-blind-safe palette, PNG and PDF."""

from __future__ import annotations

from pathlib import Path

import pytest

from memloss.errors import MemlossError
from memloss.trainer.plots.style import PALETTE, save_figure


def _texts(fig: object) -> list[str]:
    return [t.get_text() for t in fig.legends[0].get_texts()] if fig.legends else []  # type: ignore[attr-defined]


def test_save_writes_png_and_pdf_and_refuses_other_names(tmp_path: Path) -> None:
    from memloss.trainer.plots.sweep import sweep_figure

    fig = sweep_figure({"steps": [(10, 0.5), (20, 0.4)]}, "t")
    png, pdf = save_figure(fig, tmp_path / "s.png")
    assert png.read_bytes()[:4] == b"\x89PNG" and pdf.read_bytes()[:4] == b"%PDF"
    with pytest.raises(MemlossError, match="must end in .png or .pdf"):
        save_figure(fig, tmp_path / "s.jpg")
    with pytest.raises(MemlossError, match="does not exist"):
        save_figure(fig, tmp_path / "missing" / "s.png")


def test_sweep_panels_share_one_y_range() -> None:
    from memloss.trainer.plots.sweep import sweep_figure

    fig = sweep_figure({"steps": [(40, 0.52), (200, 0.50)], "restarts": [(1, 0.61), (5, 0.60)]},
                       "gradient-masking check: run (small_cnn), digits, Linf ε = 32/255, 60 points")
    left, right = fig.axes
    assert left.get_ylim() == right.get_ylim() and left.get_ylabel() == "robust accuracy (%)"
    assert left.get_xlabel().startswith("PGD-CE steps") and right.get_xlabel().startswith("PGD-CE restarts")
    assert "ε = 32/255" in fig.get_suptitle()


@pytest.mark.slow
def test_store_figure_labels_ring_slots(small_runs: Path, tmp_path: Path) -> None:
    from memloss.memstore.inspection.summary import slot_distributions
    from memloss.trainer.plots.store import plot_store, store_figure

    store = small_runs / "k1-s0" / "memory.zarr"
    fig = store_figure(slot_distributions(store))
    codes, scales = fig.axes
    assert codes.get_xlabel().startswith("stored δ / s") and codes.get_ylabel() == "fraction of coordinates (log)"
    assert scales.get_xlabel() == "per-sample scale s / ε" and scales.get_ylabel() == "fraction of samples"
    assert [t.get_text() for t in codes.get_legend().get_texts()] == ["ring slot 0: epoch 2", "ring slot 1: epoch 3"]
    assert "synthetic, Linf ε = 8/255, K = 1" in fig.get_suptitle()
    assert codes.lines[0].get_color().lower() == PALETTE[0].lower()
    assert [p.suffix for p in plot_store(store, tmp_path / "store.png")] == [".png", ".pdf"]


@pytest.mark.slow
def test_demo_curves_name_the_runs_and_use_percent(small_runs: Path) -> None:
    from memloss.trainer.plots.curves import Series, curves_figure
    from memloss.trainer.training.runs import read_metrics

    series = [Series(n, [read_metrics(small_runs / n)]) for n in ("k0-s0", "k1-s0")]
    fig = curves_figure(series, "memloss demo: TRADES vs MemLoss+TRADES on digits, Linf ε = 32/255")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert all(ax.get_ylabel() and ax.get_xlabel() == "epoch" for ax in axes)
    assert _texts(fig) == ["k0-s0", "k1-s0"] and "ε = 32/255" in fig.get_suptitle()
    assert max(axes[0].get_ylim()) <= 100 and not axes[0].collections  # one seed each: no band


def test_toy_figures_have_axes_legends_and_titles(tmp_path: Path) -> None:
    from memloss.trainer.experiments.toy.config import ToyConfig
    from memloss.trainer.experiments.toy.plot import (clean_boundary_figure, curves_figure, paired_figure,
                                                      panels_figure, plot_toy)
    from memloss.trainer.experiments.toy.run import run_toy

    result = run_toy(ToyConfig.quick(seeds=3), threads=1)
    panels = panels_figure(result.panels, 0.1)
    assert [ax.get_xlabel() for ax in panels.axes] == ["x₁ (input, [0, 1])"] * 3
    assert {"adv. example, class 0", "misclassified", "predicted class 1"} <= set(_texts(panels))
    assert "Linf ε = 0.1" in panels.get_suptitle()
    boundary = clean_boundary_figure(result.panels, 0.1)
    assert "clean point, class 1" in _texts(boundary)
    curves = curves_figure(result)
    forgetting, old, own, robust = [ax for ax in curves.axes if ax.get_visible()]
    assert old.get_ylabel() == "epoch n−1's adv. examples wrong\nunder model n (% of points)"
    assert robust.get_ylabel() == "accuracy (%)" and "measured" in curves.get_suptitle()
    assert all(float(t).is_integer() for t in robust.get_xticks())
    assert {"TRADES", "TRADES+MemLoss β′=2", "TRADES+2·CE(x″) (control)"} <= set(_texts(curves))
    assert len(forgetting.collections) == 3  # a ± 1 std band per shown run (base, MemLoss, control)
    paired = paired_figure(result)
    assert [t.get_text() for t in paired.axes[0].get_yticklabels()][-1] == "TRADES+2·CE(x″) (control)"
    assert "95 % t-interval" in paired.get_suptitle() and paired.axes[0].texts
    assert sorted(p.name for p in tmp_path.iterdir()) == [] and len(plot_toy(result, tmp_path)) == 4
    assert len(list(tmp_path.glob("*.pdf"))) == 4
