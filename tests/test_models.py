"""The classifiers: shapes, normalization inside, features/head split, channels_last and bf16 autocast."""

import pytest
import torch

from memloss.trainer.data.registry import dataset_info
from memloss.trainer.models.layers import Normalize
from memloss.trainer.models.registry import ARCHES, ModelError, build_model
from memloss.trainer.models.wide_resnet import WIDE_RESNETS

# The wide ResNets (36-267 M parameters) have their own tests in test_wide_resnet.py.
SMALL = tuple(arch for arch in ARCHES if arch not in WIDE_RESNETS)
SHAPED = [dataset_info("cifar10"), dataset_info("cifar100"), dataset_info("digits"), dataset_info("synthetic", 16)]


@pytest.fixture(scope="module")
def models() -> dict:
    torch.manual_seed(0)
    return {(arch, info.name, info.shape): build_model(arch, info).eval() for arch in SMALL for info in SHAPED}


@pytest.mark.parametrize("arch", SMALL)
@pytest.mark.parametrize("info", SHAPED, ids=lambda i: f"{i.name}{i.shape[1]}")
def test_logits_and_features_shapes(models, arch, info) -> None:
    model = models[(arch, info.name, info.shape)]
    x = torch.rand(2, *info.shape)
    with torch.no_grad():
        logits, feats = model(x), model.features(x)
        assert logits.shape == (2, info.num_classes) and feats.ndim == 2 and feats.shape[0] == 2
        assert torch.equal(model.head(feats), logits)


def test_parameter_counts_match_the_reference_definitions() -> None:
    cifar = dataset_info("cifar10")
    count = {arch: sum(p.numel() for p in build_model(arch, cifar).parameters()) for arch in SMALL}
    assert count["resnet18"] == 11_173_962  # kuangliu / TRADES / HAT ResNet-18, 10 classes
    assert count["preact_resnet18"] == 11_172_170  # HAT PreActResNet-18 (with the final BN)
    assert count["small_cnn"] < 200_000


@pytest.mark.parametrize("arch", SMALL)
def test_normalization_is_the_first_layer_and_saved(models, arch) -> None:
    info = dataset_info("cifar10")
    model = models[(arch, info.name, info.shape)]
    first = next(model.children())
    assert isinstance(first, Normalize)
    state = model.state_dict()
    assert torch.allclose(state["normalize.mean"].flatten(), torch.tensor(info.mean))
    assert torch.allclose(state["normalize.std"].flatten(), torch.tensor(info.std))
    x = torch.rand(2, *info.shape)
    with torch.no_grad():
        before = model(x)
        first.mean.add_(0.1)
        after = model(x)
        first.mean.sub_(0.1)
        assert not torch.allclose(before, after)
        assert torch.allclose(model(x), before)


def test_normalize_is_per_channel() -> None:
    norm = Normalize((0.5, 0.25), (0.5, 0.25))
    x = torch.tensor([1.0, 0.5]).view(1, 2, 1, 1)
    assert torch.allclose(norm(x).flatten(), torch.tensor([1.0, 1.0]))


@pytest.mark.parametrize("arch", SMALL)
def test_channels_last_and_bf16_autocast(arch) -> None:
    info = dataset_info("synthetic", 16)
    torch.manual_seed(0)
    model = build_model(arch, info).eval()
    x = torch.rand(4, *info.shape)
    with torch.no_grad():
        reference = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        assert torch.allclose(model_cl(x.to(memory_format=torch.channels_last)), reference, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model_cl(x.to(memory_format=torch.channels_last))
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    assert torch.allclose(low.float(), reference, atol=0.15 * reference.abs().max().item() + 0.05)


def test_gradients_reach_the_input_in_pixel_space() -> None:
    model = build_model("small_cnn", dataset_info("digits")).eval()
    x = torch.rand(3, 1, 8, 8, requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unknown_arch_lists_the_valid_ones() -> None:
    with pytest.raises(ModelError) as err:
        build_model("vgg16", dataset_info("digits"))
    assert all(arch in str(err.value) for arch in ARCHES)
