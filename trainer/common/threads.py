"""How many intra-op CPU threads torch uses (`--threads`): a number, or `auto`, the fastest count measured by a
short probe of the work about to run.

Why measure: on a CPU shared with other jobs a thread team waits for its slowest member, so small models are slower
with more threads (on the project's busy 2-core box, even with the OpenMP threads sleeping while they wait
(trainer/common/openmp.py), a digits step takes about 1.6× longer on 2 threads than on 1; before that fix, when
they spun, 10-38×), while a ResNet on an idle many-core machine gains from every core. No fixed rule gets both
right; timing a few calls of the real model at each candidate count does.
"""

from __future__ import annotations

import os
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from memloss.errors import ConfigError
from memloss.trainer.common.openmp import passive_waits

Threads = int | str | None  # an int ≥ 1, "auto", or None (leave the process's setting alone)

# A count within this factor of the fastest wins if it is smaller: fewer threads leave cores to the FFCV decoder,
# the store's I/O threads and other jobs, and probe timings wobble by a few percent.
TOLERANCE = 1.10
PROBE_REPEATS = 3


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count in use and how it was chosen: `how` is 'given', 'OMP_NUM_THREADS', 'measured' or
    'unchanged'; `timings` maps each probed count to its median seconds per probe call."""

    threads: int
    how: str
    timings: dict[int, float] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for the user, e.g. 'threads: 1 (measured: 1 → 12.0 ms, 2 → 48.1 ms per step)'; with more than
        one thread in a process whose OpenMP threads spin while they wait (torch imported before memloss), a second
        line says how to stop that."""
        if not self.timings:
            line = f"threads: {self.threads} ({self.how})"
        else:
            shown = ", ".join(f"{n} → {1000 * s:.1f} ms" for n, s in sorted(self.timings.items()))
            line = f"threads: {self.threads} (measured: {shown} per step)"
        note = passive_waits().note() if self.threads > 1 else None
        return f"{line}\nnote: {note}" if note else line


def parse_threads(value: Threads) -> Threads:
    """'auto', None, or a positive int (also given as text); anything else is a one-line error."""
    if value is None or value == "auto":
        return value
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--threads must be a positive integer or auto, got {value!r}") from None
    if number < 1:
        raise ConfigError(f"--threads must be ≥ 1 (or auto), got {number}")
    return number


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's or taskset's limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def candidates(cores: int) -> list[int]:
    """1, 2, 4, ... up to and including `cores`."""
    counts, n = [], 1
    while n < cores:
        counts.append(n)
        n *= 2
    return [*counts, cores]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(probe: Callable[[], None], counts: list[int], device: torch.device) -> dict[int, float]:
    """Median seconds of `probe()` at each thread count (one untimed warm-up call per count). The counts take turns
    (1, 2, 1, 2, ...), so a change in other jobs' load during the probe hits every count alike instead of one."""
    for n in counts:
        torch.set_num_threads(n)
        probe()
        _sync(device)
    times: dict[int, list[float]] = {n: [] for n in counts}
    for _ in range(PROBE_REPEATS):
        for n in counts:
            torch.set_num_threads(n)
            start = time.perf_counter()
            probe()
            _sync(device)
            times[n].append(time.perf_counter() - start)
    return {n: statistics.median(t) for n, t in times.items()}


def fastest(timings: dict[int, float]) -> int:
    """The smallest count within TOLERANCE of the fastest."""
    best = min(timings.values())
    return min(n for n, t in timings.items() if t <= best * TOLERANCE)


def choose_threads(requested: Threads, probe: Callable[[], None] | None, device: torch.device) -> ThreadChoice:
    """Resolves `requested` to a count (without applying it): an int as given; 'auto' → $OMP_NUM_THREADS when the
    user set it, else the fastest count measured with `probe` (a call of the work to come, e.g. one attack step on a
    batch; it must not change any state); None → the current setting."""
    requested = parse_threads(requested)
    if isinstance(requested, int):
        return ThreadChoice(requested, "given")
    if requested is None or probe is None:
        return ThreadChoice(torch.get_num_threads(), "unchanged")
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) >= 1:
        return ThreadChoice(int(omp), "OMP_NUM_THREADS")
    previous = torch.get_num_threads()
    try:
        timings = measure(probe, candidates(usable_cores()), device)
    finally:
        torch.set_num_threads(previous)
    return ThreadChoice(fastest(timings), "measured", timings)


@contextmanager
def using_threads(threads: int) -> Iterator[None]:
    """torch's intra-op thread count set to `threads` for the duration, restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def model_probe(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """A probe of one attack/training step: forward and backward of the cross-entropy with respect to the input and
    every parameter, in eval mode (no BatchNorm statistics change) and without touching any `.grad`.
    x: float [B,...] on the model's device, y: int64 [B]."""

    def probe() -> None:
        was_training = model.training
        model.eval()
        try:
            with torch.enable_grad():
                xin = x.detach().requires_grad_(True)
                loss = torch.nn.functional.cross_entropy(model(xin), y)
                params = [p for p in model.parameters() if p.requires_grad]
                torch.autograd.grad(loss, [xin, *params])
        finally:
            model.train(was_training)

    return probe
