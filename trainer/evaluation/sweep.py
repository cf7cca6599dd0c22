"""Gradient-masking checks of the MemLoss paper (Tables A.4, A.5): PGD-CE robust accuracy as the number of steps
(40/200/500/1000, 1 restart) or of restarts (1/5/10/20, 40 steps) grows. A robustness that keeps falling with more
steps or restarts means the gradients were masked; a flat curve is what a sound defense gives."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Sequence

from memloss.trainer.methods.eval_attacks import AttackSpec, EvaluationError, ThreatModel, pgd_ce_spec

# Upper bounds against typos such as steps=10000000 that would run for days.
MAX_STEPS = 100_000
MAX_RESTARTS = 1_000


class SweepKind(StrEnum):
    STEPS = "steps"
    RESTARTS = "restarts"


@dataclass(frozen=True)
class SweepSpec:
    """One sweep: `kind` steps or restarts, and the values tried (each ≥ 1, distinct)."""

    kind: SweepKind
    values: tuple[int, ...]

    def __post_init__(self) -> None:
        top = MAX_STEPS if self.kind == SweepKind.STEPS else MAX_RESTARTS
        if not self.values or any(not 1 <= v <= top for v in self.values):
            raise EvaluationError(f"--sweep {self.kind} needs values between 1 and {top}, got {list(self.values)}")
        if len(set(self.values)) != len(self.values):
            raise EvaluationError(f"--sweep {self.kind} lists a value twice: {list(self.values)}")

    def label(self, value: int) -> str:
        return f"pgd-ce {self.kind}={value}"

    def attacks(self, threat: ThreatModel) -> list[AttackSpec]:
        """PGD-CE (step 0.01, uniform start) per value: `steps` with 1 restart, `restarts` with 40 steps. All settings
        of a sweep share their random starts, so the curve shows the effect of the swept value alone (with restarts,
        a point robust to R restarts is robust to every R' < R: the curve cannot rise)."""
        key = f"pgd-ce {self.kind} sweep"
        if self.kind == SweepKind.STEPS:
            return [pgd_ce_spec(self.label(v), threat, steps=v, restarts=1, seed_key=key) for v in self.values]
        return [pgd_ce_spec(self.label(v), threat, steps=40, restarts=v, seed_key=key) for v in self.values]


def parse_sweep(text: str) -> SweepSpec:
    """'steps=40,200,500,1000' or 'restarts=1,5,10,20' into a SweepSpec."""
    kind, sep, values = text.partition("=")
    if not sep or kind.strip() not in SweepKind._value2member_map_:
        raise EvaluationError(f"--sweep must look like steps=40,200 or restarts=1,5, got {text!r}")
    try:
        numbers = tuple(int(v) for v in values.split(",") if v.strip())
    except ValueError:
        raise EvaluationError(f"--sweep values must be integers like steps=40,200, got {text!r}") from None
    return SweepSpec(SweepKind(kind.strip()), numbers)


def check_sweeps(sweeps: Sequence[SweepSpec]) -> None:
    """At most one sweep of each kind (their table rows would collide)."""
    kinds = [s.kind for s in sweeps]
    if len(set(kinds)) != len(kinds):
        raise EvaluationError("give each --sweep kind (steps, restarts) at most once")
