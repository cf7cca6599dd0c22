"""Which points and which attack pick `best.safetensors` / `best-ema.safetensors` at the end of every epoch.

Without --val-split: the test points, as the official TRADES/HAT/MemLoss code does (the paper's early stopping),
keys `test_clean_acc`, `test_<attack>_acc`. With --val-split N: the N held-out training images
(trainer/data/holdout.py), keys `val_clean_acc`, `val_<attack>_acc`; the test set is then never read during
training (no `test_*` key), so a number `memloss evaluate` reports was not used to choose the checkpoint.
The attack (--select-attack): `pgd20` (CE, 20 steps of 2/255, uniform start: the evaluator's `pgd20`) or
`pgd40-cw` (CW margin, 40 steps of the training step size, uniform start: DM-Improves-AT's `eval_attack`,
`create_attack(wa_model, CWLoss, ..., 4*attack_iter, attack_step)`).
"""

from __future__ import annotations

from memloss.trainer.common.metric_keys import ATTACKS as SELECTION_ATTACKS
from memloss.trainer.common.metric_keys import SPLITS, SelectionKeys
from memloss.trainer.config.schema import TrainConfig
from memloss.trainer.methods.eval_attacks import ATTACKS, AttackName, AttackSpec, ThreatModel


class Selection(SelectionKeys):
    """`split`: "test" or "val"; `attack`: "pgd20" or "pgd40-cw"; its metric keys are `robust` and `clean`."""

    def spec(self, cfg: TrainConfig) -> AttackSpec:
        t = cfg.threat
        threat = ThreatModel(t.norm, t.eps)
        if self.attack == "pgd20":
            return ATTACKS[AttackName.PGD20](threat)
        return AttackSpec("pgd40-cw", "pgd", threat, objective="cw", steps=40, restarts=1, step_size=t.step_float,
                          start="uniform")


def selection(cfg: TrainConfig) -> Selection:
    return Selection("val" if cfg.data.val_split else "test", cfg.run.select_attack)


def selected_accuracy(record: dict[str, object], ema: bool = False) -> tuple[str, float] | None:
    """(key, value) of the selection accuracy in a metrics record (the EMA model's with `ema`), whichever split and
    attack the run used; None if the record has none."""
    prefix = "ema_" if ema else ""
    for split in SPLITS:
        for attack in SELECTION_ATTACKS:
            key = f"{prefix}{split}_{attack}_acc"
            value = record.get(key)
            if isinstance(value, float):
                return key, value
    return None
