"""Per-dataset training defaults (the paper's Appendix A.1) and the resolution of a configuration from defaults, a
TOML file and command-line overrides, in that order of precedence (later wins)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Mapping

from memloss.errors import ConfigError
from memloss.trainer.common.units import parse_bytes
from memloss.trainer.config.checks import check_given, check_types
from memloss.trainer.config.schema import SECTION_OF, SECTIONS, TrainConfig

# Paper A.1: CIFAR 70 epochs at peak LR 0.21, SVHN 22 at 0.05 with α = 1/255. digits/synthetic are ours (CPU-sized):
# digits pixels are 8×8 at 17 grey levels, so ε = 8/255 is below one grey level; 32/255 (about two levels) gives a
# threat model where robust and standard training differ visibly within minutes.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "cifar10": {"epochs": 70, "lr": 0.21, "eps": "8/255", "step_size": "2/255"},
    "cifar100": {"epochs": 70, "lr": 0.21, "eps": "8/255", "step_size": "2/255"},
    "svhn": {"epochs": 22, "lr": 0.05, "eps": "8/255", "step_size": "1/255"},
    "digits": {"epochs": 10, "lr": 0.05, "eps": "32/255", "step_size": "8/255", "batch_size": 64},
    "synthetic": {"epochs": 5, "lr": 0.1, "eps": "8/255", "step_size": "2/255"},
}
# The user's own data (--dataset PATH) starts from CIFAR-10's recipe, the field's common ground.
USER_DATASET_DEFAULTS: dict[str, Any] = DATASET_DEFAULTS["cifar10"]

# Paper A.1 / §4: TRADES β = 5 (CIFAR-100: 6), MART β = 5, HAT β = 2.5 (CIFAR-100: 3.5) and γ = 0.5;
# MemLoss+TRADES β = 5, β′ = 2 and MemLoss+HAT β = 2, β′ = 1, γ = 0.5 on every dataset.
def method_defaults(dataset: str, method: str, k: int) -> dict[str, Any]:
    """β, β′ and γ the paper uses for `method` (with the MemLoss term when k > 0) on `dataset`."""
    hundred = dataset == "cifar100"
    if method == "hat":
        beta = 2.0 if k > 0 else (3.5 if hundred else 2.5)
        return {"beta": beta, "beta_prime": (1.0,), "gamma": 0.5}
    if method == "trades":
        beta = 5.0 if k > 0 else (6.0 if hundred else 5.0)
        return {"beta": beta, "beta_prime": (2.0,)}
    return {"beta": 5.0, "beta_prime": (2.0,)}


def read_toml(path: Path) -> dict[str, Any]:
    """Reads a config file: flat keys (`epochs = 3`) or sections (`[optim] epochs = 3`), names as on the CLI."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory; pass a .toml file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text; pass a TOML file") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path} ({err.strerror})") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict) and key in SECTIONS:
            flat.update(value)
        else:
            flat[key] = value
    return flat


def normalize_option(key: str, value: Any) -> Any:
    """A given option value in the form the config holds (beta_prime a tuple, eps a string, budget in bytes)."""
    if key == "beta_prime":
        items = value.split(",") if isinstance(value, str) else (value if isinstance(value, (list, tuple)) else [value])
        try:
            if not items or any(isinstance(v, bool) for v in items):
                raise ValueError
            return tuple(float(v) for v in items)
        except (ValueError, TypeError):
            raise ConfigError(f"--beta-prime must be numbers like 2 or 2,1,0.5, got {value!r}") from None
    if key in ("eps", "step_size") and not isinstance(value, str):
        return str(value)
    if key == "memory_budget" and isinstance(value, str):
        return parse_bytes(value)
    if key in ("dataset", "test_data") and isinstance(value, (str, Path)) and str(value) not in DATASET_DEFAULTS:
        return str(Path(value).expanduser().absolute())  # a user dataset: found again from any directory
    if key == "aux_data":
        files = [value] if isinstance(value, (str, Path)) else value
        if not isinstance(files, (list, tuple)) or not all(isinstance(f, (str, Path)) and str(f) for f in files):
            raise ConfigError(f"aux_data must be a file path or a list of paths, got {value!r}; e.g. "
                              'aux_data = ["part1.npz", "part2.npz"]')
        return tuple(str(Path(f).expanduser().absolute()) for f in files)  # a resumed run finds them from anywhere
    return value


def resolve_config(overrides: Mapping[str, Any], config_file: Path | None = None) -> TrainConfig:
    """Builds the TrainConfig: dataset defaults < method defaults < config file < overrides (None = not given)."""
    given = read_toml(config_file) if config_file else {}
    given.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(given) - set(SECTION_OF))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(SECTION_OF))}")
    _check_given_types({key: normalize_option(key, value) for key, value in given.items()})
    check_given(given)
    dataset = given.get("dataset", "digits")
    _check_data_paths(dataset, given.get("test_data"))
    method, k = given.get("method", "trades"), int(given.get("k", 1))
    defaults = DATASET_DEFAULTS.get(dataset, USER_DATASET_DEFAULTS)
    merged = {**defaults, **method_defaults(dataset, method, k), **given}
    return _build(merged)


def _check_data_paths(dataset: Any, test_data: Any) -> None:
    """A --dataset that is no built-in name must be an existing file or folder (the user's data), as --test-data."""
    if not isinstance(dataset, (str, Path)):
        raise ConfigError(f"--dataset must be a name or a path, got {dataset!r}")
    if str(dataset) not in DATASET_DEFAULTS and not Path(dataset).expanduser().exists():
        raise ConfigError(f"unknown dataset {str(dataset)!r}; valid: {', '.join(DATASET_DEFAULTS)}, or the path of an "
                          ".npz file or an image folder of your own")
    if test_data is not None and not Path(str(test_data)).expanduser().exists():
        raise ConfigError(f"--test-data {test_data} does not exist; pass the test .npz file or image folder")


def train_config(config_file: Path | str | None = None, **options: Any) -> TrainConfig:
    """The configuration `memloss train` runs with the same options: the paper's per-dataset and per-method
    defaults, then the TOML `config_file`, then `options` (the CLI's option names with underscores; None = not given).

    Build configurations with this rather than `TrainConfig(...)`, whose field defaults are not per dataset (digits
    trains at ε = 32/255 and batch 64 here, as on the command line).

    Example
    -------
    >>> cfg = train_config(dataset="digits", k=3, epochs=2, beta_prime="2,1,0.5", memory_budget="512MiB")
    >>> cfg.threat.eps, cfg.data.batch_size, cfg.method.beta_prime
    ('32/255', 64, (2.0, 1.0, 0.5))
    """
    return resolve_config(options, Path(config_file) if config_file is not None else None)


def _check_given_types(flat: Mapping[str, Any]) -> None:
    for key, value in flat.items():
        check_types(SECTIONS[SECTION_OF[key]], {key: value})


def _build(flat: Mapping[str, Any]) -> TrainConfig:
    unknown = sorted(set(flat) - set(SECTION_OF))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(SECTION_OF))}")
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for key, value in flat.items():
        sections[SECTION_OF[key]][key] = normalize_option(key, value)
    for name, values in sections.items():
        check_types(SECTIONS[name], values)
    try:
        return TrainConfig(**{name: SECTIONS[name](**vals) for name, vals in sections.items()})
    except TypeError as err:
        raise ConfigError(f"bad configuration value: {err}") from None


# Options whose default changed: a run recorded before the option existed continues with what it ran with.
# With generated data the epoch was ceil(N_total / B) batches, generated rows drawn without replacement.
LEGACY_AUX_DEFAULTS = {"aux_epoch": "total", "aux_draw": "without"}


def config_from_dict(data: Mapping[str, Mapping[str, Any]]) -> TrainConfig:
    """Rebuilds a TrainConfig from `TrainConfig.to_dict()` output (e.g. a run's config.json); options the record
    predates take the values that run used (LEGACY_AUX_DEFAULTS), new options their defaults."""
    flat = {k: v for section in data.values() for k, v in section.items()}
    if flat.get("aux_data") and "aux_epoch" not in flat:
        flat.update({k: v for k, v in LEGACY_AUX_DEFAULTS.items()
                     if k not in flat and not (k == "aux_epoch" and flat.get("epoch_samples") is not None)})
    return _build(flat)


def diff_configs(a: TrainConfig, b: TrainConfig) -> list[str]:
    """Names of the options whose values differ between two configs."""
    da, db = a.to_dict(), b.to_dict()
    return [k for s in da for k in da[s] if da[s][k] != db[s][k]]


__all__ = ["DATASET_DEFAULTS", "train_config", "method_defaults", "resolve_config", "config_from_dict", "diff_configs",
           "read_toml", "normalize_option"]
