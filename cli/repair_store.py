"""`memloss repair-store`: check a memory store chunk by chunk and drop the memory of damaged epochs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from memloss.cli.common import store_options_option
from memloss.errors import MemlossError

# `--check`'s exit code when the store is damaged (as fsck and diff: 1 = something found; 2 = bad input).
DAMAGE_FOUND = 1


def repair_store(
    path: Annotated[str, typer.Argument(help="Memory store: a local directory or an fsspec URL.", show_default=False)],
    check: Annotated[bool, typer.Option("--check", help="Only report damage; change nothing (takes no lock). Exit "
                                        "code 1 when damage is found, 0 when none (scripts can test it).")] = False,
    store_option: Annotated[Optional[list[str]], store_options_option()] = None,
) -> None:
    """Check every chunk of every committed epoch of a memory store (against its manifest and checksum) and drop
    the memory of the damaged epochs, saying which; a resumed training then continues without that memory. Takes
    the store's writer lock: it never runs beside a training of the same store. With --check: exit code 0 when
    every committed epoch is intact, 1 when damage was found, 2 for bad input."""
    from memloss.memstore.location.options import checked_location, parse_store_options
    from memloss.memstore.integrity.repair import repair_store as run_repair

    if "://" not in path and not Path(path).exists():
        raise MemlossError(f"no memory store at {path}; check the path")
    location = checked_location(path, parse_store_options(store_option or []))
    report = run_repair(location, check_only=check)
    for line in report.lines():
        typer.echo(line)
    if check and report.damaged:
        typer.echo(f"run `memloss repair-store {path}` (without --check) to drop the damaged epochs' memory")
        raise typer.Exit(code=DAMAGE_FOUND)
