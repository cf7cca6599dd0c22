"""torchrun / DDP training with generated data (`--aux-data`): each rank trains its part of every mixed global batch
(its share of the batch's base rows and of its generated rows), the ranks' global batches are the single process's
(the store's order, cut by rank), rank 0 writes every visit once (a generated row drawn twice in an epoch is written
at both visits, the last one its memory), the memory shares and the forgetting counts of the metrics are summed
over ranks, the parameters stay identical on both ranks, and a kill -9 of either rank followed by --resume ends
with the weights and the store of an uninterrupted run (heavy). Real torchrun launches of 2 ranks on gloo (CPU)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from safetensors.torch import load_file
from test_distributed import _env, _lines
from test_distributed import _torchrun as _torchrun_n
from test_train_generated import write_aux

from memloss.errors import ConfigError
from memloss.memstore.store import open_store
from memloss.trainer.data.mixed import batch_mix
from memloss.trainer.distributed.reduce import key_bit, latest_key
from memloss.trainer.distributed.shards import MixedShards
from memloss.trainer.training.metrics import MemoryShares

N_BASE, N_AUX, BATCH, FRACTION = 96, 200, 32, 0.6  # batches of 13 base + 19 generated: ranks take 7 + 10 and 6 + 9
BASE, AUX = BATCH - int(FRACTION * BATCH), int(FRACTION * BATCH)
ARGS = ["--dataset", "synthetic", "--n", str(N_BASE), "--resolution", "8", "--batch-size", str(BATCH), "--eval-n",
        "16", "--attack-steps", "1", "--k", "1", "--seed", "3", "--threads", "1", "--aux-fraction", str(FRACTION)]


# ---- the pieces -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("base", "aux", "world"), [(13, 19, 2), (154, 358, 4), (3, 3, 3)])
def test_mixed_shards_cut_each_batch_into_base_and_generated_parts(base: int, aux: int, world: int) -> None:
    batches = 5
    order = np.random.default_rng(0).permutation(batches * (base + aux)).astype(np.int64)
    shards = [MixedShards(base, aux, batches, world, r) for r in range(world)]
    locals_ = [s.local(order) for s in shards]
    assert [len(x) for x in locals_] == [s.local_size for s in shards]
    sizes = [s.base_rows + s.aux_rows for s in shards]
    assert sizes == shards[0].batch_parts(0) and max(sizes) == shards[0].local_batch
    assert sum(s.base_rows for s in shards) == base and sum(s.aux_rows for s in shards) == aux
    batch = base + aux
    for g in range(batches):
        single = order[g * batch:(g + 1) * batch]
        pieces = [x[g * n:(g + 1) * n] for x, n in zip(locals_, sizes)]
        # Each rank's part: its base rows of the batch first, then its generated rows.
        for s, piece in zip(shards, pieces):
            assert set(piece[:s.base_rows]) <= set(single[:base]) and set(piece[s.base_rows:]) <= set(single[base:])
        # The ranks' global batch (the writer's) is the single process's batch, in the ranks' order.
        assert np.array_equal(np.concatenate(pieces), shards[0].global_batch(order, g))
        assert sorted(shards[0].global_batch(order, g)) == sorted(single)


def test_a_batch_that_cannot_give_every_rank_both_parts_is_refused() -> None:
    with pytest.raises(ConfigError, match="1 base \\+ 31 generated .* each of the 2 processes"):
        MixedShards(1, 31, 4, 2, 0)


def test_the_last_visit_keeps_its_bit() -> None:
    """merge_monitor's max of `latest_key` over ranks: the bit set at the latest step wins, unjudged bits lose."""
    bits = torch.tensor([[1, -1, 0, -1], [0, 1, 1, -1]], dtype=torch.int8)  # rank 0, rank 1
    stamps = torch.tensor([[5, 0, 9, 0], [7, 3, 2, 0]], dtype=torch.int32)
    merged = torch.stack([latest_key(b, s) for b, s in zip(bits, stamps)]).max(dim=0).values
    assert key_bit(merged).tolist() == [0, 1, 0, -1]


def test_memory_shares_reduce_to_the_sum_of_the_ranks() -> None:
    ranks = [MemoryShares(base_rows=2), MemoryShares(base_rows=1)]
    ranks[0].add(torch.tensor([[True, False, True, True]]))
    ranks[1].add(torch.tensor([[False, True, False]]))

    def total(counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        other = {**ranks[1]._held, **{f"{k}/rows": np.array([v]) for k, v in ranks[1]._rows.items()}}
        return {k: v + other[k] for k, v in counts.items()}

    ranks[0].reduce(total)
    assert ranks[0].read() == {"mem_held_by_age": [round(4 / 7, 6)], "mem_held_base_by_age": [round(1 / 3, 6)],
                               "mem_held_aux_by_age": [0.75]}


@pytest.fixture(scope="module")
def aux_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_aux(tmp_path_factory.mktemp("gen") / "gen.npz", N_AUX)


# ---- real torchrun launches -----------------------------------------------------------------------------------
def _torchrun(logs: Path, args: list[str], env: dict[str, str] | None = None) -> int:
    return _torchrun_n(2, logs, args, env)


def _share(reads: list[dict], part: slice) -> float:
    """Share of the rows of `part` of every rank's batches (base: slice(0, …), generated) that held age-0 memory."""
    rows = [i for r in reads for i in r["idx"] if part.start <= i < part.stop]
    held = [i for r in reads for i in r["valid_idx"] if part.start <= i < part.stop]
    return round(len(held) / len(rows), 6)


def test_two_ranks_train_the_single_process_batches(tmp_path: Path, data_dir: Path, aux_file: Path) -> None:
    logs, run = tmp_path / "logs", tmp_path / "run"
    args = [*ARGS, "--aux-data", str(aux_file), "--aux-draw", "with-replacement", "--epochs", "2", "--out", str(run),
            "--data-dir", str(data_dir)]
    assert _torchrun(logs, args) == 0
    assert not (logs / "writes.r1.jsonl").exists()  # rank 0 writes for both
    writes = _lines(logs / "writes.r0.jsonl")
    mix = batch_mix(N_BASE, N_AUX, BATCH, FRACTION, draw="with-replacement")
    with open_store(str(run / "memory.zarr"), read_only=True) as store:
        orders = {e: store.begin_epoch(e, mix=mix) for e in (1, 2)}  # the single process's order of the epoch
    for epoch, order in orders.items():
        batches = [w["idx"] for w in writes if w["epoch"] == epoch]
        assert len(batches) == mix.batches  # one write of every global batch: each visit written once
        for g, idx in enumerate(batches):
            assert sorted(idx) == sorted(order[g * BATCH:(g + 1) * BATCH].tolist())
        written = np.concatenate(batches)
        assert np.unique(written[written >= N_BASE]).size < mix.aux_rows  # some generated rows came twice
    for rank, (base, aux) in enumerate([(7, 10), (6, 9)]):  # each rank reads its own part of every batch
        reads = _lines(logs / f"reads.r{rank}.jsonl")
        assert len(reads) == 2 * mix.batches
        assert all(sum(i < N_BASE for i in r["idx"]) == base and len(r["idx"]) == base + aux for r in reads)
    params = [_lines(logs / f"params.r{r}.jsonl") for r in (0, 1)]
    assert [p["epoch"] for p in params[0]] == [1, 2] and params[0] == params[1]
    # The epoch's metrics count both ranks' rows: memory shares and the forgetting monitor's judged rows.
    last = _lines(run / "metrics.jsonl")[-1]
    reads = [r for rank in (0, 1) for r in _lines(logs / f"reads.r{rank}.jsonl") if r["epoch"] == 2]
    assert last["monitor_rows"] == sum(r["valid"] for r in reads)
    assert last["mem_held_base_by_age"] == [_share(reads, slice(0, N_BASE))]
    assert last["mem_held_aux_by_age"] == [_share(reads, slice(N_BASE, N_BASE + N_AUX))]
    assert 0 < last["mem_held_aux_by_age"][0] < 1  # drawn with replacement: some rows unvisited in epoch 1


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, aux_file: Path) -> Path:
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    cmd = [sys.executable, "-m", "memloss.cli.app", "train", "--nproc-per-node", "2", *ARGS, "--aux-data",
           str(aux_file), "--epochs", "3", "--data-dir", str(data_dir), "--out", str(run)]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return run


@pytest.mark.heavy
@pytest.mark.parametrize("rank", [0, 1])
def test_kill_either_rank_then_resume_matches_uninterrupted(tmp_path: Path, data_dir: Path, aux_file: Path,
                                                            uninterrupted: Path, rank: int) -> None:
    steps = batch_mix(N_BASE, N_AUX, BATCH, FRACTION).batches
    args = [*ARGS, "--aux-data", str(aux_file), "--epochs", "3", "--data-dir", str(data_dir), "--out",
            str(tmp_path / "b")]
    killed = _torchrun(tmp_path / "logs", args, env={**_env(), "DDP_KILL": f"{rank}:{steps + 3}"})  # mid-epoch 2
    assert killed != 0
    assert _torchrun(tmp_path / "logs", ["--resume", str(tmp_path / "b")]) == 0
    a, b = load_file(uninterrupted / "last.safetensors"), load_file(tmp_path / "b" / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    za, zb = zarr.open_group(uninterrupted / "memory.zarr", mode="r"), zarr.open_group(tmp_path / "b" / "memory.zarr",
                                                                                         mode="r")
    assert all(np.array_equal(za[name][:], zb[name][:]) for name in ("codes", "scale", "info"))
    losses = [[r["loss"] for r in _lines(run / "metrics.jsonl")] for run in (uninterrupted, tmp_path / "b")]
    assert losses[0] == losses[1]


@pytest.mark.heavy
def test_two_ranks_with_a_windowed_generated_part(tmp_path: Path, data_dir: Path) -> None:
    """A generated part larger than the budget: read in windows by rank 0 and, read-only, by rank 1."""
    path, logs, run = tmp_path / "gen32.npz", tmp_path / "logs", tmp_path / "run"
    rng = np.random.default_rng(1)
    np.savez(path, image=rng.integers(0, 256, (4096, 32, 32, 3), dtype=np.uint8), label=rng.integers(0, 10, 4096))
    args = [*ARGS, "--resolution", "32", "--aux-data", str(path), "--epoch-samples", "320", "--memory-budget",
            "7MiB", "--epochs", "2", "--out", str(run), "--data-dir", str(data_dir)]
    assert _torchrun(logs, args) == 0
    mix = batch_mix(N_BASE, 4096, BATCH, FRACTION, epoch_samples=320)
    with open_store(str(run / "memory.zarr"), read_only=True, memory_budget=7 << 20) as store:
        assert not store.resident
        order = store.begin_epoch(2, mix=mix)
    batches = [w["idx"] for w in _lines(logs / "writes.r0.jsonl") if w["epoch"] == 2]
    assert [sorted(b) for b in batches] == [sorted(order[g * BATCH:(g + 1) * BATCH].tolist())
                                            for g in range(mix.batches)]
    reads = [r for r in _lines(logs / "reads.r1.jsonl") if r["epoch"] == 2]
    assert len(reads) == mix.batches and all(r["read_only"] for r in reads)
    assert sum(r["valid"] for r in reads) >= 6 * mix.batches  # its base rows hold epoch 1's memory
    params = [_lines(logs / f"params.r{r}.jsonl") for r in (0, 1)]
    assert len(params[0]) == 2 and params[0] == params[1]
