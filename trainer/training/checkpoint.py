"""The end-of-epoch files (metrics.jsonl, last/best weights, the weight average's with --ema and, last, the resume
point last.state.pt), written only once the store's commit of the epoch has landed, while the next epoch trains.

At the end of epoch e the files are snapshotted as bytes on the training thread; the session's committer thread
waits for the store's commit of e and then writes them, in that order, atomically. So a run killed at any moment
resumes from a state whose epoch the store holds, and the commit costs the training loop nothing unless it is still
running when epoch e+1 ends (that wait is `store_commit_wait_s` in epoch e+1's record).
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from memloss.trainer.common.files import atomic_write_bytes
from memloss.trainer.data.registry import info_meta
from memloss.trainer.models.files import model_bytes
from memloss.trainer.training.ema import EMA_BEST_WEIGHTS, EMA_LAST_WEIGHTS, WeightAverage
from memloss.trainer.training.runs import BEST_WEIGHTS, LAST_WEIGHTS, METRICS_FILE, STATE_FILE, metrics_bytes, state_bytes
from memloss.trainer.training.selection import selection
from memloss.trainer.training.resume_state import training_state
from memloss.trainer.training.session import Session


def model_meta(s: Session, epoch: int) -> dict[str, str]:
    """The metadata of a model file of this run after `epoch`."""
    c = s.cfg
    return {"arch": c.run.model or s.info.default_arch, "dataset": c.data.dataset,
            "resolution": str(c.data.resolution or ""), "num_classes": str(s.info.num_classes),
            "shape": ",".join(str(v) for v in s.info.shape),
            "norm": c.threat.norm, "eps": c.threat.eps, "method": c.method.method, "k": str(c.method.k),
            "memloss_variant": c.method.memloss_variant, "epoch": str(epoch), "seed": str(c.run.seed),
            **info_meta(s.info)}


def wait_landed(s: Session) -> float:
    """Waits until the previous epoch's files are written (re-raising the commit's or the write's error); returns
    the seconds waited."""
    t0 = time.perf_counter()
    if s.landing is not None:
        landing, s.landing = s.landing, None
        landing.result()
    return time.perf_counter() - t0


def finish_epoch(s: Session, epoch: int, record: dict[str, Any], commit: Future[None] | None) -> None:
    """Snapshots the epoch's files now and writes them once `commit` (the store's, None without a store) landed.
    Call `wait_landed` first (the previous epoch's files; its wait is the record's `store_commit_wait_s`)."""
    s.records = [r for r in s.records if r["epoch"] < epoch] + [record]
    meta = model_meta(s, epoch)
    files = [(s.run_dir / METRICS_FILE, metrics_bytes(s.records)), (s.run_dir / LAST_WEIGHTS, model_bytes(s.model, meta))]
    key = selection(s.cfg).robust  # test_pgd20_acc, or val_<attack>_acc with --val-split
    if record[key] >= s.best_robust:
        s.best_robust, s.best_epoch = record[key], epoch
        files.append((s.run_dir / BEST_WEIGHTS, files[-1][1]))
    if s.ema is not None:
        files += _ema_files(s, s.ema, epoch, record)
    files.append((s.run_dir / STATE_FILE, state_bytes(training_state(s, epoch))))
    s.landing = s.committer.submit(_land, files, commit)


def _ema_files(s: Session, ema: WeightAverage, epoch: int, record: dict[str, Any]) -> list[tuple[Path, bytes]]:
    """last-ema.safetensors, and best-ema.safetensors selected on the average's own selection accuracy."""
    data = model_bytes(ema.model, {**model_meta(s, epoch), "weights": "ema", "ema_decay": repr(ema.decay)})
    files = [(s.run_dir / EMA_LAST_WEIGHTS, data)]
    key = "ema_" + selection(s.cfg).robust
    if record[key] >= ema.best_robust:
        ema.best_robust, ema.best_epoch = record[key], epoch
        files.append((s.run_dir / EMA_BEST_WEIGHTS, data))
    return files


def _land(files: list[tuple[Path, bytes]], commit: Future[None] | None) -> None:
    """Runs on the committer thread: the store's commit first, then the files in order (the resume point last)."""
    if commit is not None:
        commit.result()
    for path, data in files:
        atomic_write_bytes(path, data)
