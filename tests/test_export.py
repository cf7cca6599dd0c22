"""memloss export --format robustbench: a prefix-free state dict loadable without memloss, and its card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import typer
from safetensors.torch import load_file
from typer.testing import CliRunner

from memloss.cli.errors import one_line_errors
from memloss.cli.evaluate import export as export_command
from memloss.errors import MemlossError
from memloss.trainer.data.registry import dataset_info
from memloss.trainer.evaluation.export import export, plain_state_dict
from memloss.trainer.evaluation.results import EvalConfig
from memloss.trainer.evaluation.run import evaluate
from memloss.trainer.models.files import save_model
from memloss.trainer.models.registry import build_model

META = {"arch": "small_cnn", "dataset": "digits", "num_classes": "10", "shape": "1,8,8", "norm": "Linf",
        "eps": "32/255", "method": "trades", "best_pgd20": "0.61"}


def fresh_model() -> torch.nn.Module:
    return build_model("small_cnn", dataset_info("digits")).eval()


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(1)
    model = fresh_model()
    with torch.no_grad():  # non-default BN statistics, so a load that skipped buffers would show
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "run" / "best.safetensors"
    save_model(path, model, META)
    return path


def test_pt_loads_weights_only_into_a_fresh_model(checkpoint: Path, tmp_path: Path) -> None:
    written = export(checkpoint.parent, "robustbench", tmp_path / "out")
    state = torch.load(written.pt, weights_only=True)
    assert not any(k.startswith(("module.", "_orig_mod.")) or "._orig_mod." in k for k in state)
    model = fresh_model()
    model.load_state_dict(state, strict=True)
    original = fresh_model()
    original.load_state_dict(load_file(str(checkpoint)), strict=True)
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(model(x), original(x))
    from_safetensors = load_file(str(written.safetensors))
    assert from_safetensors.keys() == state.keys()
    assert all(torch.equal(from_safetensors[k], state[k]) for k in state)


def test_card_describes_model_and_threat(checkpoint: Path, tmp_path: Path) -> None:
    card = json.loads(export(checkpoint, "robustbench", tmp_path / "out").card.read_text())
    info = dataset_info("digits")
    assert (card["arch"], card["dataset"], card["format"]) == ("small_cnn", "digits", "robustbench")
    assert card["threat_model"] == {"norm": "Linf", "eps": "32/255"}
    assert card["normalization"]["mean"] == pytest.approx(info.mean)
    assert card["normalization"]["std"] == pytest.approx(info.std)
    assert card["training_metadata"]["best_pgd20"] == "0.61"
    assert "memloss.load_model('model.safetensors')" in card["how_to_load"]  # run by tests/test_robustbench_load.py


def test_wrapper_prefixes_are_removed() -> None:
    model = fresh_model()
    wrapped = torch.nn.DataParallel(model)
    assert all(k.startswith("module.") for k in wrapped.state_dict())
    assert plain_state_dict(wrapped).keys() == model.state_dict().keys()
    compiled = CompiledLike(model)
    assert all(k.startswith("_orig_mod.") for k in compiled.state_dict())
    assert plain_state_dict(compiled).keys() == model.state_dict().keys()


class CompiledLike(torch.nn.Module):
    """Holds the model as `_orig_mod`, like torch.compile's OptimizedModule (whose import alone takes seconds)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self._orig_mod = model


def test_evaluation_numbers_go_into_the_card(checkpoint: Path, tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    evaluate(EvalConfig(checkpoint, attacks=("pgd20",), n=8, device="cpu", out=results))
    card = export(checkpoint, "robustbench", tmp_path / "out", results=results).card_data
    assert set(card["accuracy"]) == {"clean", "pgd20", "worst_case"}
    assert card["evaluated_points"] == 8
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**json.loads(results.read_text()), "checkpoint_sha256": "0" * 64}))
    with pytest.raises(MemlossError, match="another checkpoint"):
        export(checkpoint, "robustbench", tmp_path / "out2", results=other)


def test_refusals_leave_files_alone(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    written = export(checkpoint, "robustbench", out)
    before = written.pt.read_bytes()
    for args, match in [((checkpoint, "robustbench", out), "already holds"),
                        ((checkpoint, "onnx", tmp_path / "x"), "unknown export format"),
                        ((tmp_path / "nope.safetensors", "robustbench", tmp_path / "y"), "does not exist")]:
        with pytest.raises(MemlossError, match=match) as err:
            export(*args)
        assert "\n" not in str(err.value)
    assert written.pt.read_bytes() == before


def test_cli_export(checkpoint: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    app.command("export")(one_line_errors(export_command))
    app.command("noop")(lambda: None)  # two commands, so typer keeps the command name in the arguments
    result = CliRunner().invoke(app, ["export", str(checkpoint), "--format", "robustbench", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "model.pt").exists() and "card.json" in result.output
    result = CliRunner().invoke(app, ["export", str(checkpoint), "--format", "tf", str(tmp_path / "p")])
    assert result.exit_code == 2 and "unknown export format" in result.output
