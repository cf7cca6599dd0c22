"""`memloss inspect-store`: what a memory store holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from memloss.cli.common import option, store_options_option
from memloss.errors import MemlossError


def store_of(path: str) -> str:
    """The store a path names: a store itself (directory or fsspec URL), or a run directory's store (its
    config.json's --store, else RUN_DIR/memory.zarr)."""
    if "://" in path:
        return path
    folder = Path(path)
    if not folder.exists():
        raise MemlossError(f"no memory store or run directory at {path}; check the path")
    config = folder / "config.json"
    if not config.is_file():
        return path
    try:
        store = json.loads(config.read_text())["config"]["run"].get("store")
    except (ValueError, KeyError, TypeError):
        raise MemlossError(f"{config} is not a memloss run configuration; pass the store path instead") from None
    url = store or str(folder / "memory.zarr")
    if "://" not in url and not Path(url).exists():
        raise MemlossError(f"the run {path} has no memory store ({url} is missing; runs with --k 0 keep none)")
    return url


def inspect_store(
    path: Annotated[str, typer.Argument(help="A memory store (a local directory or an fsspec URL such as s3://, "
                                             "memory://) or a run directory (its store)", show_default=False)],
    json_: Annotated[bool, option("--json", help="Print the summary as JSON instead of tables",
                                  shown="off")] = False,
    plot: Annotated[Optional[Path], option("--plot", help="Also write a figure (PNG and PDF) of the perturbation "
                                                          "codes and per-sample scales per ring slot")] = None,
    store_option: Annotated[Optional[list[str]], store_options_option()] = None,
) -> None:
    """Summarize a memory store: dataset, threat model, K, committed epochs, size on disk vs float32, and per ring
    slot (each holds one epoch's perturbations) the mean |δ|/ε, the fraction at ±ε and the code entropy.
    Read-only: safe on a store a training writes."""
    from memloss.memstore.inspection.summary import render_summary, summarize
    from memloss.memstore.location.options import checked_location, parse_store_options

    url = checked_location(store_of(path), parse_store_options(store_option or []))
    summary = summarize(url)
    if json_:
        typer.echo(json.dumps(summary, indent=2))
    else:
        from rich.console import Console

        Console().print(render_summary(summary))
    if plot is not None:
        from memloss.trainer.plots.store import plot_store

        written = plot_store(url, plot)
        if not json_:
            typer.echo(f"figure written to {written[0]} and {written[1]}")
