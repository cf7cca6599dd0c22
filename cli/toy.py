"""`memloss toy`: the paper's 2-D toy problem (§3.3, figures 2-3) → memloss.trainer.experiments.toy.run.run_toy, plots and JSON."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from memloss.cli.common import interruptible, option, threads_option

if TYPE_CHECKING:
    from rich.console import Console

    from memloss.trainer.experiments.toy.result import ToyResult


def toy(
    out: Annotated[Path, option(help="Folder for toy_result.json and the figures (created if missing)",
                                shown="runs/toy")] = Path("runs/toy"),
    epochs: Annotated[int, option(help="Training epochs of each run (the paper: 120)", shown="120")] = 120,
    seed: Annotated[int, option(help="Seed of the data, the initial weights, the batch order and PGD",
                                shown="0")] = 0,
    quick: Annotated[bool, option(help="CI preset: 12 epochs on 128 points (overrides --epochs)",
                                  shown="off")] = False,
    threads: Annotated[str, threads_option()] = "auto",
) -> None:
    """Run the paper's 2-D toy problem: PGD-AT with and without the MemLoss term on two moons in [0,1]².

    Prints, for both runs, how often the adversarial examples of epoch n−1 are misclassified by the model of
    epoch n (forgetting), the test accuracies and the time; writes toy_result.json and three figures (PNG and PDF)
    into --out. Takes seconds to a minute on a CPU.
    """
    from rich.console import Console

    from memloss.trainer.common.progress import progress_display
    from memloss.trainer.experiments.toy.config import ToyConfig
    from memloss.trainer.experiments.toy.plot import plot_toy
    from memloss.trainer.experiments.toy.result import save_toy_result
    from memloss.trainer.experiments.toy.run import run_toy

    cfg = ToyConfig.quick(seed=seed) if quick else ToyConfig(epochs=epochs, seed=seed)
    console = Console()
    with interruptible("nothing was written; run the command again"), progress_display(console) as sink:
        result = run_toy(cfg, sink, threads=threads)
    paths = [save_toy_result(result, out), *plot_toy(result, out)]
    _print_summary(console, result, paths)


def _print_summary(console: Console, result: ToyResult, paths: list[Path]) -> None:
    """A rich table with one row per run (rates and accuracies in %), then the written files."""
    from rich.table import Table

    table = Table(title=f"2-D toy, {result.config.epochs} epochs, {result.wall_time_s:.1f} s (both runs), "
                        f"{result.threads} thread(s); all in %")
    columns = ("run", "final\nforgetting", "mean\nforgetting", "mean\nforgotten", "clean\naccuracy",
               "robust\naccuracy")
    for column in columns:
        table.add_column(column, justify="left" if column == "run" else "right")
    for name, run in result.runs.items():
        s = run.summary()
        table.add_row(name, *(f"{100 * s[key]:.1f}" for key in
                              ("final_forgetting", "mean_forgetting", "mean_forgotten", "final_clean_acc",
                               "final_robust_acc")))
    console.print(table)
    console.print(f"panels drawn for epoch {result.panels.epoch} of the AT run")
    for path in paths:
        console.print(str(path), highlight=False)
    console.print("(each figure also as .pdf)")
