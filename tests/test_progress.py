"""Progress without a terminal: plain lines (throttled, status changes, begin/end), and AutoAttack's own log lines
turned into the sub-attack running, points done and the running robust accuracy."""

from __future__ import annotations

import io
import logging

from memloss.trainer.common.progress import PlainProgress, format_eta
from memloss.trainer.evaluation.aa_progress import AttackProgress, following_autoattack


class Recorder:
    """A ProgressSink that keeps every call."""

    def __init__(self) -> None:
        self.done = 0.0
        self.statuses: list[str] = []

    def begin(self, task: str, total: float, completed: float = 0, unit: str = "batches") -> None:
        self.done = completed

    def advance(self, task: str, amount: float = 1) -> None:
        self.done += amount

    def status(self, task: str, text: str, *, log: bool = True) -> None:
        self.statuses.append(text)

    def end(self, task: str) -> None:
        pass


def test_plain_lines_name_the_task_points_status_and_eta() -> None:
    stream = io.StringIO()
    sink = PlainProgress(stream, every_s=0.0)
    sink.begin("aa", 100, unit="points")
    sink.advance("aa", 40)
    sink.status("aa", "apgd-t · robust 61.0%")
    sink.status("aa", "apgd-t · robust 61.0%")  # unchanged: no second line
    sink.advance("aa", 60)
    sink.end("aa")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "aa: started, 100 points"
    assert lines[1].startswith("aa: 40/100 points") and "eta" in lines[1]
    assert "apgd-t · robust 61.0%" in lines[2] and len(lines) == 4  # end() repeats no line already shown
    assert lines[3].startswith("aa: 100/100 points  apgd-t")


def test_plain_lines_are_throttled_and_quiet_statuses_wait() -> None:
    stream = io.StringIO()
    sink = PlainProgress(stream, every_s=3600, announce=False)
    sink.begin("epoch 1/2", 10, unit="steps")
    for _ in range(10):
        sink.advance("epoch 1/2")
        sink.status("epoch 1/2", "123 samples/s", log=False)
    sink.end("epoch 1/2")
    assert stream.getvalue() == ""


def test_eta_format() -> None:
    assert format_eta(65) == "0:01:05" and format_eta(None) == "-:--:--"


def test_autoattack_log_lines_become_progress() -> None:
    sink = Recorder()
    follow = AttackProgress(sink, "aa", ("apgd-ce", "apgd-t", "fab-t", "square"))
    logger = logging.getLogger("auto-attack")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        with following_autoattack(follow):
            follow.start_batch(50)
            logger.debug("running apgd-ce")
            logger.debug("apgd-ce - 1/1 - 10 out of 45 successfully perturbed")
            logger.debug("robust accuracy after APGD-CE: 70.00% (total time 0.6 s)")
            logger.debug("running apgd-t")
            logger.debug("robust accuracy after APGD-T: 60.00% (total time 3.6 s)")
            logger.debug("no robust datapoints left, skipping remaining attacks")
            follow.end_batch(30)
        logger.debug("running square")  # after the handler is detached: ignored
    finally:
        logger.setLevel(level)
    assert sink.statuses[0] == "apgd-ce"
    assert sink.statuses[1] == "apgd-t · robust 70.0%"  # after apgd-ce, on the points attacked so far
    assert sink.statuses[-1] == "robust 60.0%" and len(sink.statuses) == 3
    assert sink.done == 50  # every point of the batch, whatever the log said
