"""The memory store under several ranks: rank 0 opens it as the one writer (it takes the writer lock and persists
the rows every rank sends it, see writes.py); the other ranks open it read-only (no lock) and read the committed
epochs from storage, so the store must sit where every rank sees it (one node: any path; several nodes: a shared
filesystem or an object store URL).

Every rank computes the same epoch order from the store (deterministic in seed, epoch and memory budget). At the
end of each epoch rank 0 waits for its commit to land; then the other ranks reopen the store, which gives them the
committed epoch (2 barriers per epoch)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from memloss.errors import ConfigError
from memloss.trainer.distributed.context import barrier, current, on_main


def check_store_url(url: str | None) -> None:
    """Refuses an in-process store under several processes (each would have its own)."""
    if url is not None and url.startswith("memory://") and current().world > 1:
        raise ConfigError(f"--store {url} lives inside one process; with several processes use a path (one node), "
                          "a shared filesystem path or an s3:// URL (several nodes)")


def open_for_rank(open_writer: Callable[[], Any], open_reader: Callable[[], Any]) -> Any:
    """Rank 0 opens (or creates) the store with `open_writer()`; the others, once it exists, with `open_reader()`
    (read-only). One process: `open_writer()`."""
    ctx = current()
    if not ctx.active or ctx.world == 1:
        return open_writer()
    writer = on_main(open_writer)  # a refusal (lock held, other settings) ends every rank with rank 0's line
    return writer if ctx.main else open_reader()


def settle_epoch(commit: Future[None] | None, reopen: Callable[[], None]) -> None:
    """End of an epoch: rank 0 waits until the store's commit landed, then the other ranks `reopen()` their
    read-only store to see it; nobody starts the next epoch before that. A collective; one process: nothing."""
    ctx = current()
    if not ctx.active or ctx.world == 1:
        return
    if ctx.main and commit is not None:
        commit.result()
    barrier()
    if not ctx.main:
        reopen()
    barrier()
