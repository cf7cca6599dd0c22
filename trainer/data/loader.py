"""Batches of a prepared split in an order the caller chooses per epoch: through ffcv's Loader, or, where ffcv
cannot be imported, through memloss's numpy reader of the same `.beton` (numpy_loader.py: same batches, bit for
bit). `make_loader` chooses (`MEMLOSS_LOADER` = auto | ffcv | numpy, default auto: ffcv when it imports);
`loader_note()` is the one line a run prints about the choice.

Pipelines: image [NDArrayDecoder, ToTensor] and label/index [IntDecoder, ToTensor, Squeeze(1)], each followed by
ToDevice(non_blocking) on CUDA. `Squeeze(1)` rather than `Squeeze()`: with no dims, a last batch of one sample would
be squeezed to a 0-d tensor (and ToDevice would then fail on it).

How the order gets in: ffcv 1.0.2's `Loader.__init__` accepts, besides an `OrderOption`, an *instance* of a
`TraversalOrder` subclass, which it calls with the loader (`elif isinstance(order, TraversalOrder):
self.traversal_order = order(self)`). `CallbackOrder` is such an instance: `__call__` binds it to the loader and
`sample_order(epoch)` asks the caller's `order(epoch)`. The Loader also asks for epoch 0 once in its constructor,
only to know the length; that call is answered with the identity order, so `order` runs exactly once per epoch,
when iteration starts (it may start a prefetch in the memory store).

ffcv yields views into a ring of reused buffers and drops the last partial batch by default; we pass
`drop_last=False` and clone every yielded tensor. An epoch iterator abandoned mid-epoch can abort the interpreter at
exit (a worker thread still running); `close()`, the context manager, a new iteration and an atexit hook all stop it
(terminate event, join, then ffcv's close).
"""

import atexit
import contextlib
import functools
import os
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from memloss.trainer.data.beton import PreparedSplit
from memloss.trainer.data.registry import DatasetError

OrderFn = Callable[[int], np.ndarray]
LOADER_ENV = "MEMLOSS_LOADER"
LOADERS = ("auto", "ffcv", "numpy")
FFCV_HOWTO = ("pip install 'memloss[ffcv]' (builds FFCV: needs a C++ compiler, pkg-config and the OpenCV and "
              "libjpeg-turbo headers; docs/guide.md, 'Installing without root')")

_OPEN_LOADERS: "weakref.WeakSet[BatchLoader]" = weakref.WeakSet()


def _traversal_order_base() -> type:
    from ffcv.traversal_order.base import TraversalOrder

    return TraversalOrder


def random_order(n: int, seed: int) -> OrderFn:
    """The default order: a uniform permutation of range(n), deterministic in (seed, epoch)."""
    return lambda epoch: np.random.default_rng((seed, epoch)).permutation(n)


def check_order(order: Any, n: int, epoch: int, samples: int | None = None, length: int | None = None) -> np.ndarray:
    """`order` as int64 [samples] if it holds `samples` distinct indices of range(n) (None: a permutation of
    range(n)); with `length`, `length` indices of range(n), repeats allowed (a mixed epoch visits base samples
    several times). ValueError otherwise."""
    size = length if length is not None else n if samples is None else samples
    arr = np.asarray(order)
    if arr.ndim != 1 or len(arr) != size or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"order({epoch}) must be an integer array of length {size}, got {arr.dtype} {arr.shape}")
    arr = arr.astype(np.int64, copy=False)
    if size and (arr.min() < 0 or arr.max() >= n):
        raise ValueError(f"order({epoch}) has values outside range({n})")
    if length is not None:
        return arr
    seen = np.zeros(n, dtype=bool)
    seen[arr] = True
    if int(seen.sum()) != size:
        what = f"a permutation of range({n})" if samples is None else f"{size} distinct samples of range({n})"
        raise ValueError(f"order({epoch}) repeats some indices: not {what}")
    return arr


def make_callback_order(order: OrderFn, n: int, samples: int | None = None, length: int | None = None) -> Any:
    """An ffcv TraversalOrder instance whose sample_order(epoch) is `order(epoch)` (checked), see the module doc.
    samples: the epoch's length when it is a subset of the dataset (a rank's part, see trainer/distributed);
    length: the epoch's length when it may repeat samples (see `check_order`)."""
    base = _traversal_order_base()

    class CallbackOrder(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:  # TraversalOrder.__init__ needs the loader; ffcv passes it to __call__
            self.armed = False

        def __call__(self, loader: Any) -> "CallbackOrder":
            base.__init__(self, loader)
            return self

        def sample_order(self, epoch: int) -> np.ndarray:
            if not self.armed:  # the Loader constructor's length probe
                return self.indices if length is None else np.resize(self.indices, length)
            if samples is not None:  # the loader's indices are 0..samples−1: only its length comes from them
                return check_order(order(epoch), n, epoch, samples)
            return self.indices[check_order(order(epoch), n, epoch, length=length)]

    return CallbackOrder()


class LoaderChoiceError(DatasetError):
    """MEMLOSS_LOADER (or the `loader` argument) names an unknown loader, or ffcv where it cannot be imported."""


@functools.cache
def ffcv_problem() -> str | None:
    """None if ffcv's loader imports, else why not (one line). An installed ffcv can still fail to import (its
    compiled part missing a library, numba against a newer numpy): any error counts."""
    try:
        import ffcv.fields.ndarray  # noqa: F401
        import ffcv.loader  # noqa: F401
    except Exception as err:  # ImportError, OSError of a missing .so, numba's own errors
        return " ".join(f"{type(err).__name__}: {err}".split())
    return None


def choose_loader(requested: str | None = None) -> str:
    """'ffcv' or 'numpy': `requested` (else $MEMLOSS_LOADER, else 'auto'); auto = ffcv when it imports."""
    value = (requested or os.environ.get(LOADER_ENV) or "auto").strip().lower()
    if value not in LOADERS:
        raise LoaderChoiceError(f"{LOADER_ENV}={value!r} is not a loader; use one of {', '.join(LOADERS)}")
    problem = ffcv_problem() if value != "numpy" else None
    if value == "ffcv" and problem is not None:
        raise LoaderChoiceError(f"{LOADER_ENV}=ffcv but ffcv cannot be imported ({problem}); install it with "
                                f"{FFCV_HOWTO}, or unset {LOADER_ENV} to use the numpy loader")
    return "numpy" if value == "numpy" or problem is not None else "ffcv"


def loader_note(requested: str | None = None) -> str:
    """One line: which loader `make_loader` uses, and with the numpy one, why and how to get FFCV."""
    if choose_loader(requested) == "ffcv":
        return f"data loader: FFCV (set {LOADER_ENV}=numpy for memloss's numpy reader of the same .beton)"
    if ffcv_problem() is None:
        return f"data loader: numpy reader of the .beton, same batches as FFCV ({LOADER_ENV}=numpy; unset it for FFCV)"
    return (f"data loader: numpy reader of the .beton, same batches as FFCV (ffcv not importable: {ffcv_problem()}); "
            f"for FFCV: {FFCV_HOWTO}")


class BatchLoader:
    """Iterates a PreparedSplit as (x uint8 [B,C,H,W], y int64 [B], idx int64 [B]) on `device`, owned tensors;
    the last partial batch is kept. Iteration k (counting from `set_epoch`) uses `order(epoch)`: a permutation of
    the split, or `length` indices of it when given."""

    backend = "ffcv"

    def __init__(self, split: PreparedSplit, batch_size: int, device: torch.device, order: OrderFn,
                 num_workers: int, samples: int | None = None, length: int | None = None) -> None:
        from ffcv.loader import Loader

        self.split, self.batch_size, self.device = split, batch_size, device
        self.samples = int(length) if length is not None else split.n if samples is None else samples
        self._order = make_callback_order(order, split.n, samples, length)
        indices = None if samples is None else np.arange(samples)
        with _keep_torch_threads():
            self._loader = Loader(str(split.beton), batch_size=batch_size, num_workers=num_workers,
                                  order=self._order, seed=0, drop_last=False, pipelines=_pipelines(device),
                                  indices=indices)
        self._order.armed = True
        self._active: Any = None
        _OPEN_LOADERS.add(self)

    def __len__(self) -> int:
        return -(-self.samples // self.batch_size)

    @property
    def epoch(self) -> int:
        """The epoch the next iteration will use."""
        return int(self._loader.next_epoch)

    def set_epoch(self, epoch: int) -> None:
        """Makes the next iteration use `order(epoch)` (then epoch+1, ...); used on resume."""
        if epoch < 0:
            raise ValueError(f"epoch must be ≥ 0, got {epoch}")
        self._loader.next_epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        self.close()
        with _keep_torch_threads():
            it = iter(self._loader)
        self._active = it
        return self._batches(it)

    def _batches(self, it: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        try:
            for x, y, idx in it:
                yield x.clone(memory_format=torch.contiguous_format), y.clone(), idx.clone()
        finally:
            if self._active is it:
                self.close()

    def close(self) -> None:
        """Stops and joins the epoch iterator in progress, if any (safe to call twice)."""
        it, self._active = self._active, None
        if it is not None:
            _stop_iterator(it)

    def __enter__(self) -> "BatchLoader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def _keep_torch_threads() -> Iterator[None]:
    """ffcv sets torch's intra-op thread count to its own worker count when a Loader or an epoch starts; the
    user's setting must survive that (measured here: 2 torch threads beside ffcv's decoder on 2 busy cores made
    AutoAttack after training 30× slower than 1 thread)."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _stop_iterator(it: Any) -> None:
    """Stops ffcv's EpochIterator thread, waits for it, then closes it. The thread checks the terminate event only
    while a batch waits for room in its queue; at the end of the epoch it blocks on `put(None)` without checking,
    so the queue is drained until the thread is gone."""
    import queue

    it.terminate_event.set()
    while it.is_alive():
        try:
            while True:
                it.output_queue.get_nowait()
        except queue.Empty:
            pass
        it.join(timeout=0.05)
    it.close()


@atexit.register
def _close_all() -> None:
    for loader in list(_OPEN_LOADERS):
        loader.close()


def _pipelines(device: torch.device) -> dict[str, list]:
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.ndarray import NDArrayDecoder
    from ffcv.transforms import Squeeze, ToDevice, ToTensor

    def to_device() -> list:
        return [ToDevice(device, non_blocking=True)] if device.type == "cuda" else []

    return {"image": [NDArrayDecoder(), ToTensor(), *to_device()],
            "label": [IntDecoder(), ToTensor(), Squeeze(1), *to_device()],
            "index": [IntDecoder(), ToTensor(), Squeeze(1), *to_device()]}


def make_loader(split: PreparedSplit, *, batch_size: int, device: torch.device | str = "cpu",
                order: OrderFn | None = None, seed: int = 0, num_workers: int | None = None,
                samples: int | None = None, length: int | None = None,
                loader: str | None = None) -> Any:
    """A BatchLoader (FFCV) or a NumpyBatchLoader over `split`, as `choose_loader(loader)` decides; both yield the
    same batches. `order(epoch)` gives each epoch's permutation of range(n) (None: uniform random,
    `np.random.default_rng((seed, epoch))`); `num_workers` = FFCV's decoding threads (None: CPU count, at most 8;
    the numpy loader reads with one thread). samples: each epoch visits only this many distinct samples,
    `order(epoch)` giving them (int64 [samples]). length: each epoch is `length` indices of range(n), repeats
    allowed."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    chosen = order if order is not None else random_order(split.n, seed)
    if choose_loader(loader) == "numpy":
        from memloss.trainer.data.numpy_loader import NumpyBatchLoader

        return NumpyBatchLoader(split, batch_size, torch.device(device), chosen, samples, length)
    workers = num_workers if num_workers is not None else min(os.cpu_count() or 1, 8)
    return BatchLoader(split, batch_size, torch.device(device), chosen, max(1, workers), samples, length)
