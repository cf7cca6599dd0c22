"""`memloss compare` and the curves show each run's selection metric on the split it was measured on: a
--val-split run's `val_*` columns and panels, a plain run's `test_*`; a mixed set keeps them apart and says so."""

import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memloss.cli.app import app
from memloss.trainer.common.metric_keys import SelectionKeys, selection_keys
from memloss.trainer.experiments.compare.collect import Run
from memloss.trainer.experiments.compare.table import run_metrics, split_note

HELD = 16
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def split_runs(tmp_path_factory: pytest.TempPathFactory, small_runs: Path, data_dir: Path) -> Path:
    """A folder of two tiny synthetic runs: `val`, selected on 16 held-out training images (--val-split 16), and
    `test`, a copy of the session's k1-s0 (conftest.small_runs), selected on 16 test points."""
    import memloss

    root = tmp_path_factory.mktemp("split-runs")
    cfg = memloss.train_config(dataset="synthetic", n=128, resolution=8, batch_size=32, attack_steps=2, epochs=2,
                               k=1, val_split=HELD, out=str(root / "val"), data_dir=str(data_dir))
    memloss.fit(cfg, quiet=True, threads=1)
    shutil.copytree(small_runs / "k1-s0", root / "test", ignore=shutil.ignore_patterns("memory.zarr"))
    return root


def test_selection_keys_prefer_val_and_name_the_attack() -> None:
    assert selection_keys([{"val_pgd40_cw_acc": 0.5}]) == SelectionKeys("val", "pgd40-cw")
    assert selection_keys([{"epoch": 1}, {"test_pgd20_acc": 0.3}]).robust == "test_pgd20_acc"
    assert selection_keys([{"epoch": 1, "loss": 1.0}]) is None


def test_a_val_split_run_shows_its_val_metrics(split_runs: Path) -> None:
    from memloss.trainer.experiments.compare.collect import read_run

    run = read_run(split_runs / "val")
    metrics = run_metrics(run)
    best = max(run.records, key=lambda r: r["val_pgd20_acc"])
    assert metrics["best val pgd20"] == best["val_pgd20_acc"] and metrics["best epoch"] == best["epoch"]
    assert metrics["final val clean"] == run.records[-1]["val_clean_acc"]
    assert not [k for k in metrics if " test " in f" {k} "]  # no test column made from val numbers


def test_mixed_splits_get_separate_columns_and_a_note(split_runs: Path, tmp_path: Path) -> None:
    from memloss.trainer.experiments.compare.run import compare

    result = compare([str(split_runs)], tmp_path / "cmp")
    rows = {row.runs[0]: row for row in result.rows}
    assert "best val pgd20" in rows["val"].cells and "best test pgd20" not in rows["val"].cells
    assert "best test pgd20" in rows["test"].cells and "best val pgd20" not in rows["test"].cells
    assert result.note is not None and "held-out val: val" in result.note and "test: test" in result.note
    assert result.note in (tmp_path / "cmp" / "compare.md").read_text()
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["note"] == result.note
    table = {t["runs"]: t for t in csv.DictReader((tmp_path / "cmp" / "compare.csv").open())}
    assert table["test"]["best val pgd20 mean"] == "" and table["val"]["best val pgd20 mean"] != ""
    cli = CliRunner().invoke(app, ["compare", str(split_runs), "--out", str(tmp_path / "c")], env={"COLUMNS": "80"})
    assert cli.exit_code == 0, cli.output
    assert "different splits" in cli.output and "best val pgd20" in cli.output


def test_one_split_needs_no_note(split_runs: Path) -> None:
    from memloss.trainer.experiments.compare.collect import read_run

    run = read_run(split_runs / "val")
    assert split_note({"a": [run], "b": [Run(tmp := split_runs / "x", {}, 1, run.records, {})]}) is None and tmp


def test_curves_draw_each_split_on_its_own_labelled_panels(split_runs: Path) -> None:
    from memloss.trainer.experiments.compare.collect import read_run
    from memloss.trainer.plots.curves import Series, curves_figure

    series = [Series(name, [read_run(split_runs / name).records]) for name in ("val", "test")]
    fig = curves_figure(series, "compare: val and test")
    axes = {ax.get_ylabel(): ax for ax in fig.axes if ax.get_visible()}
    val, test = axes["PGD-20 accuracy, held-out val (%)"], axes["PGD-20 accuracy, test (%)"]
    assert [line.get_label() for line in val.get_lines()] == ["val"]
    assert [line.get_label() for line in test.get_lines()] == ["test"]
    assert val.get_ylim() == test.get_ylim()  # every accuracy panel shares one y range
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["val", "test"]
