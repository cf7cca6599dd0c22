"""How `memloss train` ends: a short summary after a finished run (best epoch and its PGD-20, the files, the next
command), and after Ctrl-C one line saying where the run stopped and how to resume it (exit code 130)."""

from __future__ import annotations

import shlex
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import typer

if TYPE_CHECKING:
    from memloss.trainer.config.schema import TrainConfig
    from memloss.trainer.training.fit import FitResult


def summary_lines(result: FitResult) -> list[str]:
    """The closing summary of a finished run."""
    run = result.run_dir
    best = next((r for r in result.records if r["epoch"] == result.best_epoch), None)
    clean = f", clean {100 * best['test_clean_acc']:.2f}%" if best else ""
    lines = [f"finished {len(result.records)} epochs in {run}",
             f"best epoch {result.best_epoch}: PGD-20 {100 * result.best_robust:.2f}%{clean} (on the test points)",
             f"best weights:  {run / 'best.safetensors'}",
             f"last weights:  {run / 'last.safetensors'}"]
    if result.store is not None:
        lines.append(f"memory store:  {result.store}")
    lines += [f"TensorBoard:   tensorboard --logdir {shlex.quote(str(run.parent))}",
              f"next: memloss evaluate {shlex.quote(str(run))} --out {shlex.quote(str(run / 'eval.json'))}"]
    return lines


def print_summary(result: FitResult) -> None:
    for line in summary_lines(result):
        print(line, flush=True)


def resume_hint(run_dir: Path, store_options: bool = False) -> str:
    """Where an interrupted run stopped and the command that continues it (`store_options`: the run was given
    --store-option, which is not saved with it)."""
    from memloss.trainer.training.runs import read_metrics

    records = read_metrics(run_dir) if run_dir.is_dir() else []
    done = f"epoch {records[-1]['epoch']} is the last complete one" if records else "no epoch was completed"
    again = " and the same --store-option values" if store_options else ""
    return f"{done}; continue with: memloss train --resume {shlex.quote(str(run_dir))}{again}"


@contextmanager
def interruptible_run(cfg: TrainConfig, resume: Path | None, store_options: bool = False) -> Iterator[None]:
    """Ctrl-C during training: one line with the resume command on stderr, exit code 130."""
    from memloss.trainer.training.runs import default_run_dir

    run_dir = resume if resume is not None else (Path(cfg.run.out) if cfg.run.out else default_run_dir(cfg))
    try:
        yield
    except KeyboardInterrupt:
        print(f"interrupted; {resume_hint(run_dir, store_options)}", file=sys.stderr)
        raise typer.Exit(code=130) from None
