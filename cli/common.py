"""What every command shares: options whose help ends in one default style, the `--threads` option, progress
shown the same way (rich on a terminal, plain lines otherwise) and Ctrl-C ending with a hint and exit code 130."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from memloss.trainer.common.progress import ProgressSink

THREADS_HELP = ("CPU threads of torch: a number, or auto = the fastest count measured by a short probe of the "
                "model ($OMP_NUM_THREADS when set)")
STORE_OPTION_HELP = ("Storage option KEY=VALUE of a store URL, e.g. endpoint_url=http://host:9000, "
                     "anon=true (VALUE read as JSON when it parses); on top of $MEMLOSS_STORE_OPTIONS (a JSON "
                     "object); not saved with the run (default: none)")


def option(*decls: str, help: str, shown: str | None = None, **kwargs: Any) -> Any:
    """A typer Option whose help ends with '(default: SHOWN)', the one style of every command's help and of the
    guide's option tables (scripts/gen_cli_docs.py reads it back)."""
    text = f"{help} (default: {shown})" if shown else help
    return typer.Option(*decls, help=text, show_default=False, **kwargs)


def threads_option(panel: str | None = None) -> Any:
    return option("--threads", help=THREADS_HELP, shown="auto", rich_help_panel=panel)


def store_options_option(panel: str | None = None) -> Any:
    """`--store-option KEY=VALUE` (repeatable): storage options of a store URL (memstore/location/options.py)."""
    return typer.Option("--store-option", help=STORE_OPTION_HELP, show_default=False, rich_help_panel=panel)


@contextmanager
def progress_sink(console: Console) -> Iterator[ProgressSink]:
    """Rich bars on a terminal, plain throttled lines on stderr otherwise."""
    from memloss.trainer.common.progress import progress_display

    with progress_display(console) as sink:
        yield sink


@contextmanager
def interruptible(hint: str) -> Iterator[None]:
    """Ctrl-C ends with one line `interrupted; HINT` on stderr and exit code 130."""
    try:
        yield
    except KeyboardInterrupt:
        print(f"interrupted; {hint}", file=sys.stderr)
        raise typer.Exit(code=130) from None


def percent(value: float | None) -> str:
    """An accuracy in [0,1] as the CLI shows every accuracy: percent with two decimals ('—' when absent)."""
    return "—" if value is None else f"{100 * value:.2f}"
