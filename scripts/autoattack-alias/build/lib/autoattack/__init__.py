"""`autoattack`, the import name robustbench 1.1.1 uses, for PyPI's pyautoattack (same attack code; see
pyproject.toml beside it for what is and is not covered)."""

from pyautoattack import AutoAttack, __version__

__all__ = ["AutoAttack", "__version__"]
