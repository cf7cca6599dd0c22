"""torchrun / DDP training (trainer/distributed): real torchrun launches of 2 ranks on gloo (CPU), and the pieces
they rely on. The 2-rank run checks that every sample's row of an epoch is written once, by rank 0 only (so no
chunk is ever written by two ranks), that the parameters are identical on every rank after each epoch and that
rank 0 alone writes the run directory; one process under torchrun must train exactly as the plain command. A
kill -9 of one rank followed by --resume must end with the weights and the store of an uninterrupted run, and two
ranks train with the store on a local S3 server (heavy).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from s3_server import S3Server
from safetensors.torch import load_file

from memloss.errors import ConfigError
from memloss.trainer.distributed import context
from memloss.trainer.distributed.launch import torchrun_command, without_option
from memloss.trainer.distributed.model import check_regularizer, check_sync_bn
from memloss.trainer.distributed.shards import Shards, part_sizes, shard_range
from memloss.trainer.distributed.state import check_world
from memloss.trainer.distributed.store import check_store_url
from memloss.trainer.distributed.torchrun import _ending
from memloss.trainer.distributed.writes import _pack, _unpack

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "ddp_driver.py"
N, BATCH = 128, 32
ARGS = ["--dataset", "synthetic", "--n", str(N), "--resolution", "8", "--batch-size", str(BATCH), "--eval-n", "16",
        "--attack-steps", "1", "--k", "1", "--seed", "3", "--threads", "1"]


# ---- the pieces -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "batch", "world"), [(1437, 64, 2), (130, 32, 4), (101, 25, 5), (64, 32, 2)])
def test_shards_cover_each_kept_sample_once(n: int, batch: int, world: int) -> None:
    order = np.random.default_rng(0).permutation(n)
    shards = [Shards(n, batch, world, r) for r in range(world)]
    locals_ = [s.local(order) for s in shards]
    assert sum(len(x) for x in locals_) == shards[0].kept
    assert len(set(np.concatenate(locals_).tolist())) == shards[0].kept
    assert [len(x) for x in locals_] == [s.local_size for s in shards]
    # Step g of every rank's loader (local batch) is its part of global batch g, the parts in rank order.
    b = batch // world
    for g in range(shards[0].steps):
        pieces = [x[g * b: g * b + shards[0].batch_parts(g)[r]] for r, x in enumerate(locals_)]
        assert np.array_equal(np.concatenate(pieces), shards[0].global_batch(order, g))


def test_last_batch_smaller_than_the_world_is_left_out() -> None:
    s = Shards(130, 32, 4, 0)  # 130 = 4·32 + 2: 2 samples cannot be split over 4 ranks
    assert (s.kept, s.steps) == (128, 4)
    assert Shards(131, 32, 2, 1).batch_parts(4) == [2, 1]


def test_batch_not_divisible_by_world_is_one_line_error() -> None:
    with pytest.raises(ConfigError, match="--batch-size 30 .* divisible by the 4 processes"):
        Shards(100, 30, 4, 0)


def test_parts_and_eval_ranges() -> None:
    assert part_sizes(10, 3) == [4, 3, 3]
    assert [shard_range(10, r, 3) for r in range(3)] == [(0, 4), (4, 7), (7, 10)]


def test_packed_rows_round_trip() -> None:
    g = torch.Generator().manual_seed(0)
    rows = (torch.randint(0, 256, (5, 3, 4, 4), generator=g, dtype=torch.uint8), torch.rand(5, generator=g),
            torch.randint(-4, 5, (5, 2), generator=g).to(torch.int16), torch.rand(5, generator=g) > 0.5)
    packed = _pack(rows, 7)
    assert packed.shape[0] == 7 and packed.dtype == torch.uint8
    for got, want in zip(_unpack(packed[:5], rows), rows):
        assert got.dtype == want.dtype and torch.equal(got, want)


def test_launch_command_drops_nproc() -> None:
    argv = ["train", "--nproc-per-node", "2", "--k", "1", "--nproc-per-node=3"]
    assert without_option(argv) == ["train", "--k", "1"]
    cmd = torchrun_command(2, ["train", "--k", "1"])
    assert cmd[1:4] == ["-m", "memloss.trainer.distributed.torchrun", "--standalone"]
    assert cmd[-5:] == ["memloss.cli.app", "--", "train", "--k", "1"]


def test_other_world_size_on_resume_and_memory_store_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    check_world({"world_size": 1})
    with pytest.raises(ConfigError, match="trained with 2 process.*resumed with 1"):
        check_world({"world_size": 2})
    monkeypatch.setattr(context, "_CURRENT", context.Context(0, 2, 0, True))
    with pytest.raises(ConfigError, match="memory://x lives inside one process"):
        check_store_url("memory://x")
    with pytest.raises(ConfigError, match="--sync-bn needs CUDA"):
        check_sync_bn(True, torch.device("cpu"))
    with pytest.raises(ConfigError, match="--reg te keeps state"):
        check_regularizer("te")


# ---- real torchrun launches -----------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("DDP_KILL", None)
    return env


def _torchrun(nproc: int, logs: Path, args: list[str], env: dict[str, str] | None = None) -> int:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", str(DRIVER),
           str(logs), "--", "train", *args]
    done = subprocess.run(cmd, env=env or _env(), capture_output=True, text=True, timeout=600)
    if done.returncode != 0 and not (env or {}).get("DDP_KILL"):
        print(done.stdout[-3000:], done.stderr[-6000:])
    return done.returncode


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(a), load_file(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def _same_store(a: Path, b: Path) -> bool:
    za, zb = zarr.open_group(a, mode="r"), zarr.open_group(b, mode="r")
    return all(np.array_equal(za[name][:], zb[name][:]) for name in ("codes", "scale", "info"))


def test_two_ranks_write_once_and_stay_identical(tmp_path: Path, data_dir: Path) -> None:
    logs, run = tmp_path / "logs", tmp_path / "run"
    assert _torchrun(2, logs, [*ARGS, "--epochs", "2", "--out", str(run), "--data-dir", str(data_dir)]) == 0
    writes = _lines(logs / "writes.r0.jsonl")
    assert not (logs / "writes.r1.jsonl").exists() and not (logs / "chunks.r1.jsonl").exists()  # rank 0 writes
    assert _lines(logs / "chunks.r0.jsonl")
    for epoch in (1, 2):
        rows = [i for w in writes if w["epoch"] == epoch for i in w["idx"]]
        assert sorted(rows) == list(range(N))  # every sample's row of the epoch, exactly once
        assert [len(w["idx"]) for w in writes if w["epoch"] == epoch] == [BATCH] * (N // BATCH)  # global batches
    for rank in (0, 1):  # each rank reads the memory of its own samples: all of epoch 1 is there in epoch 2
        reads = [r for r in _lines(logs / f"reads.r{rank}.jsonl") if r["epoch"] == 2]
        assert reads and all(r["valid"] == r["rows"] and r["read_only"] == (rank == 1) for r in reads)
        assert sum(r["rows"] for r in reads) >= N // 2
    # The store fits the budget (resident): rank 1 keeps rank 0's rows in RAM and never reads memory from storage.
    assert not (logs / "loads.r0.jsonl").exists() and not (logs / "loads.r1.jsonl").exists()
    params = [_lines(logs / f"params.r{r}.jsonl") for r in (0, 1)]
    assert [p["epoch"] for p in params[0]] == [1, 2] and params[0] == params[1]
    records = _lines(run / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2] and records[-1]["eval_n"] == 16
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # rank 0's TensorBoard file only
    state = torch.load(run / "last.state.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    assert not torch.equal(state["ranks"][0]["generator"], state["ranks"][1]["generator"])  # per-rank streams
    # memloss evaluate under torchrun: the batches are shared among the ranks, the results are the plain ones.
    evaluate = ["evaluate", str(run), "--attacks", "pgd20", "--n", "16", "--batch-size", "8", "--threads", "1",
                "--data-dir", str(data_dir)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
           "memloss.cli.app", "--", *evaluate, "--out", str(tmp_path / "ddp.json")]
    assert subprocess.run(cmd, env=_env(), capture_output=True, timeout=600).returncode == 0
    import memloss

    plain = memloss.evaluate(run, attacks="pgd20", n=16, batch_size=8, threads=1, data_dir=data_dir)
    shared = json.loads((tmp_path / "ddp.json").read_text())
    assert shared["attacks"][0]["n_robust"] == int(plain.attacks[0].robust.sum())
    assert shared["attacks"][0]["max_perturbation"] == plain.attacks[0].max_perturbation
    # A refusal on rank 0 (its --out holds a run) ends every rank with rank 0's one line, exit 2, no traceback.
    again = [sys.executable, "-m", "memloss.trainer.distributed.torchrun", "--standalone", "--nproc-per-node=2", "-m",
             "memloss.cli.app", "--", "train", *ARGS, "--out", str(run), "--data-dir", str(data_dir)]
    refused = subprocess.run(again, env=_env(), capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert [line for line in refused.stderr.splitlines() if line.strip()] == [
        f"error: {run} already holds a run (2 epoch(s) done); continue it with --resume {run} or choose another --out"]


@pytest.mark.parametrize(("rank", "exitcode", "code", "says"), [
    (0, 2, 2, None), (1, 130, 130, None), (1, -9, 1, "rank 1 was killed by signal 9"),
    (0, 1, 1, "rank 0 exited with code 1")])
def test_launcher_endings(rank: int, exitcode: int, code: int, says: str | None) -> None:
    got, line = _ending(rank, exitcode)
    assert got == code and (line is None if says is None else says in line and "--resume" in line)


@pytest.mark.heavy
def test_one_process_under_torchrun_trains_as_the_plain_command(tmp_path: Path, data_dir: Path) -> None:
    args = [*ARGS, "--epochs", "2", "--data-dir", str(data_dir)]
    assert _torchrun(1, tmp_path / "logs", [*args, "--out", str(tmp_path / "ddp")]) == 0
    plain = subprocess.run([sys.executable, "-m", "memloss.cli.app", "train", *args, "--out", str(tmp_path / "plain")],
                           env=_env(), capture_output=True, text=True, timeout=600)
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert _same_weights(tmp_path / "ddp" / "last.safetensors", tmp_path / "plain" / "last.safetensors")
    assert _same_store(tmp_path / "ddp" / "memory.zarr", tmp_path / "plain" / "memory.zarr")


@pytest.mark.heavy
def test_kill_one_rank_then_resume_matches_uninterrupted(tmp_path: Path, data_dir: Path) -> None:
    args = [*ARGS, "--epochs", "3", "--data-dir", str(data_dir)]
    # The uninterrupted run through the convenience launcher `memloss train --nproc-per-node 2`.
    plain = subprocess.run([sys.executable, "-m", "memloss.cli.app", "train", "--nproc-per-node", "2", *args, "--out",
                            str(tmp_path / "a")], env=_env(), capture_output=True, text=True, timeout=600)
    assert plain.returncode == 0, plain.stderr[-3000:]
    steps = N // BATCH
    killed = _torchrun(2, tmp_path / "lb", [*args, "--out", str(tmp_path / "b")],
                       env={**_env(), "DDP_KILL": f"1:{steps + 2}"})  # rank 1, mid-epoch 2
    assert killed != 0
    assert _torchrun(2, tmp_path / "lb", ["--resume", str(tmp_path / "b")]) == 0
    assert _same_weights(tmp_path / "a" / "last.safetensors", tmp_path / "b" / "last.safetensors")
    assert _same_store(tmp_path / "a" / "memory.zarr", tmp_path / "b" / "memory.zarr")
    losses = [[r["loss"] for r in _lines(run / "metrics.jsonl")] for run in (tmp_path / "a", tmp_path / "b")]
    assert losses[0] == losses[1]


@pytest.mark.heavy
def test_two_ranks_with_the_store_on_s3(tmp_path: Path, data_dir: Path, s3: S3Server) -> None:
    """The several-nodes layout on one node: the store on an S3 server (moto), rank 1 reading it read-only."""
    logs, url = tmp_path / "logs", s3.url()
    args = [*ARGS, "--epochs", "2", "--out", str(tmp_path / "run"), "--data-dir", str(data_dir), "--store", url,
            "--store-option", f"endpoint_url={s3.endpoint}"]
    assert _torchrun(2, logs, args, env={**s3.env, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}) == 0
    writes = _lines(logs / "writes.r0.jsonl")
    assert sorted(i for w in writes if w["epoch"] == 2 for i in w["idx"]) == list(range(N))
    reads = [r for r in _lines(logs / "reads.r1.jsonl") if r["epoch"] == 2]
    assert reads and all(r["valid"] == r["rows"] and r["read_only"] for r in reads)
    params = [_lines(logs / f"params.r{r}.jsonl") for r in (0, 1)]
    assert len(params[0]) == 2 and params[0] == params[1]
