"""Artifact cache keyed by a hash of the full config and of the code that computes it.

Heavy artifacts (decoded data, trained models, input gradients) are stored under
``<cache root>/<kind>/<key>/`` where ``key`` is the SHA-256 of the canonical JSON of
``{kind, config, code version}``. Each entry holds its payload files and a ``manifest.json`` that
records the config, the SHA-256 of every payload file and the provenance of the run that made it.

**The code version** is the package version plus a fingerprint of the package's computing source
(:func:`code_fingerprint`): the SHA-256 of every ``.py`` file under ``src/poisoncure`` except the presentation
modules of :data:`PRESENTATION` (book building, the browser check, plots, parameter rules, the paper's typed
numbers, the verdict counted from result files), which compute no artifact. We fingerprint the whole computing
package rather than each artifact's own modules because the import graph between them (a defense calling a
training helper calling a model) is easy to get wrong by hand and a missed edge would let a changed computation
reuse a stale artifact; the price is that any change to a computing module recomputes every artifact once. A
test checks that no computing module imports a presentation module, so the exclusion cannot hide a dependency.

Guarantees:

* **atomic** — an entry is built in a temporary folder and renamed into place only when complete, so
  an interrupted run never leaves a half-written entry behind;
* **verified** — on every read the manifest must parse, name the same key, config and version, and
  every payload file must match its recorded hash; a corrupt or stale entry is rebuilt with a warning,
  never used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Generic, TypeVar

from . import __version__, paths, provenance

PACKAGE_DIR = Path(__file__).resolve().parent
#: modules that compute no cached artifact (presentation, book tooling, typed paper numbers): left out of the
#: code fingerprint so that editing a figure or a page does not retrain the models
PRESENTATION = ("experiments/paper.py", "experiments/paper_tables.py", "experiments/verdict.py")
#: packages that are presentation as a whole (every module in them): the book tooling (:mod:`poisoncure.book`)
PRESENTATION_PACKAGES = ("book",)


def is_presentation(rel: str) -> bool:
    """Whether the package file ``rel`` (a path relative to the package, ``book/pages/hygiene_page.py``) is
    presentation."""
    return rel in PRESENTATION or rel.split("/")[0] in PRESENTATION_PACKAGES

T = TypeVar("T")
MANIFEST = "manifest.json"


class CacheWarning(UserWarning):
    """A cache entry was unusable (corrupt, stale or unreadable) and is being rebuilt."""


def canonical(config: Any) -> Any:
    """Turn a config (dicts, lists, tuples, dataclasses, paths, numpy scalars) into plain JSON values."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return canonical(dataclasses.asdict(config))
    if isinstance(config, dict):
        return {str(k): canonical(v) for k, v in sorted(config.items(), key=lambda kv: str(kv[0]))}
    if isinstance(config, list | tuple):
        return [canonical(v) for v in config]
    if isinstance(config, Path):
        return str(config)
    if hasattr(config, "item") and callable(config.item):  # numpy / torch scalars
        return config.item()
    if config is None or isinstance(config, bool | int | float | str):
        return config
    raise TypeError(f"config value {config!r} of type {type(config).__name__} is not JSON-serialisable")


def code_fingerprint(package_dir: Path = PACKAGE_DIR) -> str:
    """SHA-256 (hex) of the package's computing source: every ``.py`` file under ``package_dir`` but
    :data:`PRESENTATION` and :data:`PRESENTATION_PACKAGES`, by relative path and content, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir).as_posix()
        if is_presentation(rel) or "__pycache__" in rel:
            continue
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@lru_cache(maxsize=1)
def code_version() -> str:
    """``<package version>+<first 16 hex digits of code_fingerprint()>``: what cache keys hash as the version."""
    return f"{__version__}+{code_fingerprint()[:16]}"


def config_hash(kind: str, config: Any, version: str | None = None) -> str:
    """SHA-256 (hex) of the canonical JSON of ``{kind, config, version}`` (``version`` defaults to
    :func:`code_version`)."""
    version = code_version() if version is None else version
    blob = json.dumps({"kind": kind, "config": canonical(config), "version": version},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def file_digest(path: Path, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file (``algorithm`` is any :mod:`hashlib` name), read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    return file_digest(path, "sha256")


#: open :func:`record_artifacts` lists (innermost last); every entry read or built is appended to each
_RECORDERS: list[list[dict[str, Any]]] = []


@contextmanager
def record_artifacts() -> Iterator[list[dict[str, Any]]]:
    """``with record_artifacts() as used: ...``: ``used`` lists every cache entry read or built inside the block,
    once each, with its own provenance (``kind``, ``key``, ``from_cache``, and the ``commit``, ``device``,
    ``created`` and build ``seconds`` of the run that built it). A result file keeps this list, so a number computed
    from an artifact made at another commit says so."""
    used: list[dict[str, Any]] = []
    _RECORDERS.append(used)
    try:
        yield used
    finally:
        _RECORDERS.remove(used)


def _note_use(kind: str, entry: Path, manifest: dict[str, Any], hit: bool) -> None:
    if not _RECORDERS:
        return
    built = manifest.get("built") or {}
    row = {"kind": kind, "key": entry.name, "from_cache": hit,
           **{k: built.get(k) for k in ("commit", "device", "created", "seconds")}}
    for used in _RECORDERS:
        if not any(u["kind"] == kind and u["key"] == entry.name for u in used):
            used.append(row)


@dataclass
class CacheResult(Generic[T]):
    """What :meth:`Cache.get_or_build` returns."""

    value: T
    manifest: dict[str, Any]  #: config, hashes, and the ``info`` the builder returned (provenance ...)
    path: Path  #: the entry's folder
    hit: bool  #: ``True`` when read from the cache, ``False`` when built now

    @property
    def info(self) -> dict[str, Any]:
        return self.manifest.get("info", {})


class Cache:
    """A folder of verified, atomically written artifacts. ``root`` defaults to :func:`paths.cache_root`,
    ``version`` to :func:`code_version` (a code change makes every older entry stale)."""

    def __init__(self, root: str | Path | None = None, version: str | None = None):
        self.root = Path(root) if root is not None else paths.cache_root()
        self.version = code_version() if version is None else version

    def entry_path(self, kind: str, config: Any) -> Path:
        if not kind or not kind.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"kind must be a non-empty name of letters, digits, '-' or '_', got {kind!r}")
        return self.root / kind / config_hash(kind, config, self.version)[:24]

    def _verify(self, entry: Path, kind: str, config: Any) -> dict[str, Any]:
        """Return the manifest if the entry is complete and matches; raise ``ValueError`` otherwise."""
        try:
            manifest = json.loads((entry / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"unreadable manifest ({err})") from err
        expected = {"kind": kind, "key": config_hash(kind, config, self.version),
                    "config": canonical(config), "version": self.version}
        for field, value in expected.items():
            if manifest.get(field) != value:
                raise ValueError(f"stale entry: manifest {field} differs")
        files = manifest.get("files")
        if not isinstance(files, dict) or not files:
            raise ValueError("manifest lists no payload files")
        for name, digest in files.items():
            path = entry / name
            if not path.is_file():
                raise ValueError(f"payload file {name} is missing")
            if file_sha256(path) != digest:
                raise ValueError(f"payload file {name} does not match its recorded SHA-256")
        return manifest

    def lookup(self, kind: str, config: Any) -> dict[str, Any] | None:
        """The manifest of a valid entry, or ``None`` (absent, corrupt or stale)."""
        entry = self.entry_path(kind, config)
        if not entry.exists():
            return None
        try:
            return self._verify(entry, kind, config)
        except ValueError:
            return None

    def get_or_build(self, kind: str, config: Any, build: Callable[[Path], dict[str, Any] | None],
                     load: Callable[[Path], T]) -> CacheResult[T]:
        """Load the entry for ``(kind, config)``, building it first when absent, corrupt or stale.

        ``build(folder)`` writes the payload files into ``folder`` (a fresh temporary folder) and may return
        a JSON-serialisable ``info`` dict (provenance, metrics) kept in the manifest. ``load(folder)`` reads the
        payload back. If loading a verified entry still fails, the entry is rebuilt once.
        """
        entry = self.entry_path(kind, config)
        if entry.exists():
            try:
                manifest = self._verify(entry, kind, config)
                result = CacheResult(load(entry), manifest, entry, hit=True)
                _note_use(kind, entry, manifest, hit=True)
                return result
            except Exception as err:  # corrupt, stale or unloadable: never trusted
                warnings.warn(f"cache entry {entry} is unusable ({err}); rebuilding it", CacheWarning,
                              stacklevel=2)
        manifest = self._build(entry, kind, config, build)
        result = CacheResult(load(entry), manifest, entry, hit=False)
        _note_use(kind, entry, manifest, hit=False)
        return result

    def _build(self, entry: Path, kind: str, config: Any,
               build: Callable[[Path], dict[str, Any] | None]) -> dict[str, Any]:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{entry.name}-", dir=entry.parent))
        try:
            start = time.perf_counter()
            info = build(tmp) or {}
            seconds = time.perf_counter() - start
            built = provenance.collect()
            files = {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            if not files:
                raise RuntimeError(f"the builder for {kind!r} wrote no payload file")
            manifest = {"kind": kind, "key": config_hash(kind, config, self.version),
                        "config": canonical(config), "version": self.version, "files": files,
                        "info": canonical(info),
                        "built": {**{k: built[k] for k in ("commit", "device", "created")},
                                  "seconds": round(seconds, 2)}}
            with open(tmp / MANIFEST, "w") as fh:
                json.dump(manifest, fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            if entry.exists():  # the corrupt/stale entry we are replacing
                shutil.rmtree(entry, ignore_errors=True)
            os.replace(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return manifest
