"""Set-up of bench/train_step.py: its options, the grid of configurations it compares, their sessions (built with
the trainer's own helpers) with the memory filled to steady state, and the per-configuration result rows."""

from __future__ import annotations

import statistics
import time
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
from memloss.trainer.training.forgetting import MONITOR_STRIDE, ForgettingMonitor
from memloss.trainer.training.session import Session, _model, _optimizer, _step_setup
from memloss.trainer.training.store_setup import attach_memory

K_COST_PER_SLOT = 0.09  # all K slots: step ≤ (1 + 0.09·K) × TRADES (the first benchmark's target)
SAMPLED_TARGET = 1.5  # m of K slots: step ≤ 1.5 × TRADES (issue: K = 64 with m = 4)
MONITOR_TARGET = 1.03  # the forgetting monitor: ≤ 3 % of a TRADES step
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
    precision: str = "fp32"  # the trainer's --precision (bf16: CUDA autocast)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.steps < 1 or self.warmup < 0 or self.repeats < 1:
            raise BenchError("--batch-size, --steps and --repeats must be ≥ 1 and --warmup ≥ 0")
        if self.steps < self.repeats:
            raise BenchError(f"--steps ({self.steps}) must be ≥ --repeats ({self.repeats}): a round times ≥ 1 step")
        if not self.ks or min(self.ks) < 1:
            raise BenchError(f"--ks must list memory depths ≥ 1, e.g. 1,4,16,64; got {self.ks}")
        if self.n < self.batch_size * self.steps_per_config:
            raise BenchError(f"--n {self.n} is too small for {self.steps_per_config} steps of {self.batch_size}; "
                             f"use --n ≥ {self.batch_size * self.steps_per_config} or fewer --steps")

    @property
    def steps_per_config(self) -> int:
        """Warm-up plus timed steps: all come from one epoch, so each needs a batch of distinct samples."""
        return self.warmup + self.steps


@dataclass(frozen=True)
class Variant:
    """One configuration: MemLoss depth k (0 = plain TRADES), slots per step m (0 = all), the memory forward, the
    slot draw, and whether the forgetting monitor runs (k = 0 with the monitor = --track-forgetting's K=1 store)."""

    k: int
    m: int = 0
    forward: str = "separate"
    draw: str = "step"
    monitor: bool = True

    @property
    def name(self) -> str:
        if self.k == 0:
            return "TRADES + monitor" if self.monitor else "TRADES"
        slots = f"m={self.m}" if self.m else "all"
        extra = (" window" if self.draw == "window" else "") + ("" if self.monitor else " no-monitor")
        return f"K={self.k} {slots} {self.forward}{extra}"

    @property
    def target(self) -> float | None:
        if self.k == 0:
            return MONITOR_TARGET if self.monitor else None
        return SAMPLED_TARGET if self.m else 1.0 + K_COST_PER_SLOT * self.k


def grid(ks: tuple[int, ...]) -> list[Variant]:
    """TRADES, TRADES + monitor, every K × m ∈ {all, 1, 4} (m < K) × separate/fused (fused only with ≥ 2 slots),
    per-window draws for every K ≥ 2 (m = 4, or 1 when K ≤ 4), and the largest K's window row without the monitor."""
    out = [Variant(0, monitor=False), Variant(0)]
    for k in ks:
        for m in (0, 1, 4):
            if m and m >= k:
                continue
            forwards = ("separate", "fused") if (m or k) > 1 else ("separate",)
            out += [Variant(k, m, forward) for forward in forwards]
    windows = [Variant(k, 4 if k > 4 else 1, "fused", "window") for k in ks if k >= 2]
    if windows:
        last = windows[-1]
        windows.append(Variant(last.k, last.m, last.forward, last.draw, monitor=False))
    return out + windows


@dataclass
class Runner:
    """A configuration's session, its batches of the timed epoch in order, and where it is in them."""

    variant: Variant
    session: Session
    batches: list[np.ndarray]
    x: torch.Tensor
    y: torch.Tensor
    position: int = 0
    clock: MonitorClock | None = None


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
    round_monitor: list[float] = field(default_factory=list)

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
    def monitor(self) -> float:
        """Median share of the step spent in the forgetting monitor (0 without it)."""
        return statistics.median(self.round_monitor)

    def meets_target(self) -> bool | None:
        """Ratio to TRADES within the target; for "TRADES + monitor", the monitor's own share ≤ 3 % (the ratio also
        holds the K=1 store that --track-forgetting keeps, and CPU-time ratios are noisy at the percent level)."""
        target = self.variant.target
        if target is None:
            return None
        return self.monitor <= target - 1.0 if self.variant.k == 0 else self.ratio <= target


@dataclass(frozen=True)
class Measure:
    """Seconds of some steps: wall (CUDA events on the GPU), process CPU time (all threads), host wall time inside
    the store (read, push, flush) and time inside the forgetting monitor (`MonitorClock`)."""

    wall: float
    cpu: float
    wait: float
    monitor: float = 0.0


class MonitorClock:
    """Times the session's `ForgettingMonitor.observe` calls: wall time on the CPU device (where every op runs
    synchronously), CUDA events around each call on a GPU (read after the round's final synchronize)."""

    def __init__(self, s: Session) -> None:
        self.seconds, self._events = 0.0, []  # type: ignore[var-annotated]
        if s.monitor is None:
            return
        observe, cuda = s.monitor.observe, s.device.type == "cuda"

        def timed(*args: object, **kwargs: object) -> None:
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                observe(*args, **kwargs)  # type: ignore[arg-type]
                end.record()
                self._events.append((start, end))
                return
            t0 = time.perf_counter()
            observe(*args, **kwargs)  # type: ignore[arg-type]
            self.seconds += time.perf_counter() - t0

        s.monitor.observe = timed  # type: ignore[method-assign]

    def take(self) -> float:
        """Seconds spent in the monitor since the last call (the device must be synchronized on CUDA)."""
        got = self.seconds + sum(a.elapsed_time(b) for a, b in self._events) / 1000.0
        self.seconds, self._events = 0.0, []
        return got


def config_for(bc: BenchConfig, v: Variant) -> TrainConfig:
    """The trainer's config for this variant (defaults: TRADES β = 5, PGD-10 at ε = 8/255, β′ = 2 per slot)."""
    method = MethodConfig(method="trades", k=v.k, memory_slots_per_step=v.m, memory_slot_draw=v.draw,
                          memory_forward=v.forward)
    return TrainConfig(data=DataConfig(dataset="synthetic", n=bc.n, batch_size=bc.batch_size), method=method,
                       optim=OptimConfig(epochs=max(v.k, 1) + 1),
                       run=RunConfig(model=bc.model, device=str(bc.device), seed=SEED, track_forgetting=v.monitor,
                                     precision=bc.precision))


def make_store(k: int, y: torch.Tensor, backend: str = "ram", tmp: Path | None = None, budget: int = 0,
               block_size: int | None = None) -> MemStore:
    """A fresh store of depth k, spec'd as trainer/training/session.py does: in RAM, or Zarr under `tmp`."""
    info = dataset_info("synthetic")
    spec = StoreSpec(DatasetFingerprint("synthetic", len(y), info.shape, labels_sha256(y.numpy())),
                     ThreatModel("Linf", "8/255"), k)
    if backend == "zarr":
        assert tmp is not None
        return create_store(tmp / f"memory-k{k}.zarr", spec, memory_budget=budget, seed=SEED, block_size=block_size)
    return create_memory_store(spec, seed=SEED)


def make_session(bc: BenchConfig, v: Variant, store: MemStore | None, tmp: Path) -> Session:
    """A Session built with trainer/training/session.py's helpers; no loader (batches come from tensors on the
    device). The monitor watches every MONITOR_STRIDE-th sample, as on a large training set."""
    torch.manual_seed(SEED)
    cfg = config_for(bc, v)
    info = dataset_info("synthetic")
    model = _model(cfg, info, bc.device)
    optimizer, scheduler = _optimizer(cfg, model, -(-bc.n // bc.batch_size))
    generator = torch.Generator(device=bc.device).manual_seed(SEED)
    empty = torch.empty(0)
    s = Session(cfg, tmp, bc.device, info, None, None, empty, empty, model, optimizer,  # type: ignore[arg-type]
                scheduler, _step_setup(cfg, model, bc.device, {}), generator)
    if store is not None:
        s.store = store
        attach_memory(s)
        s.monitor = ForgettingMonitor(store.n, store.k, bc.device, MONITOR_STRIDE) if v.monitor else None
    return s


def fill_memory(s: Session, x: torch.Tensor, epochs: int) -> None:
    """Writes epochs 1..`epochs` through the session's DeferredWriter (random δ in the ε-ball on random views) and
    commits each: afterwards every slot holds memory for every sample."""
    eps, pad, b = s.cfg.threat.eps_float, s.info.crop_padding, s.cfg.data.batch_size
    gen = torch.Generator(device=s.device).manual_seed(SEED + 1)
    for epoch in range(1, epochs + 1):
        order = s.store.begin_epoch(epoch, ages=lambda w: [])  # type: ignore[union-attr]  # writes only
        for start in range(0, len(order), b):
            idx = order[start:start + b]
            views = sample_views(len(idx), pad, s.info.flip, gen, s.device)
            delta = (torch.rand((len(idx), *x.shape[1:]), generator=gen, device=s.device) * 2 - 1) * eps
            s.writer.push(idx, delta, views)  # type: ignore[union-attr]
        s.writer.flush()  # type: ignore[union-attr]
        s.ahead.drain()  # type: ignore[union-attr]  # the writes queued on the read-ahead worker, before the commit
        s.store.commit_epoch()  # type: ignore[union-attr]


def begin_timed_epoch(s: Session, epoch: int) -> np.ndarray:
    """Begins the timed epoch as `train_epoch` does (per-window draws, monitor) and returns its order."""
    assert s.store is not None and s.slots is not None
    ages = s.slots.epoch_ages(epoch, s.store.committed_epochs)
    order = s.store.begin_epoch(epoch, ages=ages)
    if s.monitor is not None:
        s.monitor.begin_epoch(epoch)
    return order


def check_steady_state(store: MemStore, idx: np.ndarray, drawn: bool) -> None:
    """Every slot must hold memory for the first batch (per-window draws: at least one), else the MemLoss cost
    would be understated."""
    valid = store.read(idx).valid
    if not (bool(valid.any(dim=1).any()) if drawn else bool(valid.all())):
        raise BenchError(f"internal error: only {int(valid.sum())} of {valid.numel()} memory entries are valid "
                         "after filling the store; the timed epoch would not be in steady state")
