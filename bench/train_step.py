"""Benchmark of one training step at large K: TRADES against TRADES+MemLoss for K = 1, 4, 16, 64 × m = all, 1, 4
slots per step × separate/fused memory forward, per-step and per-window slot draws, and the forgetting monitor's
cost, in one run (prints figures; not a test).

Every configuration runs the trainer's own per-batch path, `memloss.trainer.training.epoch._train_batch` (the real
augmentation, the store read, the slot draw, `build_memory_examples`, `train_step` with a `StepSetup` built by
trainer/training/session.py's helpers, the forgetting monitor, the optimizer and schedule, `DeferredWriter`), on
synthetic CIFAR-shaped data (3×32×32, 10 classes) held on the device; the FFCV loader is left out, so data loading
is not timed. The store is the in-RAM one (bench/store.py measures the Zarr store); configurations with the same K
and per-step draws share one, each per-window configuration has its own (its epoch begins with its draws; a store
held in RAM has one window, so that is one draw per epoch, which lets the store copy only the drawn ages).

Steady state: the memory is filled first through the real write path (quantize → DeferredWriter → store) for
epochs 1..K with random δ in the ε-ball (a step's cost does not depend on δ's values), each epoch committed; epoch
K+1 then begins, so every slot holds memory for every sample, and its steps are timed. TRADES has no store, as
in the trainer with --k 0; "TRADES + monitor" keeps a K=1 store for the forgetting monitor only, as --k 0
--track-forgetting does. The monitor watches every 8th sample, as on a training set of more than 8192 samples.
After a few untimed warm-up steps per configuration, the timed steps run in rounds that interleave the
configurations (rotating their order), and every figure is the median over rounds of a within-round value, so load
from other jobs hits all configurations alike. On CUDA a round is timed with CUDA events, synchronizing only around
it. On the CPU device the ratios and targets use the process CPU time (all threads), which other jobs on a shared
machine disturb far less than wall time; wall-time ratios are shown beside them.

Usage: python bench/train_step.py [--device auto|cpu|cuda|cuda:N] [--precision fp32|bf16]
       [--model small_cnn|resnet18] [--n N] [--batch-size 128]
       [--steps 12] [--warmup 2] [--repeats N] [--ks 1,4,16,64] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from memloss.errors import MemlossError
from memloss.trainer.common.devices import bind_device, resolve_device
from memloss.trainer.common.precision import check_precision
from memloss.trainer.data.sources import load_tensors
from memloss.trainer.training.epoch import _train_batch
from memloss.trainer.training.metrics import MetricSums

# bench/ is not a package: put this folder on the path for the set-up module next to this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step_setup import (  # noqa: E402
    SEED,
    BenchConfig,
    BenchError,
    Measure,
    MonitorClock,
    Row,
    Runner,
    Variant,
    begin_timed_epoch,
    check_steady_state,
    fill_memory,
    grid,
    make_session,
    make_store,
)

EPOCH_SAMPLES = 50_000  # a CIFAR-10 training epoch, for the extrapolated seconds per epoch


def _run_steps(r: Runner, count: int) -> Measure:
    """Runs the next `count` steps of the runner's epoch.

    The batches are gathered on the device before the clock starts (the loader's job, not the step's). On CUDA the
    time is taken with events and the device is synchronized only before and after the timed steps.
    """
    device = r.session.device
    batches = []
    for host_idx in r.batches[r.position:r.position + count]:
        idx = torch.from_numpy(host_idx).to(device)
        batches.append((r.x[idx], r.y[idx], idx, host_idx if r.session.store is not None else None))
    r.position += count
    sums, wait = MetricSums(), [0.0]
    clock = _cuda_clock if device.type == "cuda" else _host_clock
    r.clock = r.clock or MonitorClock(r.session)
    r.clock.take()
    wall, cpu = clock(lambda: [_train_batch(r.session, *batch, sums, wait) for batch in batches])
    return Measure(wall, cpu, wait[0], r.clock.take())


def _host_clock(work: Callable[[], object]) -> tuple[float, float]:
    """(wall, process CPU) seconds of work()."""
    t0, c0 = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - t0, time.process_time() - c0


def _cuda_clock(work: Callable[[], object]) -> tuple[float, float]:
    """(device, host process CPU) seconds of work(): CUDA events, synchronizing only before and after."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize(torch.cuda.current_device())  # the run's device: parse_config made it current
    c0 = time.process_time()
    start.record()
    work()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000.0, time.process_time() - c0


def _round(runners: list[Runner], rows: dict[Variant, Row], count: int, rotation: int) -> None:
    """One round: `count` timed steps of every configuration (order rotated by `rotation`); records within-round
    ms/step, wait fraction and ratios to TRADES."""
    turn = runners[rotation % len(runners):] + runners[:rotation % len(runners)]
    got = {r.variant: _run_steps(r, count) for r in turn}
    base = got[Variant(0, monitor=False)]
    for v, row in rows.items():
        m = got[v]
        row.round_ms.append(1000.0 * m.wall / count)
        row.round_cpu_ms.append(1000.0 * m.cpu / count)
        row.round_wait.append(m.wait / m.wall)
        row.round_monitor.append(m.monitor / m.wall)
        row.round_ratio_wall.append(m.wall / base.wall)
        row.round_ratio_cpu.append(m.cpu / base.cpu)


def _data(bc: BenchConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x uint8 [n,3,32,32] and y int64 [n] on the device (the loader's output format), and y on the host."""
    x, y = load_tensors("synthetic", "train", n=bc.n)
    return x.to(bc.device), y.to(bc.device), y


def _runners(bc: BenchConfig, variants: list[Variant], data: tuple[torch.Tensor, ...], tmp: Path) -> list[Runner]:
    """One runner per configuration; configurations with the same K and per-step draws share a filled store."""
    x, y, y_cpu = data
    shared: dict[int, tuple[object, np.ndarray]] = {}
    runners = []
    for v in variants:
        if v.k == 0 and not v.monitor:
            s, order = make_session(bc, v, None, tmp), np.random.default_rng(SEED).permutation(bc.n)
        else:
            k = max(v.k, 1)
            reuse = shared.get(k) if v.draw == "step" else None
            s = make_session(bc, v, reuse[0] if reuse else make_store(k, y_cpu), tmp)  # type: ignore[arg-type]
            if reuse is None:
                fill_memory(s, x, k)
                order = begin_timed_epoch(s, k + 1)
                check_steady_state(s.store, order[:bc.batch_size], drawn=v.draw == "window")  # type: ignore[arg-type]
                if v.draw == "step":
                    shared[k] = (s.store, order)
            else:
                order = reuse[1]
                if s.monitor is not None:
                    s.monitor.begin_epoch(k + 1)
        batches = [order[i:i + bc.batch_size] for i in range(0, bc.batch_size * bc.steps_per_config, bc.batch_size)]
        runners.append(Runner(v, s, batches, x, y))
    return runners


def benchmark(bc: BenchConfig, variants: list[Variant] | None = None) -> list[Row]:
    """Builds every configuration (`variants`, default the whole grid of `bc.ks`; the first must be plain TRADES,
    the base of the ratios), warms each up, then times `bc.steps` steps each in `bc.repeats` rounds."""
    variants = variants or grid(bc.ks)
    with tempfile.TemporaryDirectory(prefix="memloss-bench-") as tmp:
        runners = _runners(bc, variants, _data(bc), Path(tmp))
        try:
            for r in runners:
                if bc.warmup:
                    _run_steps(r, bc.warmup)
            rows = {v: Row(v, bc.device.type == "cpu") for v in variants}
            per_round = [bc.steps // bc.repeats + (i < bc.steps % bc.repeats) for i in range(bc.repeats)]
            for i, count in enumerate(per_round):
                _round(runners, rows, count, i)
        finally:
            for store in {id(r.session.store): r.session.store for r in runners if r.session.store}.values():
                store.close()
    return list(rows.values())


def _epoch_seconds(row: Row, batch_size: int) -> float:
    """Seconds per 50 000-sample epoch, extrapolated from the steady-state step time (no loading or evaluation)."""
    return row.ms * math.ceil(EPOCH_SAMPLES / batch_size) / 1000.0


def format_table(rows: list[Row], batch_size: int) -> str:
    """The results table: medians over rounds of within-round figures."""
    clock = "process CPU time" if rows[0].by_cpu else "CUDA-event time"
    head = (f"{'configuration':34s} {'ms/step':>8s} {'cpu ms':>7s} {'ratio':>6s} {'(wall)':>6s} {'target':>6s} "
            f"{'store wait':>10s} {'monitor':>7s} {'s/50k ep*':>9s}  met?")
    lines = [head, "-" * len(head)]
    for row in rows:
        v, met = row.variant, row.meets_target()
        target = f"≤{v.target:.2f}" if v.target else "-"
        wait = f"{100 * row.wait:9.2f}%" if row.wait else "-"
        monitor = f"{100 * row.monitor:6.2f}%" if row.monitor else "-"
        lines.append(f"{v.name:34s} {row.ms:8.1f} {row.cpu_ms:7.1f} {row.ratio:6.3f} {row.ratio_wall:6.3f} "
                     f"{target:>6s} {wait:>10s} {monitor:>7s} {_epoch_seconds(row, batch_size):9.1f}  "
                     f"{'-' if met is None else 'yes' if met else 'NO'}")
    lines += [f"ms/step: wall (CUDA events on a GPU); cpu ms: process CPU time per step, all threads; ratio: to "
              f"TRADES on {clock}, (wall): on wall time; store wait: host time in store.read + writer.push/flush,",
              "% of wall; monitor: time in the forgetting monitor, % of wall (CUDA events on a GPU). m: memory "
              "slots per step (all = K); separate/fused: one train-mode forward per slot / one for all;",
              "window: slots drawn per store window instead of per step. targets: all K slots: ratio ≤ 1 + 0.09·K; "
              "m slots: ratio ≤ 1.5; TRADES + monitor: monitor ≤ 3 %.",
              "All figures: medians over rounds of within-round values.",
              "* s/50k ep: seconds per 50 000-sample epoch at this step time, extrapolated from the steady-state "
              "wall step time (no data loading, evaluation or store commit)."]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="the trainer's --precision: fp32 (default) or bf16 autocast (CUDA only)")
    p.add_argument("--model", default=None, help="small_cnn (default on CPU) or resnet18 (default on CUDA)")
    p.add_argument("--n", type=int, default=None, help="samples in the dataset and store (default: just enough)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=None, help="timed steps per configuration (CPU 12, CUDA 100)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per configuration (CPU 2, CUDA 10)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved rounds the timed steps are "
                   "split into (CPU: --steps, CUDA: 5)")
    p.add_argument("--ks", default="1,4,16,64", help="MemLoss depths, comma-separated")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (torch.set_num_threads)")
    p.add_argument("--quick", action="store_true", help="few steps (4 timed, 1 warm-up, 2 rounds): a smoke run")
    return p


def parse_config(argv: Sequence[str] | None) -> BenchConfig:
    """Options → BenchConfig; defaults depend on the device (and --quick)."""
    a = _parser().parse_args(argv)
    # cuda:N made current: the timing events, synchronize() and the trainer's own events then belong to it
    device = bind_device(resolve_device(a.device))
    cuda = device.type == "cuda"
    check_precision(a.precision, device)
    steps = a.steps or (4 if a.quick else 100 if cuda else 12)
    warmup = a.warmup if a.warmup is not None else (1 if a.quick else 10 if cuda else 2)
    # CPU: one step per configuration per round (load from other jobs changes within seconds); CUDA: 5 rounds,
    # since each round synchronizes the device.
    repeats = a.repeats or min(2 if a.quick else 5 if cuda else steps, steps)
    try:
        ks = tuple(int(k) for k in a.ks.split(","))
    except ValueError:
        raise BenchError(f"--ks must be comma-separated integers like 1,4,16,64, got {a.ks!r}") from None
    n = a.n or a.batch_size * (warmup + steps)
    return BenchConfig(device, a.model or ("resnet18" if cuda else "small_cnn"), n, a.batch_size, steps, warmup,
                       repeats, ks, a.threads, a.precision)


def _describe(bc: BenchConfig) -> str:
    gpu = torch.cuda.get_device_name(bc.device) if bc.device.type == "cuda" else "none used"
    return (f"device {bc.device} (GPU: {gpu}; precision {bc.precision}, channels_last on CUDA), model {bc.model}, "
            f"synthetic 3x32x32, batch {bc.batch_size}, n {bc.n}, {bc.warmup} warm-up + {bc.steps} timed steps per "
            f"configuration in {bc.repeats} interleaved rounds, torch threads {torch.get_num_threads()}, "
            f"{os.cpu_count()} CPUs, torch {torch.__version__}")


def main(argv: Sequence[str] | None = None) -> list[Row]:
    """Runs the benchmark, prints the table and returns its rows."""
    bc = parse_config(argv)
    torch.set_num_threads(bc.threads)
    print(_describe(bc))
    print("load average before (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in os.getloadavg()), flush=True)
    t0 = time.perf_counter()
    rows = benchmark(bc)
    print(format_table(rows, bc.batch_size))
    print("load average after (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in os.getloadavg())
          + f"; wall time {time.perf_counter() - t0:.0f} s")
    return rows


if __name__ == "__main__":
    try:
        main()
    except MemlossError as exc:
        raise SystemExit(f"error: {exc}") from None
