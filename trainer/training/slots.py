"""Slot sampling (`--memory-slots-per-step m`): which memory slots a step puts into the MemLoss term, and their
importance weight, so that the expected term equals the full term over every slot that holds memory.

Let S be the slots (memory ages) holding memory for a batch and T_k the per-slot term (the batch mean of its
per-sample KL, zero where a row has no memory). The full term is Σ_{k∈S} β′_k·T_k. Drawing m of the |S| slots
uniformly without replacement gives each slot the inclusion probability m/|S|; weighting each drawn slot by |S|/m
makes Σ_{k drawn} (|S|/m)·β′_k·T_k an unbiased estimate of the full term (tests/test_slot_sampling.py checks it
numerically). With m ≥ |S| every slot is used with weight 1.

Two draw modes:
- ``step``: a fresh draw per step, from a host-side generator seeded by the run's seed and saved in the training
  state (a host generator, not the device one: the draw decides which rows are decoded and copied to the device,
  so drawing on the device would need a device-to-host sync every step). The store still reads all K slots.
- ``window``: one draw per store window (`MemStore.begin_epoch(epoch, ages=...)`), from (seed, epoch, window); the
  store returns undrawn ages as invalid (and a backend may skip reading them). S is then the set of ages committed
  when the epoch begins, the same for every window, so the weight |S|/m is one number per epoch. A store that keeps
  everything in RAM has one window: one draw per epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

_STREAM = 0x5107  # separates the slot draws from every other use of the run's seed


class SlotSampler:
    """Draws the memory slots of each step. k: memory depth K; m: slots per step (0 = all); mode: step | window."""

    def __init__(self, k: int, m: int, mode: str, seed: int) -> None:
        self.k, self.m, self.mode, self.seed = k, m, mode, seed
        self.generator = torch.Generator().manual_seed(seed * 1_000_003 + _STREAM)
        self._epoch_weight = 1.0

    @property
    def sampling(self) -> bool:
        """True when fewer than K slots are used per step."""
        return 0 < self.m < self.k

    def epoch_ages(self, epoch: int, committed: Sequence[int]) -> Callable[[int], list[int]] | None:
        """The `ages` callable of `MemStore.begin_epoch` for window draws (None in step mode or without sampling);
        sets the epoch's importance weight. committed: the store's committed epochs before the epoch begins."""
        ages, self._epoch_weight = self._window_draws(epoch, committed)
        return ages

    def next_epoch_ages(self, epoch: int, committed: Sequence[int]) -> Callable[[int], list[int]] | None:
        """The `ages` epoch + 1 will draw once `epoch` is committed (`begin_epoch(next_ages=...)`: the store may load
        that epoch's first window early); committed: as for `epoch_ages(epoch)`. Changes nothing."""
        return self._window_draws(epoch + 1, [*committed, epoch])[0]

    def _window_draws(self, epoch: int, committed: Sequence[int]) -> tuple[Callable[[int], list[int]] | None, float]:
        """(ages callable, importance weight |S|/m) of an epoch's window draws from (seed, epoch, window)."""
        if self.mode != "window" or not self.sampling:
            return None, 1.0
        done = set(committed)
        available = [a for a in range(self.k) if epoch - 1 - a >= 0 and epoch - 1 - a in done]
        take = min(self.m, len(available))
        seed = self.seed

        def ages(window: int) -> list[int]:
            rng = np.random.default_rng([seed, epoch, window, _STREAM])
            return sorted(int(a) for a in rng.choice(available, size=take, replace=False))

        return ages, (len(available) / take if take else 1.0)

    def choose(self, counts: Sequence[int]) -> tuple[tuple[int, ...], float]:
        """(slots to use, importance weight) for a batch whose slot k holds counts[k] valid rows (host ints)."""
        held = [k for k, c in enumerate(counts) if c > 0]
        if self.mode == "window" and self.sampling:
            return tuple(held), self._epoch_weight  # the store already masked the undrawn ages
        if not self.sampling or len(held) <= self.m:
            return tuple(held), 1.0
        pick = torch.randperm(len(held), generator=self.generator)[: self.m].sort().values.tolist()
        return tuple(held[i] for i in pick), len(held) / self.m

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
