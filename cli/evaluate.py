"""`memloss evaluate` and `memloss export`: parse options → config → library call → rich rendering."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Iterator

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from memloss.trainer.evaluation.results import AttackResult, EvalResult, ProgressSink


def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A .safetensors model file, or a run directory (its "
                                                    "best.safetensors).", show_default=False)],
    attacks: Annotated[str | None, typer.Option(help="Comma-separated: aa (AutoAttack standard), pgd+ (PGD-CE 40 "
                                                     "steps, 5 restarts), cw (PGD on the CW margin), pgd20, or all. "
                                                     "Default: aa,pgd+,cw (none when --sweep is given).")] = None,
    n: Annotated[int | None, typer.Option("--n", help="Evaluate the first N test points (default: all).")] = None,
    norm: Annotated[str | None, typer.Option(help="Linf or L2 (default: the checkpoint's).")] = None,
    eps: Annotated[str | None, typer.Option(help="Radius on the [0,1] scale, e.g. 8/255 or 0.1 "
                                                 "(default: the checkpoint's).")] = None,
    batch_size: Annotated[int, typer.Option(help="Points per attack batch (and per resume step).")] = 256,
    seed: Annotated[int, typer.Option(help="Seed of AutoAttack and of the PGD random starts.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:i].")] = "auto",
    out: Annotated[Path | None, typer.Option(help="Results JSON; the AutoAttack log (OUT.aa.log) and the resume "
                                                  "state (OUT.state.json) go next to it.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Dataset folder (default: $MEMLOSS_DATA or "
                                                       "~/.cache/memloss/data).")] = None,
    sweep: Annotated[list[str] | None, typer.Option(help="Gradient-masking check (paper Tables A.4/A.5): "
                                                         "steps=40,200,500,1000 or restarts=1,5,10,20; "
                                                         "repeatable.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the --sweep curves to this PNG.")] = None,
) -> None:
    """Evaluate a checkpoint: clean accuracy, robust accuracy per attack and the per-point worst case over all
    attacks. With --out, an interrupted evaluation resumes when the same command is run again."""
    from memloss.trainer.evaluation.results import EvalConfig
    from memloss.trainer.evaluation.run import evaluate as run_evaluation
    from memloss.trainer.evaluation.sweep import parse_sweep

    sweeps = tuple(parse_sweep(s) for s in sweep or ())
    chosen = attacks if attacks is not None else ("" if sweeps else "aa,pgd+,cw")
    cfg = EvalConfig(checkpoint, attacks=tuple(chosen.split(",")), sweeps=sweeps, n=n, norm=norm, eps=eps,
                     batch_size=batch_size, seed=seed, device=device, out=out, data_dir=data_dir, plot=plot)
    console = Console()
    with progress_sink(console) as sink, resumable(out):
        result = run_evaluation(cfg, sink)
    render_result(console, result)


def export(
    checkpoint: Annotated[Path, typer.Argument(help="A .safetensors model file, or a run directory.",
                                               show_default=False)],
    out: Annotated[Path, typer.Argument(help="Directory for model.safetensors, model.pt and card.json.",
                                        show_default=False)],
    format: Annotated[str, typer.Option("--format", help="Export format: robustbench.")] = "robustbench",
    results: Annotated[Path | None, typer.Option(help="A `memloss evaluate --out` JSON of this checkpoint, whose "
                                                      "accuracies go into the card.")] = None,
) -> None:
    """Export a checkpoint as a prefix-free state dict (safetensors and a weights_only-loadable .pt) plus a JSON
    card, loadable without memloss."""
    from memloss.trainer.evaluation.export import export as run_export

    written = run_export(checkpoint, format, out, results=results)
    for path in (written.safetensors, written.pt, written.card):
        print(f"wrote {path}")


# ---------------------------------------------------------------------------------------------------------------
# Rendering and progress.


def percent(value: float) -> str:
    return f"{100 * value:.2f}"


def attack_row(table: Table, result: AttackResult, n: int) -> None:
    table.add_row(result.name, percent(result.robust_accuracy), f"{int(result.robust.sum())}/{n}",
                  f"{result.seconds:.1f}")


def render_result(console: Console, result: EvalResult) -> None:
    """The accuracy table, the sweep table and the written files."""
    console.print(f"[bold]{result.arch}[/bold] on {result.dataset}, {result.n} test points, {result.threat.norm} "
                  f"ε = {result.threat.eps_text}, seed {result.seed}, {result.device}")
    table = Table()
    for column in ("", "accuracy (%)", "correct", "time (s)"):
        table.add_column(column, justify="left" if not column else "right")
    table.add_row("clean", percent(result.clean_accuracy), f"{int(result.clean_correct.sum())}/{result.n}", "")
    for attack in result.attacks:
        attack_row(table, attack, result.n)
    table.add_row("worst case", percent(result.worst_case_accuracy), f"{int(result.worst_case.sum())}/{result.n}",
                  "", style="bold")
    for warning in result.warnings:
        table.add_row("[red]suspicious[/red]", warning, "", "")
    console.print(table)
    for kind, rows in result.sweeps.items():
        console.print(f"gradient-masking check: PGD-CE robust accuracy by {kind}")
        sweep_table = Table()
        for column in ("setting", "accuracy (%)", "correct", "time (s)"):
            sweep_table.add_column(column, justify="left" if column == "setting" else "right")
        for row in rows:
            attack_row(sweep_table, row, result.n)
        console.print(sweep_table)
    for what, path in result.files.items():
        console.print(f"{what}: {path}")


class PlainProgress:
    """One line per finished batch on stderr, for logs and pipes."""

    def __init__(self) -> None:
        self.state: dict[str, list[int]] = {}

    def begin(self, task: str, total: int, completed: int) -> None:
        self.state[task] = [completed, total]
        if completed:
            print(f"{task}: {completed}/{total} batches restored from the state file", file=sys.stderr)

    def advance(self, task: str) -> None:
        self.state[task][0] += 1
        done, total = self.state[task]
        print(f"{task}: batch {done}/{total}", file=sys.stderr, flush=True)


class RichProgress:
    """A rich progress bar per task."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def begin(self, task: str, total: int, completed: int) -> None:
        self.tasks[task] = self.progress.add_task(task, total=total, completed=completed)

    def advance(self, task: str) -> None:
        self.progress.advance(self.tasks[task])


@contextmanager
def progress_sink(console: Console) -> Iterator[ProgressSink]:
    """Rich bars on a terminal, plain lines otherwise."""
    if not console.is_terminal:
        yield PlainProgress()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        yield RichProgress(progress)


@contextmanager
def resumable(out: Path | None) -> Iterator[None]:
    """Ctrl-C ends with one line saying how to resume (exit code 130)."""
    try:
        yield
    except KeyboardInterrupt:
        hint = "rerun the same command to resume" if out else "pass --out to make evaluations resumable"
        print(f"interrupted; {hint}", file=sys.stderr)
        raise typer.Exit(code=130) from None
