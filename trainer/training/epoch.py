"""One epoch of training (the store's order → loader → augmentation → memory → step → store write) and its per-epoch
PGD-20 evaluation. The store's reads and writes run one batch ahead on a worker thread (`Session.ahead`): the next
batch's memory is gathered while the current step runs. The commit and the end-of-epoch files: checkpoint.py."""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from memloss.errors import MemlossError
from memloss.trainer.common.precision import fp32_exact
from memloss.trainer.distributed.context import current, rank_seed
from memloss.trainer.distributed.reduce import all_sum, average_buffers, merge_monitor, sum_counts, sum_metrics
from memloss.trainer.distributed.shards import shard_range
from memloss.trainer.methods.pgd import pgd_robust
from memloss.trainer.models.files import save_model
from memloss.trainer.training.augment import apply_view, sample_views
from memloss.trainer.training.bn import FIRST_STEP_MOMENTUM, set_bn_momentum
from memloss.trainer.training.checkpoint import model_meta
from memloss.trainer.training.memory import MemoryExamples, build_memory_examples, valid_counts
from memloss.trainer.training.metrics import MemoryShares, MetricSums
from memloss.trainer.training.progress import Reporter
from memloss.trainer.training.selection import selection
from memloss.trainer.training.session import Session
from memloss.trainer.training.step import train_step

EVAL_BATCH = 256
NONFINITE_CHECK_EVERY = 50  # steps between the (syncing) checks for a NaN/Inf loss or written δ


class TrainingDiverged(MemlossError):
    """The loss became NaN or Inf."""


def _memory_for_step(s: Session, x: torch.Tensor, idx: Any, views: Any, wait: list[float],
                     shares: MemoryShares | None) -> tuple[Any, MemoryExamples | None]:
    """The store's MemoryBatch of the batch and the memory examples of the slots the step uses (None: no term)."""
    t0 = time.perf_counter()
    reader = s.ahead if s.ahead is not None else s.store  # ahead: gathered while the previous step ran
    batch = reader.read(idx)  # type: ignore[union-attr]
    wait[0] += time.perf_counter() - t0
    if shares is not None:
        shares.add(batch.valid)
    k = s.cfg.method.k
    if k == 0 or s.slots is None:
        return batch, None
    slots, weight = s.slots.choose(valid_counts(batch, k))
    if not slots:
        return batch, None
    return batch, build_memory_examples(x, batch, views, s.info.crop_padding, s.cfg.method.memory_view, k,
                                        slots=slots, weight=weight)


def _train_batch(s: Session, x_u8: torch.Tensor, y: torch.Tensor, idx_dev: torch.Tensor, idx: Any,
                 sums: MetricSums, wait: list[float], shares: MemoryShares | None = None) -> torch.Tensor:
    """One optimizer step on a loader batch; idx_dev: int64 [B] on the device, idx: the same on the host; `shares`
    counts the rows holding memory per age."""
    x = x_u8.float().div_(255.0)
    if s.device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    views = sample_views(len(y), s.info.crop_padding, s.info.flip, s.generator, s.device)
    x_view = apply_view(x, views, s.info.crop_padding)
    batch, memory = _memory_for_step(s, x, idx, views, wait, shares) if s.store is not None else (None, None)
    s.model.train()
    first = s.cfg.optim.bn_first_step and s.global_step == 0
    momenta = set_bn_momentum(s.model, FIRST_STEP_MOMENTUM) if first else None  # statistics := the first batch's
    result = train_step(s.step, x_view, y, idx_dev, memory, s.generator)
    if s.writer is not None and result.x_adv is not None:
        t0 = time.perf_counter()
        stored = s.writer.push(idx, result.x_adv.float() - x_view, views)
        wait[0] += time.perf_counter() - t0
        if s.monitor is not None:
            # The model of this step, after its forwards and before its update (forgetting.py explains the events);
            # it judges in IEEE fp32 whatever --precision.
            s.monitor.observe(s.model, x, x_view, stored, y, idx, batch, views, s.info.crop_padding)
    if momenta is not None:
        set_bn_momentum(s.model, momenta)
    s.optimizer.zero_grad(set_to_none=True)
    result.loss.backward()
    s.optimizer.step()
    s.global_step += 1
    if s.cfg.optim.schedule_step == "batch":
        s.scheduler.step()
    if s.ema is not None:
        s.ema.update(s.model)
    sums.add(result.metrics, len(y))
    return result.loss.detach()


def train_epoch(s: Session, epoch: int, reporter: Reporter) -> dict[str, float]:
    """One pass over the training set in the store's order; returns the epoch's mean metrics."""
    if s.store is not None:
        if s.landing is not None:  # the epoch start drops the oldest memory: only once the resume point is on disk
            s.store.write_after(s.landing)
        committed = s.store.committed_epochs
        ages = s.slots.epoch_ages(epoch, committed) if s.slots is not None else None
        following = s.slots.next_epoch_ages(epoch, committed) if s.slots is not None else None  # its early load
        order = s.store.begin_epoch(epoch, ages=ages, mix=s.data.mix, next_ages=following)
        s.orders = {epoch: s.shards.local(order) if s.shards is not None else order}  # this rank's part
        if s.shards is not None and s.writer is not None:
            s.writer.begin_epoch(order)  # type: ignore[attr-defined]  # the writes are gathered by global batch
    elif s.unstored is not None:
        s.orders = {epoch: s.unstored(epoch)}
    if s.monitor is not None:
        s.monitor.begin_epoch(epoch)
    s.loader.set_epoch(epoch)
    if s.step.te is not None:
        s.step.te.begin_epoch(epoch)
    sums, wait, nonfinite = MetricSums(), [0.0], torch.zeros((), dtype=torch.bool, device=s.device)
    shares = MemoryShares(s.loader.base_rows if s.data.mix is not None else None)  # this rank's batch split
    reporter.start_epoch(epoch)
    t0, position = time.perf_counter(), 0
    _prefetch(s, epoch, 0)
    for step, (x_u8, y, idx) in enumerate(s.loader):
        host_idx = s.orders[epoch][position:position + len(y)] if s.store is not None else None
        position += len(y)
        _prefetch(s, epoch, position)
        loss = _train_batch(s, x_u8, y, idx, host_idx, sums, wait, shares)
        nonfinite |= ~torch.isfinite(loss)
        if (step + 1) % NONFINITE_CHECK_EVERY == 0:
            _check_finite(s, epoch, step, nonfinite)
        reporter.step(position * current().world, loss, len(y) * current().world)  # global samples (torchrun)
    _check_finite(s, epoch, step, nonfinite)
    if s.cfg.optim.schedule_step == "epoch":
        s.scheduler.step()  # DM-Improves-AT's 'cosinew': once after the epoch's last batch
    average_buffers(s.model)  # per-rank BN statistics → their mean on every rank (torchrun)
    if s.ema is not None:
        s.ema.copy_buffers(s.model)  # BN statistics are copied, not averaged (the published update_bn)
    if s.writer is not None:
        t1 = time.perf_counter()
        s.writer.flush()
        if s.ahead is not None:
            s.ahead.drain()
        wait[0] += time.perf_counter() - t1
    seconds = time.perf_counter() - t0
    sums.reduce(sum_metrics)  # over ranks (torchrun): one collective per epoch
    shares.reduce(sum_counts)
    if s.monitor is not None:
        merge_monitor(*s.monitor.shared_tensors())
    monitored = s.monitor.read() if s.monitor is not None else {}
    return {**sums.read(), **monitored, **shares.read(), "epoch_seconds": seconds,
            "samples_per_s": sums.samples / seconds,
            "store_wait_s": wait[0], "store_wait_frac": wait[0] / seconds}


def _prefetch(s: Session, epoch: int, position: int) -> None:
    """Keeps the memory of the batches from `position` of the epoch's order on (the loader's next batch and as many
    after it as the store's read-ahead holds) gathering in the background."""
    if s.ahead is not None:
        s.ahead.follow(s.orders[epoch], position, s.loader.batch_size)


def _check_finite(s: Session, epoch: int, step: int, nonfinite: torch.Tensor) -> None:
    """The epoch's device-side NaN/Inf flags read (host syncs, every NONFINITE_CHECK_EVERY steps and at the end of
    the epoch): the loss's, then the written δ's (the writer's, memstore/quant.py); either stops the run."""
    if bool(nonfinite):
        _diverged(s, epoch, step)
    if s.writer is not None:
        s.writer.check()


def _diverged(s: Session, epoch: int, step: int) -> None:
    path = s.run_dir / "diverged.safetensors"
    save_model(path, s.model, model_meta(s, epoch))
    raise TrainingDiverged(f"the loss became NaN/Inf in epoch {epoch} (by step {step + 1}); weights saved to {path}, "
                           f"the last good state is {s.run_dir / 'last.state.pt'}; lower --lr or check the data")


def evaluate_epoch(s: Session, epoch: int, model: torch.nn.Module | None = None,
                   on_batch: Callable[[int], None] | None = None) -> dict[str, float]:
    """Clean and robust accuracy of `model` (default: the trained model) on the selection points: the test points,
    or with --val-split the held-out training images (`s.eval_x`), under the --select-attack attack (selection.py;
    default the evaluator's `pgd20`: Linf α = 2/255, L2 15/255, uniform start, the paper's early-stopping attack),
    in IEEE fp32 (no autocast, no TF32) whatever --precision the run trains in. Eval mode. `on_batch(points)` is
    called after each batch (progress). Under torchrun each rank attacks its part of the points (its own random
    starts) and the counts are summed."""
    chosen = selection(s.cfg)
    spec = chosen.spec(s.cfg)
    cfg = spec.pgd_config()
    gen = torch.Generator(device=s.device).manual_seed(rank_seed(s.cfg.run.seed + 7919 * epoch))
    model = s.model if model is None else model
    model.eval()
    clean = robust = torch.zeros((), device=s.device)
    first, last = shard_range(len(s.eval_y), current().rank, current().world)
    for start in range(first, last, EVAL_BATCH):
        x = s.eval_x[start:min(start + EVAL_BATCH, last)].to(s.device).float().div_(255.0)
        y = s.eval_y[start:min(start + EVAL_BATCH, last)].to(s.device)
        with fp32_exact(s.device):  # selection as `memloss evaluate` computes it, whatever --precision trains in
            with torch.no_grad():
                clean = clean + (model(x).argmax(1) == y).sum()
            _, ok = pgd_robust(model, x, y, cfg, spec.objective or "ce", generator=gen)
        robust = robust + ok.sum()
        if on_batch is not None:
            on_batch(len(y) * current().world)  # rank 0's progress stands for every rank's
    n = len(s.eval_y)
    clean_acc, robust_acc = (all_sum(torch.stack([clean, robust]).float()) / n).tolist()
    return {chosen.clean: clean_acc, chosen.robust: robust_acc, "eval_n": n}


def evaluate_ema(s: Session, epoch: int, on_batch: Callable[[int], None] | None = None) -> dict[str, float]:
    """The weight average's own clean and robust accuracy (same points, attack and random starts), as `ema_*`
    keys; {} without --ema."""
    if s.ema is None:
        return {}
    evaluated = evaluate_epoch(s, epoch, s.ema.model, on_batch=on_batch)
    return {f"ema_{key}": value for key, value in evaluated.items() if key != "eval_n"}
