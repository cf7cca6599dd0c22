"""Issue 22's inputs: checks before torch (and the first line before it), `--help` readable at 80 columns, the
exit codes of `repair-store --check`, SIGTERM and Ctrl-C endings, the size bounds' constants, a conversion on a full
disk and the temporary files of a killed one. The bad-input catalogue itself is tests/bad_inputs.py."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from memloss.cli.app import app
from memloss.errors import MemlossError

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
runner = CliRunner()
COMMANDS = typer.main.get_command(app).commands


def _names(command: object) -> list[str]:
    return [name for p in command.params for name in (*p.opts, *p.secondary_opts) if name.startswith("--")]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_at_80_columns_shows_every_option_name_whole(name: str) -> None:
    result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": ""})
    assert result.exit_code == 0, result.output
    text = result.stdout
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    assert not re.search(r"--[\w-]*…", text)  # rich's mark of a cut name
    missing = [o for o in _names(COMMANDS[name]) if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text)]
    assert not missing, f"memloss {name} --help at 80 columns lacks {missing}"


def test_train_help_is_grouped_in_the_panels() -> None:
    text = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": ""}).stdout
    titles = re.findall(r"╭─ (\w+) ─", text)
    assert titles == ["Data", "Method", "Memory", "Store", "Schedule", "Evaluation", "Run", "Distributed", "Options"]
    options = len(COMMANDS["train"].params)
    assert len(text.splitlines()) < 3.6 * options  # was 295 lines for 48 options (6.1 an option) in one panel
    panel = {o: p.rich_help_panel for p in COMMANDS["train"].params for o in p.opts}
    assert panel["--memory-slots-per-step"] == "Memory" and panel["--store"] == "Store" and panel["--k"] == "Memory"
    assert all(panel[o] for o in panel if o != "--help"), "every train option names its panel"


# Run in a fresh interpreter: the cases' refusals must come without torch, ffcv or zarr ever imported, and a start
# that passes the checks prints its first line before torch is imported.
PROBE = r"""
import json, sys, time
from typer.testing import CliRunner
import memloss.cli.train as train_cli
from memloss.cli.app import app

seen = {}
def announce(*args, **kwargs):
    seen["torch_at_first_line"] = "torch" in sys.modules
    real(*args, **kwargs)
    raise KeyboardInterrupt  # a Ctrl-C before the run directory exists
real, train_cli.announce = train_cli.announce, announce
out = []
for argv in json.loads(sys.argv[1]):
    t0 = time.perf_counter()
    r = CliRunner().invoke(app, argv)
    out.append({"code": r.exit_code, "stderr": r.stderr, "stdout": r.stdout, "s": time.perf_counter() - t0})
heavy = [m for m in ("torch", "ffcv", "zarr") if m in sys.modules]
print(json.dumps({"cases": out, "heavy": heavy, **seen}))
"""


def test_refusals_and_the_first_line_come_before_torch(tmp_path: Path) -> None:
    new = str(tmp_path / "run")
    (tmp_path / "f.txt").write_text("x")
    refused = [["train", "--eps", "8", "--out", new], ["train", "--k", "100000000", "--out", new],
               ["train", "--store", new, "--out", new], ["train", "--epochs", "1000000000000", "--out", new],
               ["train", "--aux-data", str(tmp_path / "f.txt"), str(tmp_path / "f.txt"), "--out", new],
               ["train", "--method", "hat", "--helper", str(tmp_path / "none"), "--out", new]]
    started = ["train", "--dataset", "synthetic", "--n", "256", "--out", new, "--data-dir", str(tmp_path / "d")]
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps([*refused, started])], capture_output=True,
                          text=True, timeout=120, env=ENV, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    *cases, start = report["cases"]
    for argv, case in zip(refused, cases):
        assert case["code"] == 2 and case["stderr"].count("\n") == 1 and case["stderr"].startswith("error: "), (argv,
                                                                                                            case)
    assert report["heavy"] == [] and report["torch_at_first_line"] is False
    assert start["stdout"].startswith(f"preparing {new}: synthetic, trades K=1"), start
    assert start["code"] == 130 and "--resume" not in start["stderr"], start  # nothing to resume yet
    assert "the run had not started" in start["stderr"]
    assert not Path(new).exists() and not (tmp_path / "d").exists()  # nothing written


def test_repair_check_exits_1_on_damage_and_0_when_intact(small_runs: Path, tmp_path: Path) -> None:
    store = tmp_path / "s.zarr"
    shutil.copytree(small_runs / "k1-s0" / "memory.zarr", store)
    intact = runner.invoke(app, ["repair-store", str(store), "--check"])
    assert intact.exit_code == 0, intact.output
    chunk = next(p for p in sorted((store / "codes" / "c").rglob("*")) if p.is_file())
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    before = chunk.read_bytes()
    damaged = runner.invoke(app, ["repair-store", str(store), "--check"])
    assert damaged.exit_code == 1, damaged.output
    assert "without --check" in damaged.stdout and chunk.read_bytes() == before  # reported, not repaired


@pytest.mark.slow
def test_sigterm_ends_like_ctrl_c_with_the_resume_command(tmp_path: Path, data_dir: Path) -> None:
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "memloss.cli.app", "train", "--dataset", "synthetic", "--n", "96", "--resolution",
            "8", "--batch-size", "32", "--eval-n", "16", "--attack-steps", "1", "--epochs", "30", "--threads", "1",
            "--out", str(run), "--data-dir", str(data_dir)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 240
        while not (run / "last.state.pt").exists():  # the first epoch is complete
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, (out, err)
    last = err.strip().splitlines()[-1]
    assert last.startswith("terminated (SIGTERM); epoch ") and f"memloss train --resume {run}" in last, err
    assert "Traceback" not in err
    epoch = int(re.search(r"epoch (\d+) is the last complete one", last)[1])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["epoch"] == epoch >= 1


def test_bounds_constants_match_the_store_and_the_data() -> None:
    from memloss.memstore.entries import ROW_AUX_BYTES
    from memloss.trainer.data.sources import digits_split_indices
    from memloss.trainer.training import bounds

    assert bounds.ROW_AUX_BYTES == ROW_AUX_BYTES
    assert bounds.SPLIT_SIZES["digits"] == (len(digits_split_indices("train")), len(digits_split_indices("test")))


def test_evaluate_out_refuses_an_existing_result_unless_overwrite(tmp_path: Path) -> None:
    from memloss.trainer.evaluation.results import EvalConfig

    out = tmp_path / "eval.json"
    out.write_text("{}")
    with pytest.raises(MemlossError, match="already holds a result; pass --overwrite"):
        EvalConfig(tmp_path / "m.safetensors", attacks="pgd20", out=out)
    assert EvalConfig(tmp_path / "m.safetensors", attacks="pgd20", out=out, overwrite=True).overwrite


def test_conversion_without_room_is_refused_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from memloss.trainer.data import beton

    monkeypatch.setattr(beton, "free_bytes", lambda path: (1000, Path(path)))
    with pytest.raises(MemlossError, match=r"no room to convert synthetic train to .*MiB free in") as err:
        beton.prepare("synthetic", "train", tmp_path, n=64, resolution=8)
    assert "\n" not in str(err.value)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_disk_that_fills_during_conversion_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from memloss.trainer.data import beton

    def full(source: object, path: Path, workers: object = None, **_: object) -> None:
        path.write_bytes(b"partial")
        raise beton.DatasetError(f"[Errno {errno.ENOSPC}] No space left on device")  # as the writer reports it

    monkeypatch.setattr(beton, "write_beton", full)
    with pytest.raises(MemlossError, match=r"no room to convert synthetic train to /.*\.beton: about") as err:
        beton.prepare("synthetic", "train", tmp_path, n=64, resolution=8)
    assert str(tmp_path) in str(err.value)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # the partial file is gone


KILLED = r"""
import sys, time
from memloss.trainer.data import beton_writer, beton
run_workers = beton_writer._run_workers
def stall(*args):
    run_workers(*args)  # every sample written into the temporary .beton; killed before it is renamed
    print("written", flush=True)
    time.sleep(600)
beton_writer._run_workers = stall
beton.prepare("synthetic", "train", sys.argv[1], n=64, resolution=8)
"""


@pytest.mark.slow
def test_temporary_files_of_a_killed_conversion_are_removed_by_the_next(tmp_path: Path) -> None:
    from memloss.trainer.data.beton import prepare

    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            env=ENV)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "written"
    finally:
        proc.kill()
        proc.wait()
    left = [p.name for p in (tmp_path / "ffcv").iterdir()]
    assert left and all(name.endswith(".tmp") for name in left), left  # the unfinished .beton
    split = prepare("synthetic", "train", tmp_path, n=64, resolution=8)
    assert sorted(p.name for p in (tmp_path / "ffcv").iterdir()) == sorted([split.beton.name,
                                                                            split.beton.with_suffix(".json").name])
