"""Variance of the MemLoss term's slot-sampling estimator, step draws against window draws (prints figures; not a
test; the unbiasedness itself is tests/test_slot_sampling.py).

Per-sample, per-age terms T[i, k] are drawn once (log-normal, and older ages weaker by a factor per age, as the KL to
older adversarial examples tends to be); an epoch visits the N samples in batches of B. The quantity is the epoch's
sum of the per-step MemLoss terms, Σ_steps Σ_k w·mean_batch T[:, k] over the drawn ages with the importance weight
|S|/m: exact with every age, an estimate with m of K. Step draws (SlotSampler, mode step) draw per batch; window
draws (mode window) once per store window of W samples, so the batches of a window share their draw. The figures
are the relative standard deviation of the estimate over repeated draws (its bias must be ~0 for both), and the
per-step one.

Usage: python bench/slot_variance.py [--n 50000] [--batch 128] [--k 64] [--m 4] [--window 34170] [--repeats 200]
"""

from __future__ import annotations

import argparse

import numpy as np

from memloss.trainer.training.slots import SlotSampler


def terms(n: int, k: int, seed: int = 0) -> np.ndarray:
    """T float64 [n, k]: a per-sample level times a per-age decay, with noise."""
    rng = np.random.default_rng(seed)
    level = rng.lognormal(0.0, 0.5, size=(n, 1))
    return level * 0.97 ** np.arange(k) * rng.lognormal(0.0, 0.3, size=(n, k))


def epoch_estimates(t: np.ndarray, batch: int, m: int, mode: str, window: int, seed: int) -> np.ndarray:
    """float64 [steps]: each step's estimated term (the batch means of its drawn ages, weighted)."""
    n, k = t.shape
    sampler = SlotSampler(k, m, mode, seed)
    ages = sampler.epoch_ages(k, list(range(k))) if mode == "window" else None
    means = np.add.reduceat(t, np.arange(0, n, batch), axis=0) / np.diff(np.r_[np.arange(0, n, batch), n])[:, None]
    out = np.empty(means.shape[0])
    for s, start in enumerate(range(0, n, batch)):
        if ages is not None:
            drawn, weight = ages(start // window), k / m
        else:
            drawn, weight = sampler.choose([1] * k)
        out[s] = weight * means[s, list(drawn)].sum()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--m", type=int, default=4)
    p.add_argument("--window", type=int, default=201 * 170, help="samples per store window (default: CIFAR-10 at "
                   "K=64, m=4, 1 GiB budget: 201 blocks of 170)")
    p.add_argument("--repeats", type=int, default=200)
    a = p.parse_args()
    t = terms(a.n, a.k)
    exact = epoch_estimates(t, a.batch, a.k, "step", a.window, 0)
    print(f"N={a.n}, B={a.batch}, K={a.k}, m={a.m}, window {a.window} samples "
          f"({-(-a.n // a.window)} windows an epoch); {a.repeats} repeated draws")
    print("| draws | epoch sum: bias (± its standard error) | epoch sum: rel. std | one step: rel. std |")
    print("|---|---|---|---|")
    for mode in ("step", "window"):
        runs = np.stack([epoch_estimates(t, a.batch, a.m, mode, a.window, 1 + r) for r in range(a.repeats)])
        total = runs.sum(axis=1)
        step_rel = (runs.std(axis=0) / exact).mean()
        print(f"| {mode} | {total.mean() / exact.sum() - 1:+.5f} (± {total.std() / exact.sum() / np.sqrt(a.repeats):.5f}) | {total.std() / exact.sum():.4f} | "
              f"{step_rel:.3f} |")


if __name__ == "__main__":
    main()
