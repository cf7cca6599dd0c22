"""The `--help` page of every command: options grouped in panels, names never cut, readable at 80 columns.

typer's own rich page puts a flag's negative name in a column of its own and lets rich shrink the name column when
the page is narrow (`--memory-slots-per…` at 80 columns). Here each panel is a grid of three columns: the option's
names (never wrapped, never cut; a flag's `--no-…` name on a line of its own), its type, and its help, which takes
the rest of the width and wraps. Panels keep the order of `PANELS` (the names every `train` option uses in its
`rich_help_panel`), then any other panel in order of first use; options without one are listed under "Options".
"""

from __future__ import annotations

import inspect
import os
import typing
from typing import Any

import click
from rich.console import Console, Group
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from typer.core import TyperArgument, TyperCommand

PANELS = ("Data", "Method", "Memory", "Store", "Schedule", "Evaluation", "Run", "Distributed")
TYPE_NAMES = {int: "INT", float: "FLOAT", str: "TEXT", bool: ""}


def _console() -> Console:
    width = os.environ.get("TERMINAL_WIDTH")  # typer's own setting; rich reads $COLUMNS itself
    return Console(width=int(width) if width and width.isdigit() else None, highlight=False, soft_wrap=False)


def _type(param: click.Parameter) -> str:
    if getattr(param, "is_flag", False):
        return ""
    if param.metavar:
        return param.metavar
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", str)
    args = typing.get_args(annotation)
    name = TYPE_NAMES.get(args[0] if args else annotation, getattr(annotation, "__name__", "TEXT").upper())
    return f"{name}…" if getattr(param, "multiple", False) else name


def _names(param: click.Parameter) -> Text:
    if isinstance(param, TyperArgument):
        return Text((param.name or "").upper(), style="bold cyan")
    text = Text(", ".join(param.opts), style="bold cyan")
    if param.secondary_opts:
        text.append("\n" + ", ".join(param.secondary_opts), style="bold magenta")
    return text


def _help(param: click.Parameter) -> Text:
    text = " ".join((getattr(param, "help", None) or "").split())
    if param.required:
        text = f"{text} [required]".strip()
    return Text(text, overflow="fold")


def _panel(title: str, params: list[click.Parameter], widths: tuple[int, int]) -> Panel:
    """One panel; `widths`: of the names and type columns over the whole page, so that every panel aligns."""
    grid = Table.grid(padding=(0, 1), expand=True)
    grid.add_column(no_wrap=True, min_width=widths[0])
    grid.add_column(no_wrap=True, style="yellow", min_width=widths[1])
    grid.add_column(ratio=1, overflow="fold")
    for param in params:
        grid.add_row(_names(param), _type(param), _help(param))
    return Panel(grid, title=title, title_align="left", border_style="dim")


def grouped(command: click.Command, ctx: click.Context) -> list[tuple[str, list[click.Parameter]]]:
    """(panel title, parameters) in display order: Arguments, the named panels, then Options."""
    groups: dict[str, list[click.Parameter]] = {}
    for param in command.get_params(ctx):
        if isinstance(param, TyperArgument):
            title = "Arguments"
        else:
            title = getattr(param, "rich_help_panel", None) or "Options"
        groups.setdefault(title, []).append(param)
    order = ["Arguments", *PANELS]
    known = [t for t in order if t in groups]
    other = [t for t in groups if t not in order and t != "Options"]
    return [(t, groups[t]) for t in [*known, *other, *(["Options"] if "Options" in groups else [])]]


def render_help(command: click.Command, ctx: click.Context) -> None:
    arguments = [(p.name or "").upper() + ("..." if p.nargs != 1 else "") for p in command.get_params(ctx)
                 if isinstance(p, TyperArgument)]
    usage = " ".join(["Usage:", ctx.command_path, "[OPTIONS]", *arguments])
    parts: list[Any] = [Padding(Text(usage, style="bold"), (1, 1, 0, 1))]
    if command.help:
        body = inspect.cleandoc(command.help).split("\n\f")[0]
        for paragraph in body.split("\n\n"):
            parts.append(Padding(Text(" ".join(paragraph.split())), (1, 1, 0, 1)))
    parts.append(Text(""))
    groups = grouped(command, ctx)
    params = [p for _, members in groups for p in members]
    widths = (max((len(line) for p in params for line in _names(p).plain.split("\n")), default=0),
              max((len(_type(p)) for p in params), default=0))
    parts += [_panel(title, members, widths) for title, members in groups]
    _console().print(Group(*parts))


class PanelCommand(TyperCommand):
    """A typer command whose --help is `render_help`'s page."""

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        render_help(self, ctx)
