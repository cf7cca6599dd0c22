"""The metrics.jsonl keys a run selected its best checkpoint on, read without torch (for `memloss compare` and
the curves): `<split>_<attack>_acc` and `<split>_clean_acc`, where split is `val` (the --val-split held-out
training images) or `test` (the test points), and attack is `pgd20` or `pgd40_cw` (--select-attack). The trainer
writes these keys in trainer/training/selection.py."""

from __future__ import annotations

from typing import Any, Iterable, NamedTuple

SPLITS = ("val", "test")
ATTACKS = ("pgd20", "pgd40_cw")
# How a split is named to a reader: the held-out images are training images, not a second test set.
SPLIT_NAMES = {"val": "held-out val", "test": "test"}


class SelectionKeys(NamedTuple):
    """`split`: "val" or "test"; `attack`: "pgd20" or "pgd40-cw" (as the user writes it)."""

    split: str
    attack: str

    @property
    def robust(self) -> str:
        return f"{self.split}_{self.attack.replace('-', '_')}_acc"

    @property
    def clean(self) -> str:
        return f"{self.split}_clean_acc"

    def label(self) -> str:
        """'val pgd20', 'test pgd40-cw': how table columns and notes name this selection."""
        return f"{self.split} {self.attack}"


def selection_keys(records: Iterable[dict[str, Any]]) -> SelectionKeys | None:
    """The split and attack a run's records were selected on (held-out val before test, as the trainer prefers),
    or None when no record holds a robust accuracy (a run that never evaluated)."""
    present = {key for record in records for key, value in record.items() if isinstance(value, float)}
    for split in SPLITS:
        for attack in ATTACKS:
            if f"{split}_{attack}_acc" in present:
                return SelectionKeys(split, attack.replace("_", "-"))
    return None
