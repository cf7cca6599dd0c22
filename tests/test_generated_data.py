"""Generated data (.npz parts → one verified .beton beside the base set's): exact pixels and labels through the FFCV
loader, several parts as one set, the published seeded subset, stored and deflated members, the cache, and a
one-line error naming the file for every bad file."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from memloss.errors import MemlossError
from memloss.trainer.data.generated import GeneratedSource, prepare_generated, take_rows
from memloss.trainer.data.loader import make_loader
from memloss.trainer.data.npz import GeneratedDataError
from memloss.trainer.data.registry import dataset_info

N = 300


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """300 random CIFAR-shaped images in three parts: two stored (np.savez), one deflated (np.savez_compressed)."""
    root = tmp_path_factory.mktemp("generated")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, N)
    parts = [root / "part1.npz", root / "part2.npz", root / "part3.npz"]
    np.savez(parts[0], image=images[:120], label=labels[:120])
    np.savez(parts[1], image=images[120:250], label=labels[120:250])
    np.savez_compressed(parts[2], image=images[250:], label=labels[250:])
    return {"root": root, "images": images, "labels": labels, "parts": parts}


def _read_all(split) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images [n, C, H, W], labels, index) of a prepared split in index order, through the real FFCV loader."""
    loader = make_loader(split, batch_size=128, order=lambda epoch: np.arange(split.n))
    try:
        xs, ys, ids = zip(*[(x, y, i) for x, y, i in loader])
    finally:
        loader.close()
    return torch.cat(xs).numpy(), torch.cat(ys).numpy(), torch.cat(ids).numpy()


def test_parts_form_one_set_with_exact_pixels_and_labels(generated: dict) -> None:
    split = prepare_generated(generated["parts"], "cifar10", generated["root"] / "data")
    assert split.n == N and split.shape == (3, 32, 32) and split.num_classes == 10
    assert split.beton.parent == generated["root"] / "data" / "ffcv"  # beside the base sets' .beton files
    x, y, idx = _read_all(split)
    assert np.array_equal(idx, np.arange(N))
    assert np.array_equal(x, generated["images"].transpose(0, 3, 1, 2))
    assert np.array_equal(y, generated["labels"])


def test_the_cache_is_reused_and_rebuilt_when_a_part_changes(generated: dict, tmp_path: Path) -> None:
    parts = [tmp_path / p.name for p in generated["parts"][:2]]
    for src, dst in zip(generated["parts"][:2], parts):
        dst.write_bytes(src.read_bytes())
    first = prepare_generated(parts, "cifar10", tmp_path / "data")
    stamp = first.beton.stat().st_mtime_ns
    assert prepare_generated(parts, "cifar10", tmp_path / "data") == first
    assert first.beton.stat().st_mtime_ns == stamp
    np.savez(parts[1], image=generated["images"][:10], label=generated["labels"][:10])
    again = prepare_generated(parts, "cifar10", tmp_path / "data")
    assert again.n == 130 and again.beton != first.beton


def test_take_is_the_published_seeded_subset(generated: dict) -> None:
    rows = take_rows(N, 50)
    np.random.seed(13)  # DM-Improves-AT core/data/semisup.py: np.random.seed(take_amount_seed); np.random.choice
    assert np.array_equal(rows, np.sort(np.random.choice(N, 50, replace=False)))
    split = prepare_generated(generated["parts"], "cifar10", generated["root"] / "data", take=50)
    x, y, _ = _read_all(split)
    assert split.n == 50
    assert np.array_equal(x, generated["images"][rows].transpose(0, 3, 1, 2))
    assert np.array_equal(y, generated["labels"][rows])
    with pytest.raises(GeneratedDataError, match="take=301"):
        take_rows(N, 301)


def test_reading_holds_only_the_rows_asked_for(generated: dict) -> None:
    source = GeneratedSource(generated["parts"], dataset_info("cifar10"))
    assert source.chunk * 3 * 32 * 32 <= 4 << 20  # a chunk of pixels is at most 4 MiB
    assert not source.parts[0].images.compressed and source.parts[2].images.compressed
    assert np.array_equal(source.images(110, 260), generated["images"][110:260].transpose(0, 3, 1, 2))


def _bad(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _truncated(path: Path, good: Path) -> Path:
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return path


BAD = {
    "wrong size": (lambda p, g: _bad(p, image=np.zeros((4, 28, 28, 3), np.uint8), label=np.zeros(4, np.int64)),
                   "are 28×28, cifar10 is 32×32"),
    "channels": (lambda p, g: _bad(p, image=np.zeros((4, 32, 32, 1), np.uint8), label=np.zeros(4, np.int64)),
                 "have 1 channels, cifar10 has 3"),
    "CHW layout": (lambda p, g: _bad(p, image=np.zeros((4, 3, 32, 32), np.uint8), label=np.zeros(4, np.int64)),
                   r"are \[N, C, H, W\]"),
    "float pixels": (lambda p, g: _bad(p, image=np.zeros((4, 32, 32, 3), np.float32), label=np.zeros(4, np.int64)),
                     "images are float32, expected uint8"),
    "label range": (lambda p, g: _bad(p, image=np.zeros((4, 32, 32, 3), np.uint8), label=np.array([0, 1, 2, 10])),
                    r"labels span 0\.\.10, cifar10 has classes 0\.\.9"),
    "label count": (lambda p, g: _bad(p, image=np.zeros((4, 32, 32, 3), np.uint8), label=np.zeros(3, np.int64)),
                    "expected integers"),
    "missing key": (lambda p, g: _bad(p, image=np.zeros((4, 32, 32, 3), np.uint8), labels=np.zeros(4, np.int64)),
                    r"has no 'label' array \(it has: image, labels\)"),
    "truncated": (_truncated, "truncated: download it again"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_files_give_one_line_naming_the_file_and_the_fix(case: str, generated: dict, tmp_path: Path) -> None:
    make, message = BAD[case]
    bad = make(tmp_path / "bad.npz", generated["parts"][0])
    with pytest.raises(GeneratedDataError, match=message) as err:
        prepare_generated([generated["parts"][0], bad], "cifar10", tmp_path / "data")
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "data" / "ffcv").exists() or not any((tmp_path / "data" / "ffcv").iterdir())


def test_a_member_cut_short_inside_the_archive_is_refused(generated: dict, tmp_path: Path) -> None:
    """Sizes in the zip directory that do not add up (a member whose data was cut) are caught on opening."""
    bad = tmp_path / "short.npz"
    with zipfile.ZipFile(bad, "w") as archive:
        header = generated["parts"][0]
        with zipfile.ZipFile(header) as good:
            archive.writestr("image.npy", good.read("image.npy")[:-3072])
            archive.writestr("label.npy", good.read("label.npy"))
    with pytest.raises(GeneratedDataError, match="needs 368640"):
        prepare_generated([bad], "cifar10", tmp_path / "data")


def test_a_read_error_in_a_writer_process_stops_the_conversion_cleanly(generated: dict, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(self: GeneratedSource, k: int, local: np.ndarray) -> np.ndarray:
        raise GeneratedDataError(f"{self.parts[k].path}: the 'image' array ends early; download it again")

    monkeypatch.setattr(GeneratedSource, "_read_rows", failing)  # the forked writer processes inherit it
    with pytest.raises(MemlossError, match="ends early") as err:
        prepare_generated(generated["parts"][:1], "cifar10", tmp_path / "data", num_workers=2)
    assert "\n" not in str(err.value)
    assert os.listdir(tmp_path / "data" / "ffcv") == []  # no .beton, sidecar or temporary table left


@pytest.mark.parametrize("workers", [1, 2])
def test_the_bounded_writer_writes_what_ffcv_writes(tmp_path: Path, workers: int) -> None:
    """Byte for byte FFCV's DatasetWriter output with one writer process (same pages, tables, header), whatever our
    writer's process count; our writer imports no ffcv."""
    pytest.importorskip("ffcv", reason="compares with FFCV's own writer")
    from ffcv.fields import IntField, NDArrayField
    from ffcv.writer import DatasetWriter

    from memloss.trainer.data.beton import _Samples
    from memloss.trainer.data.beton_writer import write_bounded
    from memloss.trainer.data.sources import SyntheticSource

    source = SyntheticSource("train", 3000, 32)  # 2730 images fill an 8 MiB page: two pages
    fields = {"image": NDArrayField(dtype=np.dtype("uint8"), shape=source.shape), "label": IntField(),
              "index": IntField()}
    DatasetWriter(str(tmp_path / "ffcv.beton"), fields, num_workers=1).from_indexed_dataset(_Samples(source),
                                                                                            chunksize=300)
    write_bounded(_Samples(source), source.shape, tmp_path / "ours.beton", chunk=700, workers=workers)
    assert (tmp_path / "ffcv.beton").read_bytes() == (tmp_path / "ours.beton").read_bytes()
