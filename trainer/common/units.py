"""Parsing of human-written sizes."""

from __future__ import annotations

import re
from fractions import Fraction

from memloss.errors import ConfigError

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_bytes(text: str) -> int:
    """'2GB' → 2·10⁹, '512MiB' → 512·2²⁰, '1000000' → 10⁶ bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _UNITS:
        raise ConfigError(f"memory budget {text!r} is not a size; write e.g. 2GB, 512MB or 4GiB")
    return int(float(match.group(1)) * _UNITS[unit])


def parse_fraction(text: str | float, what: str) -> Fraction:
    """Parses '8/255', '0.03137' or a float into an exact Fraction; raises ConfigError naming `what`."""
    try:
        value = Fraction(str(text).strip())
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"{what} must be a number or a fraction like 8/255, got {text!r}") from None
    return value
