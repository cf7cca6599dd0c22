"""Writing files so that a crash never leaves half of one, and checksums of files."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Writes `data` to `path` through a temporary file in the same folder, fsync and os.replace, so readers see
    either the old file or the complete new one, never a partial write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
