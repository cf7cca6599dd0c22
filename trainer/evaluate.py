"""`memloss evaluate`: clean accuracy, the robust accuracy of each evaluation attack (trainer/eval_attacks.py), the
per-point worst case over every attack run, and the gradient-masking sweeps (trainer/sweep.py) of one checkpoint.

The test points are cut into batches of `batch_size`; each (attack, batch) result is saved to a state file next to
`--out` as soon as it is known, so an interrupted evaluation resumes where it stopped (AutoAttack's own state_path
cannot serve: pyautoattack 0.2.0 writes its attack set with `str(set)` and then refuses every resume). A state file
written with other settings is refused, never overwritten. Per batch, AutoAttack is called exactly as a user would
call it on those points (`run_standard_evaluation(x, y, batch_size=B)` with the same seed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainer.attacks import frozen_eval
from trainer.devices import resolve_device
from trainer.checkpoint import atomic_write_bytes, load_model, read_model_meta, resolve_checkpoint
from trainer.eval_attacks import (ATTACKS, AttackName, AttackSpec, EvaluationError, ThreatModel, check_norm,
                                  parse_attacks, parse_eps, perturbation_norms, run_attack)
from trainer.runs import BEST_WEIGHTS, versions
from trainer.sweep import SweepSpec, check_sweeps

STATE_VERSION = 1
# Tolerance of the probability-output check (AutoAttack's check_range_output uses the same).
PROB_TOL = 1e-5


class ProgressSink(Protocol):
    """Receives progress: `begin` once per task (an attack, or 'clean') with its batch count and the batches already
    done (restored on resume), then `advance` after each batch."""

    def begin(self, task: str, total: int, completed: int) -> None: ...

    def advance(self, task: str) -> None: ...


@dataclass(frozen=True)
class EvalConfig:
    """What `evaluate` runs. norm/eps None = the threat model stored in the checkpoint; eps is a string, echoed
    exactly ('8/255', '0.1'). n None = the whole test set. out None = no results file, no state file, no resume.
    device 'auto' = CUDA when available."""

    checkpoint: Path
    attacks: tuple[str, ...] = ("aa", "pgd+", "cw")
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "attacks", tuple(str(a) for a in parse_attacks(self.attacks)))
        check_sweeps(self.sweeps)
        if not self.attacks and not self.sweeps:
            raise EvaluationError("nothing to run: give --attacks (aa, pgd+, cw, pgd20, all) or --sweep")
        if self.n is not None and self.n < 1:
            raise EvaluationError(f"--n must be ≥ 1, got {self.n}")
        if self.batch_size < 1:
            raise EvaluationError(f"--batch-size must be ≥ 1, got {self.batch_size}")
        if self.norm is not None:
            check_norm(self.norm)
        if self.eps is not None:
            parse_eps(self.eps)
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
        }


# ---------------------------------------------------------------------------------------------------------------
# Inputs: checkpoint, threat model, test points.


def resolve_threat(cfg: EvalConfig, meta: dict[str, str]) -> ThreatModel:
    """--norm/--eps when given, else the checkpoint's training threat model."""
    norm, eps = cfg.norm or meta.get("norm"), cfg.eps if cfg.eps is not None else meta.get("eps")
    if norm is None or eps is None:
        raise EvaluationError("the checkpoint stores no threat model (norm/eps); pass --norm and --eps")
    return ThreatModel(norm, eps)


def load_points(meta: dict[str, str], n: int | None, data_dir: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n test points of the checkpoint's dataset: x uint8 [n,C,H,W], y int64 [n] on CPU."""
    from trainer.data import load_tensors

    resolution = int(meta["resolution"]) if meta.get("resolution") else None
    x, y = load_tensors(meta["dataset"], "test", data_dir, resolution=resolution)
    if n is None or n <= len(y):
        return x[:n], y[:n]
    if meta["dataset"] == "synthetic":  # generated on demand: any n exists
        return load_tensors("synthetic", "test", data_dir, n=n, resolution=resolution)
    raise EvaluationError(f"--n {n} is larger than the {meta['dataset']} test set ({len(y)} points); "
                          f"use --n {len(y)} or less")


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def package_versions() -> dict[str, str]:
    """Versions recorded with the results (the attack code is pyautoattack's)."""
    return {"python": platform.python_version(), **versions()}


# ---------------------------------------------------------------------------------------------------------------
# Resumable state: one JSON file, one record per (attack, batch).


class EvalState:
    """Per-(attack, batch) results on disk. Record: robust (list of 0/1), seconds, max_perturbation, x_min, x_max.
    path None keeps everything in memory (no resume)."""

    def __init__(self, path: Path | None, settings: dict[str, Any]) -> None:
        self.path = path
        self.settings = settings
        self.records: dict[str, dict[str, dict[str, Any]]] = {}
        if path is not None and path.exists():
            self._restore(path)

    def _restore(self, path: Path) -> None:
        try:
            saved = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise EvaluationError(f"state file {path} is unreadable; move it away to start afresh") from None
        if saved.get("version") != STATE_VERSION or saved.get("settings") != self.settings:
            differ = sorted(k for k in {**self.settings, **saved.get("settings", {})}
                            if saved.get("settings", {}).get(k) != self.settings.get(k))
            raise EvaluationError(f"{path} holds an evaluation with other settings ({', '.join(differ)}); rerun "
                                  f"with the same settings to resume, or use another --out")
        self.records = saved["records"]

    def get(self, attack: str, batch: int) -> dict[str, Any] | None:
        return self.records.get(attack, {}).get(str(batch))

    def put(self, attack: str, batch: int, record: dict[str, Any]) -> None:
        self.records.setdefault(attack, {})[str(batch)] = record
        if self.path is not None:
            payload = {"version": STATE_VERSION, "settings": self.settings, "records": self.records}
            atomic_write_bytes(self.path, json.dumps(payload).encode())

    def restored(self) -> int:
        return sum(len(batches) for batches in self.records.values())

    def discard(self) -> None:
        """Removes the state file once the final results are safely written."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def side_file(out: Path, suffix: str) -> Path:
    """results.json → results<suffix> (e.g. results.state.json, results.aa.log)."""
    return out.with_name(out.stem + suffix)


# ---------------------------------------------------------------------------------------------------------------
# Running.


def batches(n: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def to_input(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 [B,C,H,W] → float32 in [0,1] on `device`."""
    return x.to(device).float().div_(255)


def clean_pass(model: nn.Module, x: torch.Tensor, y: torch.Tensor, parts: list[slice],
               device: torch.device) -> tuple[np.ndarray, list[str]]:
    """Clean correctness bool [n], and the suspicious-model findings: outputs that look like probabilities, and
    points whose input gradient of the cross-entropy is exactly zero (gradient-based attacks cannot move them)."""
    correct, zero_grad, probs = [], [], []
    for part in parts:
        xb, yb = to_input(x[part], device).requires_grad_(True), y[part].to(device)
        with torch.enable_grad(), frozen_eval(model):
            logits = model(xb).float()
            (grad,) = torch.autograd.grad(F.cross_entropy(logits, yb, reduction="sum"), xb)
        logits = logits.detach()
        correct.append(logits.argmax(1) == yb)
        zero_grad.append(grad.flatten(1).abs().amax(1) == 0)
        probs.append((logits.amin() > -PROB_TOL) & (logits.amax() < 1 + PROB_TOL)
                     & ((logits.sum(1) - 1).abs() < PROB_TOL).all())
    n_zero = int(torch.cat(zero_grad).sum())
    warnings = []
    if bool(torch.stack(probs).all()):
        warnings.append("the model's outputs look like probabilities (rows in [0,1] summing to 1), not logits: "
                        "gradient attacks are weakened, robust numbers are not trustworthy")
    if n_zero:
        warnings.append(f"input gradients vanish on {n_zero} of {len(y)} evaluated points: possible gradient "
                        f"masking, check the --sweep curves and the black-box Square attack in aa")
    return torch.cat(correct).cpu().numpy(), warnings


def attack_batch(spec: AttackSpec, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, correct: np.ndarray,
                 *, seed: int, batch: int) -> dict[str, Any]:
    """Runs one attack on one batch and returns its state record (robust requires clean correctness too)."""
    start = time.perf_counter()
    x_adv, robust = run_attack(spec, model, xb, yb, seed=seed, batch=batch)
    robust = robust.cpu().numpy() & correct
    norms = perturbation_norms(x_adv, xb, spec.threat.norm)
    return {"robust": robust.astype(int).tolist(), "seconds": time.perf_counter() - start,
            "max_perturbation": float(norms.max()), "x_min": float(x_adv.min()), "x_max": float(x_adv.max())}


def run_spec(spec: AttackSpec, model: nn.Module, x: torch.Tensor, y: torch.Tensor, correct: np.ndarray,
             parts: list[slice], state: EvalState, ctx: RunContext) -> AttackResult:
    """Every batch of one attack, skipping the batches the state already holds."""
    done = sum(state.get(spec.name, i) is not None for i in range(len(parts)))
    ctx.progress.begin(spec.name, len(parts), done)
    for i, part in enumerate(parts):
        if state.get(spec.name, i) is not None:
            continue
        xb, yb = to_input(x[part], ctx.device), y[part].to(ctx.device)
        state.put(spec.name, i, attack_batch(spec, model, xb, yb, correct[part], seed=ctx.seed, batch=i))
        ctx.progress.advance(spec.name)
    records = [state.get(spec.name, i) for i in range(len(parts))]
    return collect(spec, [r for r in records if r is not None])


def collect(spec: AttackSpec, records: list[dict[str, Any]]) -> AttackResult:
    return AttackResult(
        name=spec.name, params=spec.params(),
        robust=np.concatenate([np.asarray(r["robust"], dtype=bool) for r in records]),
        seconds=sum(r["seconds"] for r in records),
        max_perturbation=max(r["max_perturbation"] for r in records),
        x_min=min(r["x_min"] for r in records), x_max=max(r["x_max"] for r in records))


class _Silent:
    def begin(self, task: str, total: int, completed: int) -> None:
        pass

    def advance(self, task: str) -> None:
        pass


@dataclass(frozen=True)
class RunContext:
    device: torch.device
    seed: int
    progress: ProgressSink


class _WarningCollector(logging.Handler):
    """Keeps AutoAttack's own misuse warnings (randomized defense, probability outputs, Square beating the gradient
    attacks...) for the result's suspicious findings."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = f"AutoAttack: {record.getMessage()}"
        if message not in self.messages:
            self.messages.append(message)


@contextlib.contextmanager
def autoattack_log(path: Path | None) -> Iterator[list[str]]:
    """For the duration, sends the 'auto-attack' logger (progress at DEBUG, warnings of its checks) to `path` (None:
    no file) and collects its warnings into the yielded list."""
    logger = logging.getLogger("auto-attack")
    collector = _WarningCollector()
    handlers: list[logging.Handler] = [collector]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="a"))
        handlers[-1].setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    saved = logger.level, logger.propagate
    for handler in handlers:
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield collector.messages
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def plan(cfg: EvalConfig, threat: ThreatModel) -> tuple[list[AttackSpec], dict[str, list[AttackSpec]]]:
    """The attacks and, per sweep kind, the sweep settings to run."""
    attacks = [ATTACKS[AttackName(a)](threat) for a in cfg.attacks]
    return attacks, {str(s.kind): s.attacks(threat) for s in cfg.sweeps}


def settings_of(cfg: EvalConfig, sha: str, meta: dict[str, str], threat: ThreatModel, n: int,
                specs: list[AttackSpec]) -> dict[str, Any]:
    """What must match for a resume (the device may differ)."""
    return {"checkpoint_sha256": sha, "dataset": meta["dataset"], "n": n, "norm": threat.norm,
            "eps": threat.eps_text, "seed": cfg.seed, "batch_size": cfg.batch_size,
            "attacks": {s.name: s.params() for s in specs}}


def evaluate(cfg: EvalConfig, progress: ProgressSink | None = None) -> EvalResult:
    """Evaluates the checkpoint in `cfg` and, with `cfg.out`, writes the results JSON (plus the AutoAttack log and,
    while running, the resumable state file next to it).

    Example
    -------
    >>> result = evaluate(EvalConfig(Path("runs/x"), attacks=("pgd20",), n=500))  # doctest: +SKIP
    >>> result.clean_accuracy, result.attacks[0].robust_accuracy  # doctest: +SKIP
    """
    path = resolve_checkpoint(cfg.checkpoint)
    meta = read_model_meta(path)
    threat, device = resolve_threat(cfg, meta), resolve_device(cfg.device)
    x, y = load_points(meta, cfg.n, cfg.data_dir)
    model = load_eval_model(path, device)
    attacks, sweeps = plan(cfg, threat)
    specs = attacks + [s for rows in sweeps.values() for s in rows]
    sha = file_sha256(path)
    state = EvalState(side_file(cfg.out, ".state.json") if cfg.out else None,
                      settings_of(cfg, sha, meta, threat, len(y), specs))
    restored = state.restored()
    ctx = RunContext(device, cfg.seed, progress or _Silent())
    parts = batches(len(y), cfg.batch_size)
    log = side_file(cfg.out, ".aa.log") if cfg.out and "aa" in cfg.attacks else None
    with autoattack_log(log) as aa_warnings:
        correct, warnings = clean_pass(model, x, y, parts, device)
        results = {s.name: run_spec(s, model, x, y, correct, parts, state, ctx) for s in specs}
    warnings += aa_warnings
    result = EvalResult(
        checkpoint=str(path), checkpoint_sha256=sha, dataset=meta["dataset"], arch=meta["arch"], threat=threat,
        n=len(y), seed=cfg.seed, batch_size=cfg.batch_size, device=str(device), clean_correct=correct,
        attacks=tuple(results[s.name] for s in attacks),
        sweeps={k: tuple(results[s.name] for s in rows) for k, rows in sweeps.items()},
        warnings=tuple(warnings), versions=package_versions(), resumed_batches=restored,
        files={"aa_log": str(log)} if log else {})
    return finish(cfg, result, state)


def load_eval_model(path: Path, device: torch.device) -> nn.Module:
    """The checkpoint's model on `device`, in eval mode."""
    model, _ = load_model(path, device)
    return model.eval()


def finish(cfg: EvalConfig, result: EvalResult, state: EvalState) -> EvalResult:
    """Writes the plot and the results JSON, then drops the state file (the run is complete)."""
    files = dict(result.files)
    if cfg.plot is not None:
        from trainer.sweep import plot_sweeps

        curves = {kind: [(r.params["steps" if kind == "steps" else "restarts"], r.robust_accuracy) for r in rows]
                  for kind, rows in result.sweeps.items()}
        files["plot"] = str(plot_sweeps(curves, cfg.plot, f"{result.arch} {result.dataset} "
                                                          f"{result.threat.norm} ε={result.threat.eps_text}"))
    if cfg.out is not None:
        files["results"] = str(cfg.out)
    result = dataclasses.replace(result, files=files)
    if cfg.out is not None:
        atomic_write_bytes(cfg.out, json.dumps(result.to_dict(), indent=2).encode())
        state.discard()
    return result
