"""Progress of long phases (an epoch, the per-epoch PGD-20, an attack, a data conversion), shown the same way by
every command: a rich bar with a status text and ETA on a terminal, plain throttled lines otherwise (logs, pipes,
CI), nothing when quiet.

A phase is a *task*: `begin(task, total, ...)`, then `advance(task, amount)` and `status(task, text)` as work
finishes, then `end(task)`. `message(text)` shows one line above the bars (what is about to run, e.g. an
evaluation's header). Callers pass host-side counts only, so showing progress never syncs a device.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator, Protocol, TextIO

# A plain-text line at most this often per task (plus the first and last), so logs stay readable.
PLAIN_EVERY_S = 10.0


class ProgressSink(Protocol):
    """What the library reports progress to. `total` and amounts may be fractional (weighted work units)."""

    def begin(self, task: str, total: float, completed: float = 0, unit: str = "batches") -> None: ...

    def advance(self, task: str, amount: float = 1) -> None: ...

    def status(self, task: str, text: str, *, log: bool = True) -> None: ...

    def end(self, task: str) -> None: ...

    def message(self, text: str) -> None: ...


class SilentProgress:
    """Shows nothing (library calls without a sink, `quiet=True`)."""

    def begin(self, task: str, total: float, completed: float = 0, unit: str = "batches") -> None:
        pass

    def advance(self, task: str, amount: float = 1) -> None:
        pass

    def status(self, task: str, text: str, *, log: bool = True) -> None:
        pass

    def end(self, task: str) -> None:
        pass

    def message(self, text: str) -> None:
        pass


def show_message(sink: ProgressSink, text: str) -> None:
    """`sink.message(text)`, for sinks that have it (a caller's own sink written before `message` existed may not)."""
    message = getattr(sink, "message", None)
    if message is not None:
        message(text)


def format_eta(seconds: float | None) -> str:
    """'0:01:05', or '-:--:--' when unknown."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class _PlainTask:
    def __init__(self, total: float, completed: float, unit: str) -> None:
        self.total, self.completed, self.unit = total, completed, unit
        self.start_done, self.t0 = completed, time.perf_counter()
        self.last_print, self.text, self.printed = self.t0, "", ""

    def eta(self) -> float | None:
        done = self.completed - self.start_done
        if done <= 0:
            return None
        return (self.total - self.completed) * (time.perf_counter() - self.t0) / done


class PlainProgress:
    """Plain lines on `stream` (stderr by default): at most one every `every_s` seconds while a task advances, one on
    each status change made with log=True, and with `announce` one when a task begins and one when it ends."""

    def __init__(self, stream: TextIO | None = None, every_s: float = PLAIN_EVERY_S, announce: bool = True) -> None:
        self.stream, self.every_s, self.announce = stream, every_s, announce
        self.tasks: dict[str, _PlainTask] = {}

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stderr, flush=True)

    def _print_task(self, task: str, final: bool = False) -> None:
        """The task's line, unless it would repeat the last one (elapsed time aside)."""
        t = self.tasks[task]
        key = f"{t.completed:.0f} {t.text}"
        if key != t.printed:
            t.printed, t.last_print = key, time.perf_counter()
            line = self._line(task)
            self._print(line.split("  eta ")[0] if final else line)

    def _line(self, task: str) -> str:
        t = self.tasks[task]
        status = f"  {t.text}" if t.text else ""
        return (f"{task}: {t.completed:.0f}/{t.total:.0f} {t.unit}{status}  "
                f"elapsed {format_eta(time.perf_counter() - t.t0)}  eta {format_eta(t.eta())}")

    def begin(self, task: str, total: float, completed: float = 0, unit: str = "batches") -> None:
        self.tasks[task] = _PlainTask(total, completed, unit)
        if self.announce:
            restored = f" ({completed:.0f} restored)" if completed else ""
            self._print(f"{task}: started, {total:.0f} {unit}{restored}")

    def advance(self, task: str, amount: float = 1) -> None:
        t = self.tasks[task]
        t.completed += amount
        if time.perf_counter() - t.last_print >= self.every_s:
            self._print_task(task)

    def status(self, task: str, text: str, *, log: bool = True) -> None:
        t = self.tasks[task]
        if text != t.text:
            t.text = text
            if log:
                self._print_task(task)

    def end(self, task: str) -> None:
        if task in self.tasks:
            if self.announce:
                self._print_task(task, final=True)
            del self.tasks[task]

    def message(self, text: str) -> None:
        self._print(text)


class RichProgress:
    """A rich bar per task: description, bar, done/total with the unit, status text, elapsed and ETA."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.ids: dict[str, Any] = {}

    def begin(self, task: str, total: float, completed: float = 0, unit: str = "batches") -> None:
        self.ids[task] = self.progress.add_task(task, total=total, completed=completed, unit=unit, status="")

    def advance(self, task: str, amount: float = 1) -> None:
        self.progress.advance(self.ids[task], amount)

    def status(self, task: str, text: str, *, log: bool = True) -> None:
        self.progress.update(self.ids[task], status=text)

    def end(self, task: str) -> None:
        if task in self.ids:
            self.progress.remove_task(self.ids.pop(task))

    def message(self, text: str) -> None:
        self.progress.console.print(text, highlight=False, markup=False, soft_wrap=True)


def rich_progress(console: Any) -> Any:
    """A started-on-enter rich Progress with memloss's columns (use as a context manager)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(bar_width=24),
               TextColumn("{task.completed:.0f}/{task.total:.0f} {task.fields[unit]}"),
               TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    return Progress(*columns, console=console, transient=True)


@contextmanager
def progress_display(console: Any = None, quiet: bool = False) -> Iterator[ProgressSink]:
    """The sink every command uses: rich bars when `console` (default: a new rich Console on stdout) is a terminal,
    plain throttled lines on stderr otherwise, nothing when quiet."""
    if quiet:
        yield SilentProgress()
        return
    if console is None:
        from rich.console import Console

        console = Console()
    if not console.is_terminal:
        yield PlainProgress()
        return
    with rich_progress(console) as progress:
        yield RichProgress(progress)
