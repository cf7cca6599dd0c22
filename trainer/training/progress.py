"""Progress reporting: a rich progress bar with throughput and ETA on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def format_epoch_line(record: dict[str, Any], epochs: int) -> str:
    """One human line per epoch from a metrics record."""
    parts = [f"epoch {record['epoch']}/{epochs}", f"loss {record['loss']:.4f}",
             f"clean {record['test_clean_acc']:.4f}", f"pgd20 {record['test_pgd20_acc']:.4f}"]
    if record.get("ema_test_pgd20_acc") is not None:
        parts.append(f"ema pgd20 {record['ema_test_pgd20_acc']:.4f}")
    if record.get("forgetting") is not None:
        parts.append(f"forgetting {record['forgetting']:.4f}")
    if record.get("mem_loss") is not None:
        parts.append(f"memloss {record['mem_loss']:.4f}")
    parts += [f"{record['samples_per_s']:.0f} samples/s", f"store wait {100 * record['store_wait_frac']:.1f}%",
              f"{record['epoch_seconds']:.1f}s"]
    return "  ".join(parts)


class Reporter:
    """Shows training progress. Per-step updates carry host-side counters only (no device sync)."""

    def __init__(self, epochs: int, steps_per_epoch: int, quiet: bool = False) -> None:
        self.epochs, self.steps = epochs, steps_per_epoch
        self.quiet = quiet
        self.console = Console(stderr=False)
        self.live = sys.stdout.isatty() and not quiet
        self._progress: Progress | None = None
        self._task: Any = None
        self._t0 = time.perf_counter()

    def start_epoch(self, epoch: int) -> None:
        self._t0 = time.perf_counter()
        if not self.live:
            return
        self._progress = Progress(TextColumn(f"epoch {epoch}/{self.epochs}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=self.console,
                                  transient=True)
        self._progress.start()
        self._task = self._progress.add_task("train", total=self.steps, rate="")

    def step(self, samples_so_far: int) -> None:
        if self._progress is None:
            return
        rate = samples_so_far / max(time.perf_counter() - self._t0, 1e-9)
        self._progress.update(self._task, advance=1, rate=f"{rate:.0f} samples/s")

    def end_epoch(self, record: dict[str, Any]) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if not self.quiet:
            self.message(format_epoch_line(record, self.epochs))

    def message(self, text: str) -> None:
        """A line for the user: through rich on a terminal, plain (unwrapped, flushed) otherwise."""
        if self.quiet:
            return
        if self.live:
            self.console.print(text, highlight=False)
        else:
            print(text, flush=True)
