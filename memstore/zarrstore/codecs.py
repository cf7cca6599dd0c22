"""Codec names accepted by the store, and the allowlist checked when a store is opened.

Names: "none", "zstd-<level>" (zarr ZstdCodec) and "blosc-<cname>-<clevel>-<shuffle>" with cname zstd or lz4 and
shuffle noshuffle, shuffle or bitshuffle (BloscCodec). A CRC-32C checksum is always appended, so a corrupt chunk
fails loudly instead of decoding to wrong memory. Codes are uint8: byte shuffle is a no-op and bitshuffle makes them
larger (see spec/compression.md). The default, zstd-1, was the smallest of the fast codecs on real PGD codes in
bench/store.py (0.295 B/coord vs 0.300 for blosc-zstd-1, 0.284 for zstd-9 at a quarter of the write speed) and
read fastest.
"""

from __future__ import annotations

from typing import Any

from zarr.abc.codec import BytesBytesCodec
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from memloss.memstore.errors import StoreError

DEFAULT_CODES_CODEC = "zstd-1"
AUX_CODEC = "zstd-3"
ALLOWED_CODECS = ("bytes", "zstd", "blosc", "crc32c")
ALLOWED_BLOSC_CNAMES = ("zstd", "lz4")
# Blosc's shuffle modes by their string names, which every zarr 3.x takes (zarr 3.4 made the BloscShuffle enum a
# deprecated shim that can no longer be iterated).
_SHUFFLES = ("noshuffle", "shuffle", "bitshuffle")


def make_codecs(name: str) -> list[BytesBytesCodec]:
    """Compressor chain (compressors + checksum) for a codec name; raises StoreError for an unknown name."""
    parts = name.split("-")
    if name == "none":
        chain: list[BytesBytesCodec] = []
    elif parts[0] == "zstd" and len(parts) == 2 and parts[1].lstrip("-").isdigit():
        chain = [ZstdCodec(level=int(parts[1]))]
    elif parts[0] == "blosc" and len(parts) == 4 and parts[1] in ALLOWED_BLOSC_CNAMES and parts[3] in _SHUFFLES:
        if not parts[2].isdigit() or not 0 <= int(parts[2]) <= 9:
            raise StoreError(f"codec {name!r}: blosc clevel must be 0..9")
        chain = [BloscCodec(cname=parts[1], clevel=int(parts[2]), shuffle=parts[3], typesize=1)]
    else:
        raise StoreError(
            f"unknown codec {name!r}; use 'none', 'zstd-<level>' or 'blosc-<zstd|lz4>-<0..9>-<noshuffle|shuffle|"
            "bitshuffle>'"
        )
    return [*chain, Crc32cCodec()]


def check_codecs(array_name: str, codecs: list[dict[str, Any]]) -> None:
    """Refuses any codec outside the allowlist (never pickle or object codecs) in an array's metadata."""
    for codec in codecs:
        cname = codec.get("name") if isinstance(codec, dict) else None
        if cname not in ALLOWED_CODECS:
            raise StoreError(
                f"array {array_name!r} uses codec {cname!r}, which memloss does not open (allowed: "
                f"{', '.join(ALLOWED_CODECS)}); the store was not written by memloss"
            )
        config = codec.get("configuration") or {}
        if cname == "blosc" and config.get("cname") not in ALLOWED_BLOSC_CNAMES:
            raise StoreError(f"array {array_name!r} uses blosc with cname {config.get('cname')!r}; allowed: zstd, lz4")
