"""Reading one array of an `.npz` file a slice of rows at a time, so that RAM does not grow with the array's length.

`np.load(path)["image"]` reads a whole member (150 GB for a 50M-image part file). Here the member is found through
`zipfile`'s central directory, its `.npy` header is parsed with `numpy.lib.format` (shape, dtype, C order), and rows
are read straight from the file:

- a stored member (`np.savez`, how the published generated sets are written): the array's bytes lie uncompressed at
  a fixed offset of the file, so rows [a, b) are one `seek` + `readinto` of (b − a)·row bytes, in any order;
- a deflated member (`np.savez_compressed`): through `zipfile`'s decompressing reader; reading forward is a single
  pass, a backward jump restarts the decompression, so callers read such members in order (one writer process).

Only the rows asked for are in memory. CRCs are not checked on the stored path (the whole member would have to be
read for that); sizes are, so a truncated file is refused when it is opened.
"""

from __future__ import annotations

import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from memloss.trainer.data.registry import DatasetError

# The fixed part of a zip local file header: signature, versions, flags, method, time, date, crc, sizes, name and
# extra-field lengths (APPNOTE 4.3.7).
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_LOCAL_SIGNATURE = b"PK\x03\x04"


class GeneratedDataError(DatasetError):
    """A generated-data file that cannot be used: missing, truncated, of the wrong layout or not matching the base
    dataset."""


@dataclass(frozen=True)
class NpzMember:
    """One array inside an .npz: `shape`, `dtype` (C order); `offset` is where its data starts, in the file for a
    stored member, in the decompressed member for a deflated one."""

    path: Path
    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    compressed: bool
    offset: int

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize


def open_member(path: Path, key: str) -> NpzMember:
    """Locates array `key` of the .npz `path` and checks that its bytes are all there; GeneratedDataError if not."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = _member_info(path, archive, key)
            with archive.open(info) as fp:
                shape, dtype, header_bytes = _read_npy_header(path, key, fp)
    except FileNotFoundError:
        raise GeneratedDataError(f"{path} does not exist; check the path of the .npz file") from None
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise GeneratedDataError(f"{path} is not a readable .npz (zip) file ({type(err).__name__}: {err}); it may be "
                                 f"truncated: download it again") from None
    data_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if info.file_size != header_bytes + data_bytes:
        raise GeneratedDataError(f"{path}: the '{key}' array holds {info.file_size - header_bytes} bytes but its "
                                 f"shape {shape} needs {data_bytes}; the file is damaged: download it again")
    compressed = info.compress_type != zipfile.ZIP_STORED
    offset = header_bytes if compressed else _data_offset(path, info) + header_bytes
    if not compressed and offset + data_bytes > path.stat().st_size:
        raise GeneratedDataError(f"{path} is truncated (the '{key}' array ends past the end of the file); "
                                 f"download it again")
    return NpzMember(path, key, shape, dtype, compressed, offset)


def _member_info(path: Path, archive: zipfile.ZipFile, key: str) -> zipfile.ZipInfo:
    names = archive.namelist()
    name = f"{key}.npy" if f"{key}.npy" in names else key
    if name not in names:
        keys = ", ".join(n.removesuffix(".npy") for n in names) or "none"
        raise GeneratedDataError(f"{path} has no '{key}' array (it has: {keys}); the .npz must hold image uint8 "
                                 f"[N, H, W, C] and label int [N] (np.savez(path, image=x, label=y))")
    info = archive.getinfo(name)
    if info.flag_bits & 0x1:
        raise GeneratedDataError(f"{path}: the '{key}' array is encrypted; save the data with np.savez")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise GeneratedDataError(f"{path}: the '{key}' array uses zip method {info.compress_type}; save the data "
                                 f"with np.savez (stored) or np.savez_compressed (deflate)")
    return info


def _read_npy_header(path: Path, key: str, fp: BinaryIO) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, header length in bytes) of the .npy stream `fp`; refuses Fortran order and object arrays."""
    from numpy.lib import format as npy

    try:
        version = npy.read_magic(fp)
        reader = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran, dtype = reader(fp)
    except ValueError as err:
        raise GeneratedDataError(f"{path}: the '{key}' array is not a valid .npy ({err}); download it again") from None
    if fortran and len(shape) > 1:
        raise GeneratedDataError(f"{path}: the '{key}' array is in Fortran order; re-save it in C order with np.savez")
    if dtype.hasobject or len(shape) == 0:
        raise GeneratedDataError(f"{path}: the '{key}' array is not a numeric array with a first axis of rows")
    return tuple(int(v) for v in shape), dtype, fp.tell()


def _data_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """Where a stored member's bytes start in the file: after its local header, name and extra field."""
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        fields = _LOCAL_HEADER.unpack(fh.read(_LOCAL_HEADER.size))
    if fields[0] != _LOCAL_SIGNATURE:
        raise GeneratedDataError(f"{path}: bad zip local header for {info.filename}; the file is damaged")
    name_length, extra_length = fields[-2], fields[-1]
    return info.header_offset + _LOCAL_HEADER.size + name_length + extra_length


class MemberReader:
    """Reads row slices of one member. Opens its file on first use in each process (FFCV's writer forks workers,
    which must not share a file position)."""

    def __init__(self, member: NpzMember) -> None:
        self.member = member
        self._pid = -1
        self._file: BinaryIO | None = None
        self._archive: zipfile.ZipFile | None = None

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as an array of shape [stop − start, *shape[1:]] (a fresh buffer)."""
        m = self.member
        buffer = bytearray((stop - start) * m.row_bytes)
        fp = self._handle()
        fp.seek(m.offset + start * m.row_bytes)
        view, done = memoryview(buffer), 0
        while done < len(buffer):
            got = fp.readinto(view[done:])
            if not got:
                raise GeneratedDataError(f"{m.path}: the '{m.key}' array ends early (row {start + done // m.row_bytes} "
                                         f"of {m.rows}); the file is truncated: download it again")
            done += got
        return np.frombuffer(buffer, dtype=m.dtype).reshape((stop - start, *m.shape[1:]))

    def _handle(self) -> BinaryIO:
        if self._pid != os.getpid() or self._file is None:
            self._pid = os.getpid()
            if self.member.compressed:
                self._archive = zipfile.ZipFile(self.member.path)
                name = self.member.key + ".npy"
                self._file = self._archive.open(name if name in self._archive.namelist() else self.member.key)
            else:
                self._file = open(self.member.path, "rb")  # noqa: SIM115 (kept open across reads)
        return self._file

    def close(self) -> None:
        for handle in (self._file, self._archive):
            if handle is not None and self._pid == os.getpid():
                handle.close()
        self._file = self._archive = None

    def __getstate__(self) -> dict:
        return {"member": self.member, "_pid": -1, "_file": None, "_archive": None}


def read_whole(member: NpzMember) -> np.ndarray:
    """The whole member (for the labels: 8 bytes a row), read in slices of about 64 MiB."""
    reader = MemberReader(member)
    step = max(1, (64 << 20) // max(1, member.row_bytes))
    try:
        parts = [reader.read(a, min(a + step, member.rows)) for a in range(0, member.rows, step)]
    finally:
        reader.close()
    return np.concatenate(parts) if parts else np.zeros(member.shape, dtype=member.dtype)
