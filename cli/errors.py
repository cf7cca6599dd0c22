"""Turns the library's one-line errors into a one-line message on stderr and exit code 2 (no traceback)."""

from __future__ import annotations

import functools
import sys
from typing import Callable, ParamSpec, TypeVar

import typer

from memloss.errors import MemlossError

P = ParamSpec("P")
R = TypeVar("R")


def one_line_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Wraps a CLI command: a MemlossError becomes `error: <message>` on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except MemlossError as err:
            print(f"error: {err}", file=sys.stderr)
            raise typer.Exit(code=2) from None

    return wrapper
