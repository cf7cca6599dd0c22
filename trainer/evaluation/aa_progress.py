"""Live progress of AutoAttack: the sub-attack running, points done, running robust accuracy, and an ETA that moves
within every sub-attack, without changing AutoAttack's algorithm.

Two sources. (1) AutoAttack's own log (pyautoattack 0.2.0, `AutoAttack.run_standard_evaluation`, called once per
evaluation batch) through the 'auto-attack' logger: `running apgd-t`, `robust accuracy after APGD-T: 61.72% (total
time 12.3 s)`, `no robust datapoints left, skipping remaining attacks`. Unknown lines are ignored, so a changed log
format only makes the bar coarser (it still advances by whole batches). (2) Within a sub-attack, its iterations:
`AttackProgress.watch(adversary)` wraps, on that AutoAttack's sub-attack objects only and for the batch, the callable
each calls once per iteration (see `_ITERATION_HOOKS`) with a counter; the wrapped callable runs unchanged, and the
originals are put back afterwards. The count against the most iterations the sub-attack can make (restarts × target
classes × iterations or queries, `planned_iterations`) moves the bar inside the sub-attack; the sub-attack's end
line completes its share (it ends early when every point is broken).
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from memloss.trainer.common.progress import ProgressSink

# Relative cost per attacked point of each sub-attack of the standard version, for the ETA. Measured on the digits
# small_cnn (CPU, 1 thread, 100 points, from its .aa.log): apgd-ce 0.56 s on 94 points,
# apgd-t 3.1 s on 60, fab-t 5.4 s on 50, square 5.9 s on 50, i.e. 1 : 8.7 : 18 : 20 per point. The rand version's
# two attacks cost the same per point (both 20 EOT iterations).
WEIGHTS = {"apgd-ce": 1.0, "apgd-dlr": 1.0, "apgd-t": 9.0, "fab-t": 18.0, "square": 20.0}

_RUNNING = re.compile(r"^running (\S+)")
_AFTER = re.compile(r"^robust accuracy after (\S+): ([0-9.]+)%")
_NONE_LEFT = "no robust datapoints left"

# Sub-attack → (the AutoAttack attribute holding its attack object, the callable it calls once per iteration):
# APGD's forward of the model (once per iteration and EOT draw, plus one to start each run), FAB's logits-and-
# gradients of the current point, Square's margin of each query.
_ITERATION_HOOKS = {"apgd-ce": ("apgd", "model"), "apgd-dlr": ("apgd", "model"), "apgd-t": ("apgd_targeted", "model"),
                    "fab": ("fab", "get_diff_logits_grads_batch"),
                    "fab-t": ("fab", "get_diff_logits_grads_batch_targeted"), "square": ("square", "margin_and_loss")}
# The bar moves within a sub-attack in steps of this fraction of it, and at most this close to its end before the
# sub-attack's end line (a sub-attack that breaks every point stops early).
_STEP, _CAP = 0.01, 0.99


def planned_iterations(adversary: Any, name: str) -> int:
    """The most calls of `name`'s iteration hook one run of `run_standard_evaluation` makes on a batch (0: unknown),
    from the settings AutoAttack's version gave its attack objects."""
    if name in ("apgd-ce", "apgd-dlr", "apgd-t"):
        a = adversary.apgd_targeted if name == "apgd-t" else adversary.apgd
        runs = a.n_restarts * (a.n_target_classes if name == "apgd-t" else 1)
        return runs * a.eot_iter * (a.n_iter + 1)
    if name in ("fab", "fab-t"):  # AutoAttack runs FAB-T with one restart per target class
        f = adversary.fab
        return (f.n_target_classes if name == "fab-t" else f.n_restarts) * f.n_iter
    if name == "square":
        return adversary.square.n_restarts * (adversary.square.n_queries + 1)
    return 0


class _Counted:
    """`fn` with a call counter in front (attribute reads pass through, e.g. a model's own methods)."""

    def __init__(self, fn: Callable[..., Any], tick: Callable[[], None]) -> None:
        self._fn, self._tick = fn, tick

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._tick()
        return self._fn(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fn, name)


class AttackProgress(logging.Handler):
    """Follows one attack (`task`; AutoAttack's with sub-attacks `subattacks`) over the evaluation batches: the bar's
    unit is points; within a batch of b points each sub-attack stands for b·w/Σw points, advanced as its iterations
    are counted (`watch`) and completed by its end line. Our PGD attacks use `counting_forwards` instead."""

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
        self.adversary: Any = None  # the AutoAttack being watched (see `watch`)
        self.ticks, self.planned, self.shown = 0, 0, 0.0  # iterations of the current sub-attack; fraction shown

    @contextmanager
    def watch(self, adversary: Any) -> Iterator[None]:
        """Counts the iterations of `adversary`'s sub-attacks while it runs (see the module doc)."""
        saved = []
        for owner_name, attr in set(_ITERATION_HOOKS.values()):
            owner = getattr(adversary, owner_name, None)
            if owner is not None and callable(getattr(owner, attr, None)):
                saved.append((owner, attr, attr in vars(owner), getattr(owner, attr)))
                setattr(owner, attr, _Counted(getattr(owner, attr), self._tick))
        self.adversary = adversary
        try:
            yield
        finally:
            self.adversary = None
            for owner, attr, own, original in saved:
                if own:
                    setattr(owner, attr, original)
                else:
                    delattr(owner, attr)

    @contextmanager
    def counting_forwards(self, model: Any, label: str, planned: int) -> Iterator[None]:
        """For our own PGD attacks (one batch): the bar moves with `model`'s forwards against `planned` (restarts ×
        (steps + 1): one forward per step and one check per restart), shown as `label` (e.g. 'batch 1/2')."""
        self.weights, self.total_weight = {label: 1.0}, 1.0
        self.current, self.planned, self.ticks, self.shown = label, planned, 0, 0.0
        handle = model.register_forward_pre_hook(lambda *_: self._tick())
        try:
            yield
        finally:
            handle.remove()
            self.planned = 0

    def _share(self, name: str) -> float:
        """Points of the current batch that sub-attack `name` stands for on the bar."""
        return self.batch * self.weights.get(name, 0.0) / self.total_weight

    def _tick(self) -> None:
        self.ticks += 1
        if not self.planned:
            return
        fraction = min(self.ticks / self.planned, _CAP)
        if fraction - self.shown >= _STEP:
            rate = self._running_rate()
            self.sink.status(self.task, f"{self.current} {fraction:.0%}" + (f" · robust {rate}" if rate else ""),
                             log=False)
            self._advance(self._share(self.current) * (fraction - self.shown))
            self.shown = fraction

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
            self.ticks, self.shown = 0, 0.0
            self.planned = planned_iterations(self.adversary, self.current) if self.adversary is not None else 0
            rate = self._running_rate()
            self.sink.status(self.task, f"{self.current} · robust {rate}" if rate else self.current)
        elif match := _AFTER.match(message):
            name = match.group(1).lower()
            self.robust_in_batch = float(match.group(2)) / 100 * self.batch
            done = self.shown if name == self.current else 0.0
            self._advance(self._share(name) * (1.0 - done))
            self.shown, self.planned = 0.0, 0
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
def following_autoattack(handler: AttackProgress) -> Iterator[AttackProgress]:
    """Attaches `handler` to the 'auto-attack' logger for the duration (the logger's level is set by
    `autoattack_log`, which the evaluation holds open)."""
    logger = logging.getLogger("auto-attack")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
