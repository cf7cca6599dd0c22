"""The resumable state of an evaluation: one JSON file next to `--out` holding the result of every (attack, batch)
already run, refused when the settings differ."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from memloss.trainer.common.files import atomic_write_bytes
from memloss.trainer.methods.eval_attacks import EvaluationError

STATE_VERSION = 1


class EvalState:
    """Per-(attack, batch) results on disk. Record: robust (list of 0/1), seconds, max_perturbation, x_min, x_max.
    path None keeps everything in memory (no resume). writes False: the file is read, never written (the ranks of
    a torchrun evaluation other than rank 0)."""

    def __init__(self, path: Path | None, settings: dict[str, Any], writes: bool = True) -> None:
        self.path, self.writes = path, writes
        self.settings = settings
        self.records: dict[str, dict[str, dict[str, Any]]] = {}
        if path is not None and path.exists():
            self._restore(path)

    def _restore(self, path: Path) -> None:
        try:
            saved = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise EvaluationError(f"state file {path} is unreadable; move it away to start afresh") from None
        if saved.get("version") != STATE_VERSION or saved.get("settings") != self.settings:
            differ = sorted(k for k in {**self.settings, **saved.get("settings", {})}
                            if saved.get("settings", {}).get(k) != self.settings.get(k))
            raise EvaluationError(f"{path} holds an evaluation with other settings ({', '.join(differ)}); rerun "
                                  f"with the same settings to resume, or use another --out")
        self.records = saved["records"]

    def get(self, attack: str, batch: int) -> dict[str, Any] | None:
        return self.records.get(attack, {}).get(str(batch))

    def put(self, attack: str, batch: int, record: dict[str, Any]) -> None:
        self.records.setdefault(attack, {})[str(batch)] = record
        if self.path is not None and self.writes:
            payload = {"version": STATE_VERSION, "settings": self.settings, "records": self.records}
            atomic_write_bytes(self.path, json.dumps(payload).encode())

    def restored(self) -> int:
        return sum(len(batches) for batches in self.records.values())

    def discard(self) -> None:
        """Removes the state file once the final results are safely written."""
        if self.path is not None and self.writes:
            self.path.unlink(missing_ok=True)


def side_file(out: Path, suffix: str) -> Path:
    """results.json → results<suffix> (e.g. results.state.json, results.aa.log)."""
    return out.with_name(out.stem + suffix)
