"""Setting up a training run: device, data, model, optimizer, schedule, memory store, and restoring a saved state.

`open_session` builds everything `fit` needs into one `Session`; `restore` loads a run's last training state into it.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from memloss.errors import ConfigError
from memloss.memstore.ahead import ReadAhead
from memloss.trainer.common.devices import bind_device, resolve_device
from memloss.trainer.data.ffcv_cuda import ffcv_follows
from memloss.trainer.config.schema import TrainConfig
from memloss.trainer.data.loader import loader_note, make_loader, random_order
from memloss.trainer.data.mixed import (GeneratedRequest, MixedLoader, TrainingSet, prepare_training_set,
                                        prepare_user_training_set, unstored_order)
from memloss.trainer.data.registry import DatasetError, DatasetInfo, dataset_info, is_builtin
from memloss.trainer.data.sources import load_tensors
from memloss.trainer.distributed.context import current, main_first, rank_device, rank_seed
from memloss.trainer.distributed.model import check_regularizer, training_model
from memloss.trainer.distributed.shards import MixedShards, Shards
from memloss.trainer.methods.losses import LossParams
from memloss.trainer.methods.registry import get_method
from memloss.trainer.methods.threat import PGDConfig
from memloss.trainer.models.files import load_model, require_compatible, resolve_checkpoint
from memloss.trainer.models.registry import build_model
from memloss.trainer.training.bn import parameter_groups, set_bn_momentum
from memloss.trainer.training.ema import WeightAverage, make_weight_average
from memloss.trainer.training.forgetting import ForgettingMonitor
from memloss.trainer.training.memory import DeferredWriter
from memloss.trainer.training.regstate import MeowState, TEState
from memloss.trainer.training.slots import SlotSampler
from memloss.trainer.training.store_setup import attach_memory, open_run_store
from memloss.trainer.training.step import StepSetup


@dataclass
class Session:
    """Everything a run needs between epochs; mutable training state lives in the torch objects."""

    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    info: DatasetInfo
    data: TrainingSet  # the base split, and with --aux-data the generated one and the batch mix
    loader: Any
    eval_x: torch.Tensor
    eval_y: torch.Tensor
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    step: StepSetup
    generator: torch.Generator
    store: Any | None = None
    ahead: ReadAhead | None = None  # the store's reads and writes, run ahead on a worker thread
    writer: DeferredWriter | None = None
    ema: WeightAverage | None = None
    slots: SlotSampler | None = None  # which memory slots each step uses (--memory-slots-per-step)
    monitor: ForgettingMonitor | None = None  # forgetting/learning events, whenever a store exists
    orders: dict[int, np.ndarray] = field(default_factory=dict)
    start_epoch: int = 1
    global_step: int = 0  # optimizer steps so far, over the whole run
    best_robust: float = -1.0
    best_epoch: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what opening did besides opening (a store rebuilt, ...)
    # One worker thread that writes an epoch's files once the store's commit of it landed (training goes on).
    committer: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "memloss-commit"))
    landing: Future[None] | None = None
    shards: Shards | MixedShards | None = None  # this rank's part of each global batch (torchrun); None: one process
    rank_states: dict[str, Any] = field(default_factory=dict)  # the resume point's per-rank fields (torchrun)
    unstored: Callable[[int], np.ndarray] | None = None  # the mixed order of a run without a store

    def order_for(self, epoch: int) -> np.ndarray:
        """The loader's traversal order: the one the store decided for this epoch (this rank's part of it)."""
        return self.orders[epoch]


def _attack_config(cfg: TrainConfig, start: str | None) -> PGDConfig | None:
    """The training attack: the method's start unless --attack-start says otherwise, the model mode of
    --attack-bn; None for a method without attack."""
    if start is None:
        return None
    t = cfg.threat
    return PGDConfig(t.norm, t.eps_float, t.step_float, t.attack_steps, 1, cfg.method.attack_start or start,
                     bn=cfg.method.attack_bn)


def _regularizers(cfg: TrainConfig, model: nn.Module, info: DatasetInfo, n: int, sample: torch.Tensor,
                  device: torch.device) -> dict[str, Any]:
    if cfg.method.reg == "te":
        return {"te": TEState(n, info.num_classes, cfg.optim.epochs, device)}
    if cfg.method.reg == "meow":
        return {"meow": MeowState(model, sample.to(device).float() / 255.0, device, cfg.run.seed)}
    return {}


def _step_setup(cfg: TrainConfig, model: nn.Module, device: torch.device, regs: dict[str, Any],
                info: DatasetInfo | None = None, train_model: nn.Module | None = None) -> StepSetup:
    method = get_method(cfg.method.method)
    if method.attack_objective is None and cfg.uses_store:
        raise ConfigError("--method standard makes no adversarial examples; use --k 0 without --track-forgetting")
    helper = None
    if method.needs_helper:
        # A run directory gives its final weights: best.safetensors is picked by PGD-20, meaningless for a
        # standard (non-robust) helper.
        path = resolve_checkpoint(cfg.method.helper, "last.safetensors")  # type: ignore[arg-type]
        helper, meta = load_model(path, device)
        if info is not None:
            require_compatible(meta, info, path)  # a helper of another dataset or input shape is refused
        helper.eval().requires_grad_(False)
    beta_prime = cfg.method.beta_prime_per_slot() if cfg.method.k > 0 else None
    return StepSetup(model, method, LossParams(cfg.method.beta, cfg.method.gamma, cfg.method.label_smoothing),
                     _attack_config(cfg, method.attack_start), beta_prime, cfg.method.memloss_variant, helper,
                     autocast=cfg.run.precision == "bf16" and device.type == "cuda", te=regs.get("te"),
                     meow=regs.get("meow"),
                     memory_forward=cfg.method.memory_forward, clean_grad=cfg.method.memloss_clean_grad,
                     train_model=train_model)


def _selection_points(cfg: TrainConfig, data: TrainingSet) -> tuple[torch.Tensor, torch.Tensor]:
    """The points of the per-epoch selection: the held-out training images with --val-split (the test set is not
    read), else the first --eval-n test points (selection.py)."""
    if data.held_out is not None:
        return data.held_out.x, data.held_out.y
    d = cfg.data
    try:
        return load_tensors(d.dataset, "test", d.data_dir, n=cfg.run.eval_n, resolution=d.resolution)
    except DatasetError as err:
        raise ConfigError(f"--eval-n {cfg.run.eval_n}: {err}" if cfg.run.eval_n else str(err)) from None


def _model(cfg: TrainConfig, info: DatasetInfo, device: torch.device) -> nn.Module:
    model = build_model(cfg.run.model or info.default_arch, info).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)  # faster convolutions (bf16 autocast and fp32/TF32)
    return model


def _optimizer(cfg: TrainConfig, model: nn.Module, steps_per_epoch: int) -> tuple[Any, Any]:
    o = cfg.optim
    if o.schedule_step == "batch" and o.pct_start * o.epochs * steps_per_epoch == 1.0:  # OneCycleLR divides by 0
        raise ConfigError(f"{o.epochs * steps_per_epoch} optimizer steps with pct_start {o.pct_start} make a OneCycle "
                          "warm-up of exactly one step, which torch's OneCycleLR cannot schedule; change --epochs "
                          "or --batch-size")
    if o.schedule_step == "epoch" and o.pct_start * o.epochs == 1.0:
        raise ConfigError(f"{o.epochs} epochs with pct_start {o.pct_start} make a OneCycle warm-up of exactly one "
                          "epoch, which torch's OneCycleLR cannot schedule; change --epochs or --pct-start")
    if o.bn_momentum is not None:
        set_bn_momentum(model, o.bn_momentum)
    opt = torch.optim.SGD(parameter_groups(model, o.weight_decay, o.bn_weight_decay), lr=o.lr, momentum=o.momentum,
                          weight_decay=o.weight_decay, nesterov=True)
    # Per epoch (DM-Improves-AT's 'cosinew'): one schedule step per epoch, total_steps = epochs.
    total = o.epochs if o.schedule_step == "epoch" else o.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=o.lr, total_steps=total, pct_start=o.pct_start,
                                                anneal_strategy="cos")
    return opt, sched


def _uniform_part(shards: Shards | MixedShards, uniform: Callable[[int], np.ndarray]) -> Callable[[int], np.ndarray]:
    """This rank's part of the seeded uniform order (no store): the loader's order under torchrun."""
    return lambda epoch: shards.local(uniform(epoch))


def _shards(cfg: TrainConfig, data: TrainingSet) -> Shards | MixedShards | None:
    """This rank's part of every global batch (torchrun): of the base set's batches, or of the mixed ones."""
    ctx, mix = current(), data.mix
    if not ctx.active:
        return None
    if mix is not None:
        return MixedShards(mix.base_per_batch, mix.aux_per_batch, mix.batches, ctx.world, ctx.rank)
    return Shards(data.n, cfg.data.batch_size, ctx.world, ctx.rank)


def _dataset(cfg: TrainConfig) -> tuple[DatasetInfo, TrainingSet, torch.Tensor, torch.Tensor]:
    """(facts, training set, test points x uint8 [n,C,H,W], y [n]) of a built-in dataset or the user's own data."""
    d, eval_n = cfg.data, cfg.run.eval_n
    if not is_builtin(d.dataset):  # --dataset PATH (trainer/data/userdata.py)
        generated = GeneratedRequest(d.aux_data, d.aux_take, d.aux_fraction, d.epoch_samples,
                                     d.aux_draw or "without", d.aux_epoch or "pass")
        return prepare_user_training_set(d.dataset, d.test_data, d.data_dir, n=d.n, num_workers=d.num_workers,
                                         val_split=d.val_split, val_seed=d.val_seed, eval_n=eval_n,
                                         batch_size=d.batch_size, generated=generated)
    info = dataset_info(d.dataset, resolution=d.resolution)
    data = prepare_training_set(d.dataset, d.data_dir, n=d.n, resolution=d.resolution, batch_size=d.batch_size,
                                aux_data=d.aux_data, aux_take=d.aux_take, aux_fraction=d.aux_fraction,
                                epoch_samples=d.epoch_samples, num_workers=d.num_workers,
                                aux_draw=d.aux_draw or "without", aux_epoch=d.aux_epoch or "pass",
                                val_split=d.val_split, val_seed=d.val_seed)
    eval_x, eval_y = _selection_points(cfg, data)
    return info, data, eval_x, eval_y


def open_session(cfg: TrainConfig, run_dir: Path, *, fresh: bool = True,
                 store_options: Mapping[str, Any] | None = None) -> Session:
    """Builds data, model, optimizer, schedule and store for `cfg`; nothing is trained yet. `fresh`: a new run
    (not a resume). store_options: storage options of a store URL (memstore/location/options.py)."""
    torch.manual_seed(cfg.run.seed)
    device = bind_device(rank_device(resolve_device(cfg.run.device)))  # cuda:N made current: events, streams
    ffcv_follows(device)  # a CPU run's loader creates no CUDA stream, event or pinned buffer (data/ffcv_cuda.py)
    d = cfg.data
    with main_first():  # rank 0 fills the dataset caches, then the other ranks read them
        info, data, eval_x, eval_y = _dataset(cfg)
    model = _model(cfg, info, device)
    if current().rank > 0:
        torch.manual_seed(rank_seed(cfg.run.seed))  # the model is DDP's (rank 0's); the CPU stream is per rank
    shards = _shards(cfg, data)
    steps = shards.steps if shards is not None else data.steps_per_epoch(d.batch_size)
    optimizer, scheduler = _optimizer(cfg, model, steps)
    generator = torch.Generator(device=device).manual_seed(rank_seed(cfg.run.seed))
    check_regularizer(cfg.method.reg)
    regs = _regularizers(cfg, model, info, data.n, eval_x[:1], device)
    train_model = training_model(model, cfg.run.sync_bn, device)
    session = Session(cfg, run_dir, device, info, data, None, eval_x, eval_y, model, optimizer, scheduler,
                      _step_setup(cfg, model, device, regs, info, train_model), generator, extras=regs,
                      shards=shards)
    if data.mix is not None:
        session.notes.append(data.mix.describe(data.parts))  # what an epoch is, in one line at the start
    session.ema = make_weight_average(model, cfg.optim.ema, cfg.optim.epochs, steps)
    session.store = open_run_store(cfg, data, run_dir, fresh, session.notes, store_options)
    try:
        session.loader = _loader(session)
        session.notes.append(loader_note())  # FFCV or the numpy reader, and how to get FFCV
    except BaseException:
        if session.store is not None:
            session.store.close()  # releases its lock
        raise
    if session.store is not None:
        attach_memory(session)
    return session


def _loader(s: Session) -> Any:
    """The FFCV loader in the store's order (seeded uniform without a store); with generated data the mixed one."""
    d, data, shards = s.cfg.data, s.data, s.shards
    if data.mix is not None:
        if s.store is None:
            s.unstored = unstored_order(data.parts, s.cfg.run.seed, data.mix)
        if isinstance(shards, MixedShards):  # this rank's part of every mixed batch
            if s.unstored is not None:
                s.unstored = _uniform_part(shards, s.unstored)
            return MixedLoader(data, s.order_for, s.device, d.num_workers, (shards.base_rows, shards.aux_rows))
        return MixedLoader(data, s.order_for, s.device, d.num_workers)
    order = s.order_for if s.store is not None else None
    if shards is not None and order is None:
        order = _uniform_part(shards, random_order(data.n, s.cfg.run.seed))
    return make_loader(data.base, batch_size=d.batch_size // (shards.world if shards else 1), device=s.device,
                       order=order, seed=s.cfg.run.seed, num_workers=d.num_workers,
                       samples=shards.local_size if shards is not None else None)
