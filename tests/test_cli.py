"""The console script: complete --help texts, one-line errors with exit code 2 and no traceback."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from memloss.cli.app import app

runner = CliRunner()
COMMANDS = ["train", "inspect-store", "repair-store", "evaluate", "export", "demo", "toy"]


def test_root_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output and len(result.output.splitlines()) > 4


@pytest.mark.parametrize(("args", "message"), [
    (["train", "--dataset", "imagenet"], "unknown dataset 'imagenet'; valid: cifar10, cifar100, svhn, digits, synthetic"),
    (["train", "--model", "vit"], "unknown architecture"),
    (["train", "--k", "-1"], "k must be ≥ 0"),
    (["train", "--eps", "0"], "eps must be > 0"),
    (["train", "--epochs", "0"], "epochs must be ≥ 1"),
    (["train", "--k", "1", "--beta-prime", "2,1"], "give at most k values"),
    (["train", "--memory-budget", "lots"], "not a size"),
])
def test_bad_input_is_one_line_exit_2(args: list[str], message: str, tmp_path) -> None:
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1


def test_console_script_exit_code_and_single_line(tmp_path) -> None:
    exe = [sys.executable, "-c", "from cli.app import main; main()"]
    done = subprocess.run([*exe, "train", "--dataset", "nope", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: unknown dataset 'nope'")
    assert "Traceback" not in done.stderr + done.stdout
