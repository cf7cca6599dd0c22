"""Image folders in torchvision's `ImageFolder` layout (one subfolder per class, images inside) as a `Source`
(sources.py): uint8 [N, C, H, W] images and int64 labels, decoded a chunk at a time.

- The tree is read by torchvision: `ImageFolder`'s scan (classes = sorted subfolder names, labels their positions,
  files with its image extensions) for the training split; a test tree is scanned with the training split's
  `class_to_idx` (`make_dataset`), so a label means the same class in both; a test class that training never saw
  is refused.
- Images are decoded with torchvision's loader (`default_loader`: PIL, converted to RGB) for colour sets; a set
  whose first training image is grayscale (PIL mode 1, L or LA) is a 1-channel set, decoded as PIL mode L, and a
  colour image in it is refused rather than silently made gray. 16-bit and float images are refused (pixels are
  uint8 0..255 here).
- Every image must have the size of the first one (H×W): nothing is resized, since ε is a distance in pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from memloss.trainer.data.npz import GeneratedDataError

GRAY_MODES = ("1", "L", "LA")
DEEP_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
# About 4 MiB of pixels per chunk: the unit of decoding and of FFCV's writer work.
_CHUNK_BYTES = 4 << 20
# Names of split subfolders of a dataset root (`root/train`, `root/test` or `root/val`).
SPLIT_DIRS = ("train", "test", "val")


class FolderDataError(GeneratedDataError):
    """An image folder that cannot be used: no class subfolders, no images, unreadable or mismatched images."""


def _subdirs(root: Path) -> list[str]:
    try:
        return sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    except OSError as err:
        raise FolderDataError(f"cannot read the folder {root} ({err.strerror})") from None


def split_roots(root: Path) -> tuple[Path, Path | None]:
    """(training tree, test tree or None) of a dataset folder: `root/train` with `root/test` (else `root/val`) when
    root holds only such split folders, else root itself is the training tree (classes directly inside)."""
    subs = _subdirs(root)
    if "train" in subs and set(subs) <= set(SPLIT_DIRS):
        test = next((root / name for name in ("test", "val") if name in subs), None)
        return root / "train", test
    return root, None


def scan(root: Path, class_to_idx: dict[str, int] | None = None) -> tuple[list[str], list[tuple[str, int]]]:
    """(class names in label order, [(image path, label)] sorted by class then name) of the tree `root`, by
    torchvision's ImageFolder (training tree) or its make_dataset with the training split's classes (test tree)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, ImageFolder, make_dataset

    subs = _subdirs(root)
    if not subs:
        raise FolderDataError(f"{root} has no class subfolders; an image folder needs one subfolder per class "
                              f"with the images inside (torchvision's ImageFolder layout)")
    if class_to_idx is not None:
        unknown = [name for name in subs if name not in class_to_idx]
        if unknown:
            raise FolderDataError(f"{root}: class folder(s) {', '.join(unknown[:3])} are not classes of the training "
                                  f"data ({', '.join(list(class_to_idx)[:5])}...); use the same class folder names")
        samples = make_dataset(str(root), {c: class_to_idx[c] for c in subs}, IMG_EXTENSIONS, allow_empty=True)
        classes = list(class_to_idx)
    else:
        try:  # torchvision refuses a class folder without images
            folder = ImageFolder(str(root))
        except FileNotFoundError as err:
            raise FolderDataError(f"{root}: {' '.join(str(err).split())}; remove the empty class folders") from None
        classes, samples = folder.classes, folder.samples
    if not samples:
        raise FolderDataError(f"{root} holds no images ({', '.join(IMG_EXTENSIONS)}) in its class subfolders")
    return classes, samples


def _open_error(path: str, err: Exception) -> FolderDataError:
    return FolderDataError(f"{path} is not a readable image ({type(err).__name__}: {str(err)[:80]}); it may be "
                           "truncated: replace or remove it")


def first_image_layout(path: str) -> tuple[int, int, int]:
    """(C, H, W) of the set whose first image is `path`: C = 1 for a grayscale image, else 3."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            mode, (w, h) = img.mode, img.size
    except (OSError, ValueError) as err:
        raise _open_error(path, err) from None
    if mode in DEEP_MODES:
        raise FolderDataError(f"{path} has {mode} pixels (16-bit or float); convert the images to 8 bits per channel")
    return (1 if mode in GRAY_MODES else 3), h, w


def read_image(path: str, channels: int) -> np.ndarray:
    """uint8 [H, W, C] of one image: torchvision's default loader (RGB) for C = 3, PIL mode L for C = 1."""
    from PIL import Image
    from torchvision.datasets.folder import default_loader

    try:
        if channels == 3:
            return np.asarray(default_loader(path), dtype=np.uint8)
        with Image.open(path) as img:
            if img.mode not in GRAY_MODES:
                raise FolderDataError(f"{path} is a {img.mode} image in a grayscale set (its first image is "
                                      f"grayscale); convert the images to one kind")
            return np.asarray(img.convert("L"), dtype=np.uint8)[:, :, None]
    except (OSError, ValueError, SyntaxError) as err:  # PIL: UnidentifiedImageError (OSError), truncated data
        raise _open_error(path, err) from None


class FolderSource:
    """The images `samples` [(path, label)] of a tree as uint8 [m, C, H, W] of `shape` (C, H, W); a picklable
    `Source` (FFCV's writer forks processes that decode their own chunks)."""

    def __init__(self, root: Path, samples: list[tuple[str, int]], shape: tuple[int, int, int]) -> None:
        self.root = root
        self.paths = [path for path, _ in samples]
        self.labels = np.asarray([label for _, label in samples], dtype=np.int64)
        self.shape = shape
        self.chunk = max(1, _CHUNK_BYTES // int(np.prod(shape)))

    def __len__(self) -> int:
        return len(self.paths)

    def images(self, start: int, stop: int) -> np.ndarray:
        """uint8 [stop − start, C, H, W]; an image of another size or kind is a one-line FolderDataError."""
        c, h, w = self.shape
        out = np.empty((stop - start, h, w, c), dtype=np.uint8)
        for i, path in enumerate(self.paths[start:stop]):
            pixels = read_image(path, c)
            if pixels.shape != (h, w, c):
                raise FolderDataError(f"{path} is {pixels.shape[0]}×{pixels.shape[1]}, the other images are {h}×{w}; "
                                      f"resize the images to one size first")
            out[i] = pixels
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))

    def subset(self, rows: np.ndarray) -> FolderSource:
        """The samples at sorted `rows` (a held-out split)."""
        picked = [(self.paths[r], int(self.labels[r])) for r in rows]
        return FolderSource(self.root, picked, self.shape)

    def identity(self) -> list[list]:
        """[relative path, size, mtime_ns] of every image: a changed, added or removed image changes it."""
        out = []
        for path in self.paths:
            stat = os.stat(path)
            out.append([os.path.relpath(path, self.root), stat.st_size, stat.st_mtime_ns])
        return out
