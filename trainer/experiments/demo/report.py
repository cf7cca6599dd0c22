"""The demo's comparison table (rows as plain dicts, rendered with rich) and its training-curve plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def summary_rows(runs: Sequence[Any]) -> list[dict[str, Any]]:
    """One row per demo run: clean, each attack, worst case, forgetting, times, store size vs float32."""
    rows = []
    for run in runs:
        ev, last = run.evaluation, run.fit.records[-1]
        forgetting = [r["forgetting"] for r in run.fit.records if r.get("forgetting") is not None]
        row = {"run": run.name, "k": run.k, "clean": ev.clean_accuracy,
               **{a.name: a.robust_accuracy for a in ev.attacks}, "worst case": ev.worst_case_accuracy,
               "forgetting (mean)": sum(forgetting) / len(forgetting) if forgetting else None,
               "forgetting (last)": last.get("forgetting"), "train s": run.train_seconds, "eval s": run.eval_seconds,
               "store MB": run.store["bytes_on_disk"] / 1e6, "store vs float32": run.store["ratio_vs_float32"]}
        rows.append(row)
    return rows


def render_rows(rows: list[dict[str, Any]]) -> Any:
    """A rich Table of `summary_rows` output, one column per run (fits an 80-column terminal)."""
    from rich.table import Table

    table = Table(title="memloss demo: digits, same seed and budget")
    table.add_column("")
    for row in rows:
        table.add_column(str(row["run"]), justify="right")
    for key in list(rows[0])[1:]:
        table.add_row(key, *(_cell(row[key]) for row in rows))
    return table


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}" if value <= 1.0 else f"{value:.1f}"
    return str(value)


def plot_curves(runs: Sequence[Any], png: Path) -> Path:
    """Per-epoch test clean and PGD-20 accuracy, forgetting rate and MemLoss term of every run, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("test_clean_acc", "clean accuracy (test)"), ("test_pgd20_acc", "PGD-20 accuracy (test)"),
              ("forgetting", "forgetting: error on epoch n−1's adv. examples"), ("mem_loss", "MemLoss term")]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for ax, (key, title) in zip(axes, panels):
        for i, run in enumerate(runs):
            points = [(r["epoch"], r[key]) for r in run.fit.records if r.get(key) is not None]
            if points:  # one colour per run in every panel
                ax.plot(*zip(*points), marker="o", label=run.name, color=f"C{i}")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
