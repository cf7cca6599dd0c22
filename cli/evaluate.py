"""`memloss evaluate` and `memloss export`: parse options → config → library call → rich rendering."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from memloss.cli.common import interruptible, option, percent, progress_sink, threads_option

if TYPE_CHECKING:
    from memloss.trainer.evaluation.results import AttackResult, EvalResult


ATTACKS_HELP = ("Comma-separated: aa (AutoAttack standard), apgd-ce, apgd-t, fab-t, square (one AutoAttack "
                "attack alone), aa-rand (AutoAttack's rand version), pgd+ (PGD-CE 40 steps, 5 restarts), cw (PGD on "
                "the CW margin), pgd20, or all (aa,pgd+,cw,pgd20)")


def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A .safetensors model file, or a run directory (its "
                                                    "best.safetensors).", show_default=False)],
    attacks: Annotated[str | None, option(help=ATTACKS_HELP, shown="aa,pgd+,cw; none with --sweep")] = None,
    n: Annotated[int | None, option("--n", help="Evaluate the first N test points", shown="all")] = None,
    norm: Annotated[str | None, option(help="Linf or L2", shown="the checkpoint's")] = None,
    eps: Annotated[str | None, option(help="Radius on the [0,1] scale, e.g. 8/255 or 0.1",
                                      shown="the checkpoint's")] = None,
    batch_size: Annotated[int, option(help="Points per attack batch (and per resume step)", shown="256")] = 256,
    seed: Annotated[int, option(help="Seed of AutoAttack and of the PGD random starts", shown="0")] = 0,
    device: Annotated[str, option(help="auto, cpu or cuda[:i]", shown="auto")] = "auto",
    threads: Annotated[str, threads_option()] = "auto",
    out: Annotated[Path | None, option(help="Results JSON; the AutoAttack log (OUT.aa.log) and the resume state "
                                            "(OUT.state.json) go next to it")] = None,
    data_dir: Annotated[Path | None, option(help="Dataset folder",
                                            shown="$MEMLOSS_DATA or ~/.cache/memloss/data")] = None,
    sweep: Annotated[list[str] | None, option(help="Gradient-masking check (paper Tables A.4/A.5): "
                                                   "steps=40,200,500,1000 or restarts=1,5,10,20; repeatable")] = None,
    plot: Annotated[Path | None, option(help="Write the --sweep curves to this figure (PNG and PDF)")] = None,
    tf32: Annotated[bool, option("--tf32/--no-tf32", help="CUDA: allow TF32 matmuls and convolutions in the "
                                 "attacks (faster on Ampere+, a 10-bit mantissa); recorded in the results",
                                 shown="off: IEEE fp32")] = False,
    overwrite: Annotated[bool, option("--overwrite", help="Replace an existing --out results file (else refused)")]
    = False,
) -> None:
    """Evaluate a checkpoint: clean accuracy, robust accuracy per attack and the per-point worst case over all
    attacks. With --out, an interrupted evaluation resumes when the same command is run again."""
    from memloss.trainer.evaluation.results import EvalConfig
    from memloss.trainer.evaluation.run import evaluate as run_evaluation
    from memloss.trainer.evaluation.sweep import parse_sweep

    sweeps = tuple(parse_sweep(s) for s in sweep or ())
    chosen = attacks if attacks is not None else ("" if sweeps else "aa,pgd+,cw")
    cfg = EvalConfig(checkpoint, attacks=tuple(chosen.split(",")), sweeps=sweeps, n=n, norm=norm, eps=eps,
                     batch_size=batch_size, seed=seed, device=device, out=out, data_dir=data_dir, plot=plot,
                     threads=threads, tf32=tf32, overwrite=overwrite)
    console = Console()
    hint = "rerun the same command to resume" if out else "pass --out to make evaluations resumable"
    with interruptible(hint), progress_sink(console) as sink:
        result = run_evaluation(cfg, sink)
    from memloss.trainer.distributed.context import env_rank

    if env_rank() == 0:  # under torchrun: one table, from rank 0
        render_result(console, result)


def export(
    checkpoint: Annotated[Path, typer.Argument(help="A .safetensors model file, or a run directory.",
                                               show_default=False)],
    out: Annotated[Path, typer.Argument(help="Directory for model.safetensors, model.pt and card.json.",
                                        show_default=False)],
    format: Annotated[str, option("--format", help="Export format: robustbench", shown="robustbench")] = "robustbench",
    results: Annotated[Path | None, option(help="A `memloss evaluate --out` JSON of this checkpoint, whose "
                                                "accuracies go into the card")] = None,
) -> None:
    """Export a checkpoint as a prefix-free state dict (safetensors and a weights_only-loadable .pt) plus a JSON
    card, loadable without memloss."""
    from memloss.trainer.evaluation.export import export as run_export

    written = run_export(checkpoint, format, out, results=results)
    for path in (written.safetensors, written.pt, written.card):
        print(f"wrote {path}")


# ---------------------------------------------------------------------------------------------------------------
# Rendering and progress.


def attack_row(table: Table, result: AttackResult, n: int) -> None:
    table.add_row(result.name, percent(result.robust_accuracy), f"{int(result.robust.sum())}/{n}",
                  f"{result.seconds:.1f}")


def render_result(console: Console, result: EvalResult) -> None:
    """The accuracy table, the sweep table and the written files (what was evaluated, with the threads, is shown
    when the evaluation starts)."""
    table = Table(title=f"{result.arch} on {result.dataset}, {result.threat.norm} ε = {result.threat.eps_text}")
    for column in ("", "accuracy (%)", "correct", "time (s)"):
        table.add_column(column, justify="left" if not column else "right")
    table.add_row("clean", percent(result.clean_accuracy), f"{int(result.clean_correct.sum())}/{result.n}", "")
    for attack in result.attacks:
        attack_row(table, attack, result.n)
    table.add_row("worst case", percent(result.worst_case_accuracy), f"{int(result.worst_case.sum())}/{result.n}",
                  "", style="bold")
    console.print(table)
    for warning in result.warnings:
        console.print(f"[red]suspicious:[/red] {warning}", highlight=False)
    for kind, rows in result.sweeps.items():
        console.print(f"gradient-masking check: PGD-CE robust accuracy by {kind}")
        sweep_table = Table()
        for column in ("setting", "accuracy (%)", "correct", "time (s)"):
            sweep_table.add_column(column, justify="left" if column == "setting" else "right")
        for row in rows:
            attack_row(sweep_table, row, result.n)
        console.print(sweep_table)
    for what, path in result.files.items():
        console.print(f"{what}: {path}", highlight=False)
