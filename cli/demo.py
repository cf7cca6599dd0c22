"""`memloss demo`: the main job on the embedded default (digits, CPU, minutes)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def demo(
    out: Annotated[Optional[Path], typer.Option(help="Directory of the demo (default: runs/demo-<time>)")] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs of each run")] = 8,
    k: Annotated[int, typer.Option("--k", help="Memory depth K of the MemLoss run")] = 3,
    eval_n: Annotated[Optional[int], typer.Option(help="Test points to evaluate (default: all 360)")] = None,
    seed: Annotated[int, typer.Option(help="Random seed shared by both runs")] = 0,
    data_dir: Annotated[Optional[str], typer.Option(help="Dataset cache directory (default: $MEMLOSS_DATA or ~/.cache/memloss/data)")] = None,
    quick: Annotated[bool, typer.Option(help="A shortened version (2 epochs, 48 test points) for smoke tests")] = False,
) -> None:
    """Train TRADES and MemLoss+TRADES (K=3) on digits with the same seed and budget, evaluate both with
    AutoAttack, PGD+ and CW, inspect the memory store, and print one comparison table; PNG plots of the training
    curves and the store histograms go into the demo directory. Offline, CPU: about 3 minutes on 2 idle cores."""
    from rich.console import Console

    from memloss.trainer.experiments.demo.report import render_rows, summary_rows
    from memloss.trainer.experiments.demo.run import DemoConfig, run_demo

    result = run_demo(DemoConfig(out, epochs, k, eval_n, seed=seed, data_dir=data_dir, quick=quick))
    console = Console()
    console.print(render_rows(summary_rows(result.runs)))
    console.print(f"demo directory: {result.out}")
    for path in result.plots:
        console.print(f"plot: {path}")
