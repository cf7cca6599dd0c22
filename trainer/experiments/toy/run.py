"""The 2-D toy problem of the MemLoss paper (§3.3, figures 2-3) as a paired experiment: for every seed, the base
method alone, with β′·MemLoss (the main β′ and a sweep), and with a positive control (CE on the memory examples),
all judged on the previous epoch's adversarial examples by the models at the end of each epoch (the paper's
figure 3).

Every run of every seed trains at once in one `EnsembleMLP` (runs stacked variant-major: run r = v·S + s is variant
v of seed s); the runs of one seed share the data, the initial weights, the batch order and the attack's random
starts, so their differences are paired. The base losses, the attack and the MemLoss term are the trainer's own
(`memloss.trainer.methods`); `TwoLogitMLP`'s logits [0, z] make cross-entropy the paper's BCE.

Per epoch n ≥ 2 and run, with a = model n−1 right on x′ₙ₋₁ (the example "correct when made", judged at the end of
the epoch that made it: the paper's panel a) and c = model n right on x′ₙ₋₁ (panel c), counted over the training
points: made-correct (a), forgetting at epoch end (a ∧ ¬c), learning at epoch end (¬a ∧ c), old-example error
(¬c) and own error (model n wrong on x′ₙ, panel b). The trainer's monitor (trainer/training/forgetting.py) judges
at the visit instead (model of the step); the two carry different names.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from memloss.trainer.common.progress import ProgressSink, SilentProgress
from memloss.trainer.common.threads import Threads, choose_threads, model_probe, using_threads
from memloss.trainer.experiments.toy.config import ToyConfig
from memloss.trainer.experiments.toy.data import make_toy_data
from memloss.trainer.experiments.toy.model import EnsembleMLP, TwoLogitMLP
from memloss.trainer.experiments.toy.result import COUNT_KEYS, PanelData, ToyResult
from memloss.trainer.methods.losses import LossInputs, LossParams
from memloss.trainer.methods.memloss import memloss_term
from memloss.trainer.methods.pgd import pgd
from memloss.trainer.methods.registry import MethodSpec, get_method
from memloss.trainer.methods.threat import PGDConfig

DIMS = 2  # the toy's inputs: points in [0, 1]²
_NORMAL_START_STD = 0.001  # the trainer's "normal" start (TRADES): x + 0.001·N(0, I)


@dataclass(frozen=True)
class _Layout:
    """S seeds × V variants = R runs; `seed_of` int64 [R]: the seed index (0..S−1) of each run."""

    seeds: int
    variants: int

    @property
    def runs(self) -> int:
        return self.seeds * self.variants

    @property
    def seed_of(self) -> Tensor:
        return torch.arange(self.runs) % self.seeds


@dataclass
class _Data:
    """Training and test points of every run: x float32 [R, N, 2], y int64 [R, N] (a seed's data repeated over its
    variants)."""

    x: Tensor
    y: Tensor
    test_x: Tensor
    test_y: Tensor


def _load_data(cfg: ToyConfig, layout: _Layout) -> _Data:
    seeds = range(cfg.seed, cfg.seed + cfg.seeds)
    train = [make_toy_data(cfg.n_train, cfg.noise, s) for s in seeds]
    test = [make_toy_data(cfg.n_test, cfg.noise, s + 1000) for s in seeds]
    pick = layout.seed_of
    return _Data(torch.stack([d.x for d in train])[pick], torch.stack([d.y for d in train])[pick],
                 torch.stack([d.x for d in test])[pick], torch.stack([d.y for d in test])[pick])


def _gather(t: Tensor, idx: Tensor) -> Tensor:
    """Rows idx int64 [R, b] of t [R, N, ...] per run → [R, b, ...]."""
    return torch.gather(t, 1, idx.view(*idx.shape, *([1] * (t.dim() - 2))).expand(-1, -1, *t.shape[2:]))


def _start(x: Tensor, cfg: ToyConfig, spec: MethodSpec, gens: list[torch.Generator], layout: _Layout) -> Tensor:
    """The attack's first iterate for x [R, b, 2]: one draw per seed, shared by the seed's variants."""
    b = x.shape[1]
    if spec.attack_start == "normal":
        noise = torch.stack([torch.randn(b, DIMS, generator=g) for g in gens]) * _NORMAL_START_STD
    else:
        noise = torch.stack([torch.rand(b, DIMS, generator=g) for g in gens]) * (2 * cfg.eps) - cfg.eps
    return (x + noise[layout.seed_of]).clamp(0.0, 1.0)


def _loss(model: EnsembleMLP, batch: tuple[Tensor, Tensor, Tensor], mem: Tensor | None, cfg: ToyConfig,
          spec: MethodSpec, layout: _Layout) -> Tensor:
    """Σ over runs of each run's mean loss (so each run's slice of the weights gets its own gradient): the base
    loss, plus per variant β′·MemLoss-V1 or w·CE on the memory examples x″ (flat [R·b, 2]) once they exist."""
    x, y, x_adv = batch
    logits_adv, logits_clean = model(x_adv), model(x)
    total = spec.loss_fn(LossInputs(y, logits_clean, logits_adv), LossParams(cfg.beta, 0.0)).loss * layout.runs
    if mem is None:
        return total
    logits_mem = model(mem)
    rows = len(y) // layout.variants  # one variant's rows: S seeds × b points
    for v, variant in enumerate(cfg.variants):
        sl = slice(v * rows, (v + 1) * rows)
        if variant.kind == "memloss":
            valid = torch.ones(1, rows, dtype=torch.bool)
            term = memloss_term(logits_clean[sl], logits_mem[sl].unsqueeze(0), y[sl], valid, variant.weight, "v1")
            total = total + term.loss * layout.seeds
        elif variant.kind == "control":
            total = total + variant.weight * F.cross_entropy(logits_mem[sl], y[sl]) * layout.seeds
    return total


def _epoch_lr(cfg: ToyConfig, epoch: int) -> float:
    """The learning rate of epoch (0-based): constant, or cosine from lr down to 0 over the run."""
    if cfg.schedule == "constant":
        return cfg.lr
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))


_Generators = tuple[list[torch.Generator], list[torch.Generator]]  # per seed: batch order, attack starts


def _train_epoch(model: EnsembleMLP, opt: torch.optim.Optimizer, data: _Data, memory: Tensor | None,
                 cfg: ToyConfig, layout: _Layout, gens: _Generators) -> Tensor:
    """One epoch of every run; returns the adversarial examples made this epoch [R, N, 2]."""
    spec = get_method(cfg.base)
    attack = PGDConfig(norm="Linf", eps=cfg.eps, step_size=cfg.step_size, steps=cfg.steps, start="zero")
    order_gens, start_gens = gens
    order = torch.stack([torch.randperm(cfg.n_train, generator=g) for g in order_gens])[layout.seed_of]
    adv = torch.empty_like(data.x)
    for idx in order.split(cfg.batch_size, dim=1):
        x, y = _gather(data.x, idx), _gather(data.y, idx)
        init = _start(x, cfg, spec, start_gens, layout)
        d = x.shape[2]
        flat_x, flat_y = x.reshape(-1, d), y.reshape(-1)
        x_adv = pgd(model, flat_x, flat_y, attack, spec.attack_objective or "ce", init=init.reshape(-1, d))
        adv.scatter_(1, idx.unsqueeze(2).expand(-1, -1, d), x_adv.view(layout.runs, -1, d))
        mem = None if memory is None else _gather(memory, idx).reshape(-1, d)
        loss = _loss(model, (flat_x, flat_y, x_adv), mem, cfg, spec, layout)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return adv


@torch.no_grad()
def _wrong(model: EnsembleMLP, x: Tensor, y: Tensor) -> Tensor:
    """bool [R, N]: run r misclassifies x[r, i] [R, N, 2]."""
    return (model(x.reshape(-1, x.shape[-1])).argmax(dim=1) != y.reshape(-1)).view(y.shape)


def _test_accuracy(model: EnsembleMLP, data: _Data, cfg: ToyConfig, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Clean and PGD-`eval_steps` (CE, uniform start) accuracy [R] of every run on its seed's test points."""
    attack = PGDConfig(norm="Linf", eps=cfg.eps, step_size=cfg.step_size, steps=cfg.eval_steps, start="uniform")
    x, y = data.test_x.reshape(-1, data.test_x.shape[-1]), data.test_y.reshape(-1)
    adv = pgd(model, x, y, attack, "ce", generator=gen).view(data.test_x.shape)
    clean = 1 - _wrong(model, data.test_x, data.test_y).float().mean(dim=1)
    return clean, 1 - _wrong(model, adv, data.test_y).float().mean(dim=1)


def _events(made_wrong: Tensor, now_wrong: Tensor) -> dict[str, Tensor]:
    """Counts [R] over the training points of x′ₙ₋₁: made_wrong = model n−1 wrong on it, now_wrong = model n."""
    made_ok = ~made_wrong
    return {"made_correct": made_ok.sum(1), "forget_at_epoch_end": (made_ok & now_wrong).sum(1),
            "learn_at_epoch_end": (made_wrong & ~now_wrong).sum(1), "old_error_at_epoch_end": now_wrong.sum(1)}


@dataclass
class _Trace:
    """Per-epoch tensors of every run, stacked at the end, and the snapshots of run 0 (base, first seed)."""

    rows: dict[str, list[Tensor]]
    states: list[dict[str, Tensor]]
    advs: list[Tensor]


def _record(trace: _Trace, model: EnsembleMLP, adv: Tensor, metrics: dict[str, Tensor]) -> None:
    for key, value in metrics.items():
        trace.rows.setdefault(key, []).append(value)
    trace.states.append({k: v.detach().clone() for k, v in model.member(0).state_dict().items()})
    trace.advs.append(adv[0].clone())


def _train_all(cfg: ToyConfig, layout: _Layout, data: _Data, progress: ProgressSink) -> _Trace:
    model = EnsembleMLP(layout.runs, cfg.hidden, DIMS)
    model.init_runs([s for s in layout.seed_of.add(cfg.seed).tolist()])
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    seeds = range(cfg.seed, cfg.seed + cfg.seeds)
    gens = ([torch.Generator().manual_seed(s + 1) for s in seeds],
            [torch.Generator().manual_seed(s + 2) for s in seeds])
    eval_gen = torch.Generator().manual_seed(cfg.seed + 3)
    trace = _Trace({}, [], [])
    prev_adv, made_wrong = None, None
    task = f"{cfg.base_name}: {layout.runs} runs ({cfg.seeds} seeds × {layout.variants} variants)"
    progress.begin(task, cfg.epochs, unit="epochs")
    for epoch in range(cfg.epochs):
        for group in opt.param_groups:
            group["lr"] = _epoch_lr(cfg, epoch)
        adv = _train_epoch(model, opt, data, prev_adv, cfg, layout, gens)
        own_wrong = _wrong(model, adv, data.y)
        metrics = {"own_error": own_wrong.sum(1)}
        if prev_adv is not None and made_wrong is not None:
            metrics |= _events(made_wrong, _wrong(model, prev_adv, data.y))
        clean, robust = _test_accuracy(model, data, cfg, eval_gen)
        _record(trace, model, adv, metrics | {"clean_acc": clean, "robust_acc": robust})
        prev_adv, made_wrong = adv, own_wrong
        progress.advance(task)
    progress.end(task)
    return trace


def _member(state: dict[str, Tensor], cfg: ToyConfig) -> TwoLogitMLP:
    model = TwoLogitMLP(cfg.hidden, DIMS)
    model.load_state_dict(state)
    return model


def _grid_probability(state: dict[str, Tensor], cfg: ToyConfig, axis: Tensor) -> np.ndarray:
    """σ(z) of one run's weights on the grid axis × axis; float32 [G, G], row = x2, column = x1."""
    model = _member(state, cfg)
    x1, x2 = torch.meshgrid(axis, axis, indexing="xy")
    with torch.no_grad():
        logits = model(torch.stack([x1.reshape(-1), x2.reshape(-1)], dim=1))
    return logits.softmax(dim=1)[:, 1].reshape(len(axis), len(axis)).numpy()


def pick_panel_epoch(forget: list[float], first: int) -> int:
    """The epoch n ≥ `first` (1-based) with the most forgetting at epoch end; the earliest on a tie. `forget[i]`
    belongs to epoch i + 2."""
    start = first - 2
    return start + int(np.argmax(forget[start:])) + 2


def _panel_data(cfg: ToyConfig, data: _Data, trace: _Trace, forget: list[float]) -> PanelData:
    epoch = pick_panel_epoch(forget, cfg.first_measured)
    axis = torch.linspace(0, 1, cfg.grid)
    prev, cur = trace.states[epoch - 2], trace.states[epoch - 1]
    adv_prev, adv_cur = trace.advs[epoch - 2], trace.advs[epoch - 1]
    probs = (_grid_probability(prev, cfg, axis), _grid_probability(cur, cfg, axis))
    x, y = data.x[0], data.y[0]

    def wrong(state: dict[str, Tensor], adv: Tensor) -> np.ndarray:
        with torch.no_grad():
            return (_member(state, cfg)(adv).argmax(dim=1) != y).numpy()

    marks = np.stack([wrong(prev, adv_prev), wrong(cur, adv_cur), wrong(cur, adv_prev)])
    return PanelData(epoch=epoch, axis=axis.numpy(), prob_prev=probs[0], prob_cur=probs[1], x=x.numpy(),
                     y=y.numpy(), adv_prev=adv_prev.numpy(), adv_cur=adv_cur.numpy(), wrong=marks,
                     prob_last=_grid_probability(trace.states[-1], cfg, axis), last_epoch=cfg.epochs)


def run_toy(cfg: ToyConfig, progress: ProgressSink | None = None, threads: Threads = "auto") -> ToyResult:
    """Trains every variant of every seed (all at once, on the CPU) and returns the per-epoch counts and
    accuracies of every run and the figure-3 panel data of the base run of the first seed.

    progress: where epochs are reported (None: nowhere); threads: torch's CPU threads (an int, 'auto' = measured
    on a step of the ensemble, None = unchanged)."""
    start = time.perf_counter()
    layout = _Layout(cfg.seeds, len(cfg.variants))
    data = _load_data(cfg, layout)
    probe_model = EnsembleMLP(layout.runs, cfg.hidden, DIMS)
    probe_x = data.x[:, : cfg.batch_size].reshape(-1, DIMS)
    probe = model_probe(probe_model, probe_x, data.y[:, : cfg.batch_size].reshape(-1))
    choice = choose_threads(threads, probe, torch.device("cpu"))
    with using_threads(choice.threads):
        trace = _train_all(cfg, layout, data, progress or SilentProgress())
    arrays = {k: torch.stack(v).double().numpy() for k, v in trace.rows.items()}  # [epochs(−1), R]
    for key in (*COUNT_KEYS, "own_error"):
        arrays[key] = arrays[key] / cfg.n_train
    panels = _panel_data(cfg, data, trace, arrays["forget_at_epoch_end"][:, 0].tolist())
    return ToyResult(cfg, arrays, panels, time.perf_counter() - start, choice.threads)
