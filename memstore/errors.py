"""DOCSTRING-NEEDED from memstore/errors.py"""

from memloss.errors import MemlossError


class StoreError(MemlossError):
    """A memory store is missing, foreign, corrupt or does not match the run."""
