"""The config a run starts or continues with, and the checks that a resumed run continues exactly.

A new run records its resolved config (absolute paths or URLs, the model, device and number of test points actually
used) in config.json and in every resume point (last.state.pt). `--resume` continues with the resume point's
config: config.json must still agree with it, and options given again must equal it, or the resume is refused with
one line naming the field. Only --device may change (the same run on another device). --epochs may not: the
OneCycle schedule's length is fixed when the run starts (its learning rate anneals to about lr/10⁵ at the last
step), so a longer run is a different run; start one with --out.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from memloss.errors import ConfigError
from memloss.trainer.config.defaults import config_from_dict, normalize_option, read_toml
from memloss.trainer.config.schema import TrainConfig
from memloss.trainer.training.runs import BEST_WEIGHTS, STATE_FILE, read_config_record, read_metrics

if TYPE_CHECKING:
    import torch

PATH_KEYS = ("out", "store", "data_dir", "helper")
MAY_CHANGE = ("device",)


def absolute(value: str | Path) -> str:
    """An absolute local path, or a URL unchanged."""
    text = str(value)
    if "://" in text and not text.startswith("file://"):
        return text
    return str(Path(text.removeprefix("file://")).expanduser().absolute())


def with_paths(cfg: TrainConfig, run_dir: Path) -> TrainConfig:
    """`cfg` with absolute paths: out = run_dir, the default store inside it, the data directory actually used."""
    from memloss.trainer.data.sources import default_data_dir  # loads torch: not at the top (the CLI checks first)

    r, d, m = cfg.run, cfg.data, cfg.method
    store = absolute(r.store) if r.store else (str(run_dir / "memory.zarr") if cfg.uses_store else None)
    return dataclasses.replace(
        cfg, run=dataclasses.replace(r, out=str(run_dir), store=store),
        data=dataclasses.replace(d, data_dir=absolute(d.data_dir or default_data_dir())),
        method=dataclasses.replace(m, helper=absolute(m.helper) if m.helper else None))


def resolved(cfg: TrainConfig, device: torch.device, arch: str, eval_n: int) -> TrainConfig:
    """`cfg` with what the session chose: the device, the architecture and the number of test points."""
    dev = str(device) if device.type == "cpu" or device.index is not None else f"{device.type}:0"
    test_points = None if cfg.data.val_split else eval_n  # --val-split: the held-out images select, not the test
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, device=dev, model=arch, eval_n=test_points))


def _flat(cfg: TrainConfig) -> dict[str, Any]:
    return {k: v for section in cfg.to_dict().values() for k, v in section.items()}


def _normalized(key: str, value: Any) -> Any:
    if value is None:
        return None
    value = normalize_option(key, value)
    if isinstance(value, list):
        value = tuple(value)
    return absolute(value) if key in PATH_KEYS else value


def state_config(run_dir: Path) -> TrainConfig | None:
    """The config stored in the run's resume point (None: no resume point, or one written by an older memloss).
    The file is memory-mapped, so its tensors are not read."""
    file = run_dir / STATE_FILE
    if not file.exists():
        return None
    import torch  # only a run with a resume point needs it; the checks before load none

    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        text = state.get("config") if isinstance(state, dict) else None
        return config_from_dict(json.loads(text)) if isinstance(text, str) else None
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(f"{file} is not a memloss training state ({type(err).__name__}); restore it") from None


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in a if k not in MAY_CHANGE and _normalized(k, a[k]) != _normalized(k, b.get(k)))


def resume_config(run_dir: Path, overrides: Mapping[str, Any], config_file: Path | None = None) -> TrainConfig:
    """The config to continue the run in `run_dir` with; any given option that differs from it is refused (except
    --device), as is a config.json edited after the run started."""
    run_dir = Path(absolute(run_dir))
    record = config_from_dict(read_config_record(run_dir)["config"])
    state = state_config(run_dir)
    truth = state if state is not None else record
    moved = _moved(truth, run_dir)
    if state is not None:
        edited = _differences(_flat(_moved(record, run_dir)), _flat(moved))
        if edited:
            k = edited[0]
            raise ConfigError(f"{run_dir}/config.json was edited after the run started: {k} is "
                              f"{_flat(record)[k]!r} there but {_flat(state)[k]!r} in the resume point {STATE_FILE}; "
                              "restore config.json (a changed run is a new run: use --out)")
    given = {**(read_toml(config_file) if config_file else {}), **{k: v for k, v in overrides.items() if v is not None}}
    flat = _flat(moved)
    unknown = sorted(set(given) - set(flat))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(flat))}")
    changed = _differences(given, flat)
    if changed:
        raise ConfigError(_refusal(changed, flat, given, run_dir, state is None))
    device = given.get("device", "auto")
    return dataclasses.replace(moved, run=dataclasses.replace(moved.run, device=device))


def _refusal(changed: list[str], flat: dict[str, Any], given: dict[str, Any], run_dir: Path, fresh: bool) -> str:
    shown = ", ".join(f"{k} (run: {flat.get(k)!r}, given: {given[k]!r})" for k in changed)
    if fresh:
        return (f"--resume refuses a changed config: {shown}; the run never completed an epoch, so start it again "
                f"with the new options and --out {run_dir} (without --resume)")
    if "epochs" in changed:
        return (f"--resume refuses a changed config: {shown}; the OneCycle schedule of this run ends at epoch "
                f"{flat['epochs']}, so a longer run is a new run: start it with --out")
    return f"--resume refuses a changed config: {shown}; start a new run with --out instead"


def _moved(cfg: TrainConfig, run_dir: Path) -> TrainConfig:
    """`cfg` of a run directory that was moved: out is where it is now, and a store that lived inside it too."""
    old = cfg.run.out
    if old is None or Path(old) == run_dir:
        return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, out=str(run_dir)))
    store = cfg.run.store
    if store and "://" not in store and Path(store).is_relative_to(old):
        store = str(run_dir / Path(store).relative_to(old))
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, out=str(run_dir), store=store))


def finished_message(run_dir: Path, cfg: TrainConfig, state: dict[str, Any]) -> str | None:
    """What to tell the user when `--resume` meets a run that already trained every epoch (None otherwise)."""
    if int(state["epoch"]) < cfg.optim.epochs:
        return None
    from memloss.trainer.training.selection import selected_accuracy  # loads torch: not at the top

    records = {r["epoch"]: r for r in read_metrics(run_dir)}
    best = int(state.get("best_epoch", 0))
    chosen = selected_accuracy(records.get(best, {}))
    detail = (f" (epoch {best}, {chosen[0]} {100 * chosen[1]:.2f}%)" if chosen is not None else f" (epoch {best})")
    return (f"the run in {run_dir} is finished: {state['epoch']} of {cfg.optim.epochs} epochs trained; best "
            f"checkpoint: {run_dir / BEST_WEIGHTS}{detail}")


def check_store_caught_up(store: Any, needed: int, dropped: list[int], url: str | None) -> str | None:
    """A resumed run after epoch `needed` reads the memory of epochs needed … needed−K+1: each must be committed in
    the store (else memory would be lost silently), except epochs `memloss repair-store` dropped on purpose (then a
    note is returned)."""
    if store is None or needed <= 0:
        return None
    committed = set(store.committed_epochs)
    missing = [e for e in range(max(1, needed - store.k + 1), needed + 1) if e not in committed]
    if not missing:
        return None
    if all(e in dropped for e in missing):
        return f"the memory of epoch(s) {missing} was dropped by repair-store; training continues without it"
    if url is not None and url.startswith("memory://"):
        raise ConfigError(f"this run's memory store {url} lived in the memory of the process that stopped; a run "
                          "with a memory:// store cannot be resumed: start a new run")
    raise ConfigError(f"the memory store {url} does not hold epoch(s) {missing}, which the run's resume point (epoch "
                      f"{needed}) reads as memory: the store was replaced or truncated; restore it or start a new run")


def require_store(url: str | None, needed: int, options: Mapping[str, Any] | None = None) -> None:
    """Before a resume opens anything: the store must still hold the memory the run's state needs (`options`: the
    storage options of a store URL)."""
    from memloss.memstore.location.options import store_location
    from memloss.memstore.store import store_exists

    if url is None or needed <= 0 or store_exists(store_location(url, options)):
        return
    if url.startswith("memory://"):
        raise ConfigError(f"this run's memory store {url} lived in the memory of the process that stopped; a run "
                          "with a memory:// store cannot be resumed: start a new run")
    raise ConfigError(f"the run's memory store {url} is missing or incomplete, but the run's state needs its "
                      f"memory up to epoch {needed}; restore the store, or start a new run with --out")
