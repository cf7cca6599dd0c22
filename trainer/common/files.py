"""Writing files so that a crash never leaves half of one, and checksums of files."""

from __future__ import annotations

import hashlib
import os
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


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
