"""Model files: safetensors round trip, atomic writes, and refusal of missing/foreign/corrupt files."""

import os

import pytest
import torch

from memloss.trainer.common import files as checkpoint_files
from memloss.trainer.common.files import atomic_write_bytes
from memloss.trainer.data.registry import dataset_info
from memloss.trainer.models.files import CheckpointError, load_model, save_model
from memloss.trainer.models.registry import build_model


def _trained_like(arch: str, info) -> torch.nn.Module:
    """A model whose BN running statistics differ from their initial values (one train-mode forward)."""
    torch.manual_seed(0)
    model = build_model(arch, info)
    with torch.no_grad():
        model.train()(torch.rand(8, *info.shape))
    return model.eval()


@pytest.mark.parametrize("arch, dataset, resolution", [("small_cnn", "digits", None),
                                                       ("preact_resnet18", "synthetic", 8)])
def test_round_trip_gives_identical_outputs(tmp_path, arch, dataset, resolution) -> None:
    info = dataset_info(dataset, resolution)
    model = _trained_like(arch, info)
    meta = {"arch": arch, "dataset": dataset, "num_classes": "10", "eps": "8/255"}
    if resolution is not None:
        meta["resolution"] = str(resolution)
    path = tmp_path / "model.safetensors"
    save_model(path, model, meta)
    loaded, got_meta = load_model(path)
    assert {k: got_meta[k] for k in meta} == meta and not loaded.training
    x = torch.rand(5, *info.shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp file left


def test_missing_file_is_reported(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "absent.safetensors")


def test_foreign_safetensors_file_is_refused(tmp_path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"arch": "small_cnn", "dataset": "digits"})
    with pytest.raises(CheckpointError, match="not a memloss model"):
        load_model(path)


@pytest.mark.parametrize("content", ["garbage", "truncated", "pickle"])
def test_corrupt_file_is_refused_in_one_line(tmp_path, content) -> None:
    path = tmp_path / "model.safetensors"
    save_model(path, build_model("small_cnn", dataset_info("digits")), {"arch": "small_cnn", "dataset": "digits"})
    if content == "garbage":
        path.write_bytes(os.urandom(256))
    elif content == "truncated":
        path.write_bytes(path.read_bytes()[:-1000])
    else:
        torch.save({"x": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    assert "\n" not in str(err.value)


def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path) -> None:
    path = tmp_path / "model.safetensors"
    save_model(path, build_model("small_cnn", dataset_info("digits")), {"arch": "small_cnn", "dataset": "cifar10"})
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(path)
    save_model(path, build_model("small_cnn", dataset_info("digits")), {"arch": "lenet", "dataset": "digits"})
    with pytest.raises(CheckpointError, match="unknown architecture"):
        load_model(path)


def test_metadata_must_be_strings_with_arch_and_dataset(tmp_path) -> None:
    model = build_model("small_cnn", dataset_info("digits"))
    with pytest.raises(TypeError):
        save_model(tmp_path / "m.safetensors", model, {"arch": "small_cnn", "dataset": "digits", "eps": 0.03})
    with pytest.raises(ValueError):
        save_model(tmp_path / "m.safetensors", model, {"arch": "small_cnn"})
    assert not any(tmp_path.iterdir())


def test_atomic_write_replaces_whole_or_keeps_the_old_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(path, b"old")
    atomic_write_bytes(path, b"new contents")
    assert path.read_bytes() == b"new contents"

    def failing_replace(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(checkpoint_files.os, "replace", failing_replace)
    with pytest.raises(OSError):
        atomic_write_bytes(path, b"never visible")
    assert path.read_bytes() == b"new contents"
    assert [p.name for p in path.parent.iterdir()] == ["f.bin"]
