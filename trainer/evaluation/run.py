"""`memloss evaluate`: clean accuracy, the robust accuracy of each evaluation attack (trainer/methods/eval_attacks.py), the
per-point worst case over every attack run, and the gradient-masking sweeps (trainer/evaluation/sweep.py) of one checkpoint.

The test points are cut into batches of `batch_size`; each (attack, batch) result is saved to a state file next to
`--out` as soon as it is known, so an interrupted evaluation resumes where it stopped (AutoAttack's own state_path
cannot serve: pyautoattack 0.2.0 writes its attack set with `str(set)` and then refuses every resume). A state file
written with other settings is refused, never overwritten. Per batch, AutoAttack is called exactly as a user would
call it on those points (`run_standard_evaluation(x, y, batch_size=B)` with the same seed).
"""

from __future__ import annotations

import dataclasses
import json
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from memloss.trainer.common.devices import bind_device, resolve_device
from memloss.trainer.common.precision import tf32
from memloss.trainer.common.files import atomic_write_bytes, file_sha256
from memloss.trainer.common.versions import package_versions
from memloss.trainer.common.progress import ProgressSink, SilentProgress, show_message
from memloss.trainer.common.threads import ThreadChoice, choose_threads, model_probe, using_threads
from memloss.trainer.distributed import context as ranks
from memloss.trainer.distributed.reduce import share_all
from memloss.trainer.evaluation.aa_log import autoattack_log
from memloss.trainer.evaluation.aa_progress import AttackProgress, following_autoattack
from memloss.trainer.evaluation.inputs import load_eval_model, load_points, resolve_threat
from memloss.trainer.evaluation.results import AttackResult, EvalConfig, EvalResult
from memloss.trainer.evaluation.state import EvalState, side_file
from memloss.trainer.methods.eval_attacks import (
    ATTACKS,
    AttackName,
    AttackSpec,
    ThreatModel,
    Watch,
    perturbation_norms,
    run_attack,
)
from memloss.trainer.methods.modes import frozen_eval
from memloss.trainer.models.files import read_model_meta, resolve_checkpoint

# Tolerance of the probability-output check (AutoAttack's check_range_output uses the same).
PROB_TOL = 1e-5
PROBE_POINTS = 128


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
                 *, seed: int, batch: int, watch: Watch | None = None) -> dict[str, Any]:
    """Runs one attack on one batch and returns its state record (robust requires clean correctness too); `watch`:
    see `run_attack`."""
    start = time.perf_counter()
    x_adv, robust = run_attack(spec, model, xb, yb, seed=seed, batch=batch, watch=watch)
    robust = robust.cpu().numpy() & correct
    norms = perturbation_norms(x_adv, xb, spec.threat.norm)
    return {"robust": robust.astype(int).tolist(), "seconds": time.perf_counter() - start,
            "max_perturbation": float(norms.max()), "x_min": float(x_adv.min()), "x_max": float(x_adv.max())}


def run_spec(spec: AttackSpec, model: nn.Module, x: torch.Tensor, y: torch.Tensor, correct: np.ndarray,
             parts: list[slice], state: EvalState, ctx: RunContext) -> AttackResult:
    """Every batch of one attack, skipping the batches the state already holds. Progress is in points, with the
    running robust accuracy (and, for AutoAttack, the sub-attack running). Under torchrun the batches are dealt
    round-robin to the ranks (each batch's attack depends only on the seed and its index, so the results are the
    same) and the records are exchanged after the attack."""
    follow = AttackProgress(ctx.progress, spec.name, spec.subattacks)
    done = [state.get(spec.name, i) for i in range(len(parts))]
    follow.points_done = sum(p.stop - p.start for p, r in zip(parts, done) if r is not None)
    follow.robust_done = sum(sum(r["robust"]) for r in done if r is not None)
    ctx.progress.begin(spec.name, len(y), follow.points_done, unit="points")
    with following_autoattack(follow) if spec.family == "autoattack" else nullcontext():
        for i, part in enumerate(parts):
            if done[i] is not None or not ranks.owns(i):
                continue
            follow.start_batch(part.stop - part.start)
            xb, yb = to_input(x[part], ctx.device), y[part].to(ctx.device)
            with _within_batch(follow, spec, model, f"batch {i + 1}/{len(parts)}"):
                record = attack_batch(spec, model, xb, yb, correct[part], seed=ctx.seed, batch=i,
                                      watch=follow.watch)
            state.put(spec.name, i, record)
            follow.end_batch(sum(record["robust"]))
    ctx.progress.end(spec.name)
    mine = {i: state.get(spec.name, i) for i in range(len(parts)) if done[i] is None and ranks.owns(i)}
    for shared in share_all(mine):
        for i, record in shared.items():
            state.put(spec.name, i, record)
    records = [state.get(spec.name, i) for i in range(len(parts))]
    return collect(spec, [r for r in records if r is not None])


def _within_batch(follow: AttackProgress, spec: AttackSpec, model: nn.Module, label: str) -> ContextManager[None]:
    """Progress inside one batch: AutoAttack's is followed through its sub-attacks (`watch`); our PGD's by counting
    the model's forwards."""
    if spec.family == "autoattack":
        return nullcontext()
    cfg = spec.pgd_config()
    return follow.counting_forwards(model, label, cfg.restarts * (cfg.steps + 1))


def collect(spec: AttackSpec, records: list[dict[str, Any]]) -> AttackResult:
    return AttackResult(
        name=spec.name, params=spec.params(),
        robust=np.concatenate([np.asarray(r["robust"], dtype=bool) for r in records]),
        seconds=sum(r["seconds"] for r in records),
        max_perturbation=max(r["max_perturbation"] for r in records),
        x_min=min(r["x_min"] for r in records), x_max=max(r["x_max"] for r in records))


@dataclass(frozen=True)
class RunContext:
    device: torch.device
    seed: int
    progress: ProgressSink


def plan(cfg: EvalConfig, threat: ThreatModel) -> tuple[list[AttackSpec], dict[str, list[AttackSpec]]]:
    """The attacks and, per sweep kind, the sweep settings to run."""
    attacks = [ATTACKS[AttackName(a)](threat) for a in cfg.attacks]
    return attacks, {str(s.kind): s.attacks(threat) for s in cfg.sweeps}


def settings_of(cfg: EvalConfig, sha: str, meta: dict[str, str], threat: ThreatModel, n: int,
                specs: list[AttackSpec]) -> dict[str, Any]:
    """What must match for a resume (the device may differ)."""
    return {"checkpoint_sha256": sha, "dataset": meta["dataset"], "n": n, "norm": threat.norm,
            "eps": threat.eps_text, "seed": cfg.seed, "batch_size": cfg.batch_size,
            "attacks": {s.name: s.params() for s in specs}, **({"tf32": True} if cfg.tf32 else {})}


def evaluate(cfg: EvalConfig | Path | str, progress: ProgressSink | None = None, **options: Any) -> EvalResult:
    """Evaluates a checkpoint and, with `out`, writes the results JSON (plus the AutoAttack log and, while running,
    the resumable state file next to it).

    cfg: an `EvalConfig`, or the checkpoint (a .safetensors file or a run directory) with the `EvalConfig` fields as
    keyword `options` (`attacks` may be a comma-separated string, as on the command line).

    Example
    -------
    >>> result = evaluate("runs/x", attacks="pgd20", n=500)  # doctest: +SKIP
    >>> result.clean_accuracy, result.attacks[0].robust_accuracy  # doctest: +SKIP
    """
    if not isinstance(cfg, EvalConfig):
        cfg = EvalConfig(Path(cfg), **options)
    elif options:
        raise TypeError(f"evaluate() got an EvalConfig and options {sorted(options)}; give one or the other")
    device = resolve_device(cfg.device)
    ranks.start(device)  # torchrun: the attack batches are shared among the ranks; rank 0 writes the files
    try:
        if not ranks.current().main:
            progress = None
        return _evaluate(cfg, progress, bind_device(ranks.rank_device(device)))  # cuda:N made current
    finally:
        ranks.stop()


def _evaluate(cfg: EvalConfig, progress: ProgressSink | None, device: torch.device) -> EvalResult:
    path = resolve_checkpoint(cfg.checkpoint)
    meta = read_model_meta(path)
    threat = resolve_threat(cfg, meta)
    x, y = load_points(meta, cfg.n, cfg.data_dir)
    model = load_eval_model(path, device)
    attacks, sweeps = plan(cfg, threat)
    specs = attacks + [s for rows in sweeps.values() for s in rows]
    sha = file_sha256(path)
    main = ranks.current().main
    state = EvalState(side_file(cfg.out, ".state.json") if cfg.out else None,
                      settings_of(cfg, sha, meta, threat, len(y), specs), writes=main)
    restored = state.restored()
    ctx = RunContext(device, cfg.seed, progress or SilentProgress())
    parts = batches(len(y), cfg.batch_size)
    uses_aa = any(s.family == "autoattack" for s in specs)
    log = side_file(cfg.out, ".aa.log") if cfg.out and uses_aa and main else None
    threads = choose_threads(cfg.threads, _probe(model, x, y, cfg.batch_size, device), device)
    show_message(ctx.progress, header(path, meta, threat, len(y), specs, cfg.seed, device, threads))
    # IEEE fp32 unless --tf32: in this torch cuDNN convolutions default to TF32 on Ampere and later GPUs, which
    # computes the attacks' gradients with a 10-bit mantissa.
    with using_threads(threads.threads), tf32(cfg.tf32), autoattack_log(log) as aa_warnings:
        correct, warnings = clean_pass(model, x, y, parts, device)
        results = {s.name: run_spec(s, model, x, y, correct, parts, state, ctx) for s in specs}
    warnings += aa_warnings
    result = EvalResult(
        checkpoint=str(path), checkpoint_sha256=sha, dataset=meta["dataset"], arch=meta["arch"], threat=threat,
        n=len(y), seed=cfg.seed, batch_size=cfg.batch_size, device=str(device), clean_correct=correct,
        attacks=tuple(results[s.name] for s in attacks),
        sweeps={k: tuple(results[s.name] for s in rows) for k, rows in sweeps.items()},
        warnings=tuple(warnings), versions=package_versions(), resumed_batches=restored,
        files={"aa_log": str(log)} if log else {}, threads=threads, tf32=cfg.tf32)
    return finish(cfg if main else dataclasses.replace(cfg, out=None, plot=None), result, state)


def header(path: Path, meta: dict[str, str], threat: ThreatModel, n: int, specs: list[AttackSpec], seed: int,
           device: torch.device, threads: ThreadChoice) -> str:
    """What is about to be evaluated, shown before the first attack (short lines, for 80 columns), e.g.
    'evaluating small_cnn on digits (run/best.safetensors)', '  360 test points, Linf ε = 8/255, seed 0, cpu',
    '  attacks: aa, pgd+, cw', '  threads: 1 (measured: ...)'."""
    return "\n".join((f"evaluating {meta['arch']} on {meta['dataset']} ({path.parent.name}/{path.name})",
                      f"  {n} test points, {threat.norm} ε = {threat.eps_text}, seed {seed}, {device}",
                      f"  attacks: {', '.join(s.name for s in specs)}",
                      f"  {threads.describe()}"))


def _probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
           device: torch.device) -> Callable[[], None]:
    """One attack step (forward and backward) on the first evaluation batch (at most PROBE_POINTS points, which
    bounds the probe's cost on large models), for `--threads auto`."""
    n = min(batch_size, len(y), PROBE_POINTS)
    return model_probe(model, to_input(x[:n], device), y[:n].to(device))


def finish(cfg: EvalConfig, result: EvalResult, state: EvalState) -> EvalResult:
    """Writes the plot and the results JSON, then drops the state file (the run is complete)."""
    files = dict(result.files)
    if cfg.plot is not None:
        from memloss.trainer.plots.sweep import plot_sweeps

        curves = {kind: [(r.params["steps" if kind == "steps" else "restarts"], r.robust_accuracy) for r in rows]
                  for kind, rows in result.sweeps.items()}
        title = (f"gradient-masking check: {Path(result.checkpoint).parent.name}/{Path(result.checkpoint).name} "
                 f"({result.arch}), {result.dataset}, {result.threat.norm} ε = {result.threat.eps_text}, "
                 f"{result.n} points")
        png, pdf = plot_sweeps(curves, cfg.plot, title)
        files["plot"], files["plot_pdf"] = str(png), str(pdf)
    if cfg.out is not None:
        files["results"] = str(cfg.out)
    result = dataclasses.replace(result, files=files)
    if cfg.out is not None:
        atomic_write_bytes(cfg.out, json.dumps(result.to_dict(), indent=2).encode())
        state.discard()
    return result
