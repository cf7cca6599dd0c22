"""The training loop: `fit(cfg)` trains one run into its run directory; `fit(cfg, resume=RUN_DIR)` continues it.

Per epoch: the store decides the order → FFCV loader → augmentation on the device (parameters recorded) → memory
examples rebuilt from the store → attack → losses → optimizer → δ written back to the store; then PGD-20 on the test
points picks the best checkpoint, the store commits the epoch, and checkpoints, metrics and the state are saved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from memloss.errors import ConfigError
from memloss.trainer.common.threads import Threads, choose_threads, model_probe, using_threads
from memloss.trainer.config.defaults import config_from_dict, normalize_option, read_toml
from memloss.trainer.config.schema import TrainConfig
from memloss.trainer.training.checkpoint import finish_epoch, wait_landed
from memloss.trainer.training.epoch import evaluate_ema, evaluate_epoch, train_epoch
from memloss.trainer.training.logbook import DEFAULT_LOG_EVERY, Logbook, wall_clock
from memloss.trainer.training.progress import Reporter
from memloss.trainer.training.runs import create_run_dir, default_run_dir, load_state, read_config_record, read_metrics
from memloss.trainer.training.session import Session, open_session, restore


@dataclass(frozen=True)
class FitResult:
    """Where the run lives and its per-epoch records (as in metrics.jsonl)."""

    run_dir: Path
    records: list[dict[str, Any]]
    best_epoch: int
    best_robust: float
    store: str | None = None
    threads: int | None = None


def resume_config(run_dir: Path, overrides: Mapping[str, Any], config_file: Path | None = None) -> TrainConfig:
    """The stored config of a run; any given option that differs from it is refused (except --device)."""
    stored = config_from_dict(read_config_record(run_dir)["config"])
    given = {**(read_toml(config_file) if config_file else {}), **{k: v for k, v in overrides.items() if v is not None}}
    flat = {k: v for section in stored.to_dict().values() for k, v in section.items()}
    changed = [k for k, v in given.items() if k != "device" and _normalized(k, v) != _normalized(k, flat.get(k))]
    if changed:
        shown = ", ".join(f"{k} (run: {flat.get(k)!r}, given: {given[k]!r})" for k in sorted(changed))
        raise ConfigError(f"--resume refuses a changed config: {shown}; start a new run with --out instead")
    if "device" in given:
        stored = config_from_dict({**stored.to_dict(), "run": {**stored.to_dict()["run"], "device": given["device"]}})
    return stored


def _normalized(key: str, value: Any) -> Any:
    """A value in comparable form: as the config holds it, paths as strings."""
    if value is None:
        return None
    value = normalize_option(key, value)
    return str(value) if key in ("out", "store", "data_dir", "helper") else value


def _check_store_caught_up(s: Session, needed: int) -> None:
    """A resumed run needs every epoch its state has seen committed in the store (else memory would be lost)."""
    have = s.store.last_committed_epoch if s.store is not None else None
    if needed > 0 and (have is None or have < needed):
        raise ConfigError(f"the memory store has committed epoch {have} but the run's state is at epoch {needed}: "
                          f"the store was replaced or truncated; restore it or start a new run")


def _run_dir(cfg: TrainConfig, resume: Path | None) -> Path:
    if resume is not None:
        return resume
    run_dir = Path(cfg.run.out) if cfg.run.out else default_run_dir(cfg)
    create_run_dir(run_dir, cfg)
    return run_dir


def fit(cfg: TrainConfig, resume: Path | None = None, quiet: bool = False, threads: Threads = None,
        log_every: int = DEFAULT_LOG_EVERY) -> FitResult:
    """Trains `cfg` (or continues the run in `resume`) and returns the run's records.

    threads: torch's CPU threads, an int, 'auto' (the fastest count measured on the model, or $OMP_NUM_THREADS when
    set) or None (the process's setting). log_every: steps between the per-step TensorBoard scalars (0: none)."""
    run_dir = _run_dir(cfg, resume)
    s = open_session(cfg, run_dir)
    try:
        state = load_state(run_dir) if resume is not None else None
        if state is not None:
            restore(s, state)
            _check_store_caught_up(s, int(state["store_epoch"]))
        s.records = [r for r in read_metrics(run_dir) if r["epoch"] < s.start_epoch]
        choice = choose_threads(threads, _thread_probe(s), s.device)
        logbook = Logbook(run_dir, len(s.loader), s.start_epoch, log_every, lr=lambda: s.scheduler.get_last_lr()[0])
        with using_threads(choice.threads), Reporter(cfg.optim.epochs, len(s.loader), quiet, logbook) as reporter:
            reporter.message(f"run directory: {run_dir}" + (f" (resuming at epoch {s.start_epoch})" if state else ""))
            reporter.message(choice.describe())
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
    return FitResult(run_dir, s.records, s.best_epoch, s.best_robust, store=_store_url(cfg, run_dir),
                     threads=choice.threads)


def _epoch(s: Session, epoch: int, reporter: Reporter) -> None:
    """Trains, evaluates and saves one epoch; its metrics row carries the wall clock and the time of each phase. The
    store's commit lands in the background (during the evaluation and the next epoch's first steps); the epoch's
    files, the resume point last, are written once it has landed (checkpoint.py)."""
    started = time.time()
    trained = train_epoch(s, epoch, reporter)
    commit = s.store.commit_epoch(wait=False) if s.store is not None else None
    reporter.start_eval(len(s.eval_y), models=2 if s.ema is not None else 1)
    t0 = time.perf_counter()
    evaluated = {**evaluate_epoch(s, epoch, on_batch=reporter.eval_step),
                 **evaluate_ema(s, epoch, on_batch=reporter.eval_step)}
    eval_seconds = time.perf_counter() - t0
    record = {"epoch": epoch, **trained, **evaluated, "eval_seconds": eval_seconds,
              "store_commit_wait_s": wait_landed(s), "lr": s.scheduler.get_last_lr()[0]}
    record["epoch_total_seconds"] = time.time() - started
    record.update(wall_clock(started))
    finish_epoch(s, epoch, record, commit)
    reporter.end_epoch(record)


def _thread_probe(s: Session) -> Callable[[], None]:
    """One forward and backward of the model on a training-sized batch of test points (for `threads='auto'`)."""
    n = min(s.cfg.data.batch_size, len(s.eval_y))
    x = s.eval_x[:n].to(s.device).float().div_(255.0)
    return model_probe(s.model, x, s.eval_y[:n].to(s.device))


def _store_url(cfg: TrainConfig, run_dir: Path) -> str | None:
    return (cfg.run.store or str(run_dir / "memory.zarr")) if cfg.uses_store else None
