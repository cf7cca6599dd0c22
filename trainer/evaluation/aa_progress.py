"""Live progress of AutoAttack from its own log: the package (pyautoattack) reports each sub-attack's start and the
robust accuracy after it through the 'auto-attack' logger; this handler turns those lines into progress (the
sub-attack running, points done, running robust accuracy, and an ETA from weighted work units) without touching
AutoAttack itself.

The lines it reads (pyautoattack 0.2.0, `AutoAttack.run_standard_evaluation`, called once per evaluation batch):
`running apgd-t`, `robust accuracy after APGD-T: 61.72% (total time 12.3 s)`,
`no robust datapoints left, skipping remaining attacks`. Unknown lines are ignored, so a changed log format only
makes the bar coarser (it still advances by whole batches).
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from typing import Iterator

from memloss.trainer.common.progress import ProgressSink

# Relative cost per attacked point of each sub-attack of the standard version, for the ETA. Measured on the digits
# small_cnn (CPU, 1 thread, 100 points, from its .aa.log): apgd-ce 0.56 s on 94 points,
# apgd-t 3.1 s on 60, fab-t 5.4 s on 50, square 5.9 s on 50, i.e. 1 : 8.7 : 18 : 20 per point. The rand version's
# two attacks cost the same per point (both 20 EOT iterations).
WEIGHTS = {"apgd-ce": 1.0, "apgd-dlr": 1.0, "apgd-t": 9.0, "fab-t": 18.0, "square": 20.0}

_RUNNING = re.compile(r"^running (\S+)")
_AFTER = re.compile(r"^robust accuracy after (\S+): ([0-9.]+)%")
_NONE_LEFT = "no robust datapoints left"


class AttackProgress(logging.Handler):
    """Follows one AutoAttack attack (`task`, with sub-attacks `subattacks`) over the evaluation batches: the bar's
    unit is points; within a batch of b points each finished sub-attack advances b·w/Σw points."""

    def __init__(self, sink: ProgressSink, task: str, subattacks: tuple[str, ...]) -> None:
        super().__init__(level=logging.DEBUG)
        self.sink, self.task = sink, task
        self.weights = {a: WEIGHTS.get(a, 1.0) for a in subattacks}
        self.total_weight = sum(self.weights.values()) or 1.0
        self.points_done = 0  # points of finished batches
        self.robust_done = 0  # of them, robust after every sub-attack
        self.batch = 0
        self.advanced = 0.0  # points advanced inside the current batch
        self.robust_in_batch: float | None = None  # robust points of the current batch after its last sub-attack
        self.current = ""

    def start_batch(self, size: int) -> None:
        self.batch, self.advanced, self.robust_in_batch = size, 0.0, None

    def end_batch(self, robust: int) -> None:
        """After a batch: completes its share of the bar and counts its robust points."""
        self.sink.advance(self.task, self.batch - self.advanced)
        self.points_done += self.batch
        self.robust_done += robust
        self.sink.status(self.task, f"robust {self._percent(self.robust_done, self.points_done)}")

    @staticmethod
    def _percent(robust: float, points: int) -> str:
        return f"{100 * robust / points:.1f}%" if points else ""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if match := _RUNNING.match(message):
            self.current = match.group(1)
            rate = self._running_rate()
            self.sink.status(self.task, f"{self.current} · robust {rate}" if rate else self.current)
        elif match := _AFTER.match(message):
            name = match.group(1).lower()
            self.robust_in_batch = float(match.group(2)) / 100 * self.batch
            self._advance(self.batch * self.weights.get(name, 0.0) / self.total_weight)
        elif message.startswith(_NONE_LEFT):
            self._advance(self.batch - self.advanced)

    def _running_rate(self) -> str:
        """Robust accuracy over the points attacked so far (in the current batch: after the sub-attacks done)."""
        in_batch = self.robust_in_batch if self.robust_in_batch is not None else 0.0
        points = self.points_done + (self.batch if self.robust_in_batch is not None else 0)
        return self._percent(self.robust_done + in_batch, points)

    def _advance(self, amount: float) -> None:
        amount = min(amount, self.batch - self.advanced)
        if amount > 0:
            self.advanced += amount
            self.sink.advance(self.task, amount)


@contextmanager
def following_autoattack(handler: AutoAttackProgress) -> Iterator[AutoAttackProgress]:
    """Attaches `handler` to the 'auto-attack' logger for the duration (the logger's level is set by
    `autoattack_log`, which the evaluation holds open)."""
    logger = logging.getLogger("auto-attack")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
