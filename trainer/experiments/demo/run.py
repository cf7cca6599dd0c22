"""`memloss demo`: TRADES vs MemLoss+TRADES (K = 3) on the bundled digits data, same seed and budget, evaluated
with AutoAttack, PGD+ and CW, with the memory store inspected; one comparison table and PNG plots.

Everything runs offline on a CPU. The numbers are whatever the runs give: nothing here is tuned to make either
method win.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from memloss.errors import ConfigError
from memloss.trainer.common.progress import progress_display
from memloss.trainer.common.threads import Threads, parse_threads
from memloss.trainer.config.defaults import resolve_config
from memloss.trainer.training.fit import FitResult, fit

RUNS = (("TRADES", 0), ("MemLoss+TRADES", None))  # None: the demo's K


@dataclass(frozen=True)
class DemoConfig:
    """epochs/eval_n/attacks: the shared budget of both runs; quick: a CI-sized version (2 epochs, 48 points);
    threads: torch's CPU threads for training and evaluation (an int, or 'auto': measured by a short probe)."""

    out: Path | None = None
    epochs: int = 8
    k: int = 3
    eval_n: int | None = None
    attacks: tuple[str, ...] = ("aa", "pgd+", "cw")
    seed: int = 0
    data_dir: str | None = None
    quick: bool = False
    threads: Threads = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "threads", parse_threads(self.threads))
        if self.epochs < 1 or self.k < 1:
            raise ConfigError(f"demo needs epochs ≥ 1 and k ≥ 1, got epochs={self.epochs}, k={self.k}")

    @property
    def budget(self) -> tuple[int, int | None]:
        """(epochs, test points) actually used."""
        return (2, 48) if self.quick else (self.epochs, self.eval_n)

    def out_dir(self) -> Path:
        return self.out or Path("runs") / f"demo-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


@dataclass
class DemoRun:
    """One trained and evaluated run of the demo."""

    name: str
    k: int
    fit: FitResult
    evaluation: Any
    store: dict[str, Any]
    train_seconds: float
    eval_seconds: float


@dataclass
class DemoResult:
    out: Path
    runs: list[DemoRun] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)


def _train(cfg: DemoConfig, out: Path, name: str, k: int) -> tuple[FitResult, float]:
    epochs, _ = cfg.budget
    tcfg = resolve_config({"dataset": "digits", "method": "trades", "k": k, "epochs": epochs, "seed": cfg.seed,
                           "track_forgetting": True, "out": str(out / name), "data_dir": cfg.data_dir})
    t0 = time.perf_counter()
    result = fit(tcfg, threads=cfg.threads)
    return result, time.perf_counter() - t0


def _evaluate(cfg: DemoConfig, run_dir: Path) -> tuple[Any, float]:
    from memloss.trainer.evaluation.results import EvalConfig
    from memloss.trainer.evaluation.run import evaluate

    _, n = cfg.budget
    t0 = time.perf_counter()
    data_dir = Path(cfg.data_dir) if cfg.data_dir else None
    eval_cfg = EvalConfig(run_dir / "best.safetensors", attacks=cfg.attacks, n=n, seed=cfg.seed,
                          out=run_dir / "eval.json", data_dir=data_dir, threads=cfg.threads)
    with progress_display() as sink:
        result = evaluate(eval_cfg, sink)
    return result, time.perf_counter() - t0


def _store_summary(run_dir: Path) -> dict[str, Any]:
    from memloss.memstore.inspection.summary import summarize
    from memloss.trainer.plots.store import plot_store

    store = run_dir / "memory.zarr"
    plot_store(store, run_dir / "store.png", title=f"memory store of the demo run {run_dir.name}")
    return summarize(store)


def run_demo(cfg: DemoConfig) -> DemoResult:
    """Trains, evaluates and inspects both runs into cfg.out_dir(), writes demo.json and the plots."""
    result = DemoResult(cfg.out_dir())
    _run_all(cfg, result)
    return result


def _run_all(cfg: DemoConfig, result: DemoResult) -> None:
    from memloss.trainer.experiments.demo.report import plot_curves, summary_rows

    for label, k in RUNS:
        k = cfg.k if k is None else k
        name = "trades" if k == 0 else f"memloss-k{k}"
        fitted, train_s = _train(cfg, result.out, name, k)
        evaluation, eval_s = _evaluate(cfg, fitted.run_dir)
        result.runs.append(DemoRun(label, k, fitted, evaluation, _store_summary(fitted.run_dir), train_s, eval_s))
    result.plots = [plot_curves(result.runs, result.out / "curves.png"),
                    *(r.fit.run_dir / "store.png" for r in result.runs)]
    rows = summary_rows(result.runs)
    (result.out / "demo.json").write_text(json.dumps({"config": _config_dict(cfg), "rows": rows}, indent=2))


def _config_dict(cfg: DemoConfig) -> dict[str, Any]:
    epochs, n = cfg.budget
    return {"epochs": epochs, "k": cfg.k, "eval_n": n, "attacks": list(cfg.attacks), "seed": cfg.seed,
            "quick": cfg.quick, "threads": cfg.threads}
