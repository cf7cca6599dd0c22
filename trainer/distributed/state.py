"""What a resume needs from each rank (its random streams), and the world size a run is resumed with.

The model, optimizer, schedule and store are the same on every rank; the random streams (augmentation, attack
starts, slot draws) are per rank. Rank 0 gathers them into the resume point as `ranks` (one entry per rank), with
`world_size`; a resume with another world size is refused (the per-rank streams and the batch split would differ).
"""

from __future__ import annotations

from typing import Any

from memloss.errors import ConfigError
from memloss.trainer.distributed.context import current
from memloss.trainer.distributed.reduce import gather_to_main


def world_fields(parts: dict[str, Any]) -> dict[str, Any]:
    """The resume point's per-rank fields: {'world_size', 'ranks'} on rank 0 (gathered: a collective, every rank
    calls it), {} elsewhere and without torchrun."""
    ctx = current()
    if not ctx.active:
        return {}
    gathered = gather_to_main(parts)
    return {"world_size": ctx.world, "ranks": gathered} if ctx.main else {}


def check_world(state: dict[str, Any], world: int | None = None) -> None:
    """Refuses to resume a run saved with another number of processes than `world` (default: this job's)."""
    saved, now = int(state.get("world_size", 1)), current().world if world is None else world
    if saved != now:
        raise ConfigError(f"this run was trained with {saved} process(es) and is resumed with {now}; resume it with "
                          f"{saved} (torchrun --nproc-per-node {saved}, or memloss train --nproc-per-node {saved})")


def own_part(state: dict[str, Any]) -> dict[str, Any] | None:
    """This rank's entry of a resume point's `ranks` (None in a single-process state)."""
    ranks = state.get("ranks")
    return ranks[current().rank] if ranks else None
