"""Checks shared by the config sections: the type of every value (a TOML file can hold any type) and the ranges
that make sense for numbers (finite, non-negative, seeds that every generator accepts, radii on the [0,1] scale)."""

from __future__ import annotations

import math
import types
import typing
from fractions import Fraction
from typing import Any

from memloss.errors import ConfigError

SEED_MAX = 2**32 - 1  # numpy's SeedSequence and torch generators both take it; keeps seed + 7919·epoch in int64


def _type_name(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        return "a list of numbers"
    base = args[0] if args else hint
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(base, str(base))


def _matches(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is tuple:
        return isinstance(value, tuple) and all(_matches(v, args[0]) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint)


def check_types(cls: type, values: dict[str, Any]) -> None:
    """Refuses a value whose type does not fit the field of `cls` (e.g. `epochs = 2.5` in a TOML file)."""
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key in hints and not _matches(value, hints[key]):
            shown = repr(value) if not isinstance(value, str) else f"the string {value!r}"
            raise ConfigError(f"{key} must be {_type_name(hints[key])}, got {shown}")


def finite(name: str, value: float, *, low: float | None = None, high: float | None = None,
           low_open: bool = False) -> None:
    """Refuses NaN, ±inf and values outside [low, high] (low excluded when `low_open`)."""
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ConfigError(f"{name} must be {'>' if low_open else '≥'} {low:g}, got {value:g}")
    if high is not None and value > high:
        raise ConfigError(f"{name} must be ≤ {high:g}, got {value:g}")


def check_seed(seed: int) -> None:
    if not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"seed must be in [0, {SEED_MAX}], got {seed}")


def check_radius(norm: str, eps: Fraction, text: str) -> None:
    """ε is on the [0,1] pixel scale: an L∞ radius above 1 is surely a value on the 0-255 scale."""
    if eps <= 0:
        raise ConfigError(f"eps must be > 0, got {text}; e.g. --eps 8/255")
    if norm == "Linf" and eps > 1:
        raise ConfigError(f"eps {text} is above 1, but pixels are on the [0,1] scale; did you mean {text}/255?")


def check_step(step: Fraction, eps: Fraction, steps: int, step_text: str, eps_text: str) -> None:
    """A PGD step above ε overshoots the ball on every iteration; one-step attacks (FGSM with a random start) use up
    to 2ε."""
    if step <= 0:
        raise ConfigError(f"step_size must be > 0, got {step_text}")
    limit = 2 * eps if steps == 1 else eps
    if step > limit:
        what = "2·eps for a one-step attack" if steps == 1 else f"eps ({eps_text}) for a {steps}-step attack"
        raise ConfigError(f"step_size {step_text} is larger than {what}; use e.g. --step-size 2/255 with "
                          "--eps 8/255")


def check_given(given: dict[str, Any]) -> None:
    """Values a user gives that the config would accept with a meaning they did not ask for. The config keeps
    `memory_slots_per_step = 0` as "all slots" (its default), but a given 0 reads as "no slot": it is refused."""
    if given.get("memory_slots_per_step") == 0 and given["memory_slots_per_step"] is not False:
        raise ConfigError("--memory-slots-per-step 0 would use no memory slot; leave it out to use all K slots (the "
                          "paper), or give m between 1 and K")
