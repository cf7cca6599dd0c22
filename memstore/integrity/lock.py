"""The writer lock of a store: at most one process writes a store at a time; readers never take it.

The lock lives beside the store, not in it (`mem.zarr.lock` next to `mem.zarr`), so plain zarr never meets an
object that is not a Zarr node. Stores written by memloss ≤ 0.1 kept it inside (`mem.zarr/memloss.lock`): a writer
refuses such a store while that lock is held (an older memloss is writing it) and removes it otherwise. A store
without a parent folder or prefix (a bucket's root, a zarr Store object) keeps the lock inside, as before.

- **Local directories**: an OS advisory lock (`flock`) on the file `<store>.lock`. The kernel
  releases it when the holder exits, however it exits (kill -9 included), so a lock left by a dead process is simply
  free; the file's JSON only names the holder (host, pid, run, since) for the error message and is emptied on a
  clean release.
- **Object stores and other fsspec URLs**: a lease object `<store>.lock` holding the same JSON plus a heartbeat time,
  renewed by a background thread every `ttl/4` seconds. A lease whose heartbeat is older than its `ttl` (the holder
  stopped), or whose holder is a process of this host that no longer exists, is taken over. Object stores have no
  compare-and-swap here: the lease is written, then read back, and a writer that does not find its own token lost a
  race and stops. The heartbeat notices a lease taken over by someone else; the store then refuses to commit.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from zarr.abc.store import Store

from memloss.memstore.location.resolve import LOCK_KEY, delete_key, get_bytes, local_root, parent_store, put_bytes
from memloss.memstore.errors import StoreError

LEASE_TTL_S = 120.0


class StoreLockedError(StoreError):
    """Another live process holds the store's writer lock."""


def _holder(owner: str | None) -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "run": owner,
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"), "token": uuid.uuid4().hex}


def describe_holder(info: dict[str, Any] | None) -> str:
    """'host H, pid P, run R, since T' (whatever of it is known)."""
    if not info:
        return "another process (it has not written its details yet)"
    parts = [f"host {info.get('host', '?')}", f"pid {info.get('pid', '?')}"]
    if info.get("run"):
        parts.append(f"run {info['run']}")
    parts.append(f"since {info.get('since', '?')}")
    return ", ".join(parts)


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _parse(data: bytes | None) -> dict[str, Any] | None:
    try:
        found = json.loads(data) if data else None
    except (ValueError, UnicodeDecodeError):
        return None
    return found if isinstance(found, dict) else None


class StoreLock(ABC):
    """A held writer lock. `notes` says what acquiring it found (a lock of a dead process taken over)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.notes: list[str] = []

    @abstractmethod
    def release(self) -> None:
        """Gives the lock up; idempotent."""

    def check(self) -> None:
        """Raises StoreLockedError if the lock was lost (a lease taken over by another writer)."""


class FileLock(StoreLock):
    """flock on `<store>/memloss.lock` (held until release or process exit)."""

    def __init__(self, url: str, path: os.PathLike[str] | str, owner: str | None) -> None:
        super().__init__(url)
        self._fd: int | None = None
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot write the lock file {path} ({exc.strerror}); the store is not writable: use "
                             "a writable location") from None
        _flock_or_refuse(fd, lambda holder: f"store {url} is being written by {holder} (lock file {path}); wait "
                         "for that run to finish or use another store")
        previous = _parse(_read_fd(fd))
        if previous:
            self.notes.append(f"took over the lock of the store {url}: its holder ({describe_holder(previous)}) "
                              "is gone")
        data = json.dumps(_holder(owner)).encode()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot write the lock file {path} ({exc.strerror}); free space or use another "
                             "store") from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # an empty file = released cleanly (a non-empty one names a holder that died)
        except OSError:
            pass
        os.close(fd)  # closing the descriptor drops the flock


def _flock_or_refuse(fd: int, refusal: Callable[[str], str]) -> None:
    """Takes the flock on `fd` at once, or closes `fd` and raises StoreLockedError with `refusal(the holder)`."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        info = _parse(_read_fd(fd))
        os.close(fd)
        raise StoreLockedError(refusal(describe_holder(info))) from None


def _read_fd(fd: int) -> bytes:
    try:
        return os.pread(fd, 65536, 0)
    except OSError:
        return b""


class LeaseLock(StoreLock):
    """A lease object with a heartbeat, for stores without OS locks (object stores, memory://)."""

    def __init__(self, store: Store, url: str, owner: str | None, ttl: float | None = None,
                 key: str = LOCK_KEY, label: str | None = None) -> None:
        super().__init__(url)
        label = label or key  # how the message names the lease object
        self._store, self._key, self._ttl = store, key, float(LEASE_TTL_S if ttl is None else ttl)
        current = _parse(get_bytes(store, key))
        if current and not self._stale(current):
            raise StoreLockedError(f"store {url} is being written by {describe_holder(current)} (lease {label}, "
                                   f"renewed every {self._ttl / 4:.0f} s); wait for that run to finish or use "
                                   "another store")
        if current:
            self.notes.append(f"took over the lease of the store {url}: its holder ({describe_holder(current)}) "
                              "stopped renewing it")
        self._info = {**_holder(owner), "ttl_s": self._ttl}
        self._write()
        back = _parse(get_bytes(store, key))
        if not back or back.get("token") != self._info["token"]:
            raise StoreLockedError(f"store {url} was taken by {describe_holder(back)} at the same moment; use "
                                   "another store")
        self.lost: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="memstore-lease", daemon=True)
        self._thread.start()

    def _stale(self, info: dict[str, Any]) -> bool:
        beat = info.get("heartbeat")
        if not isinstance(beat, (int, float)) or time.time() - beat > float(info.get("ttl_s", self._ttl)):
            return True
        return info.get("host") == socket.gethostname() and not _pid_alive(info.get("pid"))

    def _write(self) -> None:
        self._info["heartbeat"] = time.time()
        put_bytes(self._store, self._key, json.dumps(self._info).encode())

    def _beat(self) -> None:
        while not self._stop.wait(self._ttl / 4):
            try:
                current = _parse(get_bytes(self._store, self._key))
                if current is None or current.get("token") != self._info["token"]:
                    self.lost = current or {}
                    return
                self._write()
            except Exception:  # a missed heartbeat only shortens the lease; the next one retries
                continue

    def check(self) -> None:
        if self.lost is not None:
            raise StoreLockedError(f"store {self.url}: this run lost its lease to {describe_holder(self.lost)}; "
                                   "it stops before writing more")

    def release(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        try:
            current = _parse(get_bytes(self._store, self._key))
            if current and current.get("token") == self._info["token"]:
                delete_key(self._store, self._key)
        except Exception:  # the lease expires on its own
            pass


def lock_location(store: Store) -> tuple[Store, str]:
    """Where the lease of an object store lives: (a store rooted at the parent prefix, "<name>.lock"); a store with
    no parent prefix, or one that is not an object or fsspec store, keeps it inside under LOCK_KEY."""
    found = parent_store(store)
    return (found[0], f"{found[1]}.lock") if found is not None else (store, LOCK_KEY)


def lock_path(root: Path) -> Path:
    """The lock file of the local store at `root`: `<root>.lock` beside it."""
    return root.with_name(f"{root.name}.lock")


def acquire_lock(store: Store, url: str, owner: str | None) -> StoreLock:
    """The writer lock of the store at `url` (`owner`: the run directory, shown to a second writer)."""
    root = local_root(store)
    if root is None:
        where, key = lock_location(store)
        label = f"{url.rstrip('/')}.lock" if where is not store else None
        lock = LeaseLock(where, url, owner, key=key, label=label)
        if where is not store:
            _guarded(lock, lambda: _clear_legacy_lease(store, url))
        return lock
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the store directory {root} ({exc.strerror}); use a writable location"
                         ) from None
    lock = FileLock(url, lock_path(root), owner)
    _guarded(lock, lambda: _clear_legacy_file_lock(root, url))
    _guarded(lock, lambda: _make_root(root))
    return lock


def _guarded(lock: StoreLock, step: Callable[[], None]) -> None:
    """Runs `step`; releases `lock` if it fails."""
    try:
        step()
    except BaseException:
        lock.release()
        raise


def _make_root(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the store directory {root} ({exc.strerror}); use a writable location"
                         ) from None


def _clear_legacy_file_lock(root: Path, url: str) -> None:
    """Removes `<root>/memloss.lock` (the lock of memloss ≤ 0.1), refusing while a process still holds it."""
    legacy = root / LOCK_KEY
    try:
        fd = os.open(legacy, os.O_RDWR)
    except FileNotFoundError:
        return
    except OSError:
        return  # unreadable: a writer of the old kind could not take it either
    _flock_or_refuse(fd, lambda holder: f"store {url} is being written by an older memloss ({holder}, lock file "
                     f"{legacy}); wait for that run to finish or use another store")
    legacy.unlink(missing_ok=True)
    os.close(fd)


def _clear_legacy_lease(store: Store, url: str) -> None:
    """Removes a lease object of memloss ≤ 0.1 inside the store, refusing while its heartbeat is fresh."""
    current = _parse(get_bytes(store, LOCK_KEY))
    if current is None:
        return
    beat = current.get("heartbeat")
    if isinstance(beat, (int, float)) and time.time() - beat <= float(current.get("ttl_s", LEASE_TTL_S)):
        raise StoreLockedError(f"store {url} is being written by an older memloss ({describe_holder(current)}, lease "
                               f"{LOCK_KEY} inside the store); wait for that run to finish or use another store")
    delete_key(store, LOCK_KEY)
