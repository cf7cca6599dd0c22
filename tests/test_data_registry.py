"""Dataset facts, the digits split and the synthetic generator (no ffcv needed)."""

import numpy as np
import pytest

from memloss.trainer.data.registry import DATASETS, DatasetError, dataset_info
from memloss.trainer.data.sources import (
    SyntheticSource,
    default_data_dir,
    digits_source,
    digits_split_indices,
    load_source,
    synthetic_class_colours,
)


def test_dataset_facts_follow_the_paper_setup() -> None:
    cifar = dataset_info("cifar10")
    assert (cifar.num_classes, cifar.shape, cifar.crop_padding, cifar.flip, cifar.default_arch) == (
        10, (3, 32, 32), 4, True, "resnet18")
    assert dataset_info("cifar100").num_classes == 100
    svhn = dataset_info("svhn")
    assert (svhn.crop_padding, svhn.flip, svhn.default_arch) == (0, False, "preact_resnet18")
    digits = dataset_info("digits")
    assert (digits.shape, digits.crop_padding, digits.flip, digits.default_arch) == ((1, 8, 8), 1, False, "small_cnn")
    assert dataset_info("synthetic", 64).shape == (3, 64, 64)
    assert dataset_info("synthetic").shape == (3, 32, 32)


def test_unknown_dataset_lists_the_valid_names() -> None:
    with pytest.raises(DatasetError) as err:
        dataset_info("imagenet")
    message = str(err.value)
    assert "\n" not in message and all(name in message for name in DATASETS)


def test_resolution_applies_only_to_synthetic() -> None:
    assert dataset_info("cifar10", 32).shape == (3, 32, 32)
    with pytest.raises(DatasetError, match="resolution"):
        dataset_info("cifar10", 64)
    with pytest.raises(DatasetError):
        dataset_info("synthetic", 2)


def test_digits_mean_std_are_those_of_the_training_split() -> None:
    x = digits_source("train").data / 255.0
    info = dataset_info("digits")
    assert x.mean() == pytest.approx(info.mean[0], abs=1e-4)
    assert x.std() == pytest.approx(info.std[0], abs=1e-4)


def test_synthetic_mean_std_are_those_of_the_generator() -> None:
    x = SyntheticSource("train", 20000, 8).images(0, 20000) / 255.0
    info = dataset_info("synthetic")
    np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), info.mean, atol=0.01)
    np.testing.assert_allclose(x.std(axis=(0, 2, 3)), info.std, atol=0.01)


def test_digits_split_is_fixed_disjoint_and_stratified() -> None:
    train, test = digits_split_indices("train"), digits_split_indices("test")
    assert (len(train), len(test)) == (1437, 360)
    assert np.intersect1d(train, test).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(1797))
    assert np.array_equal(train, digits_split_indices("train"))
    counts = np.bincount(digits_source("test").labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 20 % of each class (174..183 per class)


def test_digits_pixels_are_scaled_sklearn_values() -> None:
    from sklearn.datasets import load_digits

    source = digits_source("test")
    raw = load_digits().images[digits_split_indices("test")]
    assert source.data.dtype == np.uint8 and source.data.shape == (360, 1, 8, 8)
    assert np.array_equal(source.data[:, 0], np.rint(raw * 255 / 16).astype(np.uint8))
    assert source.data.max() == 255


def test_synthetic_chunks_assemble_consistently() -> None:
    source = SyntheticSource("train", 3000, 32)
    assert source.chunk < 3000  # the slice below crosses a chunk boundary
    whole = source.images(0, 3000)
    start = source.chunk - 50
    assert np.array_equal(source.images(start, start + 100), whole[start:start + 100])
    assert whole.dtype == np.uint8 and whole.shape == (3000, 3, 32, 32)


def test_synthetic_is_deterministic_and_splits_differ() -> None:
    a = SyntheticSource("train", 64, 16)
    assert np.array_equal(a.images(0, 64), SyntheticSource("train", 64, 16).images(0, 64))
    test = SyntheticSource("test", 64, 16)
    assert not np.array_equal(a.images(0, 64), test.images(0, 64))


def test_synthetic_is_learnable_but_not_trivial() -> None:
    # Nearest class colour, with colours estimated on train, scored on test: well above chance (0.1), below 1.
    train, test = SyntheticSource("train", 2000, 8), SyntheticSource("test", 1000, 8)
    colour = train.images(0, 2000).mean(axis=(2, 3))
    centres = np.stack([colour[train.labels == c].mean(axis=0) for c in range(10)])
    test_colour = test.images(0, 1000).mean(axis=(2, 3))
    predicted = np.argmin(((test_colour[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    accuracy = (predicted == test.labels).mean()
    assert 0.4 < accuracy < 0.99
    assert synthetic_class_colours().shape == (10, 3)


def test_n_is_bounded_by_the_split(tmp_path) -> None:
    assert len(load_source("digits", "test", tmp_path, n=10)) == 10
    with pytest.raises(DatasetError, match="≤ 360"):
        load_source("digits", "test", tmp_path, n=361)
    with pytest.raises(DatasetError):
        load_source("synthetic", "train", tmp_path, n=0)
    with pytest.raises(DatasetError, match="valid splits"):
        load_source("digits", "val", tmp_path)


def test_default_data_dir_honours_memloss_data(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("MEMLOSS_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv("MEMLOSS_DATA")
    assert default_data_dir().parts[-3:] == (".cache", "memloss", "data")
