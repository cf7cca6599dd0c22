"""Training on a base set plus generated images (`--aux-data`): two epochs with K = 1 on a synthetic base set and an
.npz of 300 images, every batch holding exactly int(f·B) generated rows, the memory held per age matching a hand
count of the store's order, a run without a store, the one-line errors of bad files through the CLI, and the
recipe preset with its generated-data keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from memloss.cli.app import app
from memloss.memstore.layout.mixing import plan_mixed
from memloss.memstore.store import open_store
from memloss.trainer.config.defaults import resolve_config
from memloss.trainer.training import epoch as epoch_module
from memloss.trainer.training.fit import fit

N_BASE, N_AUX, BATCH, FRACTION = 96, 300, 32, 0.5  # batches of 16 base + 16 generated
# The default epoch (--aux-epoch pass): ceil(300 / 16) = 19 batches, every generated row at least once (4 twice);
# the older epoch (--aux-epoch total): ceil(396 / 32) = 13 batches, 208 of the 300 generated an epoch.
EPOCH_BATCHES = {"pass": 19, "total": 13}
PRESETS = Path(__file__).resolve().parents[1] / "docs" / "presets"
TINY = {"dataset": "synthetic", "n": N_BASE, "resolution": 8, "batch_size": BATCH, "eval_n": 32, "attack_steps": 2,
        "epochs": 2, "aux_fraction": FRACTION}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic base set, converted once for the module (its conversion prints progress)."""
    from memloss.trainer.data.beton import prepare

    root = tmp_path_factory.mktemp("data")
    prepare("synthetic", "train", root, n=N_BASE, resolution=8)
    return root


def write_aux(path: Path, n: int) -> Path:
    """A generated-image file of `n` random 8x8 RGB images and labels (uint8 NHWC, int64) at `path`."""
    rng = np.random.default_rng(0)
    np.savez(path, image=rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), label=rng.integers(0, 10, n))
    return path


@pytest.fixture(scope="module")
def aux_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_aux(tmp_path_factory.mktemp("gen") / "gen.npz", N_AUX)


def _cfg(tmp_path: Path, aux_file: Path, **overrides: Any):  # noqa: ANN202
    return resolve_config({**TINY, "out": str(tmp_path / "run"),
                           "aux_data": [str(aux_file)], **overrides})


@pytest.mark.parametrize("rule", ["pass", "total"])
def test_two_epochs_with_k1_mix_every_batch_and_count_memory_by_hand(tmp_path: Path, aux_file: Path, data_dir: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     rule: str) -> None:
    batches: list[np.ndarray] = []
    original = epoch_module._train_batch

    def spy(s, x_u8, y, idx_dev, idx, *rest):  # noqa: ANN001, ANN202
        assert np.array_equal(idx_dev.cpu().numpy(), idx)  # the loader's rows are the store's order
        batches.append(idx.copy())
        return original(s, x_u8, y, idx_dev, idx, *rest)

    monkeypatch.setattr(epoch_module, "_train_batch", spy)
    cfg = _cfg(tmp_path, aux_file, k=1, store=str(tmp_path / "mem.zarr"), data_dir=str(data_dir), aux_epoch=rule)
    fit(cfg, quiet=True)
    nb = EPOCH_BATCHES[rule]
    assert len(batches) == 2 * nb
    assert all(b.shape == (BATCH,) and (b >= N_BASE).sum() == int(FRACTION * BATCH) for b in batches)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    with open_store(str(tmp_path / "mem.zarr"), read_only=True) as store:
        assert store.committed_epochs == [1, 2] and store.spec.fingerprint.parts == (N_BASE, N_AUX)
        plans = {e: plan_mixed(store.layout, store.window_blocks, store.seed, e, store_mix(cfg)) for e in (1, 2)}
    aux = {e: p.order.reshape(nb, BATCH)[:, BATCH // 2 :].ravel() for e, p in plans.items()}
    assert np.array_equal(np.concatenate(batches[nb:]), plans[2].order)
    held_aux = np.isin(aux[2], aux[1]).mean()  # hand count: generated rows of epoch 2 that epoch 1 visited
    if rule == "pass":
        assert held_aux == 1.0  # one pass: every generated row holds memory of the epoch before
    else:
        assert 0 < held_aux < 1  # some generated samples were skipped in epoch 1
    assert records[0]["mem_held_by_age"] == [0.0] and records[0]["mem_held_aux_by_age"] == [0.0]
    assert records[1]["mem_held_base_by_age"] == [1.0]
    assert records[1]["mem_held_aux_by_age"] == [pytest.approx(held_aux, abs=1e-6)]
    assert records[1]["mem_held_by_age"] == [pytest.approx((1 + held_aux) / 2, abs=1e-6)]
    assert records[1]["mem_loss"] > 0


def store_mix(cfg) -> Any:  # noqa: ANN001
    from memloss.trainer.data.mixed import batch_mix

    d = cfg.data
    return batch_mix(N_BASE, N_AUX, d.batch_size, d.aux_fraction, d.epoch_samples, d.aux_draw, d.aux_epoch)


def test_a_run_without_store_mixes_too(tmp_path: Path, aux_file: Path, data_dir: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    original = epoch_module._train_batch

    def spy(s, x_u8, y, idx_dev, idx, *rest):  # noqa: ANN001, ANN202
        seen.append(int((idx_dev >= N_BASE).sum()))
        return original(s, x_u8, y, idx_dev, idx, *rest)

    monkeypatch.setattr(epoch_module, "_train_batch", spy)
    cfg = _cfg(tmp_path, aux_file, k=0, epochs=1, epoch_samples=5 * BATCH, aux_fraction=0.75, data_dir=str(data_dir))
    result = fit(cfg, quiet=True)
    assert seen == [24] * 5 and result.store is None


runner = CliRunner()


def _bad_npz(tmp_path: Path, name: str, **arrays: np.ndarray) -> str:
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize(("case", "message"), [
    ("missing", "does not exist"),
    ("size", "images are 16×16, synthetic is 8×8"),
    ("no-label", "label"),
    ("truncated", "truncated"),
    ("too-few", "generated set has 10;"),
])
def test_bad_generated_files_are_one_line_errors(tmp_path: Path, data_dir: Path, case: str, message: str) -> None:
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (100, 8, 8, 3), dtype=np.uint8), rng.integers(0, 10, 100)
    files = {
        "missing": str(tmp_path / "nothing.npz"),
        "size": _bad_npz(tmp_path, "big.npz", image=np.zeros((100, 16, 16, 3), np.uint8), label=labels),
        "no-label": _bad_npz(tmp_path, "nolabel.npz", image=images),
        "too-few": _bad_npz(tmp_path, "few.npz", image=images[:10], label=labels[:10]),  # 22 a batch
    }
    if case == "truncated":
        whole = Path(_bad_npz(tmp_path, "whole.npz", image=images, label=labels)).read_bytes()
        (tmp_path / "cut.npz").write_bytes(whole[: len(whole) // 2])
        files["truncated"] = str(tmp_path / "cut.npz")
    args = ["train", "--dataset", "synthetic", "--n", "96", "--resolution", "8", "--batch-size", "32",
            "--data-dir", str(data_dir), "--out", str(tmp_path / "run"), "--aux-data", files[case]]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    # stderr: stdout holds the first line of the start (what is prepared), printed before the data is read
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output


def test_a_small_generated_set_trains_and_the_epoch_is_said_in_one_line(tmp_path: Path, data_dir: Path) -> None:
    """Issue 21: 300 generated + 96 base images at --aux-fraction 0.7 (more generated a batch than an even split
    gives) train; the published epoch (--epoch-samples, --aux-draw with-replacement) too."""
    rng = np.random.default_rng(1)
    gen = _bad_npz(tmp_path, "small.npz", image=rng.integers(0, 256, (300, 8, 8, 3), dtype=np.uint8),
                   label=rng.integers(0, 10, 300))
    base = ["train", "--dataset", "synthetic", "--n", str(N_BASE), "--resolution", "8", "--batch-size", "32",
            "--data-dir", str(data_dir), "--epochs", "1", "--attack-steps", "1", "--eval-n", "16",
            "--threads", "1", "--aux-fraction", "0.7", "--aux-data", gen]
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "a"), "--k", "0"])
    assert result.exit_code == 0, result.output
    # 22 generated + 10 base a batch: max(ceil(96/10), ceil(300/22)) = 14 batches.
    assert "epoch: 14 batches of 32 (22 generated + 10 base)" in result.output
    assert "without replacement" in result.output
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "b"), "--epoch-samples", "150",
                                 "--aux-draw", "with-replacement", "--k", "1"])  # repeats go through the store
    assert result.exit_code == 0, result.output
    assert "epoch: 5 batches of 32" in result.output and "with replacement (the published sampler)" in result.output


def test_aux_options_need_aux_data_and_files_follow_the_option(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--aux-fraction", "0.5", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "needs generated data: add --aux-data" in result.output
    result = runner.invoke(app, ["train", "stray.npz", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "unexpected argument(s) stray.npz" in result.output
    from memloss.cli.train import aux_files

    assert aux_files(["a.npz"], ["b.npz", "c.npz"]) == ("a.npz", "b.npz", "c.npz")


def test_the_recipe_preset_carries_the_generated_data_keys() -> None:
    cfg = resolve_config({}, PRESETS / "dm-improves-at.toml")
    assert [Path(f).name for f in cfg.data.aux_data] == ["1m.npz"] and cfg.data.aux_fraction == 0.7
    # The published epoch: ceil(50,000 / B) batches, generated images drawn with replacement (tests/test_recipe.py).
    assert cfg.data.aux_take is None and cfg.data.epoch_samples == 50_000
    assert cfg.data.aux_draw == "with-replacement" and cfg.data.aux_epoch is None
    assert cfg.run.model == "wrn-28-10-swish" and cfg.data.batch_size == 512


def test_an_interrupted_run_resumes_to_the_uninterrupted_weights(tmp_path: Path, aux_file: Path, data_dir: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from safetensors.torch import load_file

    from memloss.trainer.training import fit as fit_module
    from memloss.trainer.training.fit import resume_config

    common = {"k": 1, "data_dir": str(data_dir), "epochs": 3}
    straight = fit(_cfg(tmp_path / "a", aux_file, store=str(tmp_path / "a.zarr"), **common), quiet=True)
    original = fit_module.train_epoch

    def stop_at_third(s, epoch, reporter):  # noqa: ANN001, ANN202
        if epoch == 3:
            raise KeyboardInterrupt
        return original(s, epoch, reporter)

    monkeypatch.setattr(fit_module, "train_epoch", stop_at_third)
    with pytest.raises(KeyboardInterrupt):
        fit(_cfg(tmp_path / "b", aux_file, store=str(tmp_path / "b.zarr"), **common), quiet=True)
    monkeypatch.setattr(fit_module, "train_epoch", original)
    run = tmp_path / "b" / "run"
    resumed = fit(resume_config(run, {}), resume=run, quiet=True)
    assert [r["epoch"] for r in resumed.records] == [1, 2, 3]
    a, b = load_file(str(straight.run_dir / "last.safetensors")), load_file(str(run / "last.safetensors"))
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert [r["mem_held_aux_by_age"] for r in straight.records] == [r["mem_held_aux_by_age"] for r in resumed.records]
