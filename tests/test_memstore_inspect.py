"""memstore.inspection.summary and `memloss inspect-store`."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from rich.console import Console
from typer.testing import CliRunner

from memloss.cli.inspect_store import inspect_store
from memloss.errors import MemlossError
from memloss.memstore.zarrstore.codecs import DEFAULT_CODES_CODEC
from memloss.memstore.inspection.summary import render_summary, summarize
from memloss.trainer.plots.store import plot_store
from memloss.memstore.quant import quantize
from memloss.memstore.spec import DatasetFingerprint, StoreSpec, ThreatModel
from memloss.memstore.store import create_store

EPS = 8 / 255
SHAPE = (3, 8, 8)


def fill_store(url: Path, epochs: int, commit_last: bool = True) -> None:
    """Epochs whose δ is ±eps on 3/4 of the coordinates and 0 on the rest."""
    spec = StoreSpec(DatasetFingerprint("toy", 40, SHAPE, "0" * 64), ThreatModel("Linf", "8/255"), 2)
    g = torch.Generator().manual_seed(0)
    with create_store(url, spec, block_size=8) as store:
        for epoch in range(epochs):
            order = store.begin_epoch(epoch)
            sign = torch.randint(0, 2, (40, *SHAPE), generator=g).float() * 2 - 1
            keep = (torch.arange(3 * 8 * 8).reshape(SHAPE) % 4 != 0).float()
            codes, scale = quantize(sign * keep * EPS, eps=EPS)
            store.write(order, codes[order], scale[order], np.zeros((40, 2), np.int64), np.zeros(40, bool))
            if epoch < epochs - 1 or commit_last:
                store.commit_epoch()


def test_summary_numbers(tmp_path: Path) -> None:
    url = tmp_path / "s.zarr"
    fill_store(url, epochs=2)
    s = summarize(url)
    json.dumps(s)  # JSON-able
    assert (s["n"], s["k"], s["slots"], s["committed_epochs"]) == (40, 2, 3, [0, 1])
    assert s["slot_epochs"] == {"0": 0, "1": 1, "2": None}
    assert s["valid_entries"] == 80 and s["ratio_vs_float32"] > 1
    slot0 = s["per_slot"][0]
    assert slot0["valid_entries"] == 40 and slot0["at_eps_fraction"] == pytest.approx(0.75)
    assert slot0["mean_abs_delta_over_eps"] == pytest.approx(0.75)
    h = -(0.25 * np.log2(0.25) + 0.75 * np.log2(0.375))  # 1/4 at 128, 3/8 at 1, 3/8 at 255 (random signs)
    assert slot0["code_entropy_bits"] == pytest.approx(h, abs=0.02)
    assert s["per_slot"][2]["valid_entries"] == 0 and s["per_slot"][2]["code_entropy_bits"] is None
    assert s["layout"]["block_size"] == 8 and s["layout"]["codecs"]["codes"] == DEFAULT_CODES_CODEC
    text = Console(record=True, width=140)
    text.print(render_summary(s))
    assert "8/255" in text.export_text()


def test_summary_of_store_being_written_reports_last_commit(tmp_path: Path) -> None:
    url = tmp_path / "s.zarr"
    fill_store(url, epochs=3, commit_last=False)  # epoch 2 written, never committed
    s = summarize(url)
    assert s["committed_epochs"] == [0, 1] and s["valid_entries"] == 80


def test_sampled_statistics_say_so(tmp_path: Path) -> None:
    url = tmp_path / "s.zarr"
    fill_store(url, epochs=1)
    s = summarize(url, sample_coords=2 * 8 * 192)
    assert s["per_slot"][0]["sampled_blocks"] == "2 of 5" and "random sample" in s["stats_note"]
    assert s["per_slot"][0]["at_eps_fraction"] == pytest.approx(0.75)


def test_plot_writes_png(tmp_path: Path) -> None:
    url = tmp_path / "s.zarr"
    fill_store(url, epochs=2)
    png, pdf = plot_store(url, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:4] == b"%PDF"


def test_summary_refuses_non_store(tmp_path: Path) -> None:
    with pytest.raises(MemlossError, match="not a memloss"):
        (tmp_path / "x").mkdir()
        (tmp_path / "x" / "f").write_text("x")
        summarize(tmp_path / "x")


def cli_app() -> typer.Typer:
    app = typer.Typer()
    app.command("inspect-store")(inspect_store)
    app.command("noop")(lambda: None)  # two commands, so "inspect-store" is addressed by name as in memloss
    return app


def test_cli_json_table_plot_and_errors(tmp_path: Path) -> None:
    url = tmp_path / "s.zarr"
    fill_store(url, epochs=2)
    runner = CliRunner()
    res = runner.invoke(cli_app(), ["inspect-store", str(url), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["committed_epochs"] == [0, 1]
    res = runner.invoke(cli_app(), ["inspect-store", str(url), "--plot", str(tmp_path / "p.png")])
    assert res.exit_code == 0 and "8/255" in res.stdout and (tmp_path / "p.png").exists()
    res = runner.invoke(cli_app(), ["inspect-store", str(tmp_path / "missing")])
    assert isinstance(res.exception, MemlossError) and "no memory store or run directory" in str(res.exception)
    res = runner.invoke(cli_app(), ["inspect-store", "--help"])
    assert res.exit_code == 0 and "--plot" in res.stdout
