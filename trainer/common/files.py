"""Writing files so that a crash never leaves half of one, and checksums of files."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from pathlib import Path

from memloss.errors import MemlossError

TMP_SUFFIX = ".tmp"  # temporary files are ".<name>.<pid>-<hex>.tmp" next to their target


class FileWriteError(MemlossError, OSError):
    """A file could not be written (full disk, read-only or missing folder); its previous version is intact."""

    def __str__(self) -> str:
        return str(self.strerror)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Writes `data` to `path` through a temporary file in the same folder, fsync and os.replace, so readers see
    either the old file or the complete new one, never a partial write. FileWriteError (one line) on failure."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        kept = "its previous version is intact" if path.exists() else "nothing was written"
        raise FileWriteError(err.errno, f"cannot write {path} ({err.strerror or err}); {kept}") from None
    finally:
        tmp.unlink(missing_ok=True)


def remove_temporaries(folder: Path) -> int:
    """Removes the temporary files of `atomic_write_bytes` that a killed process left in `folder`; returns how
    many (call it only where no other process writes)."""
    removed = 0
    for tmp in folder.glob(f".*{TMP_SUFFIX}"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


# `.NAME.PID-HEX.tmp`, and the .beton writer's tables beside such a file (`….tmp.meta.tmp`, `….tmp.alloc.tmp`).
_TEMPORARY = re.compile(r"^\..+\.(?P<pid>\d+)-[0-9a-f]{8}\.tmp(?:\.(?:meta|alloc)\.tmp)?$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Removes the temporary files that a killed process left in `folder` (named after its process id, which no
    longer runs); those of a live process (a conversion at work beside this one) stay. Returns the removed paths."""
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = _TEMPORARY.match(path.name)
        if match and not _alive(int(match["pid"])) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def free_bytes(path: Path) -> tuple[int, Path]:
    """(free bytes, the folder measured): the nearest existing folder of `path`."""
    where = Path(path)
    while not where.is_dir() and where != where.parent:
        where = where.parent
    return shutil.disk_usage(where).free, where


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
