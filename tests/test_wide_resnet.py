"""The wide ResNets: published parameter counts, RobustBench zoo state dicts both ways (the `robustbench` package's
own classes, loaded from its architecture files), numerically identical forwards, forward/backward, model files that
rebuild their normalization, zoo import and export."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

from memloss.trainer.config.schema import ARCH_NAMES
from memloss.trainer.data.registry import dataset_info
from memloss.trainer.models.files import load_model, save_model
from memloss.trainer.models.registry import ARCHES, build_model
from memloss.trainer.models.wide_resnet import WIDE_RESNETS, ClassicWideResNet, DMWideResNet

CIFAR10 = dataset_info("cifar10")
# Exact counts of our definitions for 10 classes; the published figures are 36.5 M, 46.2 M and 267 M.
COUNTS = {"wrn-28-10": 36_479_194, "wrn-34-10": 46_160_474, "wrn-70-16": 266_796_506}


def _robustbench(name: str) -> ModuleType:
    """One architecture file of the installed robustbench package (the package's __init__ imports its data loaders,
    timm and pkg_resources; the architecture files need torch only)."""
    spec = importlib.util.find_spec("robustbench")
    # robustbench is part of the test extra: its absence is a broken test environment, not a reason to skip.
    assert spec is not None and spec.submodule_search_locations, "robustbench is missing: pip install -e '.[test]'"
    path = Path(spec.submodule_search_locations[0]) / "model_zoo" / "architectures" / f"{name}.py"
    module_spec = importlib.util.spec_from_file_location(f"_robustbench_{name}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _zoo_model(arch: str, depth: int | None = None, width: int | None = None) -> nn.Module:
    """The zoo's own definition of `arch` (optionally at another depth/width), as RobustBench builds it."""
    d, w, swish = WIDE_RESNETS[arch]
    depth, width = depth or d, width or w
    if swish:
        return _robustbench("dm_wide_resnet").DMWideResNet(10, depth, width, nn.SiLU)
    return _robustbench("wide_resnet").WideResNet(depth=depth, widen_factor=width)


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_every_wide_resnet_is_registered_and_configurable() -> None:
    assert set(WIDE_RESNETS) <= set(ARCHES) and ARCH_NAMES == ARCHES


@pytest.mark.parametrize("arch", list(WIDE_RESNETS))
def test_keys_shapes_and_parameter_counts_match_the_zoo(arch: str) -> None:
    with torch.device("meta"):  # no memory, no initialization cost, even for WRN-70-16
        ours, zoo = build_model(arch, CIFAR10), _zoo_model(arch)
    assert _shapes(ours) == _shapes(zoo)
    count = sum(p.numel() for p in ours.parameters())
    assert count == COUNTS[arch.removesuffix("-swish")]
    published = {"wrn-28-10": 36.5, "wrn-34-10": 46.2, "wrn-70-16": 267.0}[arch.removesuffix("-swish")]
    assert round(count / 1e6, 1 if published < 100 else 0) == published


@pytest.mark.parametrize("arch", ["wrn-28-10", "wrn-28-10-swish"])
def test_forwards_are_identical_to_the_zoos_both_ways(arch: str) -> None:
    """Small instances of the same classes (depth 10, width 2) give the zoo's outputs to float precision with the
    weights moved either way (padding, shortcut and activation order included)."""
    torch.manual_seed(0)
    ours = (DMWideResNet(CIFAR10, 10, 2) if arch.endswith("swish") else ClassicWideResNet(CIFAR10, 10, 2)).eval()
    zoo = _zoo_model(arch, 10, 2).eval()
    if not arch.endswith("swish"):  # the zoo's classic WideResNet takes raw [0, 1] inputs: normalize by hand
        zoo = nn.Sequential(_Normalized(CIFAR10.mean, CIFAR10.std), zoo).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        _randomize_bn(ours)
        zoo_core = zoo if arch.endswith("swish") else zoo[1]
        zoo_core.load_state_dict(ours.state_dict(), strict=True)
        assert torch.allclose(ours(x), zoo(x), atol=1e-5)
        _randomize_bn(zoo_core)
        ours.load_state_dict(zoo_core.state_dict(), strict=True)
        assert torch.allclose(ours(x), zoo(x), atol=1e-5)


class _Normalized(nn.Module):
    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.mean, self.std = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _randomize_bn(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)


@pytest.fixture(scope="module")
def wrn() -> nn.Module:
    torch.manual_seed(0)
    return build_model("wrn-28-10-swish", CIFAR10)


def test_full_size_state_dicts_load_both_ways_strictly(wrn: nn.Module) -> None:
    zoo = _zoo_model("wrn-28-10-swish")
    zoo.load_state_dict(wrn.state_dict(), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(zoo.state_dict().values(), wrn.state_dict().values()))
    wrn.load_state_dict(zoo.state_dict(), strict=True)
    assert "normalize.mean" not in wrn.state_dict()  # as the zoo: mean/std are not part of the state dict


@pytest.mark.parametrize("arch", ["wrn-28-10", "wrn-28-10-swish"])
def test_forward_backward_features_and_normalization_inside(arch: str) -> None:
    info = dataset_info("synthetic", 8)
    torch.manual_seed(0)
    model = build_model(arch, info).train()
    x = torch.rand(2, *info.shape, requires_grad=True)
    logits = model(x)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.head(model.features(x)), model(x))
        assert model.features(x).shape == (2, 640)
        before = model(x)
        channels_last = model.to(memory_format=torch.channels_last)  # as the trainer runs it on CUDA
        assert torch.allclose(channels_last(x.contiguous(memory_format=torch.channels_last)), before, atol=1e-4)
        model.normalize.mean.add_(0.1)
        assert not torch.allclose(model(x), before)


@pytest.fixture
def small_wrns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registers WRN-10-2 (both definitions) for the file round trips: the same classes and code paths as the
    published sizes (whose keys and loads are checked above) at 1 % of the bytes."""
    monkeypatch.setitem(WIDE_RESNETS, "wrn-10-2", (10, 2, False))
    monkeypatch.setitem(WIDE_RESNETS, "wrn-10-2-swish", (10, 2, True))


def test_model_files_record_and_restore_the_normalization(small_wrns: None, tmp_path: Path) -> None:
    info = dataset_info("synthetic", 8)
    model = build_model("wrn-10-2", info).eval()
    with torch.no_grad():
        model.normalize.mean.fill_(0.25)
        model.normalize.std.fill_(0.5)
    save_model(tmp_path / "m.safetensors", model, {"arch": "wrn-10-2", "dataset": "synthetic", "resolution": "8"})
    loaded, meta = load_model(tmp_path / "m.safetensors")
    assert meta["normalize_mean"] == "0.25,0.25,0.25" and meta["normalize_std"] == "0.5,0.5,0.5"
    x = torch.rand(2, *info.shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_a_zoo_checkpoint_imports_and_a_memloss_export_goes_back(small_wrns: None, tmp_path: Path) -> None:
    """DM-Improves-AT's checkpoint layout (model_state_dict, DataParallel + Sequential prefixes) → memloss model file
    → the same outputs; `memloss export` of it → the zoo's class loads model.pt strictly, same outputs again."""
    from memloss.trainer.evaluation.export import export
    from memloss.trainer.models.zoo import import_zoo_checkpoint

    torch.manual_seed(0)
    zoo = _zoo_model("wrn-10-2-swish").eval()
    _randomize_bn(zoo)
    torch.save({"model_state_dict": {f"module.0.{k}": v for k, v in zoo.state_dict().items()}}, tmp_path / "dm.pt")
    path = import_zoo_checkpoint(tmp_path / "dm.pt", "wrn-10-2-swish", "cifar10", tmp_path / "wang.safetensors",
                                 norm="Linf", eps="8/255")
    ours, meta = load_model(path)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = zoo(x)
        assert torch.allclose(ours(x), expected, atol=1e-5) and meta["eps"] == "8/255"
    result = export(path, "robustbench", tmp_path / "out")
    card = json.loads(result.card.read_text())
    assert card["robustbench_zoo"]["class"] == "DMWideResNet" and card["normalization"]["buffers"] == []
    back = _zoo_model("wrn-10-2-swish").eval()
    back.load_state_dict(torch.load(result.pt, weights_only=True), strict=True)
    with torch.no_grad():
        assert torch.allclose(back(x), expected, atol=1e-5)


def test_zoo_state_dicts_lose_wrappers_and_the_unused_sub_block1() -> None:
    from memloss.trainer.models.zoo import zoo_state_dict

    t = torch.zeros(1)
    state = zoo_state_dict({"state_dict": {"module.conv1.weight": t, "module.sub_block1.layer.0.bn1.weight": t}})
    assert state == {"conv1.weight": t}


def test_a_classic_zoo_checkpoint_imports_without_normalization(small_wrns: None, tmp_path: Path) -> None:
    """The zoo's classic WideResNet (TRADES-era, e.g. with sub_block1) takes raw inputs: mean 0, std 1 on import."""
    from memloss.trainer.models.files import CheckpointError
    from memloss.trainer.models.zoo import import_zoo_checkpoint

    zoo = _robustbench("wide_resnet").WideResNet(depth=10, widen_factor=2, sub_block1=True).eval()
    _randomize_bn(zoo)
    torch.save(zoo.state_dict(), tmp_path / "carmon.pt")
    ours, _ = load_model(import_zoo_checkpoint(tmp_path / "carmon.pt", "wrn-10-2", "cifar10", tmp_path / "c.st"))
    assert ours.normalize.mean.abs().sum() == 0 and torch.all(ours.normalize.std == 1)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours(x), zoo(x), atol=1e-5)
    with pytest.raises(CheckpointError, match="does not hold a wrn-10-2-swish"):
        import_zoo_checkpoint(tmp_path / "carmon.pt", "wrn-10-2-swish", "cifar10", tmp_path / "bad.st")


@pytest.mark.heavy
def test_wrn_28_10_swish_trains_through_the_real_trainer(tmp_path: Path, data_dir: Path) -> None:
    """Two optimizer steps of the real WRN-28-10-swish (TRADES + MemLoss K=1, EMA, label smoothing) on 8×8 synthetic
    images, with the per-epoch PGD-20 of both models and every file written (about 20 s on 2 cores)."""
    from memloss.trainer.config.defaults import resolve_config
    from memloss.trainer.training.fit import fit

    cfg = resolve_config({"dataset": "synthetic", "n": 8, "resolution": 8, "batch_size": 4, "eval_n": 2,
                          "attack_steps": 1, "epochs": 1, "k": 1, "model": "wrn-28-10-swish", "ema": 0.995,
                          "label_smoothing": 0.1, "data_dir": str(data_dir), "out": str(tmp_path / "run")})
    record = fit(cfg, quiet=True).records[-1]
    assert torch.isfinite(torch.tensor(record["loss"])) and "ema_test_pgd20_acc" in record
    model, meta = load_model(tmp_path / "run" / "best-ema.safetensors")
    assert meta["arch"] == "wrn-28-10-swish" and meta["weights"] == "ema" and "normalize_mean" in meta
    assert isinstance(model, DMWideResNet)
