"""Config resolution: paper defaults per dataset and method, TOML files, overrides, and one-line errors."""

from pathlib import Path

import pytest

from memloss.errors import ConfigError
from memloss.trainer.common.units import parse_bytes
from memloss.trainer.config.defaults import config_from_dict, diff_configs, resolve_config


def test_paper_defaults_for_cifar10_memloss_trades() -> None:
    cfg = resolve_config({"dataset": "cifar10", "k": 1})
    assert (cfg.optim.epochs, cfg.optim.lr, cfg.data.batch_size) == (70, 0.21, 128)
    assert (cfg.threat.eps, cfg.threat.step_size, cfg.threat.attack_steps) == ("8/255", "2/255", 10)
    assert (cfg.method.method, cfg.method.beta, cfg.method.beta_prime) == ("trades", 5.0, (2.0,))


@pytest.mark.parametrize(("dataset", "method", "k", "beta", "gamma"), [
    ("cifar100", "trades", 0, 6.0, 0.5), ("cifar100", "hat", 0, 3.5, 0.5), ("cifar10", "hat", 0, 2.5, 0.5),
    ("cifar10", "hat", 1, 2.0, 0.5), ("svhn", "mart", 0, 5.0, 0.5),
])
def test_method_defaults(dataset: str, method: str, k: int, beta: float, gamma: float) -> None:
    extra = {"helper": "h.safetensors"} if method == "hat" else {}
    cfg = resolve_config({"dataset": dataset, "method": method, "k": k, **extra})
    assert (cfg.method.beta, cfg.method.gamma) == (beta, gamma)


def test_svhn_defaults() -> None:
    cfg = resolve_config({"dataset": "svhn"})
    assert (cfg.optim.epochs, cfg.optim.lr, cfg.threat.step_size) == (22, 0.05, "1/255")


def test_toml_file_then_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('dataset = "digits"\n[optim]\nepochs = 3\nlr = 0.01\n[method]\nk = 3\nbeta_prime = [2, 1]\n')
    cfg = resolve_config({"lr": 0.2, "epochs": None}, f)
    assert (cfg.optim.epochs, cfg.optim.lr, cfg.method.k) == (3, 0.2, 3)
    assert cfg.method.beta_prime_per_slot() == (2.0, 1.0, 0.0)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"k": -1}, "k must be ≥ 0"),
    ({"eps": "0"}, "eps must be > 0"),
    ({"eps": "-8/255"}, "eps must be > 0"),
    ({"epochs": 0}, "epochs must be ≥ 1"),
    ({"k": 1, "beta_prime": "2,1"}, "give at most k values"),
    ({"dataset": "imagenet"}, "unknown dataset 'imagenet'; valid: cifar10"),
    ({"method": "fgsm"}, "unknown method 'fgsm'"),
    ({"norm": "L1"}, "unknown norm"),
    ({"method": "hat"}, "--method hat needs --helper"),
    ({"bogus": 1}, "unknown option(s) bogus"),
    ({"eps": "eight"}, "eps must be a number"),
])
def test_impossible_values_are_one_line_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_config(overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_key_in_toml_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("epoks = 3\n")
    with pytest.raises(ConfigError, match="unknown option"):
        resolve_config({}, f)


def test_round_trip_through_dict_and_diff() -> None:
    a = resolve_config({"dataset": "digits", "k": 2, "beta_prime": "2,1"})
    b = config_from_dict(a.to_dict())
    assert a == b and diff_configs(a, b) == []
    assert diff_configs(a, resolve_config({"dataset": "digits", "k": 2, "beta_prime": "2,1", "epochs": 4})) == ["epochs"]


def test_parse_bytes() -> None:
    assert parse_bytes("2GB") == 2 * 10**9 and parse_bytes("512MiB") == 512 * 2**20 and parse_bytes("1000") == 1000
    with pytest.raises(ConfigError, match="not a size"):
        parse_bytes("lots")


@pytest.mark.parametrize(("overrides", "message"), [
    ({"k": 2, "memory_slots_per_step": 3}, "--memory-slots-per-step must be between 1 and k = 2"),
    ({"k": 0, "memory_slots_per_step": 1}, "needs a memory term"),
    ({"k": 4, "memory_slot_draw": "window"}, "--memory-slot-draw window needs --memory-slots-per-step"),
    ({"k": 4, "memory_slot_draw": "epoch"}, "unknown memory slot draw 'epoch'"),
    ({"k": 2, "memory_forward": "batched"}, "unknown memory forward"),
    ({"k": 2, "beta_prime": "2,1", "beta_prime_decay": 0.5}, "either --beta-prime-decay or one --beta-prime"),
    ({"k": 2, "beta_prime_decay": -0.5}, "--beta-prime-decay must be a finite number ≥ 0"),
    ({"k": 1, "memloss_clean_grad": "stop", "memloss_variant": "v3"}, "v3 has no p(x)"),
    ({"k": 1, "memloss_clean_grad": "none"}, "unknown memloss clean gradient"),
])
def test_large_k_options_refuse_impossible_values(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_config(overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_beta_prime_decay_gives_a_geometric_schedule() -> None:
    cfg = resolve_config({"k": 4, "beta_prime": "2", "beta_prime_decay": 0.5})
    assert cfg.method.beta_prime_per_slot() == (2.0, 1.0, 0.5, 0.25)
    assert resolve_config({"k": 3, "beta_prime_decay": 1.0}).method.beta_prime_per_slot() == (2.0, 2.0, 2.0)
