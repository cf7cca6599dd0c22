"""The demo's comparison table (rows as plain dicts, rendered with rich) and its training-curve plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def summary_rows(runs: Sequence[Any]) -> list[dict[str, Any]]:
    """One row per demo run: clean, each attack, worst case, the forgetting monitor (mean over epochs ≥ 2 of the
    forgetting and learning events and the old-example error on epoch n−1's adversarial examples), times, store size
    vs float32."""
    rows = []
    for run in runs:
        ev = run.evaluation
        row = {"run": run.name, "k": run.k, "clean": ev.clean_accuracy,
               **{a.name: a.robust_accuracy for a in ev.attacks}, "worst case": ev.worst_case_accuracy,
               **{label: _mean(run.fit.records, key) for key, label in MONITOR_ROWS},
               "train s": run.train_seconds, "eval s": run.eval_seconds,
               "store MB": run.store["bytes_on_disk"] / 1e6, "store vs float32": run.store["ratio_vs_float32"]}
        rows.append(row)
    return rows


# Rows that are not accuracies or rates; every other row (clean, each attack, worst case, the forgetting
# monitor's events and error) is a fraction in [0,1], shown in percent as `memloss evaluate` shows accuracies.
PLAIN_ROWS = ("run", "k", "train s", "eval s", "store MB", "store vs float32")
MONITOR_ROWS = (("forget_at_visit", "forget at visit"), ("learn_at_visit", "learn at visit"),
                ("old_error_at_visit", "old error at visit"))


def _mean(records: Sequence[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in records if r.get(key) is not None]
    return sum(values) / len(values) if values else None


def render_rows(rows: list[dict[str, Any]]) -> Any:
    """A rich Table of `summary_rows` output, one column per run (fits an 80-column terminal); accuracies and
    rates in percent."""
    from rich.table import Table

    table = Table(title="memloss demo: digits, same seed and budget (accuracies in %)")
    table.add_column("")
    for row in rows:
        table.add_column(str(row["run"]), justify="right")
    for key in list(rows[0])[1:]:
        percent = key not in PLAIN_ROWS
        label = f"{key} (%)" if percent else key
        table.add_row(label, *(_cell(row[key], percent) for row in rows))
    return table


def _cell(value: Any, percent: bool = False) -> str:
    if value is None:
        return "—"
    if percent:
        return f"{100 * value:.2f}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def plot_curves(runs: Sequence[Any], png: Path) -> Path:
    """Per-epoch test clean and PGD-20 accuracy, the forgetting monitor's events and old-example error, training
    loss and MemLoss term of every run, as PNG and PDF; returns the PNG's path."""
    from memloss.trainer.plots.curves import Series, curves_figure
    from memloss.trainer.plots.style import save_figure, threat_text

    threat = runs[0].evaluation.threat
    series = [Series(run.name, [run.fit.records]) for run in runs]
    title = f"memloss demo: TRADES vs MemLoss+TRADES on digits, {threat_text(threat.norm, threat.eps_text)}"
    figure = curves_figure(series, title)
    return save_figure(figure, png)[0]
