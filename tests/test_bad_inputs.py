"""Every bad input of the catalogue (tests/bad_inputs.py) ends as one line on stderr with exit code 2 and no
traceback, and changes no file that existed before. Cases run in-process through the real CLI (typer's CliRunner);
a few run the console script in a subprocess."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from memloss.cli.app import app
from memloss.trainer.config.defaults import resolve_config
from memloss.trainer.training import fit as fit_module
from bad_inputs import CASES, TINY_OPTIONS, Case

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


class _Stop(Exception):
    """Ends a fixture run after its first epoch (a run that is not finished)."""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, str]:
    """A finished run, a run stopped after epoch 1 of 2, and plain files of the wrong kinds."""
    root = tmp_path_factory.mktemp("world")
    options = {**TINY_OPTIONS, "data_dir": str(data_dir)}
    fit_module.fit(resolve_config({**options, "out": str(root / "run")}), quiet=True)
    real_finish = fit_module.finish_epoch

    def stop_after_first(s: Any, epoch: int, *args: Any) -> None:
        real_finish(s, epoch, *args)
        raise _Stop

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fit_module, "finish_epoch", stop_after_first)
        with pytest.raises(_Stop):
            fit_module.fit(resolve_config({**options, "out": str(root / "part")}), quiet=True)
    (root / "text.txt").write_text("not a model, not a store\n")
    (root / "latin1.toml").write_bytes("epochs = 3 # \xe9t\xe9\n".encode("latin-1"))
    (root / "empty").mkdir()
    from memloss.trainer.data.beton import prepare

    # Datasets that cases read are converted here, so that no case writes the cache (or prints its progress).
    prepare("digits", "train", data_dir)
    prepare("synthetic", "train", data_dir, n=64, resolution=8)
    prepare("synthetic", "train", data_dir, n=TINY_OPTIONS["n"], resolution=12)
    return {"data": str(data_dir), "run": str(root / "run"), "part": str(root / "part"),
            "store": str(root / "run" / "memory.zarr"), "ckpt": str(root / "run" / "best.safetensors"),
            "txt": str(root / "text.txt"), "bin": str(root / "latin1.toml"), "dir": str(root / "empty"),
            "proc": "/proc/memloss-cannot-write-here", "root": str(root)}


def _snapshot(*roots: Path) -> dict[Path, str]:
    out = {}
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                out[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _argv(case: Case, names: dict[str, str]) -> list[str]:
    return [arg.format(**names) for arg in case.argv]


def _prepare(case: Case, world: dict[str, str], tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    case_dir = tmp_path / "case"
    case_dir.mkdir()
    names = {**world, "case": str(case_dir), "new": str(case_dir / "new-run")}
    if case.setup is not None:
        names.update(case.setup(case_dir, world))
    expect = case.expect.format(**names)
    return _argv(case, names), {**names, "expect": expect}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case: Case, world: dict[str, str], tmp_path: Path) -> None:
    argv, names = _prepare(case, world, tmp_path)
    watched = (Path(world["root"]), Path(world["data"]), tmp_path)
    before = _snapshot(*watched)
    try:
        result = runner.invoke(app, argv)
        after = _snapshot(*watched)
    finally:
        held = world.pop("_held", None)
        if held is not None:
            held.close()
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit) or result.exception is None, result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    assert names["expect"] in lines[0], lines[0]
    assert {p: h for p, h in after.items() if p in before} == before, "a file that existed changed"
    assert sorted(set(after) - set(before)) == [], "the failed command left new files"


SUBPROCESS_CASES = ["eps-255-scale", "resume-config-edited", "inspect-corrupt-chunk"]


@pytest.mark.slow
@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_console_script_prints_one_line(case_id: str, world: dict[str, str], tmp_path: Path) -> None:
    case = next(c for c in CASES if c.id == case_id)
    argv, names = _prepare(case, world, tmp_path)
    code = "from memloss.cli.app import main; main()"
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and names["expect"] in lines[0], done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_the_catalogue_is_large_and_unique() -> None:
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)
