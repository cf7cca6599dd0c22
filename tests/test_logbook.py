"""TensorBoard's per-step scalars count steps over the whole run: an epoch shorter than --log-every still gets them,
at global steps, with the loss averaged over the steps since the last point and samples/s over training time only
(read back from the event file with TensorBoard's own reader)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from memloss.trainer.training.logbook import Logbook


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def run_epochs(run_dir: Path, epochs: int, steps: int, log_every: int, start_epoch: int = 1) -> None:
    """`epochs` epochs of `steps` steps of 10 samples, each step's loss = its global step number; between epochs a
    0.3 s pause stands for the evaluation."""
    book = Logbook(run_dir, steps, start_epoch=start_epoch, log_every=log_every, lr=lambda: 0.1)
    for epoch in range(start_epoch, start_epoch + epochs):
        book.start_epoch()
        for _ in range(steps):
            time.sleep(0.01)
            book.step(torch.tensor(float(book.global_step + 1)), 10)
        time.sleep(0.3)
        book.epoch({"epoch": epoch, "loss": 1.0 / epoch, "time": time.time()})
    book.close()


def test_per_step_scalars_appear_when_epochs_are_shorter_than_log_every(tmp_path: Path) -> None:
    run_epochs(tmp_path, epochs=4, steps=3, log_every=5)
    got = scalars(tmp_path)
    assert [step for step, _ in got["step/loss"]] == [5, 10]
    assert [round(v, 4) for _, v in got["step/loss"]] == [3.0, 8.0]  # mean of steps 1..5, then 6..10
    assert [step for step, _ in got["step/lr"]] == [5, 10]
    # 50 samples in about 0.05 s of steps: the 0.3 s pauses between epochs are not counted.
    assert all(v > 300 for _, v in got["step/samples_per_s"])
    assert [step for step, _ in got["train/loss"]] == [3, 6, 9, 12]


def test_a_resumed_run_continues_the_global_step(tmp_path: Path) -> None:
    run_epochs(tmp_path, epochs=2, steps=3, log_every=4)
    run_epochs(tmp_path, epochs=2, steps=3, log_every=4, start_epoch=3)
    assert [step for step, _ in scalars(tmp_path)["step/loss"]] == [4, 8, 12]
