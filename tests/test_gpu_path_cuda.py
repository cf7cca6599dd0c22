"""Issue 23's items 1-7 on a real GPU (marker gpu; skipped without CUDA). The CPU halves of these checks, with
the CUDA parts mocked or simulated, are tests/test_gpu_path.py; run these with `pytest -m gpu` on a GPU machine."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from memloss.errors import MemlossError
from memloss.memstore.ahead import ReadAhead
from memloss.memstore.entries import MemoryBatch
from memloss.memstore.quant import NonFiniteDelta
from memloss.trainer.common import precision
from memloss.trainer.common.devices import bind_device, to_device
from memloss.trainer.common.rng import generator_state, restore_generator
from memloss.trainer.config.defaults import resolve_config
from memloss.trainer.data.registry import dataset_info
from memloss.trainer.evaluation.results import EvalConfig
from memloss.trainer.evaluation.run import evaluate
from memloss.trainer.models.files import save_model
from memloss.trainer.models.registry import build_model
from memloss.trainer.training import epoch as epoch_module
from memloss.trainer.training import fit as fit_module
from memloss.trainer.training.augment import identity_views
from memloss.trainer.training.fit import fit, resume_config
from memloss.trainer.training.memory import DeferredWriter

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

TINY = {"dataset": "synthetic", "n": 96, "resolution": 8, "batch_size": 32, "eval_n": 16, "attack_steps": 1,
        "epochs": 2, "k": 1}
REPO = Path(__file__).resolve().parents[1]


def _cfg(data_dir: Path, out: Path, **extra: Any):  # noqa: ANN202
    return resolve_config({**TINY, "data_dir": str(data_dir), "out": str(out), **extra})


class _Stop(MemlossError):
    pass


def _stopped(cfg: Any) -> None:
    """Runs `cfg` until epoch 1's resume point is written, then stops."""
    real = fit_module.finish_epoch

    def finish(s: Any, epoch: int, *args: Any) -> None:
        real(s, epoch, *args)
        raise _Stop("stopped")

    fit_module.finish_epoch = finish
    try:
        with pytest.raises(_Stop):
            fit(cfg, quiet=True, threads=1)
    finally:
        fit_module.finish_epoch = real


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "last.safetensors")


# 1. ---------------------------------------------------------------------------------------------------------------


def test_generator_states_cross_device_kinds() -> None:
    cuda, cpu = torch.Generator(device="cuda").manual_seed(1), torch.Generator().manual_seed(1)
    assert restore_generator(torch.Generator(), generator_state(cuda)) is not None  # 16 bytes into a CPU one
    assert restore_generator(torch.Generator(device="cuda"), generator_state(cpu)) is not None
    again = torch.Generator(device="cuda")
    torch.rand(3, generator=cuda, device="cuda")
    saved = generator_state(cuda)
    expected = torch.rand(4, generator=cuda, device="cuda")
    assert restore_generator(again, saved) is None
    assert torch.equal(torch.rand(4, generator=again, device="cuda"), expected)


@pytest.mark.parametrize("first,then", [("cuda", "cpu"), ("cpu", "cuda")])
def test_resume_changes_device_kind(first: str, then: str, data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _stopped(_cfg(data_dir, run, device=first))
    result = fit(resume_config(run, {"device": then}), resume=run, quiet=True, threads=1)
    assert [r["epoch"] for r in result.records] == [1, 2]


# 2. ---------------------------------------------------------------------------------------------------------------


def test_writer_push_makes_no_host_sync() -> None:
    store = SimpleNamespace(written=[], write=lambda idx, *a: store.written.append((idx, a)))
    writer = DeferredWriter(store, torch.device("cuda"))
    views = identity_views(8, 2, torch.device("cuda"))
    deltas = [torch.rand(8, 3, 8, 8, device="cuda") * 0.03 for _ in range(3)]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i, delta in enumerate(deltas):
            writer.push(np.arange(8) + 8 * i, delta, views)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    writer.flush()
    writer.check()
    assert len(store.written) == 3 and all(a[0].is_pinned() for _, a in store.written)
    bad = deltas[0].clone()
    bad[0, 0, 0, 0] = float("nan")
    writer.push(np.arange(8), bad, views)
    with pytest.raises(NonFiniteDelta):
        writer.check()


def test_training_steps_make_no_host_sync(monkeypatch: pytest.MonkeyPatch, data_dir: Path, tmp_path: Path) -> None:
    """Every _train_batch of a K=1 run (store read-ahead, memory examples, attack, loss, writer, monitor, optimizer)
    under torch.cuda.set_sync_debug_mode('error'), for both precisions."""
    real = epoch_module._train_batch
    steps: list[int] = []

    def strict(*args: Any, **kwargs: Any) -> torch.Tensor:
        torch.cuda.set_sync_debug_mode("error")
        try:
            return real(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")
            steps.append(1)

    monkeypatch.setattr(epoch_module, "_train_batch", strict)
    for p in ("fp32", "bf16"):
        fit(_cfg(data_dir, tmp_path / p, device="cuda", precision=p), quiet=True, threads=1)
    assert len(steps) == 12


# 3. ---------------------------------------------------------------------------------------------------------------


def test_bind_device_and_the_writer_on_the_last_gpu() -> None:
    last = torch.cuda.device_count() - 1
    device = bind_device(torch.device("cuda", last))
    assert torch.cuda.current_device() == last
    store = SimpleNamespace(written=[], write=lambda idx, *a: store.written.append(a))
    writer = DeferredWriter(store, device)
    delta = torch.rand(4, 3, 8, 8, device=device) * 0.03
    codes, _ = writer.push(np.arange(4), delta, identity_views(4, 2, device))
    writer.flush()
    assert torch.equal(store.written[0][0], codes.cpu())


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_a_run_on_cuda_1_leaves_gpu_0_alone(data_dir: Path, tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import torch
        from memloss.trainer.config.defaults import resolve_config
        from memloss.trainer.training.fit import fit
        cfg = resolve_config({{**{TINY!r}, "data_dir": {str(data_dir)!r}, "out": {str(tmp_path / "run")!r},
                               "device": "cuda:1"}})
        fit(cfg, quiet=True, threads=1)
        print("ALLOCATED0", torch.cuda.memory_allocated(0), torch.cuda.memory_reserved(0))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ALLOCATED0 0 0" in out.stdout


# 4. ---------------------------------------------------------------------------------------------------------------


def test_read_ahead_batches_are_pinned_on_cuda() -> None:
    batch = MemoryBatch(torch.zeros(1, 4, 3, 8, 8, dtype=torch.uint8), torch.zeros(1, 4), torch.zeros(1, 4, 2),
                        torch.zeros(1, 4, dtype=torch.bool), torch.ones(1, 4, dtype=torch.bool))
    ahead = ReadAhead(SimpleNamespace(read=lambda idx: batch), pin=True)  # type: ignore[arg-type]
    ahead.prefetch(np.arange(4))
    got = ahead.read(np.arange(4))
    ahead.close()
    assert all(t.is_pinned() for t in (got.codes, got.scale, got.offset, got.flip, got.valid))
    moved = to_device(torch.arange(5), torch.device("cuda"))
    assert moved.is_cuda and moved.tolist() == [0, 1, 2, 3, 4]


# 5. ---------------------------------------------------------------------------------------------------------------


def test_selection_is_fp32_under_cuda_bf16_autocast(data_dir: Path, tmp_path: Path) -> None:
    from test_gpu_path import _NearTie

    n = 8
    s = SimpleNamespace(cfg=_cfg(data_dir, tmp_path), device=torch.device("cuda"), model=_NearTie().cuda(),
                        eval_x=torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8),
                        eval_y=torch.ones(n, dtype=torch.int64))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert (s.model(torch.rand(2, 3, 8, 8, device="cuda")).argmax(1) == 0).all()  # bf16 loses the tie
        got = epoch_module.evaluate_epoch(s, 1)  # type: ignore[arg-type]
    assert got["test_clean_acc"] == 1.0 and got["test_pgd20_acc"] == 1.0


def test_fp32_exact_convolutions_are_ieee() -> None:
    torch.manual_seed(0)
    x, w = torch.randn(8, 64, 16, 16, device="cuda"), torch.randn(64, 64, 3, 3, device="cuda")
    reference = torch.nn.functional.conv2d(x.double(), w.double(), padding=1)
    with precision.fp32_exact(torch.device("cuda")):
        exact = torch.nn.functional.conv2d(x, w, padding=1)
    assert (exact.double() - reference).abs().max().item() < 1e-3  # TF32 errs by ~1e-2 at this size
    with precision.tf32(True):
        loose = torch.nn.functional.conv2d(x, w, padding=1)
    print(f"conv error: IEEE {(exact.double() - reference).abs().max().item():.2e}, "
          f"TF32 {(loose.double() - reference).abs().max().item():.2e}")


# 6. ---------------------------------------------------------------------------------------------------------------


def test_deterministic_resume_is_bit_identical_on_gpu(data_dir: Path, tmp_path: Path) -> None:
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    fit(_cfg(data_dir, whole, device="cuda", deterministic=True), quiet=True, threads=1)
    _stopped(_cfg(data_dir, parts, device="cuda", deterministic=True))
    fit(resume_config(parts, {}), resume=parts, quiet=True, threads=1)
    a, b = _weights(whole), _weights(parts)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_evaluate_on_cuda_records_ieee_fp32(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from memloss.trainer.evaluation import run as run_module

    path = tmp_path / "m.safetensors"
    meta = {"arch": "small_cnn", "dataset": "digits", "num_classes": "10", "shape": "1,8,8", "norm": "Linf",
            "eps": "32/255", "method": "at"}
    save_model(path, build_model("small_cnn", dataset_info("digits")), meta)
    seen: list[tuple[bool, bool]] = []
    real = run_module.run_attack
    monkeypatch.setattr(run_module, "run_attack",
                        lambda *a, **k: seen.append(precision.tf32_enabled()) or real(*a, **k))
    out = tmp_path / "r.json"
    evaluate(EvalConfig(path, attacks=("pgd20",), n=32, batch_size=32, device="cuda", out=out, threads=1))
    assert json.loads(out.read_text())["tf32"] is False and seen == [(False, False)]


# 7. ---------------------------------------------------------------------------------------------------------------


def test_a_cpu_run_on_a_gpu_machine_leaves_cuda_alone(data_dir: Path, tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import os, shutil, subprocess, torch
        from memloss.trainer.config.defaults import resolve_config
        from memloss.trainer.training.fit import fit
        cfg = resolve_config({{**{TINY!r}, "data_dir": {str(data_dir)!r}, "out": {str(tmp_path / "run")!r},
                               "device": "cpu"}})
        fit(cfg, quiet=True, threads=1)
        print("INITIALIZED", torch.cuda.is_initialized())
        if shutil.which("nvidia-smi"):
            apps = subprocess.run(["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
                                  capture_output=True, text=True).stdout.split()
            print("CONTEXT", str(os.getpid()) in apps)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "INITIALIZED False" in out.stdout and "CONTEXT True" not in out.stdout
