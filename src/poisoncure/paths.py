"""Where things live: the project root, the cache and the data root.

Every location can be overridden by an environment variable, so the library works the same from a
clone of the project, from an installed package, in CI and on a laptop.

==========================  ===============================================================
``POISONCURE_CACHE``        cache root (models, decoded data, gradients); default ``<project>/.cache``
``POISONCURE_DATA_ROOT``    data root holding ``cifar-10-batches-py``; default ``<project>/data``
``POISONCURE_CIFAR10``      explicit CIFAR-10 location (a ``cifar-10-batches-py`` folder or the JPEG archive)
``POISONCURE_SHARED``       the project's ``shared/`` folder; default ``<project>/../shared``
==========================  ===============================================================
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path | None:
    """The clone this package was installed from (editable install), or ``None``.

    Recognised by ``pyproject.toml`` and ``_toc.yml`` two levels above the package (``src/poisoncure``).
    """
    candidate = _PACKAGE_DIR.parents[1]
    if (candidate / "pyproject.toml").is_file() and (candidate / "_toc.yml").is_file():
        return candidate
    return None


def _default_under_project(name: str, fallback: str) -> Path:
    root = project_root()
    return root / name if root is not None else Path.home() / ".cache" / "poisoncure" / fallback


def cache_root() -> Path:
    """Root of the artifact cache (created on demand)."""
    env = os.environ.get("POISONCURE_CACHE")
    path = Path(env).expanduser() if env else _default_under_project(".cache", "cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_root() -> Path:
    """Folder where the standard ``cifar-10-batches-py`` is looked for and downloaded to."""
    env = os.environ.get("POISONCURE_DATA_ROOT")
    return Path(env).expanduser() if env else _default_under_project("data", "data")


def shared_dir() -> Path | None:
    """The project's ``shared/`` folder (papers, offline data), if it can be found."""
    env = os.environ.get("POISONCURE_SHARED")
    if env:
        return Path(env).expanduser()
    root = project_root()
    if root is not None and (root.parent / "shared").is_dir():
        return root.parent / "shared"
    return None


def results_root() -> Path:
    """Where the runner's result files live: ``<project>/results`` (or the working directory's ``results`` outside a
    clone)."""
    env = os.environ.get("POISONCURE_RESULTS")
    if env:
        return Path(env).expanduser()
    root = project_root()
    return (root if root is not None else Path.cwd()) / "results"
