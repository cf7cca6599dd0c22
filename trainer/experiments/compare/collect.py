"""Finding runs (directories, globs, folders of runs), reading what each holds (config.json, metrics.jsonl, the
results JSONs of `memloss evaluate`) and grouping the seeds of one configuration."""

from __future__ import annotations

import glob
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from memloss.errors import MemlossError
from memloss.trainer.training.monitor_keys import upgrade_record
from memloss.trainer.training.runs import CONFIG_FILE, read_config_record, read_metrics

# Config fields that say where or how a run ran, not what it trained: runs differing only in these (and the seed)
# are seeds of one configuration.
NOT_CONFIG = {("run", "seed"), ("run", "out"), ("run", "store"), ("run", "device"), ("data", "data_dir"),
              ("data", "num_workers")}


class CompareError(MemlossError):
    """No runs to compare, or a path that is no run."""


@dataclass
class Run:
    """One run directory: its name, flattened config (section.key → value), seed, metrics records and the
    metrics read from it (fractions in [0,1] for accuracies; see `run_metrics`)."""

    path: Path
    config: dict[str, Any]
    seed: int
    records: list[dict[str, Any]]
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    def group_key(self) -> str:
        return json.dumps({k: v for k, v in self.config.items() if tuple(k.split(".")) not in NOT_CONFIG},
                          sort_keys=True, default=str)


def find_runs(patterns: Sequence[str | Path]) -> list[Path]:
    """Run directories named by `patterns`: a run directory, a glob of them, or a folder whose subfolders are
    runs; in the order given, each once."""
    found: list[Path] = []
    for pattern in patterns:
        is_glob = glob.has_magic(str(pattern))
        for match in map(Path, sorted(glob.glob(str(pattern))) if is_glob else [str(pattern)]):
            if (match / CONFIG_FILE).is_file():
                found.append(match)
            elif match.is_dir() and (children := sorted(p.parent for p in match.glob(f"*/{CONFIG_FILE}"))):
                found.extend(children)
            elif not is_glob:  # a glob may also match other files (an output folder, a log): skipped
                raise CompareError(f"{match} is not a run directory (no {CONFIG_FILE}) nor a folder of runs; "
                                   f"pass run directories, e.g. runs/digits-*")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise CompareError("no runs to compare; pass run directories or a glob such as 'runs/*'")
    return unique


def read_evals(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The `memloss evaluate` results JSONs inside a run directory, by file stem (eval.json → 'eval')."""
    evals = {}
    for path in sorted(run_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "clean_accuracy" in data and "attacks" in data:
            evals[path.stem] = data
    return evals


def read_run(path: Path) -> Run:
    record = read_config_record(path)["config"]
    flat = {f"{section}.{key}": value for section, values in record.items() for key, value in values.items()}
    # Older runs logged the forgetting monitor under its pre-rename keys; read them under the current ones.
    records = [upgrade_record(r) for r in read_metrics(path)]
    return Run(path, flat, int(flat.get("run.seed", 0)), records, read_evals(path))


def group_runs(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs grouped by configuration (all but seed and location), labelled by what differs between groups."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.group_key(), []).append(run)
    members = list(groups.values())
    return dict(zip(group_labels(members), members))


def group_labels(groups: Sequence[Sequence[Run]]) -> list[str]:
    """'k=0', 'k=1' when only K differs; the first run's name without its -s<seed> suffix otherwise (or when one
    group); made unique."""
    configs = [g[0].config for g in groups]
    keys = sorted({k for c in configs for k in c if tuple(k.split(".")) not in NOT_CONFIG
                   and len({json.dumps(c.get(k), default=str) for c in configs}) > 1})
    if len(groups) > 1 and keys and len(keys) <= 3:
        labels = [", ".join(f"{k.split('.')[-1]}={_short(c.get(k))}" for k in keys) for c in configs]
    else:
        labels = [re.sub(r"-s\d+$", "", g[0].name) for g in groups]
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


def _short(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)
