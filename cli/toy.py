"""`memloss toy`: the paper's 2-D toy problem (§3.3, figures 2-3) as a paired experiment →
memloss.trainer.experiments.toy.run.run_toy, its table, plots and JSON."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

from memloss.cli.common import interruptible, option, threads_option

if TYPE_CHECKING:
    from rich.console import Console

    from memloss.trainer.experiments.toy.result import ToyResult
    from memloss.trainer.experiments.toy.stats import PairedDiff

# (summary key, column): the table fits an 80-column terminal; every figure is in toy_result.json.
COLUMNS = (("forget_rate_at_epoch_end", "forgetting rate\nat epoch end"),
           ("old_error_at_epoch_end", "old-example error\nat epoch end"),
           ("robust_acc", "test robust\naccuracy"))


def _parse_sweep(text: str) -> tuple[float, ...]:
    from memloss.trainer.experiments.toy.config import ToyConfigError

    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ToyConfigError(f"--sweep takes β′ values separated by commas (e.g. 0.5,8), got {text!r}") from None


def toy(
    out: Annotated[Path, option(help="Folder for toy_result.json and the figures (created if missing)",
                                shown="runs/toy")] = Path("runs/toy"),
    base: Annotated[str, option(help="Method MemLoss is added to: trades (the paper's MemLoss) | at (the paper's "
                                     "toy training)", shown="trades")] = "trades",
    seeds: Annotated[Optional[int], option(help="Seeds (each trains every variant); ≥ 2 for an interval",
                                           shown="20; 3 with --quick")] = None,
    epochs: Annotated[int, option(help="Training epochs of every run", shown="40")] = 40,
    seed: Annotated[int, option(help="First seed (data, initial weights, batch order and attack starts)",
                                shown="0")] = 0,
    beta_prime: Annotated[float, option(help="β′ of the main MemLoss run (the paper: 2)", shown="2")] = 2.0,
    sweep: Annotated[str, option(help="Other β′ values to run, comma-separated (empty: none)",
                                 shown="0.5,8")] = "0.5,8",
    control_weight: Annotated[float, option(help="Weight of CE on the memory examples in the positive control "
                                                 "(0: no control)", shown="2")] = 2.0,
    quick: Annotated[bool, option(help="CI preset: 6 epochs on 64 points (overrides --epochs); not a measurement",
                                  shown="off")] = False,
    threads: Annotated[str, threads_option()] = "auto",
) -> None:
    """Run the paper's 2-D toy problem as a paired experiment: per seed the base method alone, with MemLoss (β′ and
    a sweep) and with a positive control (CE on the memory examples), all trained at once on the CPU.

    Prints the base's figures and, per variant, the mean paired difference to the base (same seed) with its 95 %
    Student-t interval: the forgetting rate at epoch end (of the previous epoch's adversarial examples that the
    model of that epoch got right, the share the next epoch's model gets wrong), the old-example error and the
    test robust accuracy; then whether the control moved the forgetting rate (if not, the toy cannot show an
    effect). Writes toy_result.json and four figures (PNG and PDF) into --out. About a minute on a CPU.
    """
    from rich.console import Console

    from memloss.trainer.common.progress import progress_display
    from memloss.trainer.experiments.toy.config import ToyConfig, ToyConfigError
    from memloss.trainer.experiments.toy.plot import plot_toy
    from memloss.trainer.experiments.toy.result import save_toy_result
    from memloss.trainer.experiments.toy.run import run_toy

    if out.exists() and not out.is_dir():  # before training, not after
        raise ToyConfigError(f"output path {out} exists and is not a folder; pass another --out")
    if seeds is not None and seeds < 2:
        raise ToyConfigError(f"--seeds must be ≥ 2 (the interval needs two paired differences), got {seeds}")
    common = {"seed": seed, "base": base, "seeds": seeds or (3 if quick else 20)}
    extra = {"beta_prime": beta_prime, "sweep": _parse_sweep(sweep), "control_weight": control_weight}
    cfg = ToyConfig(**{**ToyConfig.quick(**common).__dict__, **extra}) if quick else ToyConfig(epochs=epochs,
                                                                                               **common, **extra)
    console = Console()
    with interruptible("nothing was written; run the command again"), progress_display(console) as sink:
        result = run_toy(cfg, sink, threads=threads)
    paths = [save_toy_result(result, out), *plot_toy(result, out)]
    print_summary(console, result, paths)


def print_summary(console: Console, result: ToyResult, paths: list[Path]) -> None:
    """The base's means ± std, then one row per variant: mean paired difference [95 % t-interval], in points of
    percent; the control's verdict; the written files."""
    from rich.table import Table

    c = result.config
    runs, paired = result.per_run(), result.paired()
    table = Table(title=f"2-D toy, {c.base_name} base, {c.epochs} epochs, {c.seeds} seeds, "
                        f"{result.wall_time_s:.0f} s, {result.threads} thread(s); in %")
    table.add_column("run (− base, same seed)")
    for _, column in COLUMNS:
        table.add_column(column, justify="right")
    table.add_row(f"{c.base_name} (mean ± std)",
                  *(f"{100 * runs[k][0].mean():.2f} ± {100 * runs[k][0].std(ddof=1):.2f}" for k, _ in COLUMNS))
    for variant in sorted(c.variants[1:], key=lambda v: (v.kind == "control", v.weight)):  # β′ up, control last
        figures = paired[variant.name]
        table.add_row(variant.name.replace(f"{c.base_name}+", "+"), *(_diff_text(figures[k]) for k, _ in COLUMNS))
    console.print(table)
    console.print(f"rows +…: variant − {c.base_name} (same seed), mean ± half-width of the 95 % Student-t interval "
                  f"over the seeds; * = the interval excludes 0. Forgetting (of the previous epoch's adversarial "
                  f"examples right under the model that made them) and old-example error judged by the end-of-epoch "
                  f"models, robust accuracy PGD-{c.eval_steps} on the test points, all over epochs "
                  f"{c.first_measured}–{c.epochs}")
    moves = result.control_moves()
    if moves is not None:
        labels = {key: column.replace("\n", " ") for key, column in COLUMNS}
        moved = [labels[k] for k, ok in moves.items() if ok]
        missed = [labels[k] for k, ok in moves.items() if not ok]
        console.print("positive control (CE on the memory examples) moved: " + (", ".join(moved) or "nothing"))
        if missed:
            console.print("it did NOT move: " + ", ".join(missed) + ". For these the toy is not an instrument at "
                          "this number of seeds, and the MemLoss rows say nothing either way.")
    for path in paths:
        console.print(str(path), highlight=False)
    console.print("(each figure also as .pdf)")


def _diff_text(d: PairedDiff) -> str:
    """'+0.25 ± 0.27' in points of percent, with ' *' when the interval excludes 0."""
    return f"{100 * d.mean:+.2f} ± {100 * d.half_width:.2f}" + (" *" if d.excludes_zero else "  ")
