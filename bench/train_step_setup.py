"""Set-up of bench/train_step.py: its options, the configurations it compares, their sessions (built with the
trainer's own helpers) with the memory filled to steady state, and the per-configuration result rows."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from memloss.errors import MemlossError
from memloss.memstore.base import MemStore
from memloss.memstore.spec import DatasetFingerprint, StoreSpec, ThreatModel, labels_sha256
from memloss.memstore.store import create_memory_store, create_store
from memloss.trainer.config.schema import DataConfig, MethodConfig, OptimConfig, RunConfig, TrainConfig
from memloss.trainer.data.registry import dataset_info
from memloss.trainer.training.augment import sample_views
from memloss.trainer.training.memory import DeferredWriter
from memloss.trainer.training.session import Session, _model, _optimizer, _step_setup

STORE_WAIT_TARGET = 0.02  # store overhead ≤ 2 % of step time
K_COST_PER_SLOT = 0.09  # MemLoss-K step ≤ (1 + 0.09·K) × TRADES step
SEED = 0


class BenchError(MemlossError):
    """An impossible benchmark option."""


@dataclass(frozen=True)
class BenchConfig:
    """Resolved options. steps: timed steps per configuration, split into `repeats` interleaved rounds."""

    device: torch.device
    model: str
    n: int
    batch_size: int
    steps: int
    warmup: int
    repeats: int
    ks: tuple[int, ...]
    threads: int
    budget_bytes: int

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.steps < 1 or self.warmup < 0 or self.repeats < 1:
            raise BenchError("--batch-size, --steps and --repeats must be ≥ 1 and --warmup ≥ 0")
        if self.steps < self.repeats:
            raise BenchError(f"--steps ({self.steps}) must be ≥ --repeats ({self.repeats}): a round times ≥ 1 step")
        if not self.ks or min(self.ks) < 1:
            raise BenchError(f"--ks must list memory depths ≥ 1, e.g. 1,3,8; got {self.ks}")
        if self.n < self.batch_size * self.steps_per_config:
            raise BenchError(f"--n {self.n} is too small for {self.steps_per_config} steps of {self.batch_size}; "
                             f"use --n ≥ {self.batch_size * self.steps_per_config} or fewer --steps")

    @property
    def steps_per_config(self) -> int:
        """Warm-up plus timed steps: all come from one epoch, so each needs a batch of distinct samples."""
        return self.warmup + self.steps


@dataclass(frozen=True)
class Variant:
    """One configuration: MemLoss depth k (0 = plain TRADES, no store) and store backend ("zarr", "ram" or None)."""

    k: int
    backend: str | None

    @property
    def name(self) -> str:
        return "TRADES" if self.k == 0 else f"TRADES+MemLoss K={self.k} ({self.backend})"


@dataclass
class Runner:
    """A configuration's session, its batches of the timed epoch in order, and where it is in them."""

    variant: Variant
    session: Session
    batches: list[np.ndarray]
    x: torch.Tensor
    y: torch.Tensor
    position: int = 0


@dataclass
class Row:
    """Results of one configuration: per-round figures and their medians. by_cpu: the primary clock (ratios and
    targets) is the process CPU time (on the CPU device, where other jobs steal wall time) instead of wall time
    (CUDA events on the GPU)."""

    variant: Variant
    by_cpu: bool
    round_ms: list[float] = field(default_factory=list)
    round_cpu_ms: list[float] = field(default_factory=list)
    round_ratio_wall: list[float] = field(default_factory=list)
    round_ratio_cpu: list[float] = field(default_factory=list)
    round_wait: list[float] = field(default_factory=list)
    round_vs_ram: list[float] = field(default_factory=list)

    @property
    def ms(self) -> float:
        return statistics.median(self.round_ms)

    @property
    def cpu_ms(self) -> float:
        return statistics.median(self.round_cpu_ms)

    @property
    def ratio(self) -> float:
        """Median within-round ratio to TRADES on the primary clock."""
        return statistics.median(self.round_ratio_cpu if self.by_cpu else self.round_ratio_wall)

    @property
    def ratio_wall(self) -> float:
        return statistics.median(self.round_ratio_wall)

    @property
    def wait(self) -> float:
        return statistics.median(self.round_wait)

    @property
    def target_ratio(self) -> float:
        return 1.0 + K_COST_PER_SLOT * self.variant.k

    def meets_targets(self) -> bool:
        """Ratio ≤ 1 + 0.09·K, and for the Zarr store also store wait ≤ 2 % of the step."""
        store_ok = self.variant.backend != "zarr" or self.wait <= STORE_WAIT_TARGET
        return self.ratio <= self.target_ratio and store_ok


@dataclass(frozen=True)
class Measure:
    """Seconds of some steps: wall (CUDA events on the GPU), process CPU time (all threads, the store's background
    threads included) and host wall time inside the store (read, push, flush)."""

    wall: float
    cpu: float
    wait: float


def config_for(bc: BenchConfig, k: int) -> TrainConfig:
    """The trainer's config for this variant (defaults: TRADES β = 5, PGD-10 at ε = 8/255, β′ = 2 per slot)."""
    return TrainConfig(data=DataConfig(dataset="synthetic", n=bc.n, batch_size=bc.batch_size),
                       method=MethodConfig(method="trades", k=k), optim=OptimConfig(epochs=max(k, 1) + 1),
                       run=RunConfig(model=bc.model, device=str(bc.device), seed=SEED, memory_budget=bc.budget_bytes))


def make_store(cfg: TrainConfig, backend: str, y: torch.Tensor, tmp: Path) -> MemStore:
    """A fresh store of the variant's backend, spec'd as trainer/training/session.py does."""
    info = dataset_info("synthetic")
    spec = StoreSpec(DatasetFingerprint("synthetic", len(y), info.shape, labels_sha256(y.numpy())),
                     ThreatModel(cfg.threat.norm, cfg.threat.eps), cfg.method.k)
    if backend == "zarr":
        return create_store(tmp / f"memory-k{cfg.method.k}.zarr", spec, memory_budget=cfg.run.memory_budget, seed=SEED)
    return create_memory_store(spec, seed=SEED)


def make_session(bc: BenchConfig, v: Variant, y_cpu: torch.Tensor, tmp: Path) -> Session:
    """A Session built with trainer/training/session.py's helpers; no loader (batches come from tensors on the device)."""
    torch.manual_seed(SEED)
    cfg = config_for(bc, v.k)
    info = dataset_info("synthetic")
    model = _model(cfg, info, bc.device)
    optimizer, scheduler = _optimizer(cfg, model, -(-bc.n // bc.batch_size))
    generator = torch.Generator(device=bc.device).manual_seed(SEED)
    empty = torch.empty(0)
    s = Session(cfg, tmp, bc.device, info, None, None, empty, empty, model, optimizer,  # type: ignore[arg-type]
                scheduler, _step_setup(cfg, model, bc.device, {}), generator)
    if v.backend is not None:
        s.store = make_store(cfg, v.backend, y_cpu, tmp)
        s.writer = DeferredWriter(s.store, bc.device)
    return s


def fill_memory(s: Session, x: torch.Tensor, k: int) -> np.ndarray:
    """Writes epochs 1..k through DeferredWriter (random δ in the ε-ball on random views), commits each, and begins
    epoch k+1; returns its order (int64 [N])."""
    eps, pad, b = s.cfg.threat.eps_float, s.info.crop_padding, s.cfg.data.batch_size
    gen = torch.Generator(device=s.device).manual_seed(SEED + 1)
    for epoch in range(1, k + 1):
        order = s.store.begin_epoch(epoch)  # type: ignore[union-attr]
        for start in range(0, len(order), b):
            idx = order[start:start + b]
            views = sample_views(len(idx), pad, s.info.flip, gen, s.device)
            delta = (torch.rand((len(idx), *x.shape[1:]), generator=gen, device=s.device) * 2 - 1) * eps
            s.writer.push(idx, delta, views)  # type: ignore[union-attr]
        s.writer.flush()  # type: ignore[union-attr]
        s.store.commit_epoch()  # type: ignore[union-attr]
    return s.store.begin_epoch(k + 1)  # type: ignore[union-attr]


def make_runner(bc: BenchConfig, v: Variant, x: torch.Tensor, y: torch.Tensor, y_cpu: torch.Tensor, tmp: Path) -> Runner:
    s = make_session(bc, v, y_cpu, tmp)
    order = fill_memory(s, x, v.k) if s.store is not None else np.random.default_rng(SEED).permutation(bc.n)
    batches = [order[i:i + bc.batch_size] for i in range(0, bc.batch_size * bc.steps_per_config, bc.batch_size)]
    if s.store is not None:
        check_steady_state(s.store, batches[0])
    return Runner(v, s, batches, x, y)


def check_steady_state(store: MemStore, idx: np.ndarray) -> None:
    """Every one of the K slots must hold memory for the first batch (else the MemLoss cost would be understated)."""
    valid = store.read(idx).valid
    if not bool(valid.all()):
        raise BenchError(f"internal error: only {int(valid.sum())} of {valid.numel()} memory entries are valid "
                         "after filling the store; the timed epoch would not be in steady state")
