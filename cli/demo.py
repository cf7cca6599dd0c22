"""`memloss demo`: the main job on the embedded default (digits, CPU, minutes)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Optional

from memloss.cli.common import interruptible, option, threads_option


def demo(
    out: Annotated[Optional[Path], option(help="Directory of the demo", shown="runs/demo-<time>")] = None,
    epochs: Annotated[int, option(help="Training epochs of each run", shown="8")] = 8,
    k: Annotated[int, option("--k", help="Memory depth K of the MemLoss run", shown="3")] = 3,
    eval_n: Annotated[Optional[int], option(help="Test points to evaluate", shown="all 360")] = None,
    seed: Annotated[int, option(help="Random seed shared by both runs", shown="0")] = 0,
    data_dir: Annotated[Optional[str], option(help="Dataset cache directory",
                                              shown="$MEMLOSS_DATA or ~/.cache/memloss/data")] = None,
    quick: Annotated[bool, option(help="A shortened version (2 epochs, 48 test points) for smoke tests",
                                  shown="off")] = False,
    threads: Annotated[str, threads_option()] = "auto",
) -> None:
    """Train TRADES and MemLoss+TRADES (K=3) on digits with the same seed and budget, evaluate both with
    AutoAttack, PGD+ and CW, inspect the memory store, and print one comparison table; figures of the training
    curves and the store histograms (PNG and PDF) go into the demo directory. Offline, CPU: about 3 minutes on 2
    idle cores."""
    from rich.console import Console

    from memloss.trainer.experiments.demo.report import render_rows, summary_rows
    from memloss.trainer.experiments.demo.run import DemoConfig, run_demo

    cfg = DemoConfig(out, epochs, k, eval_n, seed=seed, data_dir=data_dir, quick=quick, threads=threads)
    cfg = dataclasses.replace(cfg, out=cfg.out_dir())  # one directory, named before the run starts
    with interruptible(f"what finished is in {cfg.out}; run the command again with another --out"):
        result = run_demo(cfg)
    console = Console()
    console.print(render_rows(summary_rows(result.runs)))
    console.print(f"demo directory: {result.out}", highlight=False)
    for path in result.plots:
        console.print(f"figure: {path} (and .pdf)", highlight=False)
