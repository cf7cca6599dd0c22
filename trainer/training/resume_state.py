"""The resume point of a session: what `training_state` saves after an epoch, and `restore`, which loads it into a
new session (the run then continues at the next epoch). The user's own data is checked to be unchanged."""

from __future__ import annotations

import json
from typing import Any

import torch

from memloss.errors import ConfigError
from memloss.trainer.common.rng import generator_state, restore_generator
from memloss.trainer.data.registry import USER_META_KEY, DatasetInfo, info_meta
from memloss.trainer.distributed.state import own_part
from memloss.trainer.training.session import Session


def training_state(s: Session, epoch: int) -> dict[str, Any]:
    """What resuming after `epoch` needs: tensors and plain containers only (weights_only-loadable)."""
    return {"epoch": epoch, "model": s.model.state_dict(), "optimizer": s.optimizer.state_dict(),
            "scheduler": s.scheduler.state_dict(), **generator_state(s.generator),
            "cpu_rng": torch.get_rng_state(), "best_robust": s.best_robust, "best_epoch": s.best_epoch,
            "store_epoch": epoch if s.store is not None else -1, "global_step": s.global_step,
            "extras": {k: v.state_dict() for k, v in s.extras.items()},
            "ema": s.ema.state_dict() if s.ema is not None else None,
            "memory": {name: part.state_dict() for name, part in (("slots", s.slots), ("monitor", s.monitor))
                       if part is not None},
            "config": json.dumps(s.cfg.to_dict()), **_data_record(s.info), **s.rank_states}


def _data_record(info: DatasetInfo) -> dict[str, str]:
    """The user dataset's record (shape, classes, statistics, labels' digests) in a resume point; {} otherwise."""
    return {"user_dataset": text} if (text := info_meta(info).get(USER_META_KEY)) else {}


def _check_same_data(s: Session, state: dict[str, Any]) -> None:
    """A resumed run on the user's own data trains on the data it started with (its record is in the state)."""
    saved = state.get("user_dataset")
    if saved is None:  # a built-in dataset (its splits do not change)
        return
    now = _data_record(s.info).get("user_dataset")
    if json.loads(saved) != json.loads(now or "null"):
        raise ConfigError(f"the training data {s.info.name} changed since the run started (its samples, labels or "
                          "statistics differ from the resume point's record); restore it, or start a new run with "
                          "--out")


def restore(s: Session, state: dict[str, Any]) -> list[str]:
    """Loads a saved training state into the session: the run continues at epoch state['epoch'] + 1. Returns notes
    for the user (a random stream re-derived because the resume changed the kind of device)."""
    _check_same_data(s, state)
    s.model.load_state_dict(state["model"])
    s.optimizer.load_state_dict(state["optimizer"])
    s.scheduler.load_state_dict(state["scheduler"])
    own = own_part(state)  # a torchrun run's per-rank streams
    note = restore_generator(s.generator, own or state)  # saved on another kind of device: re-derived
    torch.set_rng_state((own or state)["cpu_rng"])
    s.best_robust, s.best_epoch = float(state["best_robust"]), int(state["best_epoch"])
    for name, extra in s.extras.items():
        extra.load_state_dict(state["extras"][name])
    if s.ema is not None:
        s.ema.load_state_dict(state["ema"])
    saved = state.get("memory", {})  # absent in states written before slot sampling and the monitor existed
    for name, part in (("slots", s.slots), ("monitor", s.monitor)):
        if part is not None and name in saved:
            part.load_state_dict(saved[name])
    if own is not None and s.slots is not None and own.get("slots") is not None:
        s.slots.load_state_dict(own["slots"])
    s.start_epoch = int(state["epoch"]) + 1
    # States written before the count existed: any value > 0 (only the run's first step is special, training/bn.py).
    s.global_step = int(state.get("global_step", s.start_epoch - 1))
    return [note] if note else []


def rank_part(s: Session) -> dict[str, Any]:
    """This rank's random streams, for the resume point's per-rank entry (distributed/state.py)."""
    return {**generator_state(s.generator), "cpu_rng": torch.get_rng_state(),
            "slots": s.slots.state_dict() if s.slots is not None else None}
