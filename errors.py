"""Errors that memloss reports to users as one line (the CLI prints them and exits with code 2)."""

from __future__ import annotations


class MemlossError(Exception):
    """Base of every error caused by bad input, a bad file or a bad store; the message is one line that names the
    problem and the fix. Anything else escaping to the CLI is a bug and keeps its traceback."""


class ConfigError(MemlossError):
    """An unknown option or an impossible value in a training configuration."""


class PeerFailed(MemlossError):
    """Under torchrun: rank 0 failed with a `MemlossError` (and printed it); raised on the other ranks, which then end
    quietly with the same exit code instead of waiting for rank 0 in a collective."""
