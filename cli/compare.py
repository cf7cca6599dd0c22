"""`memloss compare`: runs (directories or globs) → memloss.trainer.experiments.compare.run.compare → tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from memloss.cli.common import option


def compare(
    runs: Annotated[list[str], typer.Argument(help="Run directories, globs such as 'runs/c10-*', or folders of "
                                                   "runs", show_default=False)],
    out: Annotated[Path, option(help="Folder for compare.csv, compare.md, compare.json and the figure "
                                     "compare.png/.pdf", shown="compare")] = Path("compare"),
) -> None:
    """Compare runs: final and best training metrics and the results of `memloss evaluate` (each run's eval.json
    and other results JSONs), seeds of one configuration grouped as mean ± std, written as CSV, Markdown and JSON,
    with the training curves of all runs in one figure (bands: ± one std over seeds)."""
    from rich.console import Console

    from memloss.trainer.experiments.compare.run import compare as run_compare
    from memloss.trainer.experiments.compare.table import render

    result = run_compare(runs, out)
    console = Console()
    for label, members in result.groups.items():
        console.print(f"{label}: {', '.join(r.name for r in members)}", highlight=False)
    for table in render(result.rows, result.names, width=min(console.width, 120)):
        console.print(table)
    if result.note:
        console.print(result.note, highlight=False)
    for path in result.files:
        console.print(f"wrote {path}", highlight=False)
