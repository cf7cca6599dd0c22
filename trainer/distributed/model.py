"""The model of a multi-process run: DDP averages the gradients (its all-reduce overlaps the backward), BN
statistics stay per rank unless --sync-bn converts the BN layers to SyncBatchNorm."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from memloss.errors import ConfigError
from memloss.trainer.distributed.context import current


def check_sync_bn(sync_bn: bool, device: torch.device) -> None:
    """Refuses --sync-bn where torch cannot run it: SyncBatchNorm needs CUDA tensors."""
    if sync_bn and current().world > 1 and device.type != "cuda":
        raise ConfigError("--sync-bn needs CUDA (torch's SyncBatchNorm runs on GPUs only); drop --sync-bn on CPU")


def training_model(model: nn.Module, sync_bn: bool, device: torch.device) -> nn.Module:
    """The module the training step's train-mode forwards go through: `model` itself with one process (also one
    under torchrun), else a DDP wrapper of it (parameters shared with `model`, which stays the one saved, attacked
    and evaluated). With `sync_bn`, `model`'s BN layers are converted in place to SyncBatchNorm first (same
    parameters and buffers)."""
    ctx = current()
    if not ctx.active or ctx.world == 1:  # nothing to average: DDP would only add its per-step cost (bench/ddp.py)
        return model
    check_sync_bn(sync_bn, device)
    if sync_bn:
        for name, child in list(model.named_children()):
            setattr(model, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
    # Buffers are not broadcast at every forward: BN statistics stay per rank and are averaged once per epoch.
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   **_no_buffer_sync())


def _no_buffer_sync() -> dict[str, bool]:
    """DDP's switch for the per-forward buffer broadcast: `forward_sync_buffers` in the newest torch, before that
    (torch 2.4 to at least 2.11) only `broadcast_buffers`."""
    import inspect

    params = inspect.signature(DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}


def check_regularizer(reg: str) -> None:
    """Refuses TE and MeoW with several processes: their state (per-sample prediction averages, the MeoW codebook
    and its optimizer) is updated per process and would drift apart between ranks."""
    if reg != "none" and current().world > 1:
        raise ConfigError(f"--reg {reg} keeps state that each process would update apart; train it with one "
                          "process (drop torchrun / --nproc-per-node)")
