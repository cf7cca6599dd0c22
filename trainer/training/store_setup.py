"""The memory store of a training session: opening it for this run (rank 0 the writer, the other ranks of a torchrun
run readers), the parts that follow it (read-ahead worker, writer, slot sampler, forgetting monitor) and reopening
a reader after rank 0's commit."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memloss.memstore.ahead import ReadAhead
from memloss.memstore.location.options import store_location
from memloss.memstore.spec import StoreSpec, ThreatModel
from memloss.memstore.store import open_or_create, open_store
from memloss.trainer.common.devices import pin_host_buffers
from memloss.trainer.config.schema import TrainConfig
from memloss.trainer.data.mixed import TrainingSet
from memloss.trainer.distributed.context import current
from memloss.trainer.distributed.store import check_store_url, open_for_rank
from memloss.trainer.distributed.writes import GatheringWriter
from memloss.trainer.training.forgetting import ForgettingMonitor
from memloss.trainer.training.memory import DeferredWriter
from memloss.trainer.training.slots import SlotSampler

if TYPE_CHECKING:
    from memloss.trainer.training.session import Session


def open_run_store(cfg: TrainConfig, data: TrainingSet, run_dir: Path, fresh: bool, notes: list[str],
                   options: Mapping[str, Any] | None = None) -> Any | None:
    """The run's store, locked for this run. A new run (`fresh`) rebuilds a store inside its run directory (left by
    a start that never completed an epoch) and replaces another one that never committed an epoch."""
    if not cfg.uses_store:
        return None
    spec = StoreSpec(data.fingerprint(), ThreatModel(cfg.threat.norm, cfg.threat.eps), max(cfg.method.k, 1))
    url = cfg.run.store or str(run_dir / "memory.zarr")
    own = "://" not in url and Path(url).is_relative_to(run_dir)
    check_store_url(url)
    location = store_location(url, options)
    # Under torchrun rank 0 is the one writer; the other ranks read the committed epochs (distributed/store.py).
    slots = window_slots(cfg)
    return open_for_rank(
        lambda: open_or_create(location, spec, memory_budget=cfg.run.memory_budget, seed=cfg.run.seed,
                               owner=str(run_dir), replace_uncommitted=fresh, recreate=fresh and own, notes=notes,
                               window_slots=slots),
        lambda: open_store(location, spec, read_only=True, memory_budget=cfg.run.memory_budget, window_slots=slots))


def window_slots(cfg: TrainConfig) -> int | None:
    """The memory ages a store window decodes: m with per-window slot draws (the windows grow as K/m), else all."""
    m = cfg.method
    return m.memory_slots_per_step if m.memory_slot_draw == "window" and m.memory_slots_per_step else None


def attach_memory(s: Session) -> None:
    """The parts that follow the store: its read-ahead worker, the deferred writer, the slot sampler and the
    forgetting monitor."""
    m = s.cfg.method
    s.ahead = ReadAhead(s.store, pin=pin_host_buffers(s.device))  # type: ignore[arg-type]
    s.writer = DeferredWriter(s.ahead, s.device)
    if s.shards is not None:  # every rank's rows go to rank 0, the one writer (distributed/writes.py)
        everyone = bool(getattr(s.store, "resident", False))  # the same on every rank: same budget and layout
        inner = s.writer if current().main else (DeferredWriter(_Mirror(s.ahead), s.device) if everyone else None)
        s.writer = GatheringWriter(inner, s.shards, everyone)  # type: ignore[assignment]
    s.slots = SlotSampler(m.k, m.memory_slots_per_step, m.memory_slot_draw, s.cfg.run.seed)
    s.monitor = ForgettingMonitor(s.store.n, s.store.k, s.device)  # type: ignore[union-attr]


class _Mirror:
    """The write target of a rank ≠ 0 whose store mirrors rank 0's RAM: `write` keeps the rows in its RAM."""

    def __init__(self, ahead: ReadAhead) -> None:
        self.write = ahead.mirror


def reopen_store(s: Session) -> None:
    """A read-only rank's store after rank 0's commit landed (torchrun): a store that mirrors takes the epoch's rows
    it kept in RAM as committed; any other takes the ring state from storage again (`follow_commit`: it then holds
    the epochs rank 0 committed since, without opening the store and building its layout anew)."""
    if s.store is None or not s.store.read_only:
        return
    if s.ahead is not None:
        s.ahead.drain()  # the epoch's last reads (and, for a mirror, its last mirrored rows)
    if s.store.mirrors:
        s.store.mirror_commit()
    else:
        s.store.follow_commit()
