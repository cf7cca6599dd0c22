"""The evaluation's configuration (`EvalConfig`) and its results (`AttackResult`, `EvalResult`, JSON-able). Progress
goes to a `memloss.trainer.common.progress.ProgressSink`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memloss.trainer.common.threads import ThreadChoice, Threads, parse_threads
from memloss.trainer.evaluation.sweep import SweepSpec, check_sweeps
from memloss.trainer.methods.eval_attacks import EvaluationError, ThreatModel, check_norm, parse_attacks, parse_eps


@dataclass(frozen=True)
class EvalConfig:
    """What `evaluate` runs. norm/eps None = the threat model stored in the checkpoint; eps is a string, echoed
    exactly ('8/255', '0.1'). n None = the whole test set. out None = no results file, no state file, no resume;
    an existing `out` is refused unless `overwrite`.
    device 'auto' = CUDA when available. threads: torch's CPU threads, an int, 'auto' (the fastest count measured
    by a short probe, or $OMP_NUM_THREADS when set) or None (the process's current setting)."""

    checkpoint: Path
    attacks: tuple[str, ...] | str = ("aa", "pgd+", "cw")
    sweeps: tuple[SweepSpec, ...] = ()
    n: int | None = None
    norm: str | None = None
    eps: str | None = None
    batch_size: int = 256
    seed: int = 0
    device: str = "auto"
    out: Path | None = None
    data_dir: Path | None = None
    plot: Path | None = None
    threads: Threads = None
    tf32: bool = False  # CUDA matmuls/convolutions in TF32; default IEEE fp32 (an attack must not be weakened)
    overwrite: bool = False  # replace an existing results file at `out` (else refused, as `export` refuses)

    def __post_init__(self) -> None:
        object.__setattr__(self, "threads", parse_threads(self.threads))
        object.__setattr__(self, "attacks", tuple(str(a) for a in parse_attacks(self.attacks)))
        check_sweeps(self.sweeps)
        if not self.attacks and not self.sweeps:
            raise EvaluationError("nothing to run: give --attacks (e.g. aa, pgd+, cw, pgd20, all) or --sweep")
        if self.n is not None and self.n < 1:
            raise EvaluationError(f"--n must be ≥ 1, got {self.n}")
        if self.batch_size < 1:
            raise EvaluationError(f"--batch-size must be ≥ 1, got {self.batch_size}")
        if self.norm is not None:
            check_norm(self.norm)
        if self.eps is not None and parse_eps(self.eps) > 1 and self.norm != "L2":
            raise EvaluationError(f"--eps {self.eps} is above 1, but pixels are on the [0,1] scale; did you mean "
                                  f"{self.eps}/255?")
        if not 0 <= self.seed <= 2**32 - 1:
            raise EvaluationError(f"--seed must be in [0, {2**32 - 1}], got {self.seed}")
        if self.out is not None and Path(self.out).is_dir():
            raise EvaluationError(f"--out {self.out} is a directory; give the path of the results JSON file")
        if self.out is not None and Path(self.out).exists() and not self.overwrite:
            raise EvaluationError(f"--out {self.out} already holds a result; pass --overwrite to replace it, or "
                                  "choose another --out")
        if self.plot is not None and not self.sweeps:
            raise EvaluationError("--plot draws the --sweep curves; add --sweep steps=... or restarts=...")


@dataclass(frozen=True, eq=False)
class AttackResult:
    """One attack over the evaluated points. robust: bool [n] (numpy), correct on the attack's x_adv AND on the
    clean point. seconds: attack time summed over batches (resumed batches keep their recorded time).
    max_perturbation: largest ‖x_adv − x‖ in the threat model's norm; x_min/x_max: range of x_adv."""

    name: str
    params: dict[str, Any]
    robust: np.ndarray
    seconds: float
    max_perturbation: float
    x_min: float
    x_max: float

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust.mean())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params, "robust_accuracy": self.robust_accuracy,
                "n_robust": int(self.robust.sum()), "seconds": round(self.seconds, 3),
                "max_perturbation": self.max_perturbation, "x_min": self.x_min, "x_max": self.x_max}


@dataclass(frozen=True, eq=False)
class EvalResult:
    """Everything `memloss evaluate` reports. clean_correct: bool [n]; worst_case: bool [n], robust to every attack
    and sweep setting run; warnings: suspicious-model findings (probability outputs, vanishing input gradients)."""

    checkpoint: str
    checkpoint_sha256: str
    dataset: str
    arch: str
    threat: ThreatModel
    n: int
    seed: int
    batch_size: int
    device: str
    clean_correct: np.ndarray
    attacks: tuple[AttackResult, ...]
    sweeps: dict[str, tuple[AttackResult, ...]]
    warnings: tuple[str, ...]
    versions: dict[str, str]
    resumed_batches: int = 0
    files: dict[str, str] = field(default_factory=dict)
    threads: ThreadChoice | None = None
    tf32: bool = False  # whether the attacks ran with TF32 allowed on CUDA (False: IEEE fp32)

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.mean())

    @property
    def worst_case(self) -> np.ndarray:
        worst = self.clean_correct.copy()
        for result in self.all_attacks():
            worst &= result.robust
        return worst

    @property
    def worst_case_accuracy(self) -> float:
        return float(self.worst_case.mean())

    def all_attacks(self) -> list[AttackResult]:
        return [*self.attacks, *(r for rows in self.sweeps.values() for r in rows)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint, "checkpoint_sha256": self.checkpoint_sha256, "dataset": self.dataset,
            "arch": self.arch, "norm": self.threat.norm, "eps": self.threat.eps_text, "eps_value": self.threat.eps,
            "n": self.n, "seed": self.seed, "batch_size": self.batch_size, "device": self.device,
            "clean_accuracy": self.clean_accuracy, "worst_case_accuracy": self.worst_case_accuracy,
            "attacks": [r.to_dict() for r in self.attacks],
            "sweeps": {k: [r.to_dict() for r in rows] for k, rows in self.sweeps.items()},
            "warnings": list(self.warnings), "suspicious": bool(self.warnings), "versions": self.versions,
            "resumed_batches": self.resumed_batches, "files": self.files,
            "threads": self.threads.threads if self.threads else None,
            "threads_chosen_by": self.threads.how if self.threads else None,
            "tf32": self.tf32,
        }
