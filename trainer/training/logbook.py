"""The run's logs besides metrics.jsonl: TensorBoard event files in the run directory (so `tensorboard --logdir
runs/` shows every run), and the wall-clock fields of each metrics.jsonl row.

Scalars, all against the global optimizer step (epoch e ends at step e·steps_per_epoch):
- per epoch: every number of the epoch's metrics record, grouped `train/`, `test/`, `memory/`, `store/`, `time/`;
- every `log_every` global steps (steps counted over the whole run, so an epoch shorter than `log_every` still
  gets them): `step/loss` (the mean over the steps since the last point), `step/lr`, `step/samples_per_s` (over
  their training time: the evaluations between epochs are left out).
The step loss is summed on the device and read once per `log_every` steps, never per step. A resumed run purges
the events after its resume point, so a crashed epoch is not shown twice.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from memloss.errors import MemlossError

DEFAULT_LOG_EVERY = 50  # steps; the epoch loop already reads a device flag every 50 steps (NaN check)
_GROUPS = (("ema_test_", "test/ema_"), ("test_", "test/"), ("eval_", "test/"), ("mem_", "memory/"), ("forget", "memory/"),
           ("learn_at_visit", "memory/"), ("old_error", "memory/"), ("monitor_rows", "memory/"), ("store_", "store/"))
_TIME_KEYS = ("epoch_seconds", "eval_seconds", "epoch_total_seconds", "samples_per_s", "rank_sync_s")
_NOT_SCALARS = ("epoch", "time")


def tag_of(key: str) -> str:
    """The TensorBoard tag of a metrics.jsonl key, e.g. test_pgd20_acc → test/pgd20_acc, loss → train/loss."""
    if key in _TIME_KEYS:
        return f"time/{key}"
    for prefix, group in _GROUPS:
        if key.startswith(prefix):
            return group + (key[len(prefix):] if prefix.endswith("_") else key)
    return f"train/{key}"


def wall_clock(started: float) -> dict[str, Any]:
    """The wall-clock fields of a metrics.jsonl row: `time` (Unix seconds at the end of the epoch, as TensorBoard's
    wall_time), `timestamp` (the same, ISO 8601 UTC) and `started` (the epoch's start, ISO 8601 UTC)."""
    now = time.time()
    iso = lambda t: datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")  # noqa: E731
    return {"time": round(now, 3), "timestamp": iso(now), "started": iso(started)}


class Logbook:
    """Writes a run's TensorBoard events. `lr` returns the current learning rate (a host float)."""

    def __init__(self, run_dir: Path, steps_per_epoch: int, start_epoch: int = 1,
                 log_every: int = DEFAULT_LOG_EVERY, lr: Callable[[], float] | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise MemlossError("the tensorboard package is missing; install it with pip install tensorboard") from None
        if log_every < 0:
            raise MemlossError(f"--log-every must be ≥ 0 steps (0: per-epoch scalars only), got {log_every}")
        self.steps_per_epoch, self.log_every, self.lr = steps_per_epoch, log_every, lr
        first_step = (start_epoch - 1) * steps_per_epoch + 1
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=first_step if start_epoch > 1 else None)
        self.global_step = first_step - 1
        self._loss_sum: torch.Tensor | None = None
        self._steps, self._samples = 0, 0  # since the last per-step point (across epochs)
        self._trained_s, self._t0 = 0.0, time.perf_counter()  # training seconds before _t0; _t0: this stretch's start
        self._last_step = self._t0

    def step(self, loss: torch.Tensor | None, samples: int) -> None:
        """After one optimizer step: `loss` the step's detached loss (a device scalar), `samples` its batch size."""
        self.global_step += 1
        self._steps += 1
        self._samples += samples
        self._last_step = time.perf_counter()
        if loss is not None:
            self._loss_sum = loss.float() if self._loss_sum is None else self._loss_sum + loss.float()
        if self.log_every and self.global_step % self.log_every == 0:
            self._flush_steps()

    def _flush_steps(self) -> None:
        now = time.perf_counter()
        if self._loss_sum is not None:
            # The logging boundary: one read of the device sum per log_every steps.
            self.writer.add_scalar("step/loss", float(self._loss_sum) / self._steps, self.global_step)
        if self.lr is not None:
            self.writer.add_scalar("step/lr", self.lr(), self.global_step)
        seconds = self._trained_s + (now - self._t0)
        self.writer.add_scalar("step/samples_per_s", self._samples / max(seconds, 1e-9), self.global_step)
        self._loss_sum, self._steps, self._samples, self._trained_s, self._t0 = None, 0, 0, 0.0, now

    def start_epoch(self) -> None:
        """Keeps the steps since the last per-step point; their training time stops at the previous epoch's last
        step (the evaluation between epochs is not training time)."""
        now = time.perf_counter()
        if self._steps:
            self._trained_s += max(self._last_step - self._t0, 0.0)
        self._t0 = self._last_step = now

    def epoch(self, record: dict[str, Any]) -> None:
        """Every number of an epoch's metrics record, at the epoch's last global step; then flush to disk."""
        step = int(record["epoch"]) * self.steps_per_epoch
        wall = record.get("time")
        self.writer.add_scalar("epoch", record["epoch"], step, walltime=wall)
        for key, value in record.items():
            if key not in _NOT_SCALARS and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(tag_of(key), value, step, walltime=wall)
            elif key.endswith("_by_age") and isinstance(value, list):  # the forgetting monitor, per memory age
                for age, v in enumerate(value, start=1):
                    if v is not None:
                        self.writer.add_scalar(f"{tag_of(key)}/age{age}", v, step, walltime=wall)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
