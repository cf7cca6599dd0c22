"""FFCV's `.beton` file format (version 2) for our three fields, written and read with numpy alone.

The layout is FFCV 1.0.2's (`ffcv/types.py`, `ffcv/writer.py`, `ffcv/memory_allocator.py`), so FFCV's `Reader` and
`Loader` read what we write and we read what FFCV writes; nothing here imports ffcv, so a machine without it (no
root, no compiler: see docs/guide.md) converts, verifies and loads the same cache files.

File, in order (all little-endian):
- header (`HEADER`, 24 B): version 2, number of fields, page size, number of samples, offset of the allocation table;
- one field descriptor per field (`FIELD_DESC`, 1041 B each): type id (1 = IntField, 4 = NDArrayField), name, and
  for the NDArray field its shape (32 × u8) and dtype description (JSON of `dtype.descr`);
- the metadata table, one row per sample (`METADATA`: image pointer u8, label i8, index i8; columns f0, f1, f2);
- zeros up to a page boundary, then the data pages: sample i's image bytes (C·H·W uint8, C order) at slot
  i mod p of page i div p, where p = page_size // image_bytes; FFCV's allocator starts a new page when a sample
  does not fit the rest of the current one, and writes every page whole;
- the allocation table (`ALLOC`: sample id, pointer, size), one row per sample.

With one writer process FFCV lays samples out exactly so (tests/test_generated_data.py compares the bytes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

VERSION = 2
HEADER = np.dtype([("version", "<u2"), ("num_fields", "<u2"), ("page_size", "<u4"), ("num_samples", "<u8"),
                   ("alloc_table_ptr", "<u8")], align=True)
FIELD_DESC = np.dtype([("type_id", "<u1"), ("name", ("<u1", 16)), ("arguments", ("<u1", (1024,)))], align=True)
NDARRAY_ARGS = np.dtype([("shape", "<u8", 32), ("type_length", "<u8")])
ALLOC = np.dtype([("sample_id", "<u8"), ("ptr", "<u8"), ("size", "<u8")])
METADATA = np.dtype([("", "<u8"), ("", "<i8"), ("", "<i8")], align=True)  # image ptr, label, index
INT_FIELD, NDARRAY_FIELD = 1, 4
FIELDS = (("image", NDARRAY_FIELD), ("label", INT_FIELD), ("index", INT_FIELD))
# FFCV's default page (4 × 2 MiB); a larger image gets the next power of two (FFCV allows up to 2**32 − 1).
DEFAULT_PAGE = 1 << 23


class BetonFormatError(ValueError):
    """The file is not a `.beton` of our fields (the message says what differs)."""


@dataclass(frozen=True)
class Layout:
    """Where everything lies in a `.beton` of `n` uint8 images of `shape` (C, H, W)."""

    n: int
    shape: tuple[int, ...]
    page_size: int

    @property
    def image_bytes(self) -> int:
        return int(np.prod(self.shape))

    @property
    def per_page(self) -> int:
        return self.page_size // self.image_bytes

    @property
    def metadata_start(self) -> int:
        return HEADER.itemsize + len(FIELDS) * FIELD_DESC.itemsize

    @property
    def data_start(self) -> int:
        end = self.metadata_start + self.n * METADATA.itemsize
        return -(-end // self.page_size) * self.page_size

    @property
    def pages(self) -> int:
        return -(-self.n // self.per_page)

    @property
    def alloc_start(self) -> int:
        return self.data_start + self.pages * self.page_size if self.n else self.metadata_start

    @property
    def file_bytes(self) -> int:
        return self.alloc_start + self.n * ALLOC.itemsize

    def ptrs(self, start: int, stop: int) -> np.ndarray:
        """uint64 [stop − start]: file offsets of the images of samples [start, stop)."""
        i = np.arange(start, stop, dtype=np.uint64)
        p = np.uint64(self.per_page)
        return np.uint64(self.data_start) + (i // p) * np.uint64(self.page_size) + (i % p) * np.uint64(
            self.image_bytes)


def layout(n: int, shape: tuple[int, ...]) -> Layout:
    """The layout FFCV's writer (default page size) gives n images of `shape`."""
    size = int(np.prod(shape))
    if size < 1:
        raise BetonFormatError(f"image shape {tuple(shape)} holds no pixels")
    page = max(DEFAULT_PAGE, 1 << (size - 1).bit_length())
    if page >= 1 << 32:
        raise BetonFormatError(f"images of {size} bytes exceed the .beton format's largest page (4 GiB)")
    return Layout(int(n), tuple(int(s) for s in shape), page)


def head_bytes(lay: Layout) -> bytes:
    """Header and field descriptors (what precedes the metadata table)."""
    header = np.zeros(1, dtype=HEADER)
    header["version"], header["num_fields"], header["page_size"] = VERSION, len(FIELDS), lay.page_size
    header["num_samples"], header["alloc_table_ptr"] = lay.n, lay.alloc_start
    desc = np.zeros(len(FIELDS), dtype=FIELD_DESC)
    for row, (name, type_id) in zip(desc, FIELDS):
        row["type_id"] = type_id
        row["name"][:len(name)] = np.frombuffer(name.encode("ascii"), dtype="<u1")
    desc[0]["arguments"][:] = _ndarray_args(lay.shape)
    return header.tobytes() + desc.tobytes()


def _ndarray_args(shape: tuple[int, ...]) -> np.ndarray:
    """FFCV's NDArrayField.to_binary for uint8 of `shape`: shape, then the JSON of the dtype's descr."""
    out = np.zeros(1024, dtype="<u1")
    args = np.zeros(1, dtype=NDARRAY_ARGS)
    args["shape"][0][:len(shape)] = shape
    encoded = np.frombuffer(json.dumps(np.dtype("uint8").descr).encode("ascii"), dtype="<u1")
    args["type_length"][0] = len(encoded)
    packed = np.concatenate([args.view("<u1"), encoded])
    out[:len(packed)] = packed
    return out


def metadata_rows(lay: Layout, start: int, labels: np.ndarray) -> np.ndarray:
    """METADATA rows of samples [start, start + len(labels))."""
    rows = np.zeros(len(labels), dtype=METADATA)
    rows["f0"] = lay.ptrs(start, start + len(labels))
    rows["f1"] = labels
    rows["f2"] = np.arange(start, start + len(labels))
    return rows


def alloc_rows(lay: Layout, start: int, stop: int) -> np.ndarray:
    """ALLOC rows of samples [start, stop)."""
    rows = np.zeros(stop - start, dtype=ALLOC)
    rows["sample_id"] = np.arange(start, stop, dtype=np.uint64)
    rows["ptr"] = lay.ptrs(start, stop)
    rows["size"] = lay.image_bytes
    return rows


@dataclass(frozen=True)
class BetonFile:
    """A `.beton` of our fields as read from disk: `metadata` METADATA [n] (image pointer, label, index)."""

    path: Path
    n: int
    shape: tuple[int, ...]
    page_size: int
    metadata: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        return self.metadata["f1"]

    @property
    def index(self) -> np.ndarray:
        return self.metadata["f2"]

    @cached_property
    def regular(self) -> bool:
        """True if every image lies where `layout` puts it (our writer's files, FFCV's with one writer process)."""
        lay = Layout(self.n, self.shape, self.page_size)
        return lay.per_page > 0 and np.array_equal(self.metadata["f0"], lay.ptrs(0, self.n))


def read_beton(path: Path | str) -> BetonFile:
    """Header, field descriptors and metadata table of `path`; BetonFormatError if it is not a `.beton` of uint8
    images with int label and index fields; OSError if it cannot be read."""
    path = Path(path)
    with open(path, "rb") as fh:
        header = np.frombuffer(fh.read(HEADER.itemsize), dtype=HEADER)
        if len(header) != 1 or int(header["version"][0]) != VERSION:
            raise BetonFormatError(f"{path} is not a version-{VERSION} .beton")
        num_fields, n = int(header["num_fields"][0]), int(header["num_samples"][0])
        desc = np.frombuffer(fh.read(num_fields * FIELD_DESC.itemsize), dtype=FIELD_DESC)
        names = tuple(bytes(d["name"]).split(b"\0")[0].decode("ascii", "replace") for d in desc)
        if len(desc) != num_fields or tuple(zip(names, (int(t) for t in desc["type_id"]))) != FIELDS:
            raise BetonFormatError(f"fields {names}, expected {tuple(name for name, _ in FIELDS)}")
        shape = _image_shape(desc[0]["arguments"])
        metadata = np.frombuffer(fh.read(n * METADATA.itemsize), dtype=METADATA)
    if len(metadata) != n:
        raise BetonFormatError(f"{path} is cut short: {len(metadata)} of {n} metadata rows")
    return BetonFile(path, n, shape, int(header["page_size"][0]), metadata)


def _image_shape(arguments: np.ndarray) -> tuple[int, ...]:
    """The NDArray field's shape; BetonFormatError unless its dtype is uint8."""
    args = arguments[:NDARRAY_ARGS.itemsize].view(NDARRAY_ARGS)[0]
    length = int(args["type_length"])
    try:
        descr = json.loads(bytes(arguments[NDARRAY_ARGS.itemsize:NDARRAY_ARGS.itemsize + length]).decode("ascii"))
        dtype = np.dtype([tuple(x) for x in descr])["f0"]
    except (ValueError, TypeError, KeyError, IndexError) as err:
        raise BetonFormatError(f"image field has an unreadable dtype ({type(err).__name__})") from None
    if dtype != np.uint8:
        raise BetonFormatError(f"image field is {dtype}, expected uint8")
    shape = [int(s) for s in args["shape"]]
    while shape and shape[-1] == 0:
        shape.pop()
    return tuple(shape)
