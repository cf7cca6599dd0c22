"""One style across commands: every help shows defaults as '(default: …)' in the option's text, never typer's
'[default: …]'; `--threads` on every command that computes."""

from __future__ import annotations

import pytest
import typer.main
from typer.testing import CliRunner

from memloss.cli.app import app

COMMANDS = sorted(typer.main.get_command(app).commands)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_defaults_in_one_style(command: str) -> None:
    text = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
    assert "[default:" not in text
    params = typer.main.get_command(app).commands[command].params
    for param in params:
        default = getattr(param, "default", None)
        if getattr(param, "param_type_name", "") == "option" and default not in (None, False, ()):
            assert "(default:" in (param.help or ""), f"{command} {param.opts}: no '(default: …)' in its help"


@pytest.mark.parametrize("command", ["train", "evaluate", "demo", "toy"])
def test_every_computing_command_has_threads(command: str) -> None:
    params = {o for p in typer.main.get_command(app).commands[command].params for o in p.opts}
    assert "--threads" in params
