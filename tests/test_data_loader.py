"""The FFCV batch loader: samples and indices agree, the last batch is kept, the caller's order is followed.

Each new ffcv Loader pays a numba compile (~1 s), so loaders are module-scoped and shared where tests allow.
"""

import numpy as np
import pytest
import torch

from memloss.trainer.data.beton import prepare
from memloss.trainer.data.loader import make_loader
from memloss.trainer.data.sources import load_tensors

N = 100
BATCH = 32


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def split(data_dir):
    return prepare("synthetic", "train", data_dir, n=N, resolution=8)


@pytest.fixture(scope="module")
def source(data_dir):
    return load_tensors("synthetic", "train", data_dir, n=N, resolution=8)


@pytest.fixture(scope="module")
def random_loader(split):
    with make_loader(split, batch_size=BATCH, device="cpu", seed=3) as loader:
        yield loader


class RecordingOrder:
    """order(epoch): a permutation seeded by the epoch; records the epochs asked; epoch 99 returns a bad order."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls: list[int] = []

    def __call__(self, epoch: int) -> np.ndarray:
        self.calls.append(epoch)
        if epoch == 99:
            return np.zeros(self.n, dtype=np.int64)
        return np.random.default_rng(1000 + epoch).permutation(self.n)


@pytest.fixture(scope="module")
def recorded(split):
    order = RecordingOrder(N)
    with make_loader(split, batch_size=BATCH, device="cpu", order=order) as loader:
        yield loader, order


def test_batches_match_the_source_and_keep_the_last_partial_batch(random_loader, source) -> None:
    x, y = source
    random_loader.set_epoch(0)
    batches = list(random_loader)
    assert len(random_loader) == 4 and [len(b[2]) for b in batches] == [32, 32, 32, 4]
    idx = torch.cat([b[2] for b in batches])
    assert sorted(idx.tolist()) == list(range(N))
    for xb, yb, ib in batches:
        assert xb.dtype == torch.uint8 and yb.dtype == torch.int64 and ib.dtype == torch.int64
        assert xb.shape[1:] == (3, 8, 8) and xb.is_contiguous()
        assert torch.equal(xb, x[ib]) and torch.equal(yb, y[ib])


def test_yielded_tensors_are_owned_not_ffcv_buffers(random_loader, source) -> None:
    random_loader.set_epoch(0)
    kept = list(random_loader)
    list(random_loader)  # a second epoch would overwrite ffcv's ring buffers
    for xb, yb, ib in kept:
        assert torch.equal(xb, source[0][ib]) and torch.equal(yb, source[1][ib])


def test_default_order_is_seeded_random_per_epoch(random_loader) -> None:
    for epoch in (0, 1):
        random_loader.set_epoch(epoch)
        idx = torch.cat([b[2] for b in random_loader]).numpy()
        assert np.array_equal(idx, np.random.default_rng((3, epoch)).permutation(N))
    assert random_loader.epoch == 2


def test_custom_order_is_followed_exactly_once_per_epoch(recorded) -> None:
    loader, order = recorded
    assert order.calls == []  # building the loader must not consume an epoch
    loader.set_epoch(0)
    for epoch in (0, 1):
        batches = list(loader)
        expected = np.random.default_rng(1000 + epoch).permutation(N)
        for k, (_, _, ib) in enumerate(batches):
            assert np.array_equal(ib.numpy(), expected[k * BATCH:(k + 1) * BATCH])
    assert order.calls == [0, 1]


def test_set_epoch_chooses_the_next_epochs_order(recorded) -> None:
    loader, order = recorded
    order.calls.clear()
    loader.set_epoch(7)
    first = torch.cat([b[2] for b in loader]).numpy()
    list(loader)
    assert order.calls == [7, 8]
    assert np.array_equal(first, np.random.default_rng(1007).permutation(N))


def test_an_order_that_is_not_a_permutation_is_refused(recorded) -> None:
    loader, _ = recorded
    loader.set_epoch(99)
    with pytest.raises(ValueError, match="permutation"):
        list(loader)
    loader.set_epoch(0)
    assert len(list(loader)) == 4  # the loader still works afterwards


def test_an_abandoned_iteration_is_stopped_by_close(random_loader) -> None:
    it = iter(random_loader)
    next(it)
    worker = random_loader._active
    random_loader.close()
    assert not worker.is_alive()
    assert sum(len(b[2]) for b in random_loader) == N  # a fresh epoch runs fully after the close
    random_loader.close()  # closing twice is harmless


def test_digits_one_channel_round_trip_in_sequential_order(tmp_path_factory) -> None:
    data_dir = tmp_path_factory.mktemp("digits")
    split = prepare("digits", "test", data_dir)
    x, y = load_tensors("digits", "test", data_dir)
    assert split.n == 360 and split.shape == (1, 8, 8) and x.shape == (360, 1, 8, 8)
    with make_loader(split, batch_size=128, device="cpu", order=lambda epoch: np.arange(360)) as loader:
        got = list(loader)
    assert torch.equal(torch.cat([b[0] for b in got]), x)
    assert torch.equal(torch.cat([b[1] for b in got]), y)
    assert torch.equal(torch.cat([b[2] for b in got]), torch.arange(360))


def test_bad_batch_size_is_refused(split) -> None:
    with pytest.raises(ValueError):
        make_loader(split, batch_size=0, device="cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_arrive_on_cuda(split, source) -> None:
    with make_loader(split, batch_size=BATCH, device="cuda") as loader:
        batches = list(loader)
    for xb, yb, ib in batches:
        assert xb.is_cuda and yb.is_cuda and ib.is_cuda
        assert torch.equal(xb.cpu(), source[0][ib.cpu()]) and torch.equal(yb.cpu(), source[1][ib.cpu()])
    assert sum(len(b[2]) for b in batches) == N
