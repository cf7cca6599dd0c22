"""FFCV's loader set to the run's kind of device, so that a CPU run on a GPU machine leaves CUDA untouched.

FFCV decides at import whether to use CUDA (`ffcv.loader.epoch_iterator.IS_CUDA = torch.cuda.is_available()`):
on a GPU machine every epoch iterator of a CPU run would then create CUDA streams and events on GPU 0, and its
buffers are pinned (`allocation_query.allocate_query` pins every allocation it can), which makes a CUDA context
on GPU 0. `ffcv_follows(device)` sets both to the run's device instead; it is called once per run, before the
loader is built (a process trains one run at a time, so the module-level switch is the run's).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch

_ORIGINAL: dict[str, Any] = {}


def unpinned_allocate(query: Any, batch_size: int, batches_ahead: int) -> Any:
    """FFCV's `allocate_query` (ffcv/pipeline/allocation_query.py) without its page-locking: the same buffers,
    [batches_ahead] tensors of [batch_size, *shape] for a torch dtype, else one numpy array of that shape."""
    shape = (batch_size, *query.shape)
    if isinstance(query.dtype, torch.dtype):
        return [torch.empty(*shape, dtype=query.dtype, device=query.device) for _ in range(batches_ahead)]
    dtype = torch.from_numpy(np.empty(0, dtype=query.dtype)).dtype
    return torch.empty(batches_ahead, *shape, dtype=dtype).numpy()


def _import_without_cuda() -> Any:
    """ffcv's epoch iterator module; imported (when not yet) with torch.cuda.is_available answering False, so its
    import-time test does not initialize the CUDA driver for a CPU run."""
    if "ffcv.loader.epoch_iterator" in sys.modules:
        return sys.modules["ffcv.loader.epoch_iterator"]
    available = torch.cuda.is_available
    torch.cuda.is_available = lambda: False  # type: ignore[assignment]
    try:
        import ffcv.loader.epoch_iterator as module
    finally:
        torch.cuda.is_available = available  # type: ignore[assignment]
    return module


def ffcv_follows(device: torch.device) -> None:
    """FFCV's CUDA use follows `device`: streams, events and pinned buffers on CUDA, none of them on CPU. A no-op
    without ffcv installed."""
    cuda = device.type == "cuda"
    try:
        iterator = _import_without_cuda() if not cuda else __import__("ffcv.loader.epoch_iterator", fromlist=["x"])
        from ffcv.pipeline import graph
    except ImportError:
        return
    _ORIGINAL.setdefault("allocate_query", graph.allocate_query)
    iterator.IS_CUDA = cuda
    graph.allocate_query = _ORIGINAL["allocate_query"] if cuda else unpinned_allocate
