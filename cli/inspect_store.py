"""`memloss inspect-store`: what a memory store holds (the lead registers it on the app)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from memloss.errors import MemlossError


def inspect_store(
    path: Annotated[str, typer.Argument(help="Memory store: a local directory or an fsspec URL (s3://, memory://).")],
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON instead of tables.")] = False,
    plot: Annotated[
        Optional[Path], typer.Option("--plot", help="Also write a PNG of the code histograms and scale distribution.")
    ] = None,
) -> None:
    """Summarize a memory store: dataset, threat model, K, committed epochs, size on disk vs float32, and per slot
    the mean |delta|/eps, the fraction at +-eps and the code entropy. Read-only: safe on a store a training writes."""
    from memloss.memstore.inspect import plot_store, render_summary, summarize

    if "://" not in path and not Path(path).exists():
        raise MemlossError(f"no memory store at {path}; check the path")
    summary = summarize(path)
    if json_:
        typer.echo(json.dumps(summary, indent=2))
    else:
        from rich.console import Console

        Console().print(render_summary(summary))
    if plot is not None:
        written = plot_store(path, plot)
        if not json_:
            typer.echo(f"plot written to {written}")
