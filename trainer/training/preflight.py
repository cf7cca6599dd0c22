"""Checks of a multi-process start made once, in the launching process, before torchrun starts any rank
(`memloss train --nproc-per-node N`): bad input then gives one line, not one line per rank or a half-started job."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from memloss.errors import ConfigError
from memloss.memstore.options import checked_location
from memloss.trainer.config.schema import TrainConfig
from memloss.trainer.distributed.shards import Shards
from memloss.trainer.distributed.state import check_world
from memloss.trainer.training.resume import absolute
from memloss.trainer.training.runs import check_new_run_dir, load_state


def check_launch(cfg: TrainConfig, resume: Path | None, nproc: int,
                 store_options: Mapping[str, Any] | None = None) -> None:
    """Raises a `ConfigError` (one line) for a start of `nproc` processes that the ranks would refuse: the process
    count, a global batch not divisible by it, an in-process store, a bad store URL or option, a run directory in
    use (new run) or a resume point of another world size. Reads only; writes nothing."""
    if nproc < 1:
        raise ConfigError(f"--nproc-per-node must be ≥ 1, got {nproc}")
    state = load_state(Path(absolute(resume))) if resume is not None else None
    if state is not None:
        check_world(state, nproc)
    Shards(0, cfg.data.batch_size, nproc, 0)  # the global batch splits evenly
    if cfg.data.aux_data:
        raise ConfigError("--aux-data does not run under torchrun (--nproc-per-node) yet; train on one process")
    if nproc > 1 and cfg.run.store and cfg.run.store.startswith("memory://"):
        raise ConfigError(f"--store {cfg.run.store} lives inside one process; with several processes use a path "
                          "(one node), a shared filesystem path or an s3:// URL (several nodes)")
    checked_location(cfg.run.store, store_options)
    if resume is None and cfg.run.out:
        check_new_run_dir(Path(absolute(cfg.run.out)))
