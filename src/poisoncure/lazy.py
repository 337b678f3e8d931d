"""Packages whose names load on first use (PEP 562), so that importing a light module does not load torch."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any


def module_getattr(package: str, submodules: Iterable[str], fallback: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: its ``submodules`` by name, any other public name from the submodule
    ``fallback`` (so ``package.name`` reads ``package.fallback.name``), each imported on first use."""
    submodules = frozenset(submodules)

    def __getattr__(name: str) -> Any:
        if name in submodules:
            return importlib.import_module(f".{name}", package)
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return getattr(importlib.import_module(f".{fallback}", package), name)
        except AttributeError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    return __getattr__
