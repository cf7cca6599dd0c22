"""The names of the forgetting monitor's figures in metrics.jsonl, and the names older runs used (no heavy imports:
`memloss compare` reads them without loading torch)."""

from __future__ import annotations

from typing import Any

# Forgetting events, learning events and old-example error, judged at the visit (trainer/training/forgetting.py);
# the toy's end-of-epoch figures are named `*_at_epoch_end`.
MONITOR_KEYS = ("forget_at_visit", "learn_at_visit", "old_error_at_visit")
# Names these figures had before they were told apart from the toy's (metrics.jsonl of older runs).
LEGACY_KEYS = {"forgetting_events": "forget_at_visit", "learning_events": "learn_at_visit",
               "old_error": "old_error_at_visit"}


def upgrade_record(record: dict[str, Any]) -> dict[str, Any]:
    """A metrics.jsonl record with the monitor's pre-rename keys (`forgetting_events`, `learning_events`,
    `old_error` and their `_by_age` lists) renamed to the current ones; a current record comes back unchanged."""
    out = dict(record)
    for old, new in LEGACY_KEYS.items():
        for suffix in ("", "_by_age"):
            if old + suffix in out and new + suffix not in out:
                out[new + suffix] = out.pop(old + suffix)
    return out
