"""Judging a trained model: `evaluate` (AutoAttack, PGD+, CW, PGD-20, per-point worst case, resumable),
gradient-masking sweeps, and `export` to a RobustBench-style state dict. Attacks themselves live in methods/."""
