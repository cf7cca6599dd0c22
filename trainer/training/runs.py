"""A run directory: config.json, metrics.jsonl, best/last weights (safetensors) and the training state.

Every file is written atomically (temp file + rename), so a run killed at any moment leaves the previous complete
version of each file; the temporary files such a kill leaves are removed by the next start. The training state
(`last.state.pt`) is the single source of truth for resuming: it holds the model, optimizer, scheduler, RNG states,
the last completed epoch and the resolved config the run was made with, and loads with
`torch.load(weights_only=True)`. A directory without a training state holds a run that never completed an epoch:
a new `memloss train --out DIR` may start it again, with any options.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from memloss.errors import ConfigError
from memloss.trainer.common.files import atomic_write_bytes, remove_temporaries
from memloss.trainer.common.versions import git_commit, versions
from memloss.trainer.config.schema import TrainConfig
from memloss.trainer.data.registry import DATASETS

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
STATE_FILE = "last.state.pt"
BEST_WEIGHTS = "best.safetensors"
LAST_WEIGHTS = "last.safetensors"
# Written during or at the end of an epoch before the state; without a state they belong to an epoch that never
# completed (the weight average's files, TensorBoard's event files).
EPOCH_FILES = (METRICS_FILE, LAST_WEIGHTS, BEST_WEIGHTS, "last-ema.safetensors", "best-ema.safetensors",
               "events.out.tfevents.*")


def default_run_dir(cfg: TrainConfig) -> Path:
    """runs/<dataset>-<method>-k<K>-s<seed>; the user's data (--dataset PATH) is named by its file or folder."""
    name = cfg.data.dataset
    if name not in DATASETS:
        path = Path(name)
        name = path.name.removesuffix(".npz") or "data"
    return Path("runs") / f"{name}-{cfg.method.method}-k{cfg.method.k}-s{cfg.run.seed}"


def check_run_dir_path(path: Path, option: str) -> None:
    """Refuses a path that cannot be a run directory (an existing file, or below a file)."""
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                raise ConfigError(f"{option} {path}: {part} is a file, not a directory; choose another path")
            return


def check_new_run_dir(path: Path) -> None:
    """Refuses `path` for a new run when it cannot be a run directory or holds a run that completed an epoch."""
    check_run_dir_path(path, "--out")
    if (path / STATE_FILE).exists():
        done = _epochs_done(path)
        raise ConfigError(f"{path} already holds a run ({done}); continue it with --resume {path} or choose "
                          "another --out")


def start_run_dir(path: Path) -> list[str]:
    """Prepares `path` for a new run: refuses one holding a run that completed an epoch; a run that never did is
    started again (its partial epoch files removed). Returns notes for the user."""
    check_new_run_dir(path)
    notes = []
    if (path / CONFIG_FILE).exists():
        for pattern in EPOCH_FILES:
            for stale in path.glob(pattern):
                stale.unlink(missing_ok=True)
        notes.append(f"starting the run in {path} again: it never completed an epoch")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create the run directory {path} ({err.strerror}); choose another --out") from None
    notes += cleanup_notes(path)
    return notes


def cleanup_notes(path: Path) -> list[str]:
    """Removes temporary files a killed run left in `path`; a note if there were any."""
    removed = remove_temporaries(path)
    return [f"removed {removed} temporary file(s) an interrupted write left in {path}"] if removed else []


def _epochs_done(path: Path) -> str:
    records = read_metrics(path)
    return f"{records[-1]['epoch']} epoch(s) done" if records else "its training state"


def write_config_record(path: Path, cfg: TrainConfig) -> None:
    """config.json: the resolved config (absolute paths, the model, device and test points actually used)."""
    record = {"config": cfg.to_dict(), "versions": versions(), "git_commit": git_commit(),
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic_write_bytes(path / CONFIG_FILE, json.dumps(record, indent=2).encode())


def read_config_record(path: Path) -> dict[str, Any]:
    """The parsed config.json of a run directory."""
    check_run_dir_path(path, "--resume")
    if not path.is_dir():
        raise ConfigError(f"--resume {path}: no such run directory; check the path")
    try:
        record = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        if (path / STATE_FILE).exists():
            raise ConfigError(f"{path / CONFIG_FILE} is missing but the run has a resume point; restore it") from None
        raise ConfigError(f"{path} holds no run yet (no {CONFIG_FILE}: it never got past its start); run the same "
                          "`memloss train` command without --resume") from None
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f"{path / CONFIG_FILE} is corrupt (not JSON); restore it") from None
    except OSError as err:
        raise ConfigError(f"cannot read {path / CONFIG_FILE} ({err.strerror})") from None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise ConfigError(f"{path / CONFIG_FILE} is not a memloss run record; restore it")
    return record


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All epoch records of metrics.jsonl (empty if there are none yet); a damaged line is a one-line error."""
    file = path / METRICS_FILE
    if not file.exists():
        return []
    records = []
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read {file} ({err}); restore it or delete it") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
            raise ConfigError(f"{file} line {number} is not an epoch record (damaged); restore the file, or delete "
                              "the line and resume (it is rewritten from the next epoch's records)")
        records.append(record)
    return records


def write_metrics(path: Path, records: list[dict[str, Any]]) -> None:
    """Rewrites metrics.jsonl atomically with `records` (one JSON object per line)."""
    atomic_write_bytes(path / METRICS_FILE, metrics_bytes(records))


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Writes the training state atomically; it holds only tensors and plain containers (weights_only-loadable)."""
    atomic_write_bytes(path / STATE_FILE, state_bytes(state))


def state_bytes(state: dict[str, Any]) -> bytes:
    """The bytes `save_state` writes: a snapshot of the state now (the file can be written later)."""
    import torch  # here, not at the top: the CLI's checks of a run directory load no torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def metrics_bytes(records: list[dict[str, Any]]) -> bytes:
    """metrics.jsonl's content: one JSON object per line."""
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def load_state(path: Path) -> dict[str, Any] | None:
    """The training state, or None if the run has not completed an epoch. Never unpickles arbitrary objects."""
    file = path / STATE_FILE
    if not file.exists():
        return None
    import torch

    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # a foreign or corrupt file: refuse it, naming the file
        raise ConfigError(f"{file} is not a memloss training state ({type(err).__name__}); restore it, or delete "
                          "it to start the run again from epoch 1") from None
    if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
        raise ConfigError(f"{file} is not a memloss training state; restore it, or delete it to start the run "
                          "again from epoch 1")
    return state
