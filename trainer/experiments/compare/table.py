"""The comparison table: per run, its final and best training metrics and its evaluation results; per group of
seeds, mean ± sample standard deviation; written as CSV, Markdown and JSON, and rendered for an 80-column terminal.
Accuracies and rates are fractions in [0,1] in the data and percent in the Markdown table and the terminal."""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass
from typing import Any, Sequence

from memloss.trainer.common.metric_keys import ATTACKS, SPLIT_NAMES, SPLITS, selection_keys
from memloss.trainer.experiments.compare.collect import Run

# Metrics that are not fractions (shown as they are, not in percent).
PLAIN = ("epochs", "best epoch", "final loss", "train min")


def _selection_columns() -> tuple[str, ...]:
    """'best val pgd20', 'best val clean', 'final val clean', 'final val pgd20', then the same for pgd40-cw and
    for test: each column names the split it was measured on, so val and test never share a column."""
    names: dict[str, None] = {}
    for split in SPLITS:
        for attack in (a.replace("_", "-") for a in ATTACKS):
            names.update(dict.fromkeys((f"best {split} {attack}", f"best {split} clean", f"final {split} clean",
                                        f"final {split} {attack}")))
    return tuple(names)


# Training metrics first, in this order; evaluation results follow in the order they are found.
TRAINING = ("epochs", "best epoch", *_selection_columns(), "final forget at visit", "final old error at visit",
            "final loss", "train min")


def run_metrics(run: Run) -> dict[str, float]:
    """A run's numbers: final (last epoch) and best (highest selection accuracy: the saved best.safetensors)
    training metrics named by the split they were measured on ('best val pgd20' with --val-split, 'best test
    pgd20' otherwise), the training time, and per results JSON `<stem>` of `memloss evaluate` its clean, per-attack
    and worst-case accuracies (keys '<stem>: clean', '<stem>: aa', ..., e.g. 'eval: aa' from eval.json)."""
    out: dict[str, float | None] = {}
    records = run.records
    if records:
        last = records[-1]
        out.update({"epochs": float(len(records)), "final forget at visit": last.get("forget_at_visit"),
                    "final old error at visit": last.get("old_error_at_visit"), "final loss": last.get("loss"),
                    "train min": sum(r.get("epoch_seconds", 0.0) for r in records) / 60})
        out.update(_selected(records))
    for stem, data in run.evals.items():
        prefix = f"{stem}: "
        out[f"{prefix}clean"] = data["clean_accuracy"]
        for attack in data["attacks"]:
            out[f"{prefix}{attack['name']}"] = attack["robust_accuracy"]
        out[f"{prefix}worst case"] = data["worst_case_accuracy"]
    return {k: float(v) for k, v in out.items() if v is not None}


def _selected(records: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """The best epoch (highest selection accuracy) and the best and final clean and robust accuracies, on the
    split and under the attack the run selected on; nothing for a run that never evaluated."""
    keys = selection_keys(records)
    if keys is None:
        return {}
    best = max(records, key=lambda r: r.get(keys.robust, -1.0))
    last = records[-1]
    label = keys.label()
    return {"best epoch": float(best["epoch"]), f"best {label}": best.get(keys.robust),
            f"best {keys.split} clean": best.get(keys.clean), f"final {keys.split} clean": last.get(keys.clean),
            f"final {label}": last.get(keys.robust)}


def split_note(groups: dict[str, list[Run]]) -> str | None:
    """One line when the runs selected on different splits (some on --val-split held-out images, some on the test
    points): their selection columns are then different columns, not one comparison. None otherwise."""
    by_split: dict[str, list[str]] = {}
    for runs in groups.values():
        for run in runs:
            keys = selection_keys(run.records)
            if keys is not None:
                by_split.setdefault(SPLIT_NAMES[keys.split], []).append(run.name)
    if len(by_split) < 2:
        return None
    parts = "; ".join(f"{split}: {', '.join(names)}" for split, names in by_split.items())
    return (f"note: these runs selected on different splits ({parts}); val and test columns are not "
            "comparable with each other")


@dataclass(frozen=True)
class Cell:
    """One metric of one group: the values of its runs (seeds), their mean and sample std (0 for one run)."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def text(self, percent: bool) -> str:
        """'49.79 ± 0.31' (percent), '4' (a count equal in every run), '1.47 ± 0.02'."""
        if not percent and all(v == int(v) for v in self.values) and self.std == 0:
            return f"{int(self.mean)}"
        scale = 100.0 if percent else 1.0
        mean = f"{scale * self.mean:.2f}"
        return mean if len(self.values) == 1 else f"{mean} ± {scale * self.std:.2f}"


@dataclass(frozen=True)
class GroupRow:
    label: str
    runs: tuple[str, ...]
    seeds: tuple[int, ...]
    cells: dict[str, Cell]


def aggregate(groups: dict[str, list[Run]]) -> tuple[list[GroupRow], list[str]]:
    """One row per group and the metric names in a stable order (training metrics first, then evaluations)."""
    rows, found = [], []
    for label, runs in groups.items():
        per_run = [run_metrics(r) for r in runs]
        keys = [k for m in per_run for k in m]
        found.extend(k for k in keys if k not in found)
        cells = {k: Cell(tuple(m[k] for m in per_run if k in m)) for k in dict.fromkeys(keys)}
        rows.append(GroupRow(label, tuple(r.name for r in runs), tuple(r.seed for r in runs), cells))
    names = [k for k in TRAINING if k in found] + [k for k in found if k not in TRAINING]
    return rows, names


def is_percent(metric: str) -> bool:
    return metric.split(": ")[-1] not in PLAIN


def to_csv(rows: Sequence[GroupRow], names: Sequence[str]) -> str:
    """group, n_runs, seeds, runs, then <metric> mean and <metric> std columns (fractions, not percent)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["group", "n_runs", "seeds", "runs", *(f"{n} {s}" for n in names for s in ("mean", "std"))])
    for row in rows:
        values = []
        for name in names:
            cell = row.cells.get(name)
            values += [f"{cell.mean:.6g}", f"{cell.std:.6g}"] if cell else ["", ""]
        writer.writerow([row.label, len(row.runs), " ".join(map(str, row.seeds)), " ".join(row.runs), *values])
    return buffer.getvalue()


def to_markdown(rows: Sequence[GroupRow], names: Sequence[str]) -> str:
    """A paper-ready table: one row per group, mean ± std over seeds, accuracies in percent."""
    head = ["group", "seeds", *(f"{n} (%)" if is_percent(n) else n for n in names)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.cells[n].text(is_percent(n)) if n in row.cells else "–" for n in names]
        lines.append("| " + " | ".join([row.label, str(len(row.runs)), *cells]) + " |")
    return "\n".join(lines) + "\n"


def to_json(rows: Sequence[GroupRow], names: Sequence[str]) -> dict[str, Any]:
    return {"metrics": list(names), "groups": [
        {"group": r.label, "runs": list(r.runs), "seeds": list(r.seeds),
         "metrics": {n: {"mean": c.mean, "std": c.std, "values": list(c.values)} for n, c in r.cells.items()
                     if not math.isnan(c.mean)}} for r in rows]}


def render(rows: Sequence[GroupRow], names: Sequence[str], width: int = 80) -> list[Any]:
    """rich Tables with one row per metric and one column per group, as many groups per table as fit `width`."""
    from rich.table import Table

    label_width = max(len(n) + 4 for n in names) if names else 10
    per_table = max(1, (width - label_width - 4) // 17)
    tables = []
    for start in range(0, len(rows), per_table):
        chunk = rows[start:start + per_table]
        table = Table(title="mean ± std over seeds; accuracies in %" if start == 0 else None)
        table.add_column("metric")
        for row in chunk:
            table.add_column(f"{row.label}\n({len(row.runs)} run{'s' if len(row.runs) > 1 else ''})",
                             justify="right", max_width=16)
        for name in names:
            table.add_row(name, *(row.cells[name].text(is_percent(name)) if name in row.cells else "–"
                                  for row in chunk))
        tables.append(table)
    return tables
