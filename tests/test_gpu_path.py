"""The GPU path, checked on CPU (issue 23): each CUDA-only branch simulated or mocked where no GPU exists.

1. generator states across device kinds (resume, torchrun per-rank states, older run directories);
2. no host sync in the training step, the store writer included (the written δ's finite check is deferred);
3. the run's device made current and the writer's events recorded on its stream (mocked device index);
4. which host buffers are pinned before a non_blocking copy;
5. the per-epoch selection and the forgetting judgement in fp32 under an outer bf16 autocast;
6. --precision / --deterministic (flags, refusals, resume) and `memloss evaluate`'s TF32 switch;
7. a CPU run on a (mocked) GPU machine never touches CUDA.
The same items on a real GPU: tests/test_gpu_path_cuda.py (marker gpu).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from typer.testing import CliRunner

from memloss.cli.app import app
from memloss.errors import ConfigError, MemlossError
from memloss.memstore import quant
from memloss.memstore.ahead import ReadAhead
from memloss.memstore.entries import MemoryBatch
from memloss.memstore.quant import NonFiniteDelta, quantize
from memloss.trainer.common import precision
from memloss.trainer.common.devices import bind_device, pin_host_buffers, pinned_for
from memloss.trainer.common.rng import derived_seed, generator_state, restore_generator, saved_kind
from memloss.trainer.config.defaults import resolve_config
from memloss.trainer.evaluation.results import EvalConfig
from memloss.trainer.evaluation.run import evaluate
from memloss.trainer.models.files import save_model
from memloss.trainer.models.registry import build_model
from memloss.trainer.data.registry import dataset_info
from memloss.trainer.training import epoch as epoch_module
from memloss.trainer.training import fit as fit_module
from memloss.trainer.training import memory as memory_module
from memloss.trainer.training import resume_state
from memloss.trainer.training import session as session_module
from memloss.trainer.training.augment import identity_views
from memloss.trainer.training.fit import fit, resume_config
from memloss.trainer.training.forgetting import ForgettingMonitor
from memloss.trainer.training.memory import DeferredWriter
from memloss.trainer.training.runs import STATE_FILE

TINY = {"dataset": "synthetic", "n": 96, "resolution": 8, "batch_size": 32, "eval_n": 16, "attack_steps": 1,
        "epochs": 2, "k": 1}
REPO = Path(__file__).resolve().parents[1]


def _cfg(data_dir: Path, out: Path, **extra: Any):  # noqa: ANN202
    return resolve_config({**TINY, "data_dir": str(data_dir), "out": str(out), **extra})


def _cuda_state(seed: int, offset: int) -> torch.Tensor:
    """A CUDA (Philox) generator state as torch saves it: seed uint64 and offset int64, 16 bytes."""
    return torch.frombuffer(bytearray(struct.pack("<Qq", seed, offset)), dtype=torch.uint8).clone()


# ---------------------------------------------------------------------------------------------------------------
# 1. Generator states across device kinds.


def test_a_cpu_generator_takes_a_cuda_state_and_the_reverse_is_derived() -> None:
    g = torch.Generator().manual_seed(3)
    saved = _cuda_state(1234, 64)
    with pytest.raises(RuntimeError):
        g.set_state(saved)  # what a resume across kinds did before
    note = restore_generator(g, {"generator": saved, "generator_device": "cuda"})
    assert note is not None and "saved on cuda" in note
    first = torch.rand(4, generator=g)
    again = torch.Generator().manual_seed(99)
    restore_generator(again, {"generator": saved})  # an older state: no kind saved, told by its 16 bytes
    assert torch.equal(torch.rand(4, generator=again), first)  # derived deterministically from the saved bytes
    assert derived_seed(saved) != derived_seed(_cuda_state(1234, 65))


def test_a_same_kind_state_is_restored_exactly_old_format_included() -> None:
    g = torch.Generator().manual_seed(7)
    torch.rand(10, generator=g)
    fields = generator_state(g)
    assert fields["generator_device"] == "cpu" and saved_kind(fields) == "cpu"
    expected = torch.rand(5, generator=g)
    for state in (fields, {"generator": fields["generator"]}):  # new and older (untagged) resume points
        h = torch.Generator().manual_seed(0)
        assert restore_generator(h, state) is None
        assert torch.equal(torch.rand(5, generator=h), expected)


def _bare_session(generator: torch.Generator) -> SimpleNamespace:
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    return SimpleNamespace(model=model, optimizer=optimizer, scheduler=scheduler, generator=generator, extras={},
                           ema=None, slots=None, monitor=None, best_robust=-1.0, best_epoch=0, start_epoch=1)


def test_torchrun_per_rank_state_from_cuda_restores_on_cpu() -> None:
    donor = _bare_session(torch.Generator())
    state = {"epoch": 3, "model": donor.model.state_dict(), "optimizer": donor.optimizer.state_dict(),
             "scheduler": donor.scheduler.state_dict(), "generator": torch.Generator().get_state(),
             "cpu_rng": torch.get_rng_state(), "best_robust": 0.5, "best_epoch": 2, "extras": {}, "ema": None,
             "world_size": 1, "ranks": [{"generator": _cuda_state(5, 128), "cpu_rng": torch.get_rng_state(),
                                         "slots": None}]}  # rank 0's entry, written by a CUDA run (old format)
    s = _bare_session(torch.Generator())
    notes = resume_state.restore(s, state)  # type: ignore[arg-type]
    assert s.start_epoch == 4 and len(notes) == 1 and "saved on cuda" in notes[0]
    expected = torch.Generator().manual_seed(derived_seed(_cuda_state(5, 128)))
    assert torch.equal(torch.rand(3, generator=s.generator), torch.rand(3, generator=expected))


class _Stop(MemlossError):
    pass


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A tiny run stopped after epoch 1's resume point."""
    run = tmp_path_factory.mktemp("gpupath") / "run"
    real = fit_module.finish_epoch

    def finish(s: Any, epoch: int, *args: Any) -> None:
        real(s, epoch, *args)
        raise _Stop("stopped")

    fit_module.finish_epoch = finish
    try:
        with pytest.raises(_Stop):
            fit(_cfg(data_dir, run), quiet=True, threads=1)
    finally:
        fit_module.finish_epoch = real
    return run


def test_resume_of_a_run_saved_on_cuda_continues_on_cpu(stopped_run: Path, tmp_path: Path) -> None:
    finals = []
    for name, tagged in (("tagged", True), ("untagged", False)):
        run = tmp_path / name
        shutil.copytree(stopped_run, run)
        state = torch.load(run / STATE_FILE, weights_only=True)
        state["generator"] = _cuda_state(2024, 4096)  # as a CUDA run writes it
        if tagged:
            state["generator_device"] = "cuda"
        else:
            state.pop("generator_device", None)  # an older run directory
        torch.save(state, run / STATE_FILE)
        result = fit(resume_config(run, {}), resume=run, quiet=True, threads=1)
        assert [r["epoch"] for r in result.records] == [1, 2]
        finals.append(load_file(run / "last.safetensors"))
    assert finals[0].keys() == finals[1].keys()
    for name, tensor in finals[0].items():  # the derived stream depends on the saved state only
        assert torch.equal(tensor, finals[1][name]), name


# ---------------------------------------------------------------------------------------------------------------
# 2. Host syncs in the training step, the writer included.

SYNCING = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "cpu", "numpy")
# Calls of these in the step that read host tensors only (the store's masks live on the host): no device sync on
# CUDA either. Anything else in the step is a host-device sync on CUDA and fails the test.
HOST_ONLY = {
    ("tolist", "trainer/training/memory.py:valid_counts"),  # counts of the store MemoryBatch's host masks
    ("numpy", "trainer/training/metrics.py:add"),  # MemoryShares.add: the same host masks
}


class HostSyncs:
    """Counts, on the calling thread while `watching()`, calls that wait for the device on CUDA: Tensor.item /
    __bool__ / __float__ / __int__ / __index__ / tolist / cpu / numpy and torch.cuda.synchronize, by (call, our
    calling function). The store's worker threads are not watched (they never touch device tensors)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()
        self._local = threading.local()
        for name in SYNCING:
            monkeypatch.setattr(torch.Tensor, name, self._wrap(name, getattr(torch.Tensor, name)))
        monkeypatch.setattr(torch.cuda, "synchronize", self._wrap("synchronize", lambda *a, **k: None))

    def _wrap(self, name: str, original: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            if getattr(self._local, "on", False):
                self.calls[(name, _caller())] += 1
            return original(*args, **kwargs)

        return counted

    @contextmanager
    def watching(self) -> Iterator[None]:
        self._local.on = True
        try:
            yield
        finally:
            self._local.on = False

    def unexpected(self) -> dict[tuple[str, str], int]:
        return {site: n for site, n in self.calls.items() if site not in HOST_ONLY}


def _caller() -> str:
    """'path:function' of the innermost frame of memloss code (not torch's, not the tests')."""
    frame = sys._getframe(2)
    while frame is not None:
        file = frame.f_code.co_filename
        if file.startswith(str(REPO)) and "/tests/" not in file and "/.venv/" not in file:
            return f"{os.path.relpath(file, REPO)}:{frame.f_code.co_name}"
        frame = frame.f_back
    return "?"


def test_the_training_step_and_writer_make_no_host_sync(monkeypatch: pytest.MonkeyPatch, data_dir: Path,
                                                        tmp_path: Path) -> None:
    syncs = HostSyncs(monkeypatch)
    real = epoch_module._train_batch
    steps = []

    def watched(*args: Any, **kwargs: Any) -> torch.Tensor:
        steps.append(1)
        with syncs.watching():
            return real(*args, **kwargs)

    monkeypatch.setattr(epoch_module, "_train_batch", watched)
    fit(_cfg(data_dir, tmp_path / "run"), quiet=True, threads=1)  # K=1: store, writer, memory examples, monitor
    assert len(steps) == 6
    assert syncs.unexpected() == {}
    assert syncs.calls[("tolist", "trainer/training/memory.py:valid_counts")] > 0  # the watch saw the step


def test_the_sync_counter_catches_a_per_step_finite_check(monkeypatch: pytest.MonkeyPatch) -> None:
    syncs = HostSyncs(monkeypatch)
    store = SimpleNamespace(written=[], write=lambda *a: store.written.append(a))
    writer = DeferredWriter(store, torch.device("cpu"))
    delta, views = torch.rand(4, 3, 8, 8) * 0.03, identity_views(4, 2, torch.device("cpu"))
    with syncs.watching():
        writer.push(np.arange(4), delta, views)
    assert syncs.unexpected() == {} and len(store.written) == 1
    monkeypatch.setattr(memory_module, "quantize", lambda d, **_: quantize(d))  # the old, syncing check
    with syncs.watching():
        writer.push(np.arange(4), delta, views)
    assert ("__bool__", "memstore/quant.py:quantize") in syncs.unexpected()


def test_a_nonfinite_delta_trips_the_deferred_check_with_the_same_error() -> None:
    store = SimpleNamespace(written=[], write=lambda *a: store.written.append(a))
    writer = DeferredWriter(store, torch.device("cpu"))
    delta = torch.rand(3, 1, 2, 2) * 0.03
    delta[1, 0, 0, 0] = float("nan")
    codes, scale = writer.push(np.arange(3), delta, identity_views(3, 0, torch.device("cpu")))
    assert scale[1] == 0 and bool((codes[1] == quant.ZERO_CODE).all()) and scale[0] > 0  # a row the store accepts
    with pytest.raises(NonFiniteDelta, match="NaN or Inf") as caught:
        writer.check()
    with pytest.raises(MemlossError) as direct:
        quantize(delta)
    assert str(caught.value) == str(direct.value)
    ok = DeferredWriter(store, torch.device("cpu"))
    ok.push(np.arange(3), delta.nan_to_num(0.0), identity_views(3, 0, torch.device("cpu")))
    ok.check()


def test_a_nonfinite_delta_stops_training_at_the_epoch_check(monkeypatch: pytest.MonkeyPatch, data_dir: Path,
                                                             tmp_path: Path) -> None:
    real = DeferredWriter.push

    def poisoned(self: DeferredWriter, idx: np.ndarray, delta: torch.Tensor, views: Any) -> Any:
        return real(self, idx, torch.full_like(delta, float("inf")), views)

    monkeypatch.setattr(DeferredWriter, "push", poisoned)
    with pytest.raises(NonFiniteDelta, match="NaN or Inf"):
        fit(_cfg(data_dir, tmp_path / "run", epochs=1, n=192), quiet=True, threads=1)
    assert not (tmp_path / "run" / STATE_FILE).exists()  # nothing of the epoch was kept


# ---------------------------------------------------------------------------------------------------------------
# 3. The run's device made current; the writer's events on its stream (mocked device index).


def test_bind_device_makes_the_index_current(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.append(int(i)))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 5)
    assert bind_device(torch.device("cuda", 3)) == torch.device("cuda", 3) and calls == [3]
    assert bind_device(torch.device("cuda")) == torch.device("cuda", 5) and calls == [3, 5]
    assert bind_device(torch.device("cpu")) == torch.device("cpu") and calls == [3, 5]


class _FakeEvent:
    made: list[_FakeEvent] = []

    def __init__(self) -> None:
        self.stream: Any = None
        self.waited = False
        _FakeEvent.made.append(self)

    def record(self, stream: Any = None) -> None:
        self.stream = stream

    def synchronize(self) -> None:
        self.waited = True


def test_the_writer_records_its_event_on_the_runs_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    _FakeEvent.made = []
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: ("stream of", torch.device(device)))
    monkeypatch.setattr(memory_module, "pinned_like", lambda t: torch.empty(t.shape, dtype=t.dtype))
    store = SimpleNamespace(written=[], write=lambda idx, *a: store.written.append(idx))
    device = torch.device("cuda", 3)
    writer = DeferredWriter(store, device)
    views = identity_views(2, 0, torch.device("cpu"))
    writer.push(np.array([0, 1]), torch.rand(2, 1, 2, 2) * 0.03, views)
    assert _FakeEvent.made[0].stream == ("stream of", device) and store.written == []
    writer.push(np.array([2, 3]), torch.rand(2, 1, 2, 2) * 0.03, views)
    # The second step wrote the first one's rows after waiting for their copy, never for its own.
    assert _FakeEvent.made[0].waited and not _FakeEvent.made[1].waited
    assert [list(i) for i in store.written] == [[0, 1]]
    writer.flush()
    assert _FakeEvent.made[1].waited and [list(i) for i in store.written] == [[0, 1], [2, 3]]


def test_the_benchmark_times_the_runs_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_train_step_gpupath", REPO / "bench" / "train_step.py")
    bench = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.path.insert(0, str(REPO / "bench"))
    try:
        spec.loader.exec_module(bench)  # type: ignore[union-attr]
    finally:
        sys.path.remove(str(REPO / "bench"))
    made_current: list[int] = []
    monkeypatch.setattr(bench, "resolve_device", lambda name: torch.device(name))
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: made_current.append(int(i)))
    bc = bench.parse_config(["--device", "cuda:2", "--precision", "bf16", "--quick"])
    assert made_current == [2] and bc.device == torch.device("cuda", 2) and bc.precision == "bf16"
    with pytest.raises(ConfigError, match="bf16"):
        bench.parse_config(["--device", "cpu", "--precision", "bf16"])


# ---------------------------------------------------------------------------------------------------------------
# 4. Pinned host buffers.


def test_which_host_tensors_are_pinned_before_a_copy() -> None:
    cuda, cpu = torch.device("cuda", 1), torch.device("cpu")
    host = torch.zeros(3)
    assert pin_host_buffers(cuda) and not pin_host_buffers(cpu)
    assert pinned_for(cuda, host) and not pinned_for(cpu, host)
    pinned = SimpleNamespace(device=cpu, is_pinned=lambda: True)
    assert not pinned_for(cuda, pinned)  # type: ignore[arg-type]
    on_gpu = SimpleNamespace(device=cuda, is_pinned=lambda: False)
    assert not pinned_for(cuda, on_gpu)  # type: ignore[arg-type]


def test_the_read_ahead_pins_batches_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    pinned_by: list[str] = []

    def pin(self: torch.Tensor) -> torch.Tensor:
        pinned_by.append(threading.current_thread().name)
        return self.clone()

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin)
    batch = MemoryBatch(torch.zeros(1, 2, 1, 2, 2, dtype=torch.uint8), torch.zeros(1, 2), torch.zeros(1, 2, 2),
                        torch.zeros(1, 2, dtype=torch.bool), torch.zeros(1, 2, dtype=torch.bool))
    store = SimpleNamespace(read=lambda idx: batch)
    plain = ReadAhead(store)  # type: ignore[arg-type]
    assert plain.read(np.array([0, 1])) is batch and pinned_by == []
    plain.close()
    ahead = ReadAhead(store, pin=True)  # type: ignore[arg-type]
    ahead.prefetch(np.array([0, 1]))
    got = ahead.read(np.array([0, 1]))
    ahead.close()
    assert got is not batch and torch.equal(got.codes, batch.codes)
    assert len(pinned_by) == 5 and all(name.startswith("memstore-ahead") for name in pinned_by)  # off the loop


# ---------------------------------------------------------------------------------------------------------------
# 5. Selection and forgetting judgement in fp32 under an outer bf16 autocast.


class _NearTie(nn.Module):
    """Logits (1, 1 + 2⁻⁹, −5) whatever the input: class 1 wins in fp32; in bf16 (8-bit mantissa) the first two
    round to the same value and argmax says 0."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 3)
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.bias.copy_(torch.tensor([1.0, 1.0 + 2**-9, -5.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_bf16_argmax_differs_on_the_near_tie() -> None:
    x = torch.rand(4, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (_NearTie()(x).argmax(1) == 0).all()
    assert (_NearTie()(x).argmax(1) == 1).all()


def test_selection_is_computed_in_fp32_under_bf16_autocast(data_dir: Path, tmp_path: Path) -> None:
    cfg = _cfg(data_dir, tmp_path)
    n = 8
    s = SimpleNamespace(cfg=cfg, device=torch.device("cpu"), model=_NearTie(),
                        eval_x=torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8),
                        eval_y=torch.ones(n, dtype=torch.int64))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as the CUDA bf16 path runs around the step
        got = epoch_module.evaluate_epoch(s, 1)  # type: ignore[arg-type]
    assert got["test_clean_acc"] == 1.0 and got["test_pgd20_acc"] == 1.0


def test_forgetting_judgement_is_fp32_under_bf16_autocast() -> None:
    b = 4
    monitor = ForgettingMonitor(b, 1, torch.device("cpu"), stride=1)
    monitor.begin_epoch(1)
    x = torch.rand(b, 3, 8, 8)
    stored = quantize(torch.zeros(b, 3, 8, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        monitor.observe(_NearTie(), x, x, stored, torch.ones(b, dtype=torch.int64), np.arange(b), None,
                        identity_views(b, 0, torch.device("cpu")), 0)
    assert monitor.made_correct[1].tolist() == [1] * b


def test_fp32_exact_turns_tf32_off_on_cuda_and_restores_it() -> None:
    before = precision.tf32_enabled()
    with precision.tf32(True):
        assert precision.tf32_enabled() == (True, True)
        with precision.fp32_exact(torch.device("cuda")):
            assert precision.tf32_enabled() == (False, False)
            assert not torch.is_autocast_enabled("cuda")
        assert precision.tf32_enabled() == (True, True)
    assert precision.tf32_enabled() == before


def test_tf32_switch_on_torch_without_the_new_api(monkeypatch: pytest.MonkeyPatch) -> None:
    flags = SimpleNamespace(cuda=SimpleNamespace(matmul=SimpleNamespace(allow_tf32=True)),
                            cudnn=SimpleNamespace(allow_tf32=True))  # torch 2.4-2.8: no fp32_precision
    monkeypatch.setattr(precision, "torch", SimpleNamespace(backends=flags))
    assert not precision._new_api()
    with precision.tf32(False):
        assert (flags.cuda.matmul.allow_tf32, flags.cudnn.allow_tf32) == (False, False)
    assert (flags.cuda.matmul.allow_tf32, flags.cudnn.allow_tf32) == (True, True)


# ---------------------------------------------------------------------------------------------------------------
# 6. --precision, --deterministic, evaluate's TF32.


def test_precision_and_deterministic_config() -> None:
    cfg = resolve_config({**TINY})
    assert cfg.run.precision == "fp32" and cfg.run.deterministic is False
    assert resolve_config({**TINY, "precision": "bf16", "deterministic": True}).run.precision == "bf16"
    with pytest.raises(ConfigError, match="unknown precision 'fp16'; valid: fp32, bf16"):
        resolve_config({**TINY, "precision": "fp16"})


def test_bf16_on_cpu_is_refused_in_one_line(tmp_path: Path, data_dir: Path) -> None:
    result = CliRunner().invoke(app, ["train", "--dataset", "synthetic", "--device", "cpu", "--precision", "bf16",
                                      "--data-dir", str(data_dir), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "--precision bf16" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_train_help_shows_the_options_in_the_run_panel() -> None:
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200", "TERM": "dumb"})
    lines = result.output.splitlines()
    panel = next(i for i, line in enumerate(lines) if line.startswith("╭─ Run "))
    block = "\n".join(lines[panel:panel + 12])
    assert "--precision" in block and "--deterministic" in block


def test_resume_refuses_a_changed_precision_or_determinism(stopped_run: Path) -> None:
    for change in ({"precision": "bf16"}, {"deterministic": True}):
        with pytest.raises(ConfigError, match=f"refuses a changed config: {next(iter(change))}"):
            resume_config(stopped_run, change)
    assert resume_config(stopped_run, {"device": "cpu"}).run.precision == "fp32"  # the device may change
    recorded = json.loads((stopped_run / "config.json").read_text())
    assert recorded["config"]["run"]["precision"] == "fp32" and recorded["config"]["run"]["deterministic"] is False


def test_deterministic_mode_sets_and_restores_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert not torch.are_deterministic_algorithms_enabled()
    with precision.deterministic_mode(True):
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    with precision.deterministic_mode(False):
        assert not torch.are_deterministic_algorithms_enabled()


def test_a_deterministic_run_trains_under_deterministic_algorithms(monkeypatch: pytest.MonkeyPatch,
                                                                    data_dir: Path, tmp_path: Path) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seen: list[bool] = []
    real = epoch_module._train_batch

    def watched(*args: Any, **kwargs: Any) -> torch.Tensor:
        seen.append(torch.are_deterministic_algorithms_enabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(epoch_module, "_train_batch", watched)
    lines: list[str] = []
    monkeypatch.setattr(fit_module, "numerics_line", lambda cfg, device: lines.append(cfg.run.precision) or "")
    fit(_cfg(data_dir, tmp_path / "run", deterministic=True, k=0, epochs=1, n=192), quiet=True, threads=1)
    assert seen and all(seen) and not torch.are_deterministic_algorithms_enabled()
    assert lines == ["fp32"]


def test_numerics_line_says_what_is_exact_where() -> None:
    cpu = fit_module.numerics_line(resolve_config({**TINY}), torch.device("cpu"))
    gpu = fit_module.numerics_line(resolve_config({**TINY, "precision": "bf16"}), torch.device("cuda", 0))
    assert "precision: fp32" in cpu and "bit-identical" in cpu
    assert "precision: bf16" in gpu and "--deterministic" in gpu


def test_evaluate_attacks_in_ieee_fp32_and_records_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from memloss.trainer.evaluation import run as run_module

    path = tmp_path / "m.safetensors"
    torch.manual_seed(0)
    meta = {"arch": "small_cnn", "dataset": "digits", "num_classes": "10", "shape": "1,8,8", "norm": "Linf",
            "eps": "32/255", "method": "at"}
    save_model(path, build_model("small_cnn", dataset_info("digits")), meta)
    seen: list[tuple[bool, bool]] = []
    real = run_module.run_attack

    def watched(*args: Any, **kwargs: Any) -> Any:
        seen.append(precision.tf32_enabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "run_attack", watched)
    with precision.tf32(True):  # whatever the process allowed before
        for allow in (False, True):
            out = tmp_path / f"tf32-{allow}.json"
            evaluate(EvalConfig(path, attacks=("pgd20",), n=16, batch_size=16, device="cpu", out=out, threads=1,
                                tf32=allow))
            assert json.loads(out.read_text())["tf32"] is allow
            assert seen[-1] == (allow, allow)
        assert precision.tf32_enabled() == (True, True)  # restored after


# ---------------------------------------------------------------------------------------------------------------
# 7. A CPU run on a GPU machine (mocked) leaves CUDA untouched.


class CudaTouched(Exception):
    pass


def _mock_gpu_machine(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """torch.cuda claims a GPU and FFCV was imported believing it; every call that would make a CUDA context,
    stream, event or pinned buffer is recorded and raises."""
    import ffcv.loader.epoch_iterator as iterator

    touched: list[str] = []

    def refuse(name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            touched.append(name)
            raise CudaTouched(name)

        return call

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(iterator, "IS_CUDA", True)
    for name in ("_lazy_init", "init", "set_device", "current_device", "synchronize", "current_stream", "Stream",
                 "Event", "stream"):
        monkeypatch.setattr(torch.cuda, name, refuse(name))
    monkeypatch.setattr(torch.Tensor, "pin_memory", refuse("pin_memory"))
    return touched


def test_a_cpu_run_never_touches_cuda(monkeypatch: pytest.MonkeyPatch, data_dir: Path, tmp_path: Path) -> None:
    touched = _mock_gpu_machine(monkeypatch)
    bound: list[torch.device] = []
    real_bind = session_module.bind_device
    monkeypatch.setattr(session_module, "bind_device", lambda d: bound.append(d) or real_bind(d))
    result = fit(_cfg(data_dir, tmp_path / "run", epochs=1, n=192, device="cpu"), quiet=True, threads=1)
    assert [r["epoch"] for r in result.records] == [1]
    assert touched == [] and bound == [torch.device("cpu")]
    # Without the switch (data/ffcv_cuda.py) FFCV would make CUDA streams and pinned buffers for this CPU run.
    monkeypatch.setattr(session_module, "ffcv_follows", lambda device: None)
    import ffcv.loader.epoch_iterator as iterator

    monkeypatch.setattr(iterator, "IS_CUDA", True)
    with pytest.raises(CudaTouched):
        fit(_cfg(data_dir, tmp_path / "run2", epochs=1, n=192, device="cpu"), quiet=True, threads=1)
    assert touched
