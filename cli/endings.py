"""How `memloss train` ends: a short summary after a finished run (best epoch and its PGD-20, the files, the next
command), and after Ctrl-C (exit code 130) or SIGTERM (exit code 143: a scheduler's `scancel`, `kill`, a container
stop) one line saying where the run stopped and how to resume it. Both end the same way: every completed epoch is
on disk (its files are written before the next epoch starts), the epoch in progress is dropped."""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
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


def resume_hint(run_dir: Path, store_options: bool = False, command: str = "memloss train") -> str:
    """Where an interrupted run stopped and the command that continues it (`store_options`: the run was given
    --store-option, which is not saved with it). A run stopped before its directory held a config has nothing to
    resume: the hint is then the same command again."""
    from memloss.trainer.training.runs import CONFIG_FILE, read_metrics

    if not (run_dir / CONFIG_FILE).is_file():
        return "the run had not started (nothing was saved); start it again with the same command"
    records = read_metrics(run_dir) if run_dir.is_dir() else []
    done = f"epoch {records[-1]['epoch']} is the last complete one" if records else "no epoch was completed"
    again = " and the same --store-option values" if store_options else ""
    return f"{done}; continue with: {command} --resume {shlex.quote(str(run_dir))}{again}"


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into the same unwinding as Ctrl-C (the stores, loaders and threads close as after Ctrl-C)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


@contextmanager
def sigterm_like_ctrl_c() -> Iterator[None]:
    """Within the block SIGTERM raises `Terminated` (main thread only; elsewhere signals cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def interruptible_run(cfg: TrainConfig, resume: Path | None, store_options: bool = False) -> Iterator[None]:
    """Ctrl-C or SIGTERM during training: one line with the resume command on stderr, exit code 130 (Ctrl-C) or
    143 (SIGTERM, 128 + 15 as shells report it)."""
    from memloss.trainer.training.resume import absolute
    from memloss.trainer.training.runs import default_run_dir

    run_dir = Path(absolute(resume if resume is not None else (cfg.run.out or default_run_dir(cfg))))
    try:
        with sigterm_like_ctrl_c():
            yield
    except KeyboardInterrupt as err:
        terminated = isinstance(err, Terminated)
        if os.environ.get("RANK", "0") == "0":  # under torchrun rank 0 says it for every rank
            what = "terminated (SIGTERM)" if terminated else "interrupted"
            print(f"{what}; {resume_hint(run_dir, store_options)}", file=sys.stderr)
        raise typer.Exit(code=143 if terminated else 130) from None
