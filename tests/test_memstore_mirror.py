"""A read-only store that mirrors its writer (torchrun's ranks ≠ 0 with a resident store): the rows it is given
stay in its RAM, count as memory once the writer's commit landed, and are never read back from storage."""

from pathlib import Path

import numpy as np
import pytest
import torch

from memloss.memstore.zarrstore import resident as _resident
from memloss.memstore.errors import StoreError
from memloss.memstore.store import create_store, open_store
from test_memstore_zarr import SHAPE, make_spec


def _rows(epoch: int, idx: np.ndarray) -> tuple[np.ndarray, ...]:
    b = idx.shape[0]
    codes = ((idx[:, None, None, None] * 7 + epoch) % 251).astype(np.uint8) * np.ones((1, *SHAPE), np.uint8)
    return codes, (idx % 5 + epoch).astype(np.float32) / 10, np.stack([idx % 3, idx % 2], 1), idx % 2 == 0


def _epoch(writer, mirror, epoch: int, batch: int = 8) -> None:  # noqa: ANN001
    order = writer.begin_epoch(epoch)
    assert np.array_equal(mirror.begin_epoch(epoch), order)
    for start in range(0, order.shape[0], batch):
        idx = order[start:start + batch]
        a, b = writer.read(idx), mirror.read(idx)
        assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("codes", "scale", "offset", "flip", "valid"))
        writer.write(idx, *_rows(epoch, idx))
        mirror.mirror(idx, *_rows(epoch, idx))
    writer.commit_epoch()
    mirror.mirror_commit()


def test_a_mirror_reads_what_its_writer_reads_without_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = tmp_path / "s.zarr"
    loads: list[list[int]] = []
    original = _resident.ResidentPart._load_slots
    monkeypatch.setattr(_resident.ResidentPart, "_load_slots", lambda self, slots: (loads.append(list(slots)),
                                                                                  original(self, slots))[1])
    with create_store(url, make_spec(n=40, k=2), block_size=8) as writer:
        with open_store(url, read_only=True) as mirror:
            assert mirror.mirrors and not writer.mirrors
            for epoch in range(4):
                _epoch(writer, mirror, epoch)
    assert loads == []  # the writer's own rows, and the mirror's copy of them: nothing read back


def test_a_mirror_that_disagrees_with_storage_reads_storage(tmp_path: Path) -> None:
    url = tmp_path / "s.zarr"
    with create_store(url, make_spec(n=40, k=1), block_size=8) as writer, open_store(url, read_only=True) as mirror:
        order = writer.begin_epoch(0)
        mirror.begin_epoch(0)
        writer.write(order, *_rows(0, order))
        mirror.mirror(order, *_rows(9, order))  # not what the writer wrote...
        writer.commit_epoch()
        writer.begin_epoch(1)
        writer.begin_epoch(0)  # ...and the writer's ring state moved on: storage no longer says epoch 0 is memory
        writer.close()  # its ring state is saved in the background: landed once closed
        mirror.mirror_commit()
        mirror.begin_epoch(1)
        assert not bool(mirror.read(order).valid.any())


def test_mirror_is_refused_where_it_has_no_meaning(tmp_path: Path) -> None:
    url = tmp_path / "s.zarr"
    with create_store(url, make_spec(n=40, k=1), block_size=8) as writer:
        writer.begin_epoch(0)
        with pytest.raises(StoreError, match="read-only store that keeps every slot in RAM"):
            writer.mirror(np.arange(4), *_rows(0, np.arange(4)))
    big = tmp_path / "big.zarr"
    create_store(big, make_spec(n=400, k=1, shape=(3, 32, 32)), block_size=8).close()
    with open_store(big, read_only=True, memory_budget=1 << 20) as windowed:  # 2 slots × 400 rows × 3 KiB > 1 MiB
        assert not windowed.mirrors
        windowed.begin_epoch(0)
        with pytest.raises(StoreError, match="keeps every slot in RAM"):
            windowed.mirror(np.arange(4), *_rows(0, np.arange(4)))


def test_a_windowed_reader_follows_its_writers_commits_without_reopening(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """torchrun's ranks ≠ 0 with a windowed store: after each commit of the writer, `follow_commit` takes the ring
    state from storage; every batch then reads what the writer reads, and the layout is built once (at opening)."""
    import memloss.memstore.zarrstore.meta as meta_module

    url, spec = tmp_path / "w.zarr", make_spec(n=400, k=2, shape=(3, 32, 32))
    budget = 2 << 20  # 3 slots × 400 rows × 3 KiB > 2 MiB: windowed
    layouts = []  # opening reads the layout's members from storage (and builds the layout from them)
    real = meta_module.read_members
    monkeypatch.setattr(meta_module, "read_members", lambda *a, **k: (layouts.append(1), real(*a, **k))[1])
    with create_store(url, spec, block_size=8, memory_budget=budget) as writer, \
            open_store(url, read_only=True, memory_budget=budget) as reader:
        assert not reader.mirrors and not reader.resident and reader.window_blocks < reader.layout.num_blocks
        built = len(layouts)
        for epoch in range(4):
            order = writer.begin_epoch(epoch)
            assert np.array_equal(reader.begin_epoch(epoch), order)
            for start in range(0, order.shape[0], 40):
                idx = order[start:start + 40]
                a, b = writer.read(idx), reader.read(idx)
                assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("codes", "scale", "offset", "flip",
                                                                                 "valid"))
                assert epoch < 1 or bool(a.valid[0].all())  # the epoch just committed is memory for every sample
                codes, scale, offset, flip = _rows(epoch, idx)
                writer.write(idx, np.tile(codes, (1, 1, 8, 8)), scale, offset, flip)
            writer.commit_epoch()
            reader.follow_commit()
            assert reader.committed_epochs == writer.committed_epochs
        assert built == 1 and len(layouts) == built  # the reader's opening only
        with pytest.raises(StoreError, match="for a read-only store"):
            writer.follow_commit()
