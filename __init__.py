"""memloss: adversarial training with memory adversarial examples (MemLoss), a Zarr memory of the last K epochs of
adversarial perturbations, and AutoAttack evaluation.

The public API, for scripts and notebooks (every `memloss` CLI command is one of these calls)::

    import memloss

    cfg = memloss.train_config(dataset="digits", k=3, epochs=2)   # per-dataset defaults, exactly as the CLI
    run = memloss.fit(cfg)                                         # trains into run.run_dir
    res = memloss.evaluate(run.run_dir, attacks="pgd20", n=100)    # AutoAttack, PGD+, CW, PGD-20
    memloss.summarize(run.run_dir / "memory.zarr")                 # what the memory store holds

This file is the repository root's `__init__.py`: the folders memstore/, trainer/ and cli/ install as
memloss.memstore, memloss.trainer and memloss.cli (docs/architecture.md). Names are imported on first use, so
`import memloss` stays fast and loads neither torch nor zarr.
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING

from memloss._lazy import lazy_exports
from memloss.trainer.common.openmp import passive_waits

# Before anything loads torch: its OpenMP threads then sleep while they wait instead of spinning on a shared CPU
# (why: trainer/common/openmp.py). The user's OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
passive_waits()

try:
    __version__: str = metadata.version("memloss")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

# Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "fit": "memloss.trainer.training.fit",
    "FitResult": "memloss.trainer.training.fit",
    "train_config": "memloss.trainer.config.defaults",
    "resolve_config": "memloss.trainer.config.defaults",
    "TrainConfig": "memloss.trainer.config.schema",
    "DataConfig": "memloss.trainer.config.schema",
    "ThreatConfig": "memloss.trainer.config.schema",
    "MethodConfig": "memloss.trainer.config.schema",
    "OptimConfig": "memloss.trainer.config.schema",
    "RunConfig": "memloss.trainer.config.schema",
    "evaluate": "memloss.trainer.evaluation.run",
    "EvalConfig": "memloss.trainer.evaluation.results",
    "EvalResult": "memloss.trainer.evaluation.results",
    "export": "memloss.trainer.evaluation.export",
    "load_model": "memloss.trainer.models.files",
    "build_model": "memloss.trainer.models.registry",
    "open_store": "memloss.memstore.store",
    "create_store": "memloss.memstore.store",
    "summarize": "memloss.memstore.inspection.summary",
    "StoreLocation": "memloss.memstore.location.options",
    "run_toy": "memloss.trainer.experiments.toy.run",
    "ToyConfig": "memloss.trainer.experiments.toy.config",
    "DemoConfig": "memloss.trainer.experiments.demo.run",
    "run_demo": "memloss.trainer.experiments.demo.run",
    "compare": "memloss.trainer.experiments.compare.run",
    "MemlossError": "memloss.errors",
}
__all__ = ["__version__", *_EXPORTS]


# Imports the module that defines a name on first access (PEP 562) and caches the attribute here.
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from memloss.errors import MemlossError
    from memloss.memstore.inspection.summary import summarize
    from memloss.memstore.location.options import StoreLocation
    from memloss.memstore.store import create_store, open_store
    from memloss.trainer.config.defaults import resolve_config, train_config
    from memloss.trainer.config.schema import (DataConfig, MethodConfig, OptimConfig, RunConfig, ThreatConfig,
                                               TrainConfig)
    from memloss.trainer.evaluation.export import export
    from memloss.trainer.evaluation.results import EvalConfig, EvalResult
    from memloss.trainer.evaluation.run import evaluate
    from memloss.trainer.experiments.compare.run import compare
    from memloss.trainer.experiments.demo.run import DemoConfig, run_demo
    from memloss.trainer.experiments.toy.config import ToyConfig
    from memloss.trainer.experiments.toy.run import run_toy
    from memloss.trainer.models.files import load_model
    from memloss.trainer.models.registry import build_model
    from memloss.trainer.training.fit import FitResult, fit
