"""Conversion of a dataset split into an FFCV `.beton` file, done once and then reused after verification.

Fields: `image` uint8 [C, H, W] raw, `label` int, `index` int (the sample's position in the split: FFCV does not
report which samples a batch holds in random order).

Why `NDArrayField` and not `RGBImageField(write_mode='raw')`: both are lossless, but the NDArray field stores CHW
bytes as they are, so it takes 1-channel images (digits) and any resolution, decodes with a plain memcpy and yields
contiguous [B, C, H, W] tensors; the RGB field only takes 3-channel HWC images and yields a non-contiguous tensor
that needs `ToTorchImage`. JPEG would be lossy, which breaks the exact pixel round trip the memory relies on.

Cache layout: `<data_dir>/ffcv/<name>-<split>-n<n|all>-r<H>.beton` and a JSON sidecar (`.json`) recording the
sample count, shape, classes, the sha256 of the labels and the file size. The `.beton` is written under a temporary
name and renamed into place, then the sidecar is written the same way, so a half-written file is never taken for
a cache. A cache whose sidecar is missing or disagrees with the file (size, count, shape, fields, labels, index
column) is rebuilt from the raw data.
"""

import errno
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The memory store's fingerprint of a split: sha256 of the labels as little-endian int64.
from memloss.memstore.spec import labels_sha256 as labels_digest
from memloss.trainer.common.files import atomic_write_bytes, free_bytes, remove_stale_temporaries
from memloss.trainer.data.beton_format import BetonFormatError, read_beton
from memloss.trainer.data.beton_writer import write_bounded
from memloss.trainer.data.registry import SYNTHETIC_DEFAULT_N, DatasetError, check_split, dataset_info
from memloss.trainer.data.sources import Source, default_data_dir, load_source

CACHE_FORMAT = 1
FIELDS = ("image", "label", "index")
# Bytes a .beton needs besides the pixels: per sample its metadata and allocation rows (and page slack); per file
# the header and a last partly filled page (ffcv pages are 8 MiB) — an upper estimate for the free-space check.
BETON_SAMPLE_OVERHEAD = 64
BETON_FIXED_OVERHEAD = 16 * 2**20


@dataclass(frozen=True)
class PreparedSplit:
    """A verified `.beton` of one split: `n` samples of `shape` (C, H, W) uint8, labels in [0, num_classes);
    `labels_sha256` is `labels_digest` of the int64 labels in index order."""

    beton: Path
    n: int
    shape: tuple[int, int, int]
    num_classes: int
    labels_sha256: str


def cache_paths(name: str, split: str, data_dir: Path, n: int | None, resolution: int | None) -> tuple[Path, Path]:
    """(beton, sidecar) paths of a split's cache; `n` None = the whole split."""
    info = dataset_info(name, resolution)
    if name == "synthetic" and n is None:
        n = SYNTHETIC_DEFAULT_N
    stem = f"{name}-{check_split(split)}-n{'all' if n is None else n}-r{info.shape[1]}"
    folder = Path(data_dir) / "ffcv"
    return folder / f"{stem}.beton", folder / f"{stem}.json"


def prepare(name: str, split: str, data_dir: Path | str | None = None, *, n: int | None = None,
            resolution: int | None = None, download: bool = True, num_workers: int | None = None) -> PreparedSplit:
    """The verified `.beton` of `split` of dataset `name` (first `n` samples; None = all, synthetic: 1024), built
    from the raw data on first use or when the cache fails verification. `num_workers`: writer processes."""
    data_dir = default_data_dir() if data_dir is None else Path(data_dir)
    info = dataset_info(name, resolution)
    beton, sidecar = cache_paths(name, split, data_dir, n, resolution)
    remove_stale_temporaries(beton.parent)  # what a killed conversion left, whichever set it was converting
    request = {"format": CACHE_FORMAT, "name": name, "split": split, "shape": list(info.shape),
               "num_classes": info.num_classes}
    cached = read_sidecar(sidecar)
    if cached is not None and _matches(request, cached) and verify_beton(beton, cached) is None:
        return _prepared(beton, cached)
    source = load_source(name, split, data_dir, n=n, resolution=resolution, download=download)
    record = {**request, "n": len(source), "labels_sha256": labels_digest(source.labels)}
    record["beton_bytes"] = build_beton(source, beton, record, num_workers)
    atomic_write_bytes(sidecar, json.dumps(record, indent=1).encode())
    return _prepared(beton, record)


def _prepared(beton: Path, record: dict) -> PreparedSplit:
    return PreparedSplit(beton, int(record["n"]), tuple(record["shape"]), int(record["num_classes"]),
                         record["labels_sha256"])


def _matches(request: dict, cached: dict) -> bool:
    return all(cached.get(key) == value for key, value in request.items())


def read_sidecar(sidecar: Path) -> dict | None:
    """The sidecar's record, or None if it is missing or unreadable."""
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def build_beton(source: Source, beton: Path, record: dict, num_workers: int | None) -> int:
    """Writes `source` to a temporary file, verifies it, renames it to `beton`; returns its size in bytes. The
    temporary files of a conversion that was killed are removed first; a disk without room for the file is refused
    before anything is written (and a disk that fills up during the conversion is named in one line)."""
    beton.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(beton.parent)
    need = len(source) * (int(np.prod(source.shape)) + BETON_SAMPLE_OVERHEAD) + BETON_FIXED_OVERHEAD
    free, _ = free_bytes(beton.parent)
    if need > free:
        raise DatasetError(_no_room(record, beton, need, free))
    tmp = beton.with_name(f".{beton.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        try:
            write_beton(source, tmp, num_workers,
                        label=f"converting {record['name']} {record['split']} to .beton (once)")
        except (OSError, DatasetError) as err:
            if getattr(err, "errno", None) != errno.ENOSPC and "No space left on device" not in str(err):
                raise
            tmp.unlink(missing_ok=True)
            raise DatasetError(_no_room(record, beton, need, free_bytes(beton.parent)[0])) from None
        checked = {**record, "beton_bytes": tmp.stat().st_size}
        problem = verify_beton(tmp, checked)
        if problem is not None:
            raise RuntimeError(f"freshly written {tmp} failed verification: {problem}")
        os.replace(tmp, beton)
    finally:
        tmp.unlink(missing_ok=True)
    return checked["beton_bytes"]


def _no_room(record: dict, beton: Path, need: int, free: int) -> str:
    return (f"no room to convert {record['name']} {record['split']} to {beton}: about {need / 2**20:,.0f} MiB needed, "
            f"{free / 2**20:,.0f} MiB free in {beton.parent}; free space, or put the data elsewhere with --data-dir "
            "(or $MEMLOSS_DATA)")


class _Samples:
    """Indexable view of a Source for the .beton writer: item i = (image uint8 [C,H,W], label, i). Each writer
    process keeps the last generated chunk, since the writer hands out consecutive indices."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.labels = source.labels
        self._chunk_start = -1
        self._chunk: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int, int]:
        start = (i // self.source.chunk) * self.source.chunk
        if start != self._chunk_start:
            self._chunk = self.source.images(start, min(start + self.source.chunk, len(self)))
            self._chunk_start = start
        return self._chunk[i - start], int(self.labels[i]), int(i)


def write_beton(source: Source, path: Path, num_workers: int | None = None, label: str = "writing .beton") -> None:
    """Writes every sample of `source` to `path` (fields image/label/index) in FFCV's format, `source.chunk`
    samples per work item, without ffcv (beton_writer.py); `label` describes the progress bar."""
    chunks = -(-len(source) // source.chunk)
    workers = max(1, min(num_workers or os.cpu_count() or 1, 8, chunks))
    write_bounded(_Samples(source), source.shape, path, chunk=source.chunk, workers=workers, label=label)


def verify_beton(beton: Path, record: dict) -> str | None:
    """None if `beton` holds what `record` (a sidecar) describes, else the reason it does not."""
    try:
        size = beton.stat().st_size
    except OSError:
        return "missing"
    if size != record.get("beton_bytes"):
        return f"size {size} B, expected {record.get('beton_bytes')} B"
    try:
        return _check_contents(beton, record)
    except Exception as err:  # a corrupt header can fail in many ways (numpy, unicode, overflow)
        return f"unreadable ({type(err).__name__})"


def _check_contents(beton: Path, record: dict) -> str | None:
    """Compares the header, field types and the label/index columns (kept in the metadata table) with `record`,
    and checks that every image lies inside the file (read with numpy: beton_format.py, no ffcv needed)."""
    try:
        found = read_beton(beton)
    except BetonFormatError as err:
        return str(err)
    if list(found.shape) != record["shape"]:
        return f"image shape {found.shape}, expected {tuple(record['shape'])}"
    if found.n != record["n"]:
        return f"{found.n} samples, expected {record['n']}"
    if not np.array_equal(found.index, np.arange(record["n"])):
        return "index column is not 0..n-1"
    if labels_digest(found.labels) != record["labels_sha256"]:
        return "labels differ"
    if found.n and int(found.metadata["f0"].max()) + int(np.prod(found.shape)) > beton.stat().st_size:
        return "an image pointer lies beyond the end of the file"
    return None
