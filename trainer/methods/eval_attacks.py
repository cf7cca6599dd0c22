"""The evaluation attacks of `memloss evaluate` (algorithms.md, "Evaluation" and Part B §7), as a registry of
frozen `AttackSpec`s run batch by batch.

- `aa`: AutoAttack standard (apgd-ce, apgd-t, fab-t, square) through the official attack code (PyPI
  `pyautoattack`, import name `pyautoattack`); AutoAttack already keeps the per-point worst case of its 4 attacks.
- `apgd-ce`, `apgd-t`, `fab-t`, `square`: one sub-attack of the standard version alone, with the standard version's
  settings (as AutoAttack's own `run_standard_evaluation_individual` runs them), to study gradient masking.
- `aa-rand`: AutoAttack's `rand` version for randomized defenses (apgd-ce and apgd-dlr, 20 EOT iterations).
- `pgd+`: PGD-CE, 40 steps of 0.01 (L2: 30/255), uniform start, 5 restarts; robust only if every restart fails.
- `cw`: the same PGD on the CW margin loss, 1 restart.
- `pgd20`: PGD-CE, 20 steps of 2/255 (L2: 15/255, the paper's L2 training step), uniform start: the early-stopping
  attack.
Every attack sees the model in eval mode, inputs in [0,1] and the model's own normalization.
"""

from __future__ import annotations

import contextlib
import zlib
from dataclasses import asdict, dataclass
from enum import StrEnum
from fractions import Fraction
from typing import Any, Callable, ContextManager

import torch
from torch import nn

from memloss.errors import MemlossError
from memloss.trainer.common.units import parse_fraction
from memloss.trainer.methods.modes import frozen_eval
from memloss.trainer.methods.pgd import pgd_robust
from memloss.trainer.methods.threat import PGDConfig

NORMS = ("Linf", "L2")
Watch = Callable[[Any], ContextManager[None]]  # AutoAttack object → a context held around its run


class EvaluationError(MemlossError):
    """Bad input to `memloss evaluate` or `memloss export`: an unknown attack, a bad threat model, a missing or foreign
    checkpoint, a state file of other settings."""


class AttackName(StrEnum):
    AA = "aa"
    PGD_PLUS = "pgd+"
    CW = "cw"
    PGD20 = "pgd20"
    APGD_CE = "apgd-ce"
    APGD_T = "apgd-t"
    FAB_T = "fab-t"
    SQUARE = "square"
    AA_RAND = "aa-rand"


# `--attacks all`: the paper's evaluation and the early-stopping attack (the single AutoAttack attacks are in aa).
ALL_ATTACKS = (AttackName.AA, AttackName.PGD_PLUS, AttackName.CW, AttackName.PGD20)
STANDARD_SUBATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")
RAND_SUBATTACKS = ("apgd-ce", "apgd-dlr")


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise EvaluationError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
    return norm


def parse_eps(text: str) -> Fraction:
    """'8/255', '0.1' or '0.03137' as an exact Fraction > 0."""
    try:
        value = parse_fraction(text, "eps")
    except MemlossError as err:
        raise EvaluationError(str(err)) from None
    if value <= 0:
        raise EvaluationError(f"eps must be > 0, got {text}; e.g. --eps 8/255")
    return value


@dataclass(frozen=True)
class ThreatModel:
    """The threat model of an evaluation. `eps_text` is echoed exactly as given ('8/255', '0.1'); `eps` is its value
    on the [0,1] pixel scale."""

    norm: str
    eps_text: str

    def __post_init__(self) -> None:
        check_norm(self.norm)
        parse_eps(self.eps_text)

    @property
    def eps(self) -> float:
        return float(parse_eps(self.eps_text))


@dataclass(frozen=True)
class AttackSpec:
    """One evaluation attack: `family` 'pgd' (our PGD loop) or 'autoattack' (the package). `name` labels the table
    row and the state file. step_size is on the [0,1] scale (an L2 length for L2); unused fields are None.
    seed_key (default: name) picks the random starts: attacks sharing it start from the same points."""

    name: str
    family: str
    threat: ThreatModel
    objective: str | None = None
    steps: int | None = None
    restarts: int = 1
    step_size: float | None = None
    start: str | None = None
    seed_key: str | None = None
    aa_version: str = "standard"
    subattacks: tuple[str, ...] = ()

    def params(self) -> dict[str, Any]:
        """The JSON-able parameters recorded in the results and compared on resume."""
        skip = ("threat", "aa_version", "subattacks")
        out = {k: v for k, v in asdict(self).items() if k not in skip and v is not None}
        out.update(norm=self.threat.norm, eps=self.threat.eps_text)
        if self.family == "autoattack":
            out.update(package="pyautoattack", version=self.aa_version, attacks=list(self.subattacks))
        return out

    def pgd_config(self) -> PGDConfig:
        assert self.family == "pgd" and self.steps is not None and self.step_size is not None
        return PGDConfig(norm=self.threat.norm, eps=self.threat.eps, step_size=self.step_size, steps=self.steps,
                         restarts=self.restarts, start=self.start or "uniform")


def pgd_ce_spec(name: str, threat: ThreatModel, *, steps: int = 40, restarts: int = 1, objective: str = "ce",
                seed_key: str | None = None) -> AttackSpec:
    """PGD+ style attack: step 0.01 (L2: 30/255), uniform start (eval-adv.py of HAT/MemLoss)."""
    step = 0.01 if threat.norm == "Linf" else 30 / 255
    return AttackSpec(name, "pgd", threat, objective=objective, steps=steps, restarts=restarts, step_size=step,
                      start="uniform", seed_key=seed_key)


def _pgd20(threat: ThreatModel) -> AttackSpec:
    step = 2 / 255 if threat.norm == "Linf" else 15 / 255
    return AttackSpec("pgd20", "pgd", threat, objective="ce", steps=20, restarts=1, step_size=step, start="uniform")


def _autoattack(name: str, version: str = "standard",
                subattacks: tuple[str, ...] = STANDARD_SUBATTACKS) -> Callable[[ThreatModel], AttackSpec]:
    return lambda t: AttackSpec(name, "autoattack", t, aa_version=version, subattacks=subattacks)


ATTACKS: dict[AttackName, Callable[[ThreatModel], AttackSpec]] = {
    AttackName.AA: _autoattack("aa"),
    AttackName.PGD_PLUS: lambda t: pgd_ce_spec("pgd+", t, restarts=5),
    AttackName.CW: lambda t: pgd_ce_spec("cw", t, objective="cw"),
    AttackName.PGD20: _pgd20,
    **{AttackName(a): _autoattack(a, subattacks=(a,)) for a in STANDARD_SUBATTACKS},
    AttackName.AA_RAND: _autoattack("aa-rand", "rand", RAND_SUBATTACKS),
}


def parse_attacks(text: str | tuple[str, ...] | list[str]) -> tuple[AttackName, ...]:
    """'aa,pgd+,cw' or 'all' (every attack) into attack names, order kept, duplicates refused."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names: list[AttackName] = []
    for item in (i.strip().lower() for i in items if i.strip()):
        if item == "all":
            names.extend(n for n in ALL_ATTACKS if n not in names)
            continue
        if item not in AttackName._value2member_map_:
            raise EvaluationError(f"unknown attack {item!r}; valid: {', '.join(AttackName)}, all")
        if AttackName(item) in names:
            raise EvaluationError(f"attack {item!r} is listed twice in --attacks")
        names.append(AttackName(item))
    return tuple(names)


def attack_seed(seed: int, name: str, batch: int) -> int:
    """A per-(attack, batch) seed, so a resumed run draws the same random starts as an uninterrupted one."""
    return (seed * 1_000_003 + zlib.crc32(name.encode()) * 7919 + batch) % (2**63 - 1)


def run_attack(spec: AttackSpec, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seed: int,
               batch: int = 0, watch: Watch | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attacks batch number `batch`. x float [B,C,H,W] in [0,1], y int64 [B], both on the model's device; returns
    (x_adv float [B,C,H,W] in [0,1] within eps of x, robust bool [B]: still classified as y on x_adv).
    AutoAttack gets `seed` itself (as a direct call with the same seed would); PGD a per-(attack, batch) seed.
    watch: for AutoAttack, a context manager factory held around its run with the AutoAttack object (progress
    within its sub-attacks, trainer/evaluation/aa_progress.py)."""
    if spec.family == "autoattack":
        return _run_autoattack(spec, model, x, y, seed=seed, watch=watch)
    generator = torch.Generator(device=x.device).manual_seed(attack_seed(seed, spec.seed_key or spec.name, batch))
    return pgd_robust(model, x, y, spec.pgd_config(), objective=spec.objective or "ce", generator=generator)


def _run_autoattack(spec: AttackSpec, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                    seed: int, watch: Watch | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    from pyautoattack import AutoAttack

    # frozen_eval: eval mode, and no parameter .grad filled by AutoAttack's loss.backward().
    with frozen_eval(model):
        adversary = AutoAttack(model, norm=spec.threat.norm, eps=spec.threat.eps, version=spec.aa_version, seed=seed,
                               device=x.device)
        # A single sub-attack keeps the version's settings (restarts, target classes, queries), exactly as
        # AutoAttack's own run_standard_evaluation_individual runs it.
        adversary.attacks_to_run = list(spec.subattacks)
        with watch(adversary) if watch is not None else contextlib.nullcontext():
            x_adv, y_adv = adversary.run_standard_evaluation(x, y, batch_size=x.shape[0])
    return x_adv, y_adv == y


def perturbation_norms(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-point size of x_adv − x in the threat model's norm: float [B]."""
    delta = (x_adv - x).flatten(1)
    return delta.abs().amax(1) if norm == "Linf" else torch.linalg.vector_norm(delta, dim=1)
