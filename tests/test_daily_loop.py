"""The researcher's daily loop on three tiny runs: timestamps and phase times in metrics.jsonl, TensorBoard files
that tensorboard's own reader reads, `memloss compare` (two seeds of one config grouped as mean ± std), the closing
summary of `memloss train` and Ctrl-C's resume hint."""

from __future__ import annotations

import csv
import json
import statistics
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memloss.cli.app import app
from memloss.trainer.training.runs import read_metrics

pytestmark = pytest.mark.slow


def test_every_metrics_row_has_wall_clock_and_phase_times(small_runs: Path) -> None:
    rows = read_metrics(small_runs / "k1-s0")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for row in rows:
        started, ended = datetime.fromisoformat(row["started"]), datetime.fromisoformat(row["timestamp"])
        assert started <= ended and abs(ended.timestamp() - row["time"]) < 1
        assert row["epoch_total_seconds"] >= row["epoch_seconds"] + row["eval_seconds"] > 0
        assert row["store_commit_wait_s"] >= 0
    assert rows[0]["time"] <= rows[1]["time"] <= rows[2]["time"]


def test_tensorboard_reads_the_event_files(small_runs: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(small_runs / "k1-s0"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"step/loss", "step/lr", "step/samples_per_s", "test/pgd20_acc", "test/clean_acc", "train/loss",
            "memory/forget_at_visit", "memory/learn_at_visit", "memory/old_error_at_visit", "time/epoch_seconds",
            "epoch"} <= tags
    rows = read_metrics(small_runs / "k1-s0")
    per_epoch = [(e.step, e.value) for e in events.Scalars("test/pgd20_acc")]
    assert per_epoch == [(4 * r["epoch"], pytest.approx(r["test_pgd20_acc"])) for r in rows]  # 4 steps/epoch
    assert [e.step for e in events.Scalars("step/loss")] == [2, 4, 6, 8, 10, 12]  # every 2 steps


def test_compare_groups_seeds_and_writes_table_and_figure(small_runs: Path, tmp_path: Path) -> None:
    from memloss.trainer.experiments.compare.run import compare

    result = compare([str(small_runs / "k*")], tmp_path / "cmp")
    assert {label: [r.name for r in runs] for label, runs in result.groups.items()} == {
        "k=1": ["k1-s0", "k1-s1"], "k=0": ["k0-s0"]}
    rows = {row.label: row for row in result.rows}
    best = [max(r["test_pgd20_acc"] for r in read_metrics(small_runs / n)) for n in ("k1-s0", "k1-s1")]
    cell = rows["k=1"].cells["best test pgd20"]
    assert cell.mean == pytest.approx(statistics.fmean(best)) and cell.std == pytest.approx(statistics.stdev(best))
    evals = [json.loads((small_runs / n / "eval.json").read_text()) for n in ("k1-s0", "k1-s1")]
    assert rows["k=1"].cells["eval: worst case"].values == tuple(e["worst_case_accuracy"] for e in evals)
    assert rows["k=0"].cells["eval: pgd20"].std == 0.0 and "final forget at visit" not in rows["k=0"].cells
    names = sorted(p.name for p in (tmp_path / "cmp").iterdir())
    assert names == ["compare.csv", "compare.json", "compare.md", "compare.pdf", "compare.png"]
    table = {t["group"]: t for t in csv.DictReader((tmp_path / "cmp" / "compare.csv").open())}
    assert sorted(table) == ["k=0", "k=1"] and table["k=1"]["seeds"] == "0 1"
    assert float(table["k=1"]["best test pgd20 mean"]) == pytest.approx(cell.mean, rel=1e-5)
    assert f"{100 * cell.mean:.2f} ± {100 * cell.std:.2f}" in (tmp_path / "cmp" / "compare.md").read_text()
    saved = {g["group"]: g for g in json.loads((tmp_path / "cmp" / "compare.json").read_text())["groups"]}
    assert saved["k=1"]["metrics"]["best test pgd20"]["values"] == list(cell.values)


def test_compare_figure_has_the_expected_axes(small_runs: Path) -> None:
    from memloss.trainer.experiments.compare.collect import find_runs, group_runs, read_run
    from memloss.trainer.plots.curves import Series, curves_figure

    groups = group_runs([read_run(p) for p in find_runs([small_runs])])
    fig = curves_figure([Series(k, [r.records for r in v]) for k, v in groups.items()], "compare: synthetic")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert {ax.get_xlabel() for ax in axes} == {"epoch"}
    labels = [ax.get_ylabel() for ax in axes]
    assert "clean accuracy, test (%)" in labels and "PGD-20 accuracy, test (%)" in labels
    assert axes[0].get_ylim() == axes[1].get_ylim()  # compared accuracy panels share one y range
    assert all(float(t).is_integer() for t in axes[0].get_xticks())
    assert fig.legends and "k=1 (2 seeds)" in [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(axes[0].collections) == 1  # the seed band of the two-seed group


def test_compare_cli_prints_a_table_within_80_columns(small_runs: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["compare", str(small_runs / "*"), "--out", str(tmp_path / "c")],
                                env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "k=1: k1-s0, k1-s1" in result.output and "± " in result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80 and "…" not in result.output
    missing = CliRunner().invoke(app, ["compare", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "not a run directory" in missing.output


def test_inspect_store_takes_a_run_directory(small_runs: Path) -> None:
    result = CliRunner().invoke(app, ["inspect-store", str(small_runs / "k1-s0")], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "ring slot" in result.output and "committed epochs" in result.output and "…" not in result.output
    none = CliRunner().invoke(app, ["inspect-store", str(small_runs / "k0-s0")])
    assert none.exit_code == 2 and "has no memory store" in none.output


def test_finished_training_prints_summary_and_ctrl_c_says_how_to_resume(
        tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["train", "--dataset", "synthetic", "--n", "64", "--resolution", "8", "--batch-size", "32",
            "--eval-n", "8", "--attack-steps", "1", "--epochs", "1", "--k", "0", "--threads", "1",
            "--data-dir", str(data_dir), "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for text in ("best epoch 1: PGD-20", "best weights:", "last weights:", "tensorboard --logdir",
                 f"next: memloss evaluate {tmp_path / 'run'} --out {tmp_path / 'run' / 'eval.json'}"):
        assert text in result.output
    assert "memory store:" not in result.output  # K=0 keeps none

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("memloss.trainer.training.fit.fit", interrupted)
    stopped = CliRunner().invoke(app, ["train", "--resume", str(tmp_path / "run")])
    assert stopped.exit_code == 130
    assert f"epoch 1 is the last complete one; continue with: memloss train --resume {tmp_path / 'run'}" in (
        stopped.output)
