"""A run directory: config.json, metrics.jsonl, best/last weights (safetensors) and the training state.

Every file is written atomically (temp file + rename), so a run killed at any moment leaves the previous complete
version of each file. The training state (`last.state.pt`) is the single source of truth for resuming: it holds the
model, optimizer, scheduler, RNG states and the last completed epoch, and loads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from memloss.errors import ConfigError
from memloss.trainer.common.files import atomic_write_bytes
from memloss.trainer.common.versions import git_commit, versions
from memloss.trainer.config.schema import TrainConfig

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
STATE_FILE = "last.state.pt"
BEST_WEIGHTS = "best.safetensors"
LAST_WEIGHTS = "last.safetensors"


def default_run_dir(cfg: TrainConfig) -> Path:
    """runs/<dataset>-<method>-k<K>-s<seed>."""
    return Path("runs") / f"{cfg.data.dataset}-{cfg.method.method}-k{cfg.method.k}-s{cfg.run.seed}"


def create_run_dir(path: Path, cfg: TrainConfig) -> None:
    """Makes a new run directory and writes config.json; refuses one that already holds a run."""
    if (path / CONFIG_FILE).exists():
        raise ConfigError(f"{path} already holds a run; continue it with --resume {path} or choose another --out")
    path.mkdir(parents=True, exist_ok=True)
    record = {"config": cfg.to_dict(), "versions": versions(), "git_commit": git_commit(),
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic_write_bytes(path / CONFIG_FILE, json.dumps(record, indent=2).encode())


def read_config_record(path: Path) -> dict[str, Any]:
    """The parsed config.json of a run directory."""
    try:
        return json.loads((path / CONFIG_FILE).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} is not a memloss run directory (no {CONFIG_FILE})") from None
    except json.JSONDecodeError:
        raise ConfigError(f"{path / CONFIG_FILE} is corrupt (not JSON)") from None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All epoch records of metrics.jsonl (empty if there are none yet)."""
    file = path / METRICS_FILE
    if not file.exists():
        return []
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


def write_metrics(path: Path, records: list[dict[str, Any]]) -> None:
    """Rewrites metrics.jsonl atomically with `records` (one JSON object per line)."""
    atomic_write_bytes(path / METRICS_FILE, metrics_bytes(records))


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Writes the training state atomically; it holds only tensors and plain containers (weights_only-loadable)."""
    atomic_write_bytes(path / STATE_FILE, state_bytes(state))


def state_bytes(state: dict[str, Any]) -> bytes:
    """The bytes `save_state` writes: a snapshot of the state now (the file can be written later)."""
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
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # a foreign or corrupt file: refuse it, naming the file
        raise ConfigError(f"{file} is not a memloss training state ({type(err).__name__}); remove it to restart") from None
