"""What a training run shows and logs as it goes: a live bar per epoch (steps, samples/s, ETA) and one for the
per-epoch PGD-20 on the test points, a line per epoch, and the closing summary; on a terminal through rich, plain
lines otherwise. The `Logbook` (TensorBoard) is fed at the same boundaries.

Per-step calls carry host-side counters and the step's loss tensor, which only the logbook reads, once per
`log_every` steps: showing progress never syncs the device.
"""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from typing import Any

import torch

from memloss.trainer.common.progress import PlainProgress, ProgressSink, RichProgress, SilentProgress, rich_progress
from memloss.trainer.training.logbook import Logbook
from memloss.trainer.training.selection import selected_accuracy


def pct(value: float | None) -> str:
    """An accuracy in [0,1] in percent, as every memloss command shows accuracies."""
    return "—" if value is None else f"{100 * value:.2f}%"


def format_epoch_line(record: dict[str, Any], epochs: int) -> str:
    """One human line per epoch from a metrics record (accuracies, events and errors in percent)."""
    parts = [f"epoch {record['epoch']}/{epochs}", f"loss {record['loss']:.4f}"]
    chosen = selected_accuracy(record)
    if chosen is not None:  # test_pgd20_acc, or val_pgd40_cw_acc etc. with --val-split / --select-attack
        split, attack = chosen[0].removesuffix("_acc").split("_", 1)
        label = f"{split} " if split == "val" else ""
        parts += [f"{label}clean {pct(record.get(f'{split}_clean_acc'))}",
                  f"{label}{attack.replace('_', '-')} {pct(chosen[1])}"]
        ema = selected_accuracy(record, ema=True)
        if ema is not None:
            parts.append(f"ema {label}{attack.replace('_', '-')} {pct(ema[1])}")
    # The forgetting monitor on the previous epoch's adversarial examples (age 1): events and old-example error.
    for key, label in (("forget_at_visit", "forget@visit"), ("learn_at_visit", "learn@visit"),
                       ("old_error_at_visit", "old err@visit")):
        if record.get(key) is not None:
            parts.append(f"{label} {pct(record[key])}")
    if record.get("mem_loss") is not None:
        parts.append(f"memloss {record['mem_loss']:.4f}")
    parts += _held(record)
    parts += [f"{record['samples_per_s']:.0f} samples/s", f"store wait {100 * record['store_wait_frac']:.1f}%",
              f"{record['epoch_seconds']:.1f}s"]
    if record.get("eval_seconds") is not None:
        parts.append(f"+ eval {record['eval_seconds']:.1f}s")
    return "  ".join(parts)


def _held(record: dict[str, Any]) -> list[str]:
    """The share of batch rows that held memory of age 1 (epoch n−1): base/generated with generated data."""
    if record.get("mem_held_aux_by_age"):
        return [f"held {pct(record['mem_held_base_by_age'][0])}/{pct(record['mem_held_aux_by_age'][0])} base/gen"]
    if record.get("mem_held_by_age"):
        return [f"held {pct(record['mem_held_by_age'][0])}"]
    return []


class Reporter:
    """Shows training progress and feeds the logbook. Use as a context manager around the epochs."""

    def __init__(self, epochs: int, steps_per_epoch: int, quiet: bool = False, logbook: Logbook | None = None,
                 live: bool | None = None) -> None:
        self.epochs, self.steps, self.quiet, self.logbook = epochs, steps_per_epoch, quiet, logbook
        self.live = (sys.stdout.isatty() if live is None else live) and not quiet
        self._stack = ExitStack()
        self._console: Any = None
        # Plain mode: no begin/end lines (the epoch line follows), a progress line every 10 s of a long phase.
        self.sink: ProgressSink = SilentProgress() if quiet else PlainProgress(announce=False)
        self._task = ""
        self._t0 = time.perf_counter()

    def __enter__(self) -> Reporter:
        if self.live:
            from rich.console import Console

            self._console = Console()
            self.sink = RichProgress(self._stack.enter_context(rich_progress(self._console)))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        if self.logbook is not None:
            self.logbook.close()

    def start_epoch(self, epoch: int) -> None:
        self._t0 = time.perf_counter()
        self._task = f"epoch {epoch}/{self.epochs}"
        self.sink.begin(self._task, self.steps, unit="steps")
        if self.logbook is not None:
            self.logbook.start_epoch()

    def step(self, samples_so_far: int, loss: torch.Tensor | None = None, batch: int = 0) -> None:
        """After one optimizer step; `samples_so_far` in this epoch, `batch` the step's size (host ints)."""
        rate = samples_so_far / max(time.perf_counter() - self._t0, 1e-9)
        self.sink.advance(self._task)
        self.sink.status(self._task, f"{rate:.0f} samples/s", log=False)
        if self.logbook is not None:
            self.logbook.step(loss, batch)

    def start_eval(self, points: int, models: int = 1) -> None:
        """The per-epoch PGD-20 begins on `points` test points, for `models` models (2 with the EMA)."""
        self.sink.end(self._task)
        self._task = f"  PGD-20 on {points} test points" + (f" × {models} models" if models > 1 else "")
        self.sink.begin(self._task, points * models, unit="points")

    def eval_step(self, points: int) -> None:
        self.sink.advance(self._task, points)

    def end_epoch(self, record: dict[str, Any]) -> None:
        self.sink.end(self._task)
        if self.logbook is not None:
            self.logbook.epoch(record)
        self.message(format_epoch_line(record, self.epochs))

    def message(self, text: str) -> None:
        """A line for the user: above the bars on a terminal, plain (unwrapped, flushed) otherwise."""
        if self.quiet:
            return
        if self._console is not None:
            self._console.print(text, highlight=False, soft_wrap=True)
        else:
            print(text, flush=True)
