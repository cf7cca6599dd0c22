"""Lazy exports for a package's `__init__.py` (PEP 562): a public name is imported from the module that defines it
on first access, so importing the package loads nothing heavy. `memloss`, `memloss.memstore` and
`memloss.trainer.data` use it: `memloss train` checks its options before torch or zarr is imported.

Standard library only: this module is imported by `import memloss` itself."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, MutableMapping

# Public name -> the module that defines it, or (module, name there) for a name exported under another name.
Exports = Mapping[str, "str | tuple[str, str]"]


def lazy_exports(package: str, exports: Exports,
                 namespace: MutableMapping[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of `package`, whose module globals are `namespace`.

    Example (in a package's __init__.py)
    -------
    >>> __getattr__, __dir__ = lazy_exports(__name__, {"fit": "memloss.trainer.training.fit"}, globals())
    ... # doctest: +SKIP
    """

    def __getattr__(name: str) -> Any:
        """Imports the module that defines `name` on first access and caches the attribute in the package."""
        target = exports.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attr = (target, name) if isinstance(target, str) else target
        value = getattr(importlib.import_module(module), attr)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
