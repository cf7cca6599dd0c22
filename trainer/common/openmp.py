"""How torch's OpenMP threads wait: set once, before torch loads its OpenMP runtime (`import memloss` does it).

torch's CPU kernels (and MKL's, oneDNN's) run on a GNU OpenMP (libgomp) thread team. With OMP_WAIT_POLICY unset,
libgomp's threads busy-wait at the end of every parallel region, a `pause` loop of GOMP_SPINCOUNT = 300 000
iterations (about 3 ms) before they sleep on a futex. A training step of a small model has a few hundred such
regions. When another process holds one of the cores, the thread that spins at the barrier takes the core the
thread it waits for needs, so each region can cost a scheduler time slice: on the project's 2-core box one step of
the digits model took 11.6 ms on 1 thread and 440 ms on 2, and perf put 44 % of the process's samples in libgomp's
two spin loops (docs/benchmarks.md, "Threads: what spun"). OMP_WAIT_POLICY=PASSIVE makes a waiting thread sleep at
once, which leaves the core to the thread that has work.

libgomp reads the variable once, when it is loaded (by `import torch`), so it must be in the environment before
that; child processes (torchrun ranks, FFCV's writers) inherit it. A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT
wins. This module imports nothing heavy: `memloss/__init__.py` calls it before anything imports torch.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

POLICY = "PASSIVE"
USER_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


@dataclass(frozen=True)
class WaitPolicy:
    """What `passive_waits` found: `set_here` when memloss set OMP_WAIT_POLICY; `torch_first` when torch (hence
    libgomp) was already loaded, so the setting could not take effect in this process."""

    set_here: bool
    torch_first: bool

    def note(self) -> str | None:
        """A line for the user when torch's threads may still spin while they wait (None when all is well)."""
        if not self.torch_first or not self.set_here:
            return None
        return ("torch was imported before memloss, so its OpenMP threads busy-wait (OMP_WAIT_POLICY unset when "
                "it loaded): with more than 1 thread on a busy CPU, set OMP_WAIT_POLICY=PASSIVE before starting "
                "Python, or import memloss first")


_STATE: WaitPolicy | None = None


def passive_waits() -> WaitPolicy:
    """Sets OMP_WAIT_POLICY=PASSIVE unless the user chose a wait policy or spin count (idempotent)."""
    global _STATE
    if _STATE is None:
        chosen = any(os.environ.get(name, "").strip() for name in USER_VARIABLES)
        if not chosen:
            os.environ["OMP_WAIT_POLICY"] = POLICY
        _STATE = WaitPolicy(set_here=not chosen, torch_first="torch" in sys.modules)
    return _STATE
