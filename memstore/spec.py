"""What a memory store holds: the dataset it belongs to, the threat model of its perturbations and its depth K.

A store is only ever reused by a run whose `StoreSpec` is equal to the one it was created with; `StoreSpec.mismatch`
names the first field that differs so the error is one line.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from memloss.errors import MemlossError

NORMS = ("Linf", "L2")


def parse_eps(text: str | int | float | Fraction) -> Fraction:
    """Parses a radius such as "8/255", "0.5" or 8/255 into an exact positive `Fraction`.

    Floats are converted through their shortest decimal repr (8/255 as a float becomes 0.03137254901960784, not
    8/255): pass a fraction string to keep the exact value.
    """
    try:
        value = Fraction(str(text).strip()) if not isinstance(text, Fraction) else text
    except (ValueError, ZeroDivisionError):
        raise MemlossError(f"eps {text!r} is not a number; write it as a fraction such as '8/255'") from None
    if value <= 0:
        raise MemlossError(f"eps {text!r} must be > 0; write it as a fraction such as '8/255'")
    return value


def format_eps(value: Fraction) -> str:
    """The canonical string of a radius: "8/255", or "1" for integers."""
    return str(value)


def labels_sha256(labels: np.ndarray) -> str:
    """SHA-256 hex digest of the labels as little-endian int64 in dataset order (the fingerprint of a dataset split).

    labels: integer array [N]. Independent of the input integer dtype.
    """
    return hashlib.sha256(np.ascontiguousarray(np.asarray(labels), dtype="<i8").tobytes()).hexdigest()


@dataclass(frozen=True)
class ThreatModel:
    """The perturbation set: norm "Linf" or "L2" and radius eps, stored as an exact fraction string ("8/255")."""

    norm: str
    eps: str

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise MemlossError(f"norm {self.norm!r} is not supported; use one of {', '.join(NORMS)}")
        object.__setattr__(self, "eps", format_eps(parse_eps(self.eps)))

    @property
    def eps_fraction(self) -> Fraction:
        return Fraction(self.eps)

    @property
    def eps_float(self) -> float:
        return float(self.eps_fraction)

    def to_dict(self) -> dict[str, Any]:
        return {"norm": self.norm, "eps": self.eps, "eps_float": self.eps_float}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ThreatModel:
        return cls(norm=str(d["norm"]), eps=str(d["eps"]))


@dataclass(frozen=True)
class DatasetFingerprint:
    """Identifies the training set a store belongs to: `name`, size `n`, sample `shape` (C,H,W), the SHA-256 of its
    labels (see `labels_sha256`) and its `parts`: the sizes of the sets it concatenates, in sample-index order
    (default one part of n samples; a base set plus generated images is (N_base, N_generated), and then
    `labels_sha256` is `parts_labels_sha256` of the parts' digests)."""

    name: str
    n: int
    shape: tuple[int, int, int]
    labels_sha256: str
    parts: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if not self.name:
            raise MemlossError("dataset name is empty; pass the dataset's name, e.g. 'cifar10'")
        if int(self.n) < 1:
            raise MemlossError(f"dataset size n={self.n} must be >= 1")
        object.__setattr__(self, "n", int(self.n))
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise MemlossError(f"sample shape {self.shape} must be (C, H, W) with positive sizes")
        parts = tuple(int(p) for p in self.parts) or (self.n,)
        if len(parts) > 2 or min(parts) < 1 or sum(parts) != self.n:
            raise MemlossError(f"dataset parts {parts} must be one or two positive sizes summing to n={self.n}")
        object.__setattr__(self, "parts", parts)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "n": self.n, "shape": list(self.shape), "labels_sha256": self.labels_sha256,
                "parts": list(self.parts)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetFingerprint:
        """Also reads format-1 fingerprints, which have no "parts" (one part)."""
        return cls(name=str(d["name"]), n=int(d["n"]), shape=tuple(d["shape"]), labels_sha256=str(d["labels_sha256"]),
                   parts=tuple(int(p) for p in d.get("parts", [d["n"]])))


def parts_labels_sha256(digests: list[str]) -> str:
    """The labels digest of a set made of parts: SHA-256 of the parts' `labels_sha256` hex digests joined by ":"."""
    return hashlib.sha256(":".join(digests).encode()).hexdigest()


@dataclass(frozen=True)
class StoreSpec:
    """Everything a run must agree on with an existing store: dataset fingerprint, threat model and depth k >= 1."""

    fingerprint: DatasetFingerprint
    threat: ThreatModel
    k: int

    def __post_init__(self) -> None:
        if int(self.k) < 1:
            raise MemlossError(f"memory depth k={self.k} must be >= 1")
        object.__setattr__(self, "k", int(self.k))

    @property
    def sample_bytes(self) -> int:
        """Bytes of one sample's codes (C·H·W uint8)."""
        c, h, w = self.fingerprint.shape
        return c * h * w

    def fields(self) -> dict[str, Any]:
        """Flat view used to name the first mismatching field in errors."""
        fp = self.fingerprint
        return {
            "dataset": fp.name,
            "n": fp.n,
            "shape": fp.shape,
            "labels_sha256": fp.labels_sha256,
            "parts": fp.parts,
            "norm": self.threat.norm,
            "eps": self.threat.eps,
            "k": self.k,
        }

    def mismatch(self, found: StoreSpec) -> tuple[str, Any, Any] | None:
        """(field, expected, found) for the first field where `found` differs from self, or None when equal."""
        mine, theirs = self.fields(), found.fields()
        for name, value in mine.items():
            if theirs[name] != value:
                return name, value, theirs[name]
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.fingerprint.to_dict(), "threat": self.threat.to_dict(), "k": self.k}
