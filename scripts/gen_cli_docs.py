"""Regenerates the option tables between `<!-- options:CMD -->` markers in docs/guide.md from the live CLI, so the
guide and `--help` cannot drift apart (tests/test_docs.py fails when the guide is stale).

Usage: .venv/bin/python scripts/gen_cli_docs.py docs/guide.md
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import typer.main
from typer.core import TyperArgument

from memloss.cli.app import app

# Help strings end with "(default: …)" where the default depends on the dataset or method.
DEFAULT_RE = re.compile(r"\s*[\[(]default: (.*)[\])]\s*$")
TYPE_NAMES = {int: "int", float: "float", str: "text"}


def _type_name(param: Any) -> str:
    if getattr(param, "is_flag", False):
        return "flag"
    if getattr(param, "multiple", False):
        return "text, repeatable"
    annotation = param.type_descriptor.annotation
    fallback = getattr(annotation, "__name__", str(annotation)).lower().replace("posixpath", "path")
    return TYPE_NAMES.get(annotation, fallback)


def _default(param: Any, help_text: str) -> tuple[str, str]:
    """(default, help without the default) of one parameter."""
    match = DEFAULT_RE.search(help_text)
    if match:
        return match.group(1), help_text[: match.start()].rstrip()
    if isinstance(param, TyperArgument) or param.default in (None, False, ()):
        return "", help_text
    return ("on" if param.default else "off") if param.is_flag else str(param.default), help_text


def _row(param: Any) -> str:
    default, help_text = _default(param, (param.help or "").replace("\n", " ").strip())
    if isinstance(param, TyperArgument):
        names = f"`{param.name.upper()}` (argument)"
    else:
        names = " / ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
    shown = f"`{default}`".replace("|", "\\|") if default else ""
    return f"| {names} | {_type_name(param)} | {shown} | {help_text.replace('|', chr(92) + '|')} |"


def option_table(command: Any) -> str:
    """The markdown table of one command's options."""
    lines = ["| option | type | default | what it does |", "|---|---|---|---|"]
    lines += [_row(p) for p in command.params]
    lines.append("| `--help` | flag |  | Show this message and exit. |")
    return "\n".join(lines)


def regenerate(text: str) -> str:
    """`text` with every marked option table replaced by the live one."""
    for name, command in typer.main.get_command(app).commands.items():
        marker = re.compile(rf"(<!-- options:{re.escape(name)} -->\n)(?:.*?\n)?(<!-- /options:{re.escape(name)} -->)",
                            re.S)
        text = marker.sub(lambda m: m.group(1) + option_table(command) + "\n" + m.group(2), text)
    return text


if __name__ == "__main__":
    guide = Path(sys.argv[1])
    guide.write_text(regenerate(guide.read_text()))
