"""The RobustBench path of `memloss export`: robustbench imports in the project's environment, and the code that
card.json gives (`how_to_load`, `how_to_load_robustbench`) runs as written in the export directory and yields a model
with memloss's outputs; the RobustBench code goes through `robustbench.utils.load_model` reading a local
zoo-layout directory (<model_dir>/<dataset>/<threat>/<name>.pt), with downloading made to fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from memloss.trainer.data.registry import dataset_info
from memloss.trainer.evaluation.export import export
from memloss.trainer.models.files import load_model, save_model
from memloss.trainer.models.registry import build_model
from memloss.trainer.models.wide_resnet import WIDE_RESNETS

# (arch, dataset, norm): the zoo's DMWideResNet builds it; the classic WideResNet with CIFAR normalization and a
# small CNN need memloss's definition; digits has no RobustBench leaderboard.
CASES = [("wrn-10-2-swish", "cifar10", "Linf"), ("wrn-10-2", "cifar100", "L2"), ("small_cnn", "cifar10", "Linf"),
         ("small_cnn", "digits", "Linf")]


@pytest.fixture
def exported(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple:
    """(export directory, card, the memloss model) of a model with random weights and BN statistics."""
    arch, dataset, norm = request.param
    monkeypatch.setitem(WIDE_RESNETS, "wrn-10-2", (10, 2, False))  # the published classes at 1 % of the size
    monkeypatch.setitem(WIDE_RESNETS, "wrn-10-2-swish", (10, 2, True))
    info = dataset_info(dataset)
    torch.manual_seed(0)
    model = build_model(arch, info).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    meta = {"arch": arch, "dataset": dataset, "resolution": "", "norm": norm, "eps": "8/255",
            "num_classes": str(info.num_classes), "shape": ",".join(map(str, info.shape))}
    save_model(tmp_path / "m.safetensors", model, meta)
    out = tmp_path / "export"
    card = json.loads(export(tmp_path / "m.safetensors", "robustbench", out).card.read_text())
    ours, _ = load_model(tmp_path / "m.safetensors")
    monkeypatch.chdir(out)
    return out, card, ours.eval(), info


def _same_outputs(model: torch.nn.Module, ours: torch.nn.Module, info) -> None:  # noqa: ANN001
    x = torch.rand(3, *info.shape, generator=torch.Generator().manual_seed(1))
    assert not model.training
    with torch.no_grad():
        assert torch.allclose(model(x), ours(x), atol=1e-5, rtol=1e-5)


def test_robustbench_imports() -> None:
    import robustbench.utils  # noqa: F401  (robustbench 1.1.1 imports pkg_resources: setuptools < 82)


@pytest.mark.parametrize("exported", CASES, indirect=True, ids=["-".join(c) for c in CASES])
def test_the_cards_loading_code_runs_and_gives_the_same_outputs(exported: tuple) -> None:
    out, card, ours, info = exported
    scope: dict = {}
    exec(card["how_to_load"], scope)  # as a user would paste it, in the export directory
    _same_outputs(scope["model"], ours, info)
    uses_zoo_class = card["arch"] == "wrn-10-2-swish"
    assert ("robustbench.model_zoo" in card["how_to_load"]) == uses_zoo_class
    assert ("memloss.load_model" in card["how_to_load"]) != uses_zoo_class


@pytest.mark.parametrize("exported", CASES, indirect=True, ids=["-".join(c) for c in CASES])
def test_robustbench_load_model_reads_the_export_from_a_local_zoo_directory(exported: tuple,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from robustbench import utils
    from robustbench.model_zoo import model_dicts

    out, card, ours, info = exported
    if card["dataset"] == "digits":
        assert "how_to_load_robustbench" not in card  # no RobustBench leaderboard for it
        return

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("robustbench tried to download a checkpoint")

    monkeypatch.setattr(utils, "download_gdrive_new", no_download)
    calls = []
    monkeypatch.setattr(utils, "load_model", _spy(utils.load_model, calls))
    scope: dict = {}
    try:
        exec(card["how_to_load_robustbench"], scope)
    finally:
        for models in model_dicts.values():
            for threat in models.values():
                threat.pop(f"memloss-{card['arch']}", None)
    name = f"memloss-{card['arch']}"
    assert calls == [name]
    assert (out / "robustbench-models" / card["dataset"] / card["threat_model"]["norm"] / f"{name}.pt").is_file()
    _same_outputs(scope["model"], ours, info)


def _spy(function, calls: list):  # noqa: ANN001, ANN202
    def spy(name: str, *args: object, **kwargs: object):  # noqa: ANN202
        calls.append(name)
        return function(name, *args, **kwargs)

    return spy
