"""The process group of a torchrun launch: set up from torchrun's environment variables, one per process.

`start(device)` initializes it (NCCL on CUDA, gloo on CPU) when the process was started by torchrun and returns the
`Context`; without torchrun it returns the single-process context, and every hook of this package does nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from memloss.errors import ConfigError, MemlossError, PeerFailed

T = TypeVar("T")

SEED_STRIDE = 1_000_003  # rank r's seed is seed + r·SEED_STRIDE (rank 0 keeps the user's seed)
TIMEOUT = timedelta(minutes=30)  # a collective waiting longer means a rank is stuck, not slow


@dataclass(frozen=True)
class Context:
    """rank in [0, world); local_rank: the rank on this node (its CUDA device); active: a process group exists
    (torchrun, even with one process)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    active: bool = False

    @property
    def main(self) -> bool:
        """True on the rank that owns the side effects (run directory, files, progress, the store's writes)."""
        return self.rank == 0


_CURRENT = Context()


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher that sets its variables) started this process."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"))


def env_rank() -> int:
    """This process's rank as torchrun's environment gives it (0 without torchrun), before or after `start`."""
    return int(os.environ["RANK"]) if launched_by_torchrun() else 0


def current() -> Context:
    """The context of this process (the single-process one before `start` or without torchrun)."""
    return _CURRENT


def start(device: torch.device) -> Context:
    """Joins the process group of a torchrun launch (once per process) for work on `device`; the backend is NCCL on
    CUDA and gloo on CPU. Without torchrun: the single-process context."""
    global _CURRENT
    if _CURRENT.active or not launched_by_torchrun():
        return _CURRENT
    rank, world, local = (int(os.environ[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if device.type == "cuda":
        torch.cuda.set_device(local)
        dist.init_process_group("nccl", timeout=TIMEOUT, device_id=torch.device("cuda", local))
    else:
        dist.init_process_group("gloo", timeout=TIMEOUT)
    _CURRENT = Context(rank, world, local, True)
    return _CURRENT


def rank_device(device: torch.device) -> torch.device:
    """The device of this rank: its own CUDA device (torchrun's LOCAL_RANK) when `device` is CUDA."""
    if _CURRENT.active and device.type == "cuda":
        if torch.cuda.device_count() <= _CURRENT.local_rank:
            raise ConfigError(f"rank {_CURRENT.rank} needs CUDA device {_CURRENT.local_rank} but this node has "
                              f"{torch.cuda.device_count()}; start at most that many processes per node")
        return torch.device("cuda", _CURRENT.local_rank)
    return device


def rank_seed(seed: int) -> int:
    """This rank's seed for its random streams (augmentation, attack starts): `seed` on rank 0, so one process
    under torchrun draws as the plain command does; reproducible for a given world size."""
    return seed + SEED_STRIDE * _CURRENT.rank


def owns(item: int) -> bool:
    """True when work item `item` (e.g. an evaluation batch) is this rank's: items are dealt round-robin."""
    return item % _CURRENT.world == _CURRENT.rank


def barrier() -> None:
    if _CURRENT.active:
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Runs the body on rank 0 first and then on the other ranks (shared caches: the first fills them)."""
    if _CURRENT.active and not _CURRENT.main:
        dist.barrier()
    yield
    if _CURRENT.active and _CURRENT.main:
        dist.barrier()


def share(value: Any) -> Any:
    """Rank 0's `value` on every rank (a small picklable object)."""
    if not _CURRENT.active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn: Callable[[], T]) -> T | None:
    """Runs `fn` on rank 0 only and returns its result there (None on the other ranks, which wait for it). When `fn`
    raises a `MemlossError` (bad input: a run directory in use, a store held by another run), every other rank raises
    `PeerFailed` with its message, so the whole job ends with rank 0's one line. One process: `fn()`."""
    if not _CURRENT.active:
        return fn()
    if not _CURRENT.main:
        failed = share(None)
        if failed is not None:
            raise PeerFailed(failed)
        return None
    try:
        result = fn()
    except MemlossError as err:
        share(str(err))
        raise
    share(None)
    return result


def stop() -> None:
    """Leaves the process group (end of the command)."""
    global _CURRENT
    if _CURRENT.active and dist.is_initialized():
        dist.destroy_process_group()
    _CURRENT = Context()
