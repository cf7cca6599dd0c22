"""The ring state of a store: which committed epoch each of the S = K+1 slots holds, and how it changes when an
epoch starts (its slot and every later epoch stop counting) and when it is committed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RingState:
    """Which epoch each of the S slots holds (None = no committed epoch) and the committed epochs, ascending."""

    slot_epochs: list[int | None]
    committed: list[int]

    def for_new_epoch(self, epoch: int) -> RingState:
        """State to persist before epoch `epoch` writes into its slot: its slot and every epoch >= `epoch` (a
        resumed run rewinding past them) stop counting as memory."""
        s = len(self.slot_epochs)
        slots = [None if e is None or e >= epoch or i == epoch % s else e for i, e in enumerate(self.slot_epochs)]
        return RingState(slots, sorted(e for e in slots if e is not None))

    def after_commit(self, epoch: int) -> RingState:
        slots = list(self.slot_epochs)
        slots[epoch % len(slots)] = epoch
        return RingState(slots, sorted(e for e in slots if e is not None))

    def read_slots(self, epoch: int, k: int) -> list[tuple[int, int]]:
        """(age a, ring slot) for each memory age a < k whose epoch n−1−a (n = `epoch`) this state holds
        committed."""
        s, ages = len(self.slot_epochs), ((a, epoch - 1 - a) for a in range(k))
        return [(a, e % s) for a, e in ages if e >= 0 and self.slot_epochs[e % s] == e]
