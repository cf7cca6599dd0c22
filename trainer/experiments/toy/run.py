"""The 2-D toy problem of the MemLoss paper (§3.3, figures 2-3): how often adversarial training forgets the
adversarial examples of the previous epoch, with and without the MemLoss term, over several seeds.

For each seed, two runs share the data, the initial weights, the batch order and the attack's random starts:
- the base method: TRADES (default; attack PGD-KL from x + 0.001·N(0, I), loss CE(f(x), y) + β·KL(p(x)‖p(x_adv)),
  the paper's method) or AT (attack PGD-CE from a uniform start, loss CE(f(x_adv), y), the paper's toy training);
  attack, start and loss are the trainer's own (`memloss.trainer.methods.registry.METHODS`);
- the same plus β′ · MemLoss-V1 with K = 1, the memory example x″ of a sample being its adversarial example of the
  previous epoch (no augmentation in 2-D, so it is kept as is in an [N, 2] tensor).

The paper's network is a two-layer ReLU MLP with a sigmoid output and binary cross-entropy. `TwoLogitMLP` returns
the logits [0, z] instead of z: softmax([0, z]) = [1 − σ(z), σ(z)], so cross-entropy on them *is* the paper's BCE
and the project's PGD, losses and MemLoss term apply unchanged.

Per epoch n ≥ 2, with the models at the end of epochs n−1 and n (the paper's figure 3) and the adversarial examples
made during epoch n−1 (each by the model of its own training step, exactly the memory examples): the old-example
error (wrong under model n), forgetting events (right under model n−1, wrong under model n; Toneva et al. 2019) and
learning events (the reverse), each as a fraction of the training points. The trainer's monitor
(trainer/training/forgetting.py) judges with the model at the step that visits the sample instead; the toy can
afford whole-set judgements by the end-of-epoch models, which is what the paper's figure shows.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor, nn

from memloss.trainer.common.progress import ProgressSink, SilentProgress
from memloss.trainer.common.threads import Threads, choose_threads, model_probe, using_threads
from memloss.trainer.experiments.toy.config import ToyConfig
from memloss.trainer.experiments.toy.data import ToyData, make_toy_data
from memloss.trainer.experiments.toy.model import TwoLogitMLP, build_toy_model, error_rate, wrong_mask
from memloss.trainer.experiments.toy.result import PanelData, RunTrace, ToyResult
from memloss.trainer.methods.losses import LossInputs, LossParams
from memloss.trainer.methods.memloss import memloss_term
from memloss.trainer.methods.pgd import pgd
from memloss.trainer.methods.registry import MethodSpec, get_method
from memloss.trainer.methods.threat import PGDConfig


@dataclass
class _Snapshots:
    """Per-epoch weights and adversarial examples of one run (the panels need two consecutive epochs)."""

    states: list[dict[str, Tensor]]
    adv: list[Tensor]


def _attack_config(cfg: ToyConfig, steps: int, start: str = "uniform") -> PGDConfig:
    return PGDConfig(norm="Linf", eps=cfg.eps, step_size=cfg.step_size, steps=steps, start=start)


def _train_step(
    model: nn.Module, opt: torch.optim.Optimizer, batch: tuple[Tensor, Tensor, Tensor],
    memory: Tensor | None, cfg: ToyConfig, spec: MethodSpec,
) -> Tensor:
    """One SGD step on the base method's loss, plus β′·MemLoss-V1(x, x″) when a memory batch x″ [B, 2] is given.
    Returns the detached loss."""
    x, y, x_adv = batch
    logits_adv = model(x_adv)
    logits_clean = model(x) if spec.needs_clean_forward or memory is not None else None
    loss = spec.loss_fn(LossInputs(y, logits_clean, logits_adv), LossParams(cfg.beta, 0.0)).loss
    if memory is not None:
        logits_mem = model(memory).unsqueeze(0)  # [K=1, B, 2]
        valid = torch.ones(1, len(y), dtype=torch.bool)
        loss = loss + memloss_term(logits_clean, logits_mem, y, valid, cfg.beta_prime, "v1", logits_adv).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def _run_epoch(
    model: nn.Module, opt: torch.optim.Optimizer, data: ToyData, cfg: ToyConfig,
    generators: tuple[torch.Generator, torch.Generator], memory: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Trains one epoch in a seeded random order; returns (adversarial examples [N, 2] made this epoch, mean loss).
    `memory` [N, 2] is the previous epoch's adversarial examples (None: the base alone, or the first epoch)."""
    order_gen, attack_gen = generators
    spec = get_method(cfg.base)
    attack = _attack_config(cfg, cfg.steps, spec.attack_start or "uniform")
    adv = torch.empty_like(data.x)
    losses = []
    for idx in torch.randperm(len(data.y), generator=order_gen).split(cfg.batch_size):
        x, y = data.x[idx], data.y[idx]
        x_adv = pgd(model, x, y, attack, spec.attack_objective or "ce", generator=attack_gen).detach()
        adv[idx] = x_adv
        mem = None if memory is None else memory[idx]
        losses.append(_train_step(model, opt, (x, y, x_adv), mem, cfg, spec))
    return adv, torch.stack(losses).mean()


def _event_metrics(model: nn.Module, prev_adv: Tensor, prev_wrong: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Old-example error, forgetting and learning events of the current model on the previous epoch's adversarial
    examples [N, 2], given which of them the previous model got wrong (`prev_wrong` bool [N])."""
    now_wrong = wrong_mask(model, prev_adv, y)
    return {"old_error": now_wrong.float().mean(), "forgetting_events": (now_wrong & ~prev_wrong).float().mean(),
            "learning_events": (~now_wrong & prev_wrong).float().mean()}


def _test_metrics(model: nn.Module, test: ToyData, attack: PGDConfig, gen: torch.Generator) -> dict[str, Tensor]:
    """Clean and PGD robust accuracy on the test points (0-dim tensors in [0, 1])."""
    test_adv = pgd(model, test.x, test.y, attack, "ce", generator=gen)
    return {"clean": 1 - error_rate(model, test.x, test.y), "robust": 1 - error_rate(model, test_adv, test.y)}


def _train_run(
    name: str, cfg: ToyConfig, train: ToyData, test: ToyData, use_memloss: bool, progress: ProgressSink
) -> tuple[RunTrace, _Snapshots]:
    """One full run from the seed's initial weights; metrics are tensors until the end (no per-step syncs)."""
    model = build_toy_model(cfg.hidden, cfg.seed)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    generators = (torch.Generator().manual_seed(cfg.seed + 1), torch.Generator().manual_seed(cfg.seed + 2))
    eval_gen, eval_attack = torch.Generator().manual_seed(cfg.seed + 3), _attack_config(cfg, cfg.eval_steps)
    snaps = _Snapshots(states=[], adv=[])
    rows: dict[str, list[Tensor]] = defaultdict(list)
    own_wrong = torch.zeros(0, dtype=torch.bool)
    task = f"{name}, seed {cfg.seed}"
    progress.begin(task, cfg.epochs, unit="epochs")
    for _ in range(cfg.epochs):
        memory = snaps.adv[-1] if (use_memloss and snaps.adv) else None
        adv, loss = _run_epoch(model, opt, train, cfg, generators, memory)
        metrics = _event_metrics(model, snaps.adv[-1], own_wrong, train.y) if snaps.adv else {}
        own_wrong = wrong_mask(model, adv, train.y)
        metrics |= {"own_error": own_wrong.float().mean(), "loss": loss}
        metrics |= _test_metrics(model, test, eval_attack, eval_gen)
        for key, value in metrics.items():
            rows[key].append(value)
        snaps.states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        snaps.adv.append(adv)
        progress.advance(task)
    progress.end(task)
    c = {k: torch.stack(v).tolist() for k, v in rows.items()}
    trace = RunTrace(name, cfg.seed, c["old_error"], c["forgetting_events"], c["learning_events"], c["own_error"],
                     c["clean"], c["robust"], c["loss"])
    return trace, snaps


def _model_from(state: dict[str, Tensor], hidden: int) -> TwoLogitMLP:
    model = TwoLogitMLP(hidden)
    model.load_state_dict(state)
    return model


def _grid_probability(model: nn.Module, axis: Tensor) -> np.ndarray:
    """σ(z) of the model on the grid axis × axis; float32 [G, G], row = x2, column = x1."""
    x1, x2 = torch.meshgrid(axis, axis, indexing="xy")
    with torch.no_grad():
        logits = model(torch.stack([x1.reshape(-1), x2.reshape(-1)], dim=1))
    return logits.softmax(dim=1)[:, 1].reshape(len(axis), len(axis)).numpy()


def pick_panel_epoch(old_error: list[float], panel_from: float) -> int:
    """The epoch n (≥ 2, 1-based) with the highest old-example error among the last (1 − panel_from) of the run;
    the earliest on a tie. `old_error[i]` belongs to epoch i + 2."""
    start = int(panel_from * len(old_error))
    return start + int(np.argmax(old_error[start:])) + 2


def _panel_data(cfg: ToyConfig, train: ToyData, trace: RunTrace, snaps: _Snapshots) -> PanelData:
    epoch = pick_panel_epoch(trace.old_error, cfg.panel_from)
    axis = torch.linspace(0, 1, cfg.grid)
    prev, cur = (_model_from(snaps.states[e], cfg.hidden) for e in (epoch - 2, epoch - 1))
    adv_prev, adv_cur = snaps.adv[epoch - 2], snaps.adv[epoch - 1]
    pairs = ((prev, adv_prev), (cur, adv_cur), (cur, adv_prev))
    with torch.no_grad():
        wrong = torch.stack([wrong_mask(model, adv, train.y) for model, adv in pairs])
    return PanelData(
        epoch=epoch, axis=axis.numpy(), prob_prev=_grid_probability(prev, axis),
        prob_cur=_grid_probability(cur, axis), x=train.x.numpy(), y=train.y.numpy(),
        adv_prev=adv_prev.numpy(), adv_cur=adv_cur.numpy(), wrong=wrong.numpy(),
    )


def run_toy(cfg: ToyConfig, progress: ProgressSink | None = None, threads: Threads = "auto") -> ToyResult:
    """Runs the base method and base + MemLoss for seeds cfg.seed … cfg.seed + cfg.seeds − 1 on the CPU (per seed:
    train data seed s, test data seed s + 1000) and returns their per-epoch events and accuracies, and the panel
    data of the base run of the first seed.
    progress: where epochs are reported (None: nowhere); threads: torch's CPU threads (an int, 'auto' = measured
    on a training step, None = unchanged). The toy's [8, 64] matrices gain nothing from threads, and on a busy
    machine idle-spinning OpenMP workers made the same run 35x slower (12 epochs, 8.7 s vs 314 s)."""
    start = time.perf_counter()
    base_name, mem_name = cfg.names
    runs: dict[str, list[RunTrace]] = {base_name: [], mem_name: []}
    panels = None
    sink = progress or SilentProgress()
    first = make_toy_data(cfg.n_train, cfg.noise, cfg.seed)
    probe = model_probe(build_toy_model(cfg.hidden, cfg.seed), first.x[:cfg.batch_size], first.y[:cfg.batch_size])
    choice = choose_threads(threads, probe, torch.device("cpu"))
    with using_threads(choice.threads):
        for seed in range(cfg.seed, cfg.seed + cfg.seeds):
            one = replace(cfg, seed=seed)
            train = make_toy_data(one.n_train, one.noise, seed)
            test = make_toy_data(one.n_test, one.noise, seed + 1000)
            base, snaps = _train_run(base_name, one, train, test, use_memloss=False, progress=sink)
            mem, _ = _train_run(mem_name, one, train, test, use_memloss=True, progress=sink)
            runs[base_name].append(base)
            runs[mem_name].append(mem)
            if panels is None:
                panels = _panel_data(one, train, base, snaps)
    assert panels is not None
    return ToyResult(cfg, runs, panels, time.perf_counter() - start, choice.threads)
