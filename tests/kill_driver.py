"""Runs `memloss ARGS...` and kills itself with SIGKILL at one chosen point, for the kill -9 sweep
(tests/test_kill_sweep.py): `python tests/kill_driver.py POINT -- ARGS...`.

POINT is `<when>:<event>#<n>`: the n-th time `event` happens, just `before` or `after` it. Events:
- `set:<kind>` / `delete:<kind>`: a write or delete through zarr's LocalStore, kind one of root-json (the group's
  attributes: creation marker, creation, every epoch start and commit record), array-json, members, manifest;
- `chunks`: a batch of whole-chunk writes of the memory (the store's writer thread; with the zarrs codec pipeline
  these files are written by zarrs itself, not through LocalStore);
- `replace:<file name>`: the rename that completes an atomic file write (config.json, metrics.jsonl,
  last.safetensors, best.safetensors, last.state.pt);
- `flock` (the writer lock just taken, its holder not yet written), `lock` (the lock complete);
- `step` (a training step), `eval` (a PGD-20 batch of the per-epoch evaluation).
Nothing here is imported by memloss: the points are patched in from outside.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

_counts: dict[str, int] = {}
_guard = threading.Lock()
WHEN, _, TARGET = sys.argv[1].partition(":")
EVENT, _, NTH = TARGET.rpartition("#")


def hit(when: str, event: str) -> None:
    if when != WHEN or event != EVENT:
        return
    with _guard:
        _counts[event] = _counts.get(event, 0) + 1
        if _counts[event] == int(NTH):
            os.kill(os.getpid(), signal.SIGKILL)


def kind(key: str) -> str:
    if key == "zarr.json":
        return "root-json"
    if key.startswith("manifests/e"):  # an epoch's manifest (a group's zarr.json since format 4)
        return "manifest"
    if key.endswith("zarr.json"):
        return "array-json"
    if key.startswith("members/"):
        return "members"
    if key.startswith("manifests/"):
        return "manifest"
    return "chunk"


def around(event: str, fn):  # noqa: ANN001, ANN202
    def wrapped(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        hit("before", event)
        out = fn(*args, **kwargs)
        hit("after", event)
        return out
    return wrapped


def patch() -> None:
    import fcntl

    from zarr.storage import LocalStore

    from memloss.memstore.integrity import lock as _lock
    from memloss.memstore.zarrstore import backend as _zarr
    from memloss.trainer.training import epoch

    set_, delete = LocalStore.set, LocalStore.delete

    async def set_hooked(self, key, value):  # noqa: ANN001, ANN202
        hit("before", f"set:{kind(key)}")
        await set_(self, key, value)
        hit("after", f"set:{kind(key)}")

    async def delete_hooked(self, key):  # noqa: ANN001, ANN202
        hit("before", f"delete:{kind(key)}")
        await delete(self, key)
        hit("after", f"delete:{kind(key)}")

    LocalStore.set, LocalStore.delete = set_hooked, delete_hooked
    replace = os.replace

    def replace_hooked(src, dst):  # noqa: ANN001, ANN202
        name = os.path.basename(str(dst))
        hit("before", f"replace:{name}")
        replace(src, dst)
        hit("after", f"replace:{name}")

    os.replace = replace_hooked
    fcntl.flock = around("flock", fcntl.flock)
    _lock.FileLock.__init__ = around("lock", _lock.FileLock.__init__)
    _zarr.write_chunks = around("chunks", _zarr.write_chunks)
    epoch.train_step = around("step", epoch.train_step)
    epoch.pgd_robust = around("eval", epoch.pgd_robust)


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    patch()
    from memloss.cli.app import main

    sys.argv = ["memloss", *sys.argv[sys.argv.index("--") + 1:]]
    main()
