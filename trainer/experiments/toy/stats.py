"""Paired statistics of the toy: per-seed differences (variant − base, same seed) and their two-sided Student-t
confidence interval for the mean difference."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95


@dataclass(frozen=True)
class PairedDiff:
    """Mean of the per-seed differences d = treated − base (n ≥ 2 seeds), their sample std, and the t-interval
    mean ± t_{(1+level)/2, n−1} · std / √n at `level`. `low`/`high` are its ends."""

    mean: float
    std: float
    n: int
    half_width: float
    level: float = CONFIDENCE

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def t_quantile(p: float, dof: int) -> float:
    """The p-quantile of Student's t with `dof` degrees of freedom."""
    from scipy.stats import t  # lazy: scipy comes with scikit-learn; only the toy needs it

    return float(t.ppf(p, dof))


def paired_difference(treated: np.ndarray, base: np.ndarray, level: float = CONFIDENCE) -> PairedDiff:
    """The paired t-interval of mean(treated − base); treated and base: float [n] of the same seeds, n ≥ 2."""
    d = np.asarray(treated, dtype=float) - np.asarray(base, dtype=float)
    if d.ndim != 1 or len(d) < 2:
        raise ValueError(f"need ≥ 2 paired values in two 1-D arrays of one length, got shape {d.shape}")
    std = float(np.std(d, ddof=1))
    half = t_quantile((1 + level) / 2, len(d) - 1) * std / math.sqrt(len(d))
    return PairedDiff(float(np.mean(d)), std, len(d), half, level)
