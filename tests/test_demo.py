"""`memloss demo --quick`: both runs train, evaluate and are inspected; the table, JSON and plots are written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memloss.cli.app import app


@pytest.mark.slow
def test_quick_demo_writes_table_json_and_plots(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--data-dir", str(data_dir)],
                                env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "MemLoss+TRADES" in result.output and "worst case" in result.output
    rows = json.loads((out / "demo.json").read_text())["rows"]
    assert [r["run"] for r in rows] == ["TRADES", "MemLoss+TRADES"]
    for row in rows:
        assert row["worst case"] <= min(row["aa"], row["pgd+"], row["cw"]) <= row["clean"]
        assert 0 <= row["forget at visit"] <= row["old error at visit"] <= 1 and row["store vs float32"] > 1
    for png in ("curves.png", "trades/store.png", "memloss-k3/store.png"):
        assert (out / png).stat().st_size > 1000 and (out / png).with_suffix(".pdf").stat().st_size > 1000
    assert "clean (%)" in result.output  # accuracies in percent, as memloss evaluate shows them
