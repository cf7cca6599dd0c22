"""The loader without ffcv (trainer/data/numpy_loader.py): batch by batch the FFCV loader's batches on the same order
(whole permutations, a rank's subset, repeats, the mixed base + generated loader), the choice between the two
(MEMLOSS_LOADER, the one line a run prints), and a run with ffcv made unimportable ending with the same weights.

A run without ffcv is a subprocess whose `sys.modules["ffcv"] = None` makes every `import ffcv` fail, as on a
machine where FFCV could not be built."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from memloss.trainer.data import loader as loader_module
from memloss.trainer.data.beton import prepare
from memloss.trainer.data.beton_format import read_beton
from memloss.trainer.data.loader import LoaderChoiceError, choose_loader, loader_note, make_loader
from memloss.trainer.data.numpy_loader import BetonImages, NumpyBatchLoader
from memloss.trainer.data.sources import load_tensors

N, BATCH = 300, 64
BLOCK_FFCV = "import sys; sys.modules['ffcv'] = None\n"


@pytest.fixture(scope="module")
def split(data_dir: Path):  # noqa: ANN201
    return prepare("synthetic", "train", data_dir, n=N, resolution=8)


def _orders() -> dict:
    """Each kind of epoch order the trainer asks for: (order(epoch), make_loader keywords)."""
    return {"permutation": (lambda e: np.random.default_rng(e).permutation(N), {}),
            "subset": (lambda e: np.random.default_rng(e).permutation(N)[:100], {"samples": 100}),
            "repeats": (lambda e: np.random.default_rng(e).integers(0, N, 700), {"length": 700})}


def _epochs(loader, epochs: int = 2) -> list[tuple[torch.Tensor, ...]]:  # noqa: ANN001
    with loader:
        return [batch for _ in range(epochs) for batch in loader]


@pytest.mark.parametrize("kind", ["permutation", "subset", "repeats"])
def test_the_two_loaders_give_the_same_batches(split, kind: str) -> None:  # noqa: ANN001
    pytest.importorskip("ffcv", reason="compares with the FFCV loader")
    order, extra = _orders()[kind]
    ffcv = _epochs(make_loader(split, batch_size=BATCH, order=order, loader="ffcv", **extra))
    ours = _epochs(make_loader(split, batch_size=BATCH, order=order, loader="numpy", **extra))
    assert len(ffcv) == len(ours) > 2
    for a, b in zip(ffcv, ours):
        for ta, tb in zip(a, b):
            assert ta.dtype == tb.dtype and ta.shape == tb.shape and ta.stride() == tb.stride()
            assert torch.equal(ta, tb)


def test_batches_are_the_source_in_the_given_order_with_the_last_partial_kept(split, data_dir: Path) -> None:  # noqa: ANN001
    x, y = load_tensors("synthetic", "train", data_dir, n=N, resolution=8)
    order = np.random.default_rng(5).permutation(N)
    loader = make_loader(split, batch_size=BATCH, order=lambda e: order, loader="numpy")
    assert isinstance(loader, NumpyBatchLoader) and len(loader) == 5
    batches = _epochs(loader, 1)
    assert [len(b[0]) for b in batches] == [64, 64, 64, 64, 44]
    xs, ys, ids = (torch.cat(t) for t in zip(*batches))
    assert ids.tolist() == order.tolist() and torch.equal(ys, y[order]) and torch.equal(xs, x[order])
    assert xs.dtype == torch.uint8 and ys.dtype == ids.dtype == torch.int64 and xs.is_contiguous()


def test_set_epoch_picks_the_order_and_a_bad_order_is_refused(split) -> None:  # noqa: ANN001
    asked: list[int] = []

    def order(epoch: int) -> np.ndarray:
        asked.append(epoch)
        return np.zeros(N, dtype=np.int64) if epoch == 9 else np.arange(N)

    with make_loader(split, batch_size=BATCH, order=order, loader="numpy") as loader:
        loader.set_epoch(4)
        next(iter(loader))  # abandoned mid-epoch: the next iteration (or close) stops its thread
        assert loader.epoch == 5
        list(loader)
        loader.set_epoch(9)
        with pytest.raises(ValueError, match="repeats some indices"):
            iter(loader)
    assert asked == [4, 5, 9]


def test_files_with_pages_in_any_order_are_read_sample_by_sample(split) -> None:  # noqa: ANN001
    """FFCV's writer with several processes puts pages in any order: the pointer-by-pointer path reads those."""
    found = read_beton(split.beton)
    paged = BetonImages(found)
    sliced = BetonImages(found)
    sliced._pages = None
    idx = np.random.default_rng(0).integers(0, N, 50)
    assert found.regular and np.array_equal(paged.take(idx), sliced.take(idx))


def test_mixed_loader_gives_the_same_batches_with_either_loader(data_dir: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ffcv", reason="compares with the FFCV loader")
    from memloss.trainer.data.mixed import MixedLoader, prepare_training_set

    aux = tmp_path / "gen.npz"
    rng = np.random.default_rng(1)
    np.savez(aux, image=rng.integers(0, 256, (400, 8, 8, 3), dtype=np.uint8), label=rng.integers(0, 10, 400))
    data = prepare_training_set("synthetic", data_dir, n=N, resolution=8, batch_size=32, aux_data=[str(aux)],
                                aux_fraction=0.25)

    def order(epoch: int) -> np.ndarray:  # base rows first in each batch, then generated ones (global indices)
        r = np.random.default_rng(epoch)
        return np.concatenate([r.integers(0, N, (data.mix.batches, 24)),
                               N + r.integers(0, 400, (data.mix.batches, 8))], axis=1).ravel()

    runs = {}
    for name in ("ffcv", "numpy"):
        monkeypatch.setenv("MEMLOSS_LOADER", name)
        runs[name] = _epochs(MixedLoader(data, order, torch.device("cpu"), 1))
    assert len(runs["ffcv"]) == 2 * data.mix.batches
    for a, b in zip(runs["ffcv"], runs["numpy"]):
        assert all(torch.equal(ta, tb) and ta.dtype == tb.dtype for ta, tb in zip(a, b))


def test_the_choice_and_its_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMLOSS_LOADER", "fast")
    with pytest.raises(LoaderChoiceError, match="MEMLOSS_LOADER='fast' is not a loader; use one of auto, ffcv"):
        choose_loader()
    monkeypatch.setenv("MEMLOSS_LOADER", "NumPy")
    assert choose_loader() == "numpy"
    monkeypatch.delenv("MEMLOSS_LOADER")
    monkeypatch.setattr(loader_module, "ffcv_problem", lambda: "ModuleNotFoundError: No module named 'ffcv'")
    assert choose_loader() == "numpy"
    note = loader_note()
    assert "\n" not in note and "No module named 'ffcv'" in note and "pip install 'memloss[ffcv]'" in note
    with pytest.raises(LoaderChoiceError, match=r"MEMLOSS_LOADER=ffcv but ffcv cannot be imported .*memloss\[ffcv\]"):
        choose_loader("ffcv")


_TRAIN = """
import sys
import memloss
cfg = memloss.train_config(dataset="synthetic", n=96, resolution=8, batch_size=32, eval_n=16, attack_steps=2,
                           epochs=2, k=1, seed=3, out=sys.argv[1], data_dir=sys.argv[2], aux_data=[sys.argv[3]],
                           aux_fraction=0.5, store=sys.argv[1] + "-mem.zarr")
memloss.fit(cfg, quiet=sys.argv[4] == "quiet", threads=1)
print("ffcv imported:", "ffcv.loader" in sys.modules)
"""


@pytest.mark.slow
def test_training_without_ffcv_ends_with_the_same_weights(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Base + generated data, K = 1 with a store: a run in a process where ffcv cannot be imported (its one line
    says so and how to get FFCV) ends with the weights of the same run through FFCV (here), bit for bit."""
    pytest.importorskip("ffcv", reason="compares with a run through FFCV")
    aux = tmp_path / "gen.npz"
    rng = np.random.default_rng(0)
    np.savez(aux, image=rng.integers(0, 256, (150, 8, 8, 3), dtype=np.uint8), label=rng.integers(0, 10, 150))
    args = [str(tmp_path / "ffcv"), str(tmp_path / "data"), str(aux), "quiet"]
    monkeypatch.setattr(sys, "argv", ["-", *args])
    monkeypatch.delenv("MEMLOSS_LOADER", raising=False)
    exec(compile(_TRAIN, "train", "exec"), {})
    assert "ffcv imported: True" in capsys.readouterr().out
    run = subprocess.run([sys.executable, "-c", BLOCK_FFCV + _TRAIN, str(tmp_path / "numpy"), *args[1:3], "loud"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "MEMLOSS_LOADER": ""})
    assert run.returncode == 0, run.stderr[-2000:]
    line = next(s for s in run.stdout.splitlines() if s.startswith("data loader:"))
    assert "ffcv not importable" in line and "pip install 'memloss[ffcv]'" in line
    assert "ffcv imported: False" in run.stdout
    a, b = (load_file(tmp_path / name / "last.safetensors") for name in ("ffcv", "numpy"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
