"""The training loop: `fit(cfg)` trains one run into its run directory; `fit(cfg, resume=RUN_DIR)` continues it.

Per epoch: the store decides the order → FFCV loader → augmentation on the device (parameters recorded) → memory
examples rebuilt from the store → attack → losses → optimizer → δ written back to the store; then PGD-20 on the test
points picks the best checkpoint, the store commits the epoch, and checkpoints, metrics and the state are saved.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from memloss.errors import ConfigError
from memloss.memstore.location.options import checked_location
from memloss.memstore.integrity.repair import dropped_epochs, verify_committed
from memloss.trainer.common.devices import resolve_device
from memloss.trainer.common.precision import check_precision, deterministic_mode
from memloss.trainer.common.threads import Threads, choose_threads, model_probe, parse_threads, using_threads
from memloss.trainer.config.schema import TrainConfig
from memloss.trainer.data.holdout import write_heldout_record
from memloss.trainer.distributed import context as ranks
from memloss.trainer.distributed.state import check_world, world_fields
from memloss.trainer.distributed.store import settle_epoch
from memloss.trainer.training.checkpoint import finish_epoch, wait_landed
from memloss.trainer.training.epoch import evaluate_ema, evaluate_epoch, train_epoch
from memloss.trainer.training.logbook import DEFAULT_LOG_EVERY, Logbook, wall_clock
from memloss.trainer.training.progress import Reporter
from memloss.trainer.training.resume import (
    absolute, check_store_caught_up, finished_message, require_store, resolved, resume_config, with_paths,
)
from memloss.trainer.training.runs import (
    cleanup_notes, default_run_dir, load_state, read_metrics, start_run_dir, write_config_record,
)
from memloss.trainer.training.resume_state import rank_part, restore
from memloss.trainer.training.session import Session, open_session
from memloss.trainer.training.store_setup import reopen_store

__all__ = ["FitResult", "fit", "resume_config"]


@dataclass(frozen=True)
class FitResult:
    """Where the run lives and its per-epoch records (as in metrics.jsonl)."""

    run_dir: Path
    records: list[dict[str, Any]]
    best_epoch: int
    best_robust: float
    store: str | None = None
    threads: int | None = None


def _prepare(cfg: TrainConfig, resume: Path | None) -> tuple[TrainConfig, Path, list[str]]:
    """(config with absolute paths, run directory, notes): a new run's directory is made ready for it (by rank 0
    under torchrun; the other ranks take its path)."""
    if resume is not None:
        run_dir = Path(ranks.share(absolute(resume)))
        notes = ranks.on_main(lambda: cleanup_notes(run_dir)) or []
        return with_paths(cfg, run_dir), run_dir, notes
    run_dir = Path(ranks.share(absolute(cfg.run.out or default_run_dir(cfg))))
    notes = ranks.on_main(lambda: start_run_dir(run_dir)) or []  # a refusal ends every rank with its one line
    return with_paths(cfg, run_dir), run_dir, notes


def _store_notes(cfg: TrainConfig) -> list[str]:
    if cfg.run.store and cfg.run.store.startswith("memory://"):
        return [f"the memory store {cfg.run.store} lives in this process only: this run cannot be resumed after "
                "it stops; use a path or an object store URL to make it resumable"]
    return []


def _continue(s: Session, state: dict[str, Any] | None) -> list[str]:
    """Loads the resume point into the session after checking the store still holds its memory; notes."""
    if state is None:
        return []
    verify_committed(s.store)  # damaged memory stops the resume before anything is written
    notes = restore(s, state)
    note = check_store_caught_up(s.store, int(state["store_epoch"]), dropped_epochs(s.store), s.cfg.run.store)
    return notes + ([note] if note else [])


def fit(cfg: TrainConfig, resume: Path | None = None, quiet: bool = False, threads: Threads = None,
        log_every: int = DEFAULT_LOG_EVERY, store_options: Mapping[str, Any] | None = None) -> FitResult:
    """Trains `cfg` (or continues the run in `resume`) and returns the run's records.

    threads: torch's CPU threads, an int, 'auto' (the fastest count measured on the model, or $OMP_NUM_THREADS when
    set) or None (the process's setting). log_every: steps between the per-step TensorBoard scalars (0: none).
    store_options: fsspec storage options of a store URL (e.g. {"endpoint_url": ...}), on top of
    $MEMLOSS_STORE_OPTIONS; never saved with the run (a resume gets them again)."""
    if log_every < 0:  # checked before anything is written
        raise ConfigError(f"--log-every must be ≥ 0 steps (0: per-epoch scalars only), got {log_every}")
    checked_location(cfg.run.store, store_options)  # a bad URL, option or bucket: one line, before anything is written
    threads = parse_threads(threads)
    device = resolve_device(cfg.run.device)
    check_precision(cfg.run.precision, device)  # bf16 off CUDA: one line, before anything is written
    # --deterministic is set up before CUDA is first used (cuBLAS reads its workspace setting then).
    with deterministic_mode(cfg.run.deterministic):
        ctx = ranks.start(device)  # torchrun: join the process group (else one process)
        try:
            return _fit(cfg, resume, quiet or not ctx.main, threads, log_every, store_options)
        finally:
            ranks.stop()


def _fit(cfg: TrainConfig, resume: Path | None, quiet: bool, threads: Threads, log_every: int,
         store_options: Mapping[str, Any] | None) -> FitResult:
    cfg, run_dir, notes = _prepare(cfg, resume)
    state = load_state(run_dir) if resume is not None else None
    if state is not None:
        check_world(state)
    if state is not None and (done := finished_message(run_dir, cfg, state)) is not None:
        if not quiet:
            print(done, flush=True)
        return FitResult(run_dir, read_metrics(run_dir), int(state["best_epoch"]), float(state["best_robust"]),
                         store=cfg.run.store)
    if state is not None:
        require_store(cfg.run.store, int(state["store_epoch"]), store_options)
    s = open_session(cfg, run_dir, fresh=resume is None, store_options=store_options)
    choice = None
    try:
        s.cfg = cfg = resolved(cfg, s.device, cfg.run.model or s.info.default_arch, len(s.eval_y))
        if resume is None and ranks.current().main:
            write_config_record(run_dir, cfg)
            if s.data.held_out is not None:
                write_heldout_record(run_dir, s.data.held_out)  # which training images select the checkpoints
        notes += [*_store_notes(cfg), *s.notes, *_continue(s, state)]
        s.records = [r for r in read_metrics(run_dir) if r["epoch"] < s.start_epoch]
        choice = choose_threads(threads, _thread_probe(s), s.device)
        logbook = (Logbook(run_dir, len(s.loader), s.start_epoch, log_every, lr=lambda: s.scheduler.get_last_lr()[0])
                   if ranks.current().main else None)
        with using_threads(choice.threads), Reporter(cfg.optim.epochs, len(s.loader), quiet, logbook) as reporter:
            for note in notes:
                reporter.message(note)
            reporter.message(f"run directory: {run_dir}" + (f" (resuming at epoch {s.start_epoch})" if state else ""))
            reporter.message(choice.describe())
            reporter.message(numerics_line(cfg, s.device))
            for epoch in range(s.start_epoch, cfg.optim.epochs + 1):
                _epoch(s, epoch, reporter)
            wait_landed(s)  # the last epoch's commit and files
    finally:
        if s.ahead is not None:
            s.ahead.close()
        s.committer.shutdown(wait=True)
        if s.store is not None:
            s.store.close()
        s.loader.close()
    return FitResult(run_dir, s.records, s.best_epoch, s.best_robust, store=cfg.run.store,
                     threads=choice.threads if choice is not None else None)


def _epoch(s: Session, epoch: int, reporter: Reporter) -> None:
    """Trains, evaluates and saves one epoch; its metrics row carries the wall clock and the time of each phase. The
    store's commit lands in the background (during the evaluation and the next epoch's first steps); the epoch's
    files, the resume point last, are written once it has landed (checkpoint.py)."""
    started = time.time()
    trained = train_epoch(s, epoch, reporter)
    writes = s.store is not None and not s.store.read_only  # under torchrun rank 0 commits for every rank
    commit = s.store.commit_epoch(wait=False) if writes else None
    reporter.start_eval(len(s.eval_y), models=2 if s.ema is not None else 1)
    t0 = time.perf_counter()
    evaluated = {**evaluate_epoch(s, epoch, on_batch=reporter.eval_step),
                 **evaluate_ema(s, epoch, on_batch=reporter.eval_step)}
    eval_seconds = time.perf_counter() - t0
    record = {"epoch": epoch, **trained, **evaluated, "eval_seconds": eval_seconds,
              "store_commit_wait_s": wait_landed(s), "lr": s.scheduler.get_last_lr()[0]}
    record["epoch_total_seconds"] = time.time() - started
    record.update(wall_clock(started))
    if ranks.current().world > 1 and s.store is not None:  # the other ranks see the committed epoch (its cost)
        t1 = time.perf_counter()
        settle_epoch(commit, lambda: reopen_store(s))
        record["rank_sync_s"] = time.perf_counter() - t1
    s.rank_states = world_fields(rank_part(s))  # torchrun: every rank's random streams, gathered to rank 0
    if ranks.current().main:
        finish_epoch(s, epoch, record, commit)
    reporter.end_epoch(record)


def numerics_line(cfg: TrainConfig, device: Any) -> str:
    """The run's numeric mode in one line: training precision, the selection's, determinism."""
    exact = ("bit-identical resumes" if cfg.run.deterministic or device.type == "cpu"
             else "resumes not bit-identical on GPU (use --deterministic)")
    return (f"precision: {cfg.run.precision} training on {device}; selection (clean, PGD-20) and forgetting "
            f"judgement in fp32; deterministic: {'on' if cfg.run.deterministic else 'off'} ({exact})")


def _thread_probe(s: Session) -> Callable[[], None]:
    """One forward and backward of the model on a training-sized batch of test points (for `threads='auto'`)."""
    n = min(s.cfg.data.batch_size, len(s.eval_y))
    x = s.eval_x[:n].to(s.device).float().div_(255.0)
    return model_probe(s.model, x, s.eval_y[:n].to(s.device))
