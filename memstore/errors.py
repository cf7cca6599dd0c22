"""The store's own error type; the base class `MemlossError` lives in memloss.errors, below every package."""

from memloss.errors import MemlossError


class StoreError(MemlossError):
    """A memory store is missing, foreign, corrupt or does not match the run."""
