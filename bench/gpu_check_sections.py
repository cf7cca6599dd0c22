"""The sections of bench/gpu_check.py: each is a function of a `Context` that returns its figures (a dict of numbers,
strings and rows) or raises `NotApplicable`. Each runs in a child process of the driver, under its own time cap.

They reuse the existing benches and the library API: bench/train_step.py (steps/s, and its session helpers for the
store's wait), bench/ddp.py (torchrun), `memloss.fit` (the epoch) and `memloss.evaluate` (AutoAttack).
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # the other benches are modules of this folder, not a package


class NotApplicable(Exception):
    """The section cannot run in this build or on this device; the message says why (reported as "n/a")."""


@dataclass(frozen=True)
class Context:
    """device: "cuda" or "cpu"; smoke: tiny sizes (CI); work: a scratch folder shared by the sections of one run."""

    device: str
    smoke: bool
    work: Path


# The steps/s configurations: TRADES, then MemLoss+TRADES at K = 1, K = 4 (all slots) and K = 64 with m = 4 slots
# per step, with one train-mode forward per slot (separate) or one for all (fused). K = 1 has one slot: fused is the
# same forward.
SAMPLE_BYTES, ROW_BYTES = 3 * 32 * 32, 3 * 32 * 32 + 20  # a CIFAR-shaped sample; its store row (bench/store.py)
STEP_VARIANTS = ((0, 0, "separate"), (1, 0, "separate"), (4, 0, "separate"), (4, 0, "fused"),
                 (64, 4, "separate"), (64, 4, "fused"))


def env(ctx: Context) -> dict[str, Any]:
    """What ran: Python, torch, the device, memloss and whether FFCV and the --precision option are there."""
    import torch

    import memloss

    try:
        import ffcv  # noqa: F401

        ffcv_state = "importable"
    except Exception as exc:  # noqa: BLE001  (any import failure means no FFCV here)
        ffcv_state = f"not importable ({type(exc).__name__}: {exc})"
    cuda = ctx.device == "cuda"
    return {"python": platform.python_version(), "torch": torch.__version__, "memloss": memloss.__version__,
            "memloss_path": str(Path(memloss.__file__).parent), "device": ctx.device,
            "gpu": torch.cuda.get_device_name(0) if cuda else "none used", "cpu_count": os.cpu_count() or 0,
            "load_average_1min": os.getloadavg()[0], "ffcv": ffcv_state,
            "precision_option": "yes" if _has_precision() else "no (CUDA steps run in bf16 autocast)"}


def cuda_tests(ctx: Context) -> dict[str, Any]:
    """`pytest -m gpu` over the test files that hold gpu-marked tests (they skip without a CUDA device)."""
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                   if "pytest.mark.gpu" in p.read_text())
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *files]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    tail = (done.stdout + done.stderr).strip().splitlines()
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)",
                                                     tail[-1] if tail else "")}
    figures = {"files": len(files), "passed": counts.get("passed", 0), "failed": counts.get("failed", 0),
               "skipped": counts.get("skipped", 0), "errors": counts.get("error", 0) + counts.get("errors", 0),
               "summary": tail[-1] if tail else "(no output)"}
    if done.returncode != 0:
        raise SectionFailed("; ".join(tail[-15:]), figures)
    return figures


class SectionFailed(Exception):
    """A section that ran but failed, with the figures it has (e.g. the test counts)."""

    def __init__(self, message: str, figures: dict[str, Any]) -> None:
        super().__init__(message)
        self.figures = figures


def _has_precision() -> bool:
    import train_step

    return any("--precision" in a.option_strings for a in train_step._parser()._actions)


def _default_precision(device: str) -> str:
    """What the steps run in when no precision can be asked for: bf16 autocast on CUDA, fp32 on the CPU."""
    return "bf16" if device == "cuda" else "fp32"


def steps(ctx: Context, model: str, batch_size: int, precision: str) -> dict[str, Any]:
    """Steps/s of TRADES and MemLoss+TRADES (STEP_VARIANTS) through bench/train_step.py's own per-batch path."""
    import train_step
    from train_step_setup import Variant

    has_precision = _has_precision()
    if precision == "bf16" and not ctx.device.startswith("cuda"):
        raise NotApplicable(f"bf16 autocast needs CUDA; {ctx.device} steps run in fp32 only")
    if not has_precision and precision != _default_precision(ctx.device):
        raise NotApplicable(f"this build has no --precision option: {ctx.device} steps run in "
                            f"{_default_precision(ctx.device)} only")
    if ctx.smoke:
        model, batch_size, sizes = "small_cnn", 8, ["--steps", "2", "--warmup", "1", "--repeats", "1"]
    else:
        few = model.startswith("wrn")
        sizes = ["--steps", "4" if few else "20", "--warmup", "1" if few else "3", "--repeats", "2" if few else "4"]
    # The smoke run stands K = 8 in for K = 64 (filling 64 epochs of memory is most of a CPU run's time).
    deep = 8 if ctx.smoke else 64
    argv = ["--device", ctx.device, "--model", model, "--batch-size", str(batch_size), "--ks", f"1,4,{deep}", *sizes]
    if has_precision:
        argv += ["--precision", precision]
    bc = train_step.parse_config(argv)
    import torch

    torch.set_num_threads(bc.threads)  # as bench/train_step.py's main does (1 unless --threads)
    variants = [Variant(deep if k == 64 else k, m, forward, monitor=k > 0) for k, m, forward in STEP_VARIANTS]
    rows = train_step.benchmark(bc, variants)
    return {"model": bc.model, "batch_size": bc.batch_size, "precision": precision, "timed_steps": bc.steps,
            "rows": [{"configuration": r.variant.name, "ms_per_step": r.ms, "steps_per_s": 1000.0 / r.ms,
                      "ratio_to_trades": r.ratio, "store_wait_frac": r.wait} for r in rows]}


def epoch(ctx: Context) -> dict[str, Any]:
    """One ResNet-18 TRADES epoch (K = 0) on CIFAR-shaped synthetic data through `memloss.fit`; its run is kept
    under the work folder for the AutoAttack section."""
    import memloss

    n, model, res = (256, "small_cnn", 16) if ctx.smoke else (50_000, "resnet18", 32)
    cfg = memloss.train_config(dataset="synthetic", n=n, resolution=res, model=model, method="trades", k=0,
                               epochs=1, batch_size=128, eval_n=64 if ctx.smoke else 500, device=ctx.device,
                               attack_steps=2 if ctx.smoke else None, out=str(ctx.work / "epoch"),
                               data_dir=str(ctx.work / "data"))
    t0 = time.perf_counter()
    run = memloss.fit(cfg, quiet=True, threads=1 if ctx.smoke else None)
    wall = time.perf_counter() - t0
    rec = run.records[-1]
    return {"model": model, "n": n, "resolution": res, "batch_size": 128, "epoch_seconds": rec["epoch_seconds"],
            "samples_per_s": rec["samples_per_s"], "wall_seconds_with_setup": wall}


def store_wait(ctx: Context) -> dict[str, Any]:
    """The Zarr store's wait beside real training steps at K = 16, m = 4 fused, slots drawn per window, with a memory
    budget of about a quarter of the store's blocks per window (so it streams windows), torch on all the machine's
    cores."""
    import train_step
    import train_step_setup as tss

    from memloss.memstore.layout.budget import DECODE_GROUP_BLOCKS, index_bytes, with_read_ahead
    from memloss.memstore.layout.order import default_block_size

    cores = 1 if ctx.smoke else os.cpu_count() or 1
    model, batch, warmup, timed = ("small_cnn", 8, 1, 4) if ctx.smoke else ("resnet18", 128, 5, 40)
    bc = train_step.parse_config(["--device", ctx.device, "--model", model, "--batch-size", str(batch), "--ks", "16",
                                  "--steps", str(timed), "--warmup", str(warmup), "--repeats", "1",
                                  "--threads", str(cores)])
    import torch
    from train_step_setup import Variant

    torch.set_num_threads(cores)
    k, v = 16, Variant(16, 4, "fused", "window")
    x, y, y_cpu = train_step._data(bc)
    block = 8 if ctx.smoke else default_block_size(bc.n, SAMPLE_BYTES)
    blocks = -(-bc.n // block)
    window = max(1, blocks // 4)
    block_bytes = block * ROW_BYTES  # memstore/layout/budget.py's window_blocks_for_budget, solved for `window` blocks
    windows_bytes = 2 * DECODE_GROUP_BLOCKS * k * block_bytes + (2 * k + 2) * block_bytes * window
    budget = index_bytes(bc.n) + with_read_ahead(windows_bytes, k, ROW_BYTES, bc.n)  # + index arrays, read-ahead
    with tempfile.TemporaryDirectory(dir=ctx.work) as tmp:
        store = tss.make_store(k, y_cpu, backend="zarr", tmp=Path(tmp), budget=budget, block_size=block)
        try:
            s = tss.make_session(bc, v, store, Path(tmp))
            tss.fill_memory(s, x, k)
            order = tss.begin_timed_epoch(s, k + 1)
            tss.check_steady_state(store, order[:batch], drawn=True)
            batches = [order[i:i + batch] for i in range(0, batch * (warmup + timed), batch)]
            runner = tss.Runner(v, s, batches, x, y)
            train_step._run_steps(runner, warmup)
            m = train_step._run_steps(runner, timed)
            windows = f"{store.window_blocks} of {blocks} blocks per window"
        finally:
            store.close()
    return {"model": model, "batch_size": batch, "n": bc.n, "k": k, "m": 4, "block_size": block,
            "budget_mb": budget / 2**20, "windows": windows, "torch_threads": cores,
            "ms_per_step": 1000 * m.wall / timed,
            "store_wait_ms_per_step": 1000 * m.wait / timed, "store_wait_frac": m.wait / m.wall}


def torchrun(ctx: Context) -> dict[str, Any]:
    """Samples/s of one `memloss train` process against the same run under torchrun with one process
    (bench/ddp.py's runs), interleaved rounds; the first plain run also converts the data."""
    import argparse

    import ddp

    n, res, rounds = (256, 8, 1) if ctx.smoke else (4096, 32, 2)
    args = argparse.Namespace(device=ctx.device, n=n, resolution=res, batch_size=32 if ctx.smoke else 256,
                              epochs=2, attack_steps=1 if ctx.smoke else 2, data_dir=ctx.work / "ddp-data",
                              aux_n=0)
    root = ctx.work / "ddp"
    root.mkdir(parents=True, exist_ok=True)
    figures: dict[str, list[float]] = {"plain": [], "torchrun-1": []}
    for r in range(rounds):
        for config in (("plain", "torchrun-1") if r % 2 == 0 else ("torchrun-1", "plain")):
            figures[config].append(ddp._run(config, args, root, r)[0])
    plain, one = statistics.median(figures["plain"]), statistics.median(figures["torchrun-1"])
    ratios = [a / b for a, b in zip(figures["torchrun-1"], figures["plain"])]
    return {"n": n, "resolution": res, "rounds": rounds, "plain_samples_per_s": plain,
            "torchrun_1_samples_per_s": one, "overhead_frac": 1.0 - statistics.median(ratios)}


def autoattack(ctx: Context) -> dict[str, Any]:
    """AutoAttack (standard) on 1,000 test points through `memloss.evaluate`, on the epoch section's model (or a
    model trained here for one short epoch when that section did not leave one)."""
    import memloss

    run_dir = ctx.work / "epoch"
    if not (run_dir / "metrics.jsonl").exists():
        run_dir = ctx.work / "aa-run"
        n, res, model = (256, 16, "small_cnn") if ctx.smoke else (4096, 32, "resnet18")
        cfg = memloss.train_config(dataset="synthetic", n=n, resolution=res, model=model, method="trades", k=0,
                                   epochs=1, eval_n=16, device=ctx.device, out=str(run_dir),
                                   data_dir=str(ctx.work / "data"))
        memloss.fit(cfg, quiet=True, threads=1)
    n = 16 if ctx.smoke else 1000
    t0 = time.perf_counter()
    res = memloss.evaluate(run_dir, attacks="aa", n=n, device=ctx.device, data_dir=ctx.work / "data",
                           out=ctx.work / "aa.json", threads=1 if ctx.smoke else None)
    seconds = time.perf_counter() - t0
    robust = res.attacks[0].robust_accuracy
    return {"points": n, "seconds": seconds, "points_per_s": n / seconds, "clean_accuracy": res.clean_accuracy,
            "robust_accuracy": robust, "model_run": run_dir.name}


@dataclass(frozen=True)
class Section:
    """name: key in the JSON; title: heading in the Markdown; cap_s: time cap on a GPU; smoke_cap_s: with --smoke."""

    name: str
    title: str
    cap_s: int
    smoke_cap_s: int
    run: Callable[[Context], dict[str, Any]]


def _steps(model: str, batch: int, precision: str) -> Callable[[Context], dict[str, Any]]:
    return lambda ctx: steps(ctx, model, batch, precision)


# GPU caps add up to 470 s: with the kit's install (about 10 s) the whole check stays within 8 minutes.
SECTIONS: tuple[Section, ...] = (
    Section("env", "Environment", 20, 20, env),
    Section("cuda_tests", "CUDA tests (pytest -m gpu)", 40, 45, cuda_tests),
    Section("steps_resnet18_fp32", "Steps/s: ResNet-18, batch 128, fp32", 30, 30, _steps("resnet18", 128, "fp32")),
    Section("steps_resnet18_bf16", "Steps/s: ResNet-18, batch 128, bf16", 30, 30, _steps("resnet18", 128, "bf16")),
    Section("steps_wrn28_10_fp32", "Steps/s: WRN-28-10, batch 512, fp32", 50, 30, _steps("wrn-28-10", 512, "fp32")),
    Section("steps_wrn28_10_bf16", "Steps/s: WRN-28-10, batch 512, bf16", 40, 30, _steps("wrn-28-10", 512, "bf16")),
    Section("epoch", "ResNet-18 TRADES epoch (synthetic, CIFAR-shaped)", 70, 40, epoch),
    Section("store_wait", "Store wait beside real steps (K = 16, windowed)", 35, 30, store_wait),
    Section("torchrun", "torchrun with one process", 65, 45, torchrun),
    Section("autoattack", "AutoAttack on 1,000 points", 90, 40, autoattack),
)
