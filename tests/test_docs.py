"""docs/guide.md against the live CLI: every command has a section and every option `--help` prints is documented."""

import re
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from memloss.cli.app import app

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide.md"
# Wide enough that rich never wraps or truncates an option name in the help panels.
ENV = {"COLUMNS": "200"}
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def command_names() -> list[str]:
    """The commands registered on the `memloss` app, as the CLI itself sees them."""
    return sorted(typer.main.get_command(app).commands)


def help_text(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env=ENV)
    assert result.exit_code == 0, result.output
    return result.output


def help_options(command: str) -> set[str]:
    """Every `--option` token `memloss <command> --help` prints (in the option panel and in the help text)."""
    return set(OPTION.findall(help_text(command)))


def guide() -> str:
    return GUIDE.read_text(encoding="utf-8")


def test_cli_has_the_documented_commands() -> None:
    # Guards the parametrization below: an empty command list would make every other test vacuous.
    assert {"train", "inspect-store", "evaluate", "export", "demo", "toy"} <= set(command_names())


@pytest.mark.parametrize("command", command_names())
def test_every_command_has_a_section(command: str) -> None:
    headings = {line.lstrip("#").strip() for line in guide().splitlines() if line.startswith("#")}
    assert command in headings, f"docs/guide.md has no section (heading) named {command!r}"


@pytest.mark.parametrize("command", command_names())
def test_every_option_of_help_is_in_the_guide(command: str) -> None:
    options = help_options(command)
    assert "--help" in options, "the help output was not parsed (no --help found)"
    text = guide()
    missing = sorted(o for o in options if not re.search(rf"`{re.escape(o)}`", text))
    assert not missing, f"memloss {command} --help options missing from docs/guide.md: {missing}"


def test_root_help_lists_every_command() -> None:
    text = help_text()
    missing = [c for c in command_names() if c not in text]
    assert not missing, f"memloss --help does not list {missing}"


def test_option_tables_are_generated_from_the_current_cli() -> None:
    """docs/guide.md's option tables equal what scripts/gen_cli_docs.py makes from the live CLI."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_cli_docs", GUIDE.parents[1] / "scripts" / "gen_cli_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = guide()
    assert "<!-- options:train -->" in text
    assert module.regenerate(text) == text, "run: .venv/bin/python scripts/gen_cli_docs.py docs/guide.md"
