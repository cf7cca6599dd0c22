"""`compare(runs, out)`: reads the runs, groups their seeds, writes compare.csv, compare.md, compare.json and the
curves figure compare.png/.pdf into `out`, and returns the table."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from memloss.trainer.common.files import atomic_write_bytes
from memloss.trainer.experiments.compare.collect import CompareError, Run, find_runs, group_runs, read_run
from memloss.trainer.experiments.compare.table import (GroupRow, aggregate, split_note, to_csv, to_json,
                                                          to_markdown)


@dataclass
class Comparison:
    """The grouped table (`rows`, metric `names`), the runs read, the files written, and `note`: one line when
    the runs selected on different splits (held-out val and test; table.split_note), None otherwise."""

    rows: list[GroupRow]
    names: list[str]
    groups: dict[str, list[Run]]
    files: list[Path] = field(default_factory=list)
    note: str | None = None


def compare(runs: Sequence[str | Path], out: Path | str = "compare") -> Comparison:
    """Compares run directories (paths, globs such as 'runs/c10-*', or folders of runs) and writes the table and
    the figure into `out` (created if missing; files of the same names are replaced).

    Example
    -------
    >>> table = compare(["runs/c10-k0-s*", "runs/c10-k1-s*"], out="paper")  # doctest: +SKIP
    >>> table.rows[0].cells["aa"].mean  # doctest: +SKIP
    """
    groups = group_runs([read_run(p) for p in find_runs(runs)])
    rows, names = aggregate(groups)
    if not names:  # an empty table is no comparison: say so instead of writing one
        empty = [r.name for members in groups.values() for r in members]
        raise CompareError(f"no metrics to compare in {', '.join(empty)}: no completed epoch (metrics.jsonl) and no "
                           "evaluation results; compare runs that completed at least one epoch")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = Comparison(rows, names, groups, note=split_note(groups))
    markdown = to_markdown(rows, names) + (f"\n{result.note}\n" if result.note else "")
    for name, text in (("compare.csv", to_csv(rows, names)), ("compare.md", markdown),
                       ("compare.json", json.dumps({**to_json(rows, names), "note": result.note}, indent=2))):
        atomic_write_bytes(out / name, text.encode())
        result.files.append(out / name)
    result.files += plot_comparison(groups, out / "compare.png")
    return result


def figure_title(groups: dict[str, list[Run]]) -> str:
    """'compare: 5 runs in 2 groups, digits, Linf ε = 32/255' (every dataset and threat model present)."""
    runs = [r for g in groups.values() for r in g]
    datasets = sorted({str(r.config.get("data.dataset")) for r in runs})
    threats = sorted({f"{r.config.get('threat.norm')} ε = {r.config.get('threat.eps')}" for r in runs})
    return f"compare: {len(runs)} runs in {len(groups)} groups, {', '.join(datasets)}, {'; '.join(threats)}"


def plot_comparison(groups: dict[str, list[Run]], path: Path) -> list[Path]:
    """All groups' curves in one figure (bands: ± one std over seeds), PNG and PDF."""
    from memloss.trainer.plots.curves import Series, curves_figure
    from memloss.trainer.plots.style import save_figure

    series = [Series(label, [r.records for r in runs]) for label, runs in groups.items()]
    return save_figure(curves_figure(series, figure_title(groups)), path)
