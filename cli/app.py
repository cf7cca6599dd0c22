"""The `memloss` console script: a thin typed layer; each command calls one library function."""

from __future__ import annotations

from typing import Annotated, Callable

import typer

from memloss.cli.errors import OneLineGroup, one_line_errors
from memloss.cli.help import PanelCommand

app = typer.Typer(
    name="memloss",
    help="Adversarial training with memory adversarial examples (MemLoss), a Zarr memory of the last K epochs, "
    "and AutoAttack evaluation.",
    no_args_is_help=True,
    add_completion=False,
    cls=OneLineGroup,
    pretty_exceptions_enable=False,
)


def _register(name: str, command: Callable[..., None], context: dict | None = None) -> None:
    app.command(name, context_settings=context, cls=PanelCommand)(one_line_errors(command))


def _register_all() -> None:
    from memloss.cli.compare import compare
    from memloss.cli.demo import demo
    from memloss.cli.evaluate import evaluate, export
    from memloss.cli.inspect_store import inspect_store
    from memloss.cli.repair_store import repair_store
    from memloss.cli.toy import toy
    from memloss.cli.train import CONTEXT, train

    _register("train", train, CONTEXT)
    _register("inspect-store", inspect_store)
    _register("repair-store", repair_store)
    _register("evaluate", evaluate)
    _register("export", export)
    _register("compare", compare)
    _register("toy", toy)
    _register("demo", demo)


_register_all()


def _print_version(value: bool) -> None:
    if value:
        import memloss

        typer.echo(f"memloss {memloss.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """memloss: train (TRADES/MART/HAT/AT + MemLoss), inspect the memory store, evaluate with AutoAttack."""


def main() -> None:
    """Entry point of the `memloss` console script."""
    app()


if __name__ == "__main__":  # `python -m memloss.cli.app`: how `memloss train --nproc-per-node N` starts torchrun
    main()
