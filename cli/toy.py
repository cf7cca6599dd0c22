"""`memloss toy`: the paper's 2-D toy problem (§3.3, figures 2-3) → memloss.trainer.experiments.toy.run.run_toy, plots and JSON."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from memloss.cli.common import interruptible, option, threads_option

if TYPE_CHECKING:
    from rich.console import Console

    from memloss.trainer.experiments.toy.result import ToyResult

# (summary key, column): final robust accuracy, and the converged-half means of the events and the old-example error
# (clean accuracy and the rest are in toy_result.json; the table fits an 80-column terminal).
COLUMNS = (("final_robust_acc", "robust\naccuracy"), ("forgetting_events", "forgetting\nevents"),
           ("learning_events", "learning\nevents"), ("old_error", "old-example\nerror"))


def toy(
    out: Annotated[Path, option(help="Folder for toy_result.json and the figures (created if missing)",
                                shown="runs/toy")] = Path("runs/toy"),
    base: Annotated[str, option(help="Method MemLoss is added to: trades (the paper's MemLoss) | at (the paper's "
                                     "toy training)", shown="trades")] = "trades",
    seeds: Annotated[int, option(help="Runs per method, with seeds --seed, --seed + 1, …", shown="5")] = 5,
    epochs: Annotated[int, option(help="Training epochs of each run (the paper: 120)", shown="120")] = 120,
    seed: Annotated[int, option(help="First seed (data, initial weights, batch order and attack starts)",
                                shown="0")] = 0,
    quick: Annotated[bool, option(help="CI preset: 12 epochs on 128 points (overrides --epochs)",
                                  shown="off")] = False,
    threads: Annotated[str, threads_option()] = "auto",
) -> None:
    """Run the paper's 2-D toy problem: the base method with and without the MemLoss term on two moons in [0,1]².

    Prints, for both methods, the mean ± std over seeds of the final test robust accuracy and, over the second half
    of training, of the forgetting events, learning events and error on the previous epoch's adversarial examples;
    writes toy_result.json and three figures (PNG and PDF) into --out. Takes about a minute per seed on a CPU.
    """
    from rich.console import Console

    from memloss.trainer.common.progress import progress_display
    from memloss.trainer.experiments.toy.config import ToyConfig, ToyConfigError
    from memloss.trainer.experiments.toy.plot import plot_toy
    from memloss.trainer.experiments.toy.result import save_toy_result
    from memloss.trainer.experiments.toy.run import run_toy

    if out.exists() and not out.is_dir():  # before training, not after
        raise ToyConfigError(f"output path {out} exists and is not a folder; pass another --out")
    cfg = (ToyConfig.quick(seed=seed, base=base, seeds=seeds) if quick
           else ToyConfig(epochs=epochs, seed=seed, base=base, seeds=seeds))
    console = Console()
    with interruptible("nothing was written; run the command again"), progress_display(console) as sink:
        result = run_toy(cfg, sink, threads=threads)
    paths = [save_toy_result(result, out), *plot_toy(result, out)]
    _print_summary(console, result, paths)


def _print_summary(console: Console, result: ToyResult, paths: list[Path]) -> None:
    """A rich table with one row per method (mean ± std over seeds, in %), then the written files."""
    from rich.table import Table

    c = result.config
    table = Table(title=f"2-D toy, {c.epochs} epochs, seeds {c.seed}–{c.seed + c.seeds - 1}, "
                        f"{result.wall_time_s:.0f} s, {result.threads} thread(s); all in %")
    table.add_column("run")
    for _, column in COLUMNS:
        table.add_column(column, justify="right")
    for name, figures in result.summary().items():
        table.add_row(name, *(f"{100 * figures[key][0]:.1f} ± {100 * figures[key][1]:.1f}" for key, _ in COLUMNS))
    console.print(table)
    console.print(f"mean ± std over seeds. robust accuracy: PGD-{c.eval_steps} on the test points after the last "
                  f"epoch; events and old-example error on epoch n−1's adversarial examples: % of the training "
                  f"points, mean over epochs {int(c.panel_from * (c.epochs - 1)) + 2}–{c.epochs}")
    console.print(f"panels drawn for epoch {result.panels.epoch} of the {c.names[0]} run, seed {c.seed}")
    for path in paths:
        console.print(str(path), highlight=False)
    console.print("(each figure also as .pdf)")
