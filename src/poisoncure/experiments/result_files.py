"""Result files: one JSON file per experiment, typed, versioned, checked and atomically written.

``results/<profile>/<grid>/<name>.json`` holds one :class:`.report.Result`: the experiment (grid, name, key, profile,
parameters), its :class:`.report.Report` (every number the chapters read, under the schema of :mod:`.report`,
version :data:`.report.FORMAT`), its provenance (commit, device, library versions, seed, wall time of every stage,
the cached artifacts it used) and a SHA-256 of its content. :func:`write_result` writes it atomically (temporary
file, then rename); :func:`read_result` accepts a file only when it parses, has this library's format, names the
same experiment key and its checksum matches: a corrupt, partial or stale file counts as missing (the next run
redoes that experiment) and :func:`load_results` never shows it. Files of format 1 are migrated by
:func:`migrate` (``python -m poisoncure.experiments --migrate``): the same numbers under the new schema, the
migration stamped in their provenance.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..cache import canonical
from ..paths import results_root
from .plans import Experiment, experiment_key, plan
from .report import FORMAT, Result, from_measurements, short_commit

_FIELDS = ("format", "grid", "name", "key", "profile", "params", "report", "provenance", "sha256")
_FIELDS_V1 = ("format", "grid", "name", "key", "profile", "params", "results", "provenance", "sha256")


class ResultWarning(UserWarning):
    """A result file was unusable (corrupt, partial, stale) and is treated as missing."""


def _checksum(body: dict[str, Any], fields: tuple[str, ...] = _FIELDS) -> str:
    body = {k: body[k] for k in fields if k != "sha256"}
    return hashlib.sha256(json.dumps(canonical(body), sort_keys=True).encode()).hexdigest()


def write_result(path: Path, result: Result) -> Result:
    """Write ``result`` with its checksum to ``path`` atomically (a reader sees the old file or the new one); returns
    it with the checksum."""
    body = result.to_json()
    body["sha256"] = _checksum(body)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(canonical(body), fh, indent=1, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dataclasses.replace(result, sha256=body["sha256"])


def _problem(body: Any, exp: Experiment | None) -> str | None:
    """Why ``body`` (a parsed file) is not a valid result (of ``exp`` when given), or None."""
    if not isinstance(body, dict) or "format" not in body:
        return "fields missing"
    if body["format"] == 1:
        return "format 1 (run python -m poisoncure.experiments --migrate to convert it to this library's schema)"
    if body["format"] != FORMAT:
        return f"format {body['format']} (this library reads {FORMAT})"
    if any(k not in body for k in _FIELDS):
        return "fields missing"
    if body["sha256"] != _checksum(body):
        return "checksum mismatch (edited or damaged)"
    if exp is not None and (body["key"] != exp.key or body["grid"] != exp.grid):
        return "made with other parameters (stale)"
    return None


def read_result(path: Path, exp: Experiment | None = None) -> Result | None:
    """The result in ``path`` if it is complete and intact (and belongs to ``exp`` when given), else ``None``
    with a :class:`ResultWarning` saying why (a missing file is ``None`` without a warning)."""
    if not path.is_file():
        return None
    try:
        body = json.loads(path.read_text())
        problem = _problem(body, exp)
        result = None if problem else Result.from_json(body)
    except (OSError, ValueError, TypeError, KeyError) as err:
        problem = f"unreadable ({err.__class__.__name__}: {err})"
    if problem:
        warnings.warn(f"result {path} ignored: {problem}; it will be recomputed", ResultWarning, stacklevel=2)
        return None
    return result


def load_results(profile: str, grid: str, root: Path | None = None) -> list[Result]:
    """Every valid result of ``profile``'s ``grid`` found under ``results/`` (for the chapters), sorted by name.

    Files that fail :func:`read_result`, or whose key is not the current plan's, are left out with a warning."""
    folder = (root or results_root()) / profile / grid
    if not folder.is_dir():
        return []
    try:
        planned = {e.name: e for e in plan(profile, [grid])}
    except ValueError:
        planned = {}
    out = []
    for path in sorted(folder.glob("*.json")):
        exp = planned.get(path.stem)
        result = read_result(path, exp)
        if result is not None and exp is None:
            warnings.warn(f"result {path} is not in profile {profile!r}'s plan; ignored", ResultWarning, stacklevel=2)
            continue
        if result is not None:
            out.append(result)
    return out


def _values(x: Any) -> Iterator[Any]:
    """Every number, string and flag inside ``x`` (NaN as the string 'nan'; None, and 0, which a report may leave
    implicit, such as the undefended model's 0 samples removed, skipped): what a migration must keep."""
    if isinstance(x, dict):
        for v in x.values():
            yield from _values(v)
    elif isinstance(x, list):
        for v in x:
            yield from _values(v)
    elif isinstance(x, (bool, str)):
        yield type(x).__name__, x
    elif isinstance(x, (int, float)) and x != 0:
        yield "nan" if x != x else round(float(x), 9)


def live_result(grid: str, params: dict[str, Any], measured: dict[str, Any], stages: dict[str, float], device,
                profile: str = "live") -> Result:
    """A measurement made in a chapter's build (a grid's run function called there) as a :class:`Result`, with the
    provenance of this process, so the chapter's tables read it exactly like a committed file."""
    from .. import provenance

    return Result(grid, "live", experiment_key(grid, params), profile, params, from_measurements(grid, measured),
                  provenance.collect(device, stages=stages, seed=(params.get("recipe") or {}).get("seed")))


def migrate(root: Path | None = None, commit: str | None = None) -> list[Path]:
    """Convert every intact format-1 result file under ``root`` to this schema, in place: the report is built from
    its ``results`` by the grid's own builder (:func:`.report.from_measurements`, the same one a run uses), its key
    recomputed for this format from its own parameters (a file stale under format 1 stays stale), its provenance kept
    and stamped ``migrated`` (from format 1, at ``commit``, when). Returns the files converted; damaged files are left
    as they are, with a :class:`ResultWarning`."""
    from ..provenance import git_commit

    stamp = {"from_format": 1, "commit": commit or git_commit(),
             "created": datetime.now(UTC).isoformat(timespec="seconds")}
    changed = []
    for path in sorted((root or results_root()).glob("*/*/*.json")):
        body = json.loads(path.read_text())
        if not isinstance(body, dict) or body.get("format") != 1:
            continue
        if any(k not in body for k in _FIELDS_V1) or body["sha256"] != _checksum(body, _FIELDS_V1):
            warnings.warn(f"result {path} not migrated: damaged format-1 file", ResultWarning, stacklevel=2)
            continue
        fresh = body["key"] == experiment_key(body["grid"], body["params"], fmt=1)
        key = experiment_key(body["grid"], body["params"]) if fresh else body["key"]
        report = from_measurements(body["grid"], body["results"])
        lost = Counter(_values(body["results"])) - Counter(_values(report.to_dict()))
        if lost:
            raise ValueError(f"migrating {path} would lose values {sorted(lost.elements(), key=repr)[:5]}; "
                             "the grid's report builder must keep every number its measurements hold")
        write_result(path, Result(body["grid"], body["name"], key, body["profile"], body["params"], report,
                                  {**body["provenance"], "migrated": stamp}))
        changed.append(path)
    return changed


def provenance_text(records: list[Result]) -> str:
    """One sentence on where a set of result files ran: devices, commits (7 characters) and total wall time."""
    if not records:
        return "none run yet"
    devices = ", ".join(sorted({r.provenance["device"] for r in records}))
    commits = sorted({short_commit(r.provenance["commit"]) for r in records})
    minutes = sum(r.provenance["wall_seconds"] for r in records) / 60
    return (f"run on {devices} at commit{'s' if len(commits) > 1 else ''} {', '.join(commits)}, {minutes:.0f} minutes "
            f"of wall time in all "
            f"(each file holds its own stage times){artifact_text(records)}")


#: a train stage shorter than this means the record's model was read from the cache, not trained by its run (the
#: fastest real training in the committed files, the gpu profile's on an H200, took 5.4 s)
CACHED_TRAIN_SECONDS = 5.0
LEGACY_TRAINED = "trained in this run"  #: ``provenance.legacy_artifacts`` of a record whose run trained its model
LEGACY_CACHED = "model read from an older cache entry (commit not recorded)"  #: ... whose run read it from the cache


def mark_legacy_provenance(record: Result) -> Result | None:
    """For a record written before result files listed their cached artifacts: the record with
    ``provenance.legacy_artifacts`` saying what its stage times show — ``"trained in this run"`` when its train
    stage took a training's time, else ``"model read from an older cache entry (commit not recorded)"``. ``None`` for
    a record that lists its artifacts or is already marked (nothing to do)."""
    prov = record.provenance
    if "artifacts" in prov or "legacy_artifacts" in prov:
        return None
    train_s = (prov.get("stages") or {}).get("train")
    origin = LEGACY_TRAINED if train_s is not None and train_s >= CACHED_TRAIN_SECONDS else LEGACY_CACHED
    return dataclasses.replace(record, provenance={**prov, "legacy_artifacts": origin})


def restamp(root: Path | None = None) -> list[Path]:
    """Mark every committed result file written before artifact lists (:func:`mark_legacy_provenance`), rewriting
    it with its checksum; returns the files changed. Its numbers are untouched."""
    changed = []
    for path in sorted((root or results_root()).glob("*/*/*.json")):
        record = read_result(path)
        marked = None if record is None else mark_legacy_provenance(record)
        if marked is not None:
            write_result(path, marked)
            changed.append(path)
    return changed


def artifact_text(records: list[Result]) -> str:
    """The clause :func:`provenance_text` adds on the cached artifacts (models, scans) behind a set of records:
    which were computed at another commit than the record that used them, and which files predate the artifact
    list (their artifacts' commits were not recorded)."""
    other: set[str] = set()
    n_other = unrecorded = from_old_cache = 0
    for r in records:
        arts = r.provenance.get("artifacts")
        if arts is None:
            unrecorded += 1
            from_old_cache += r.provenance.get("legacy_artifacts") == LEGACY_CACHED
            continue
        mine = r.provenance["commit"]
        for a in arts:
            if a.get("commit") and a["commit"] != mine:
                n_other += 1
                other.add(short_commit(a["commit"]))
    parts = []
    if n_other:
        parts.append(f"{n_other} cached artifacts were computed at another commit than the file naming them "
                     f"({', '.join(sorted(other))}; each file lists its artifacts' own provenance)")
    if unrecorded:
        parts.append(f"{unrecorded} of {len(records)} files were written before result files listed their cached "
                     f"artifacts; by their stage times {unrecorded - from_old_cache} trained their model in the run "
                     f"that wrote them and {from_old_cache} read it from an older cache entry, computed at a commit "
                     f"not recorded (possibly earlier than the one named)")
    return "; " + "; ".join(parts) if parts else ""


__all__ = ["CACHED_TRAIN_SECONDS", "LEGACY_CACHED", "LEGACY_TRAINED", "ResultWarning", "artifact_text", "live_result",
           "load_results", "mark_legacy_provenance", "migrate", "provenance_text", "read_result", "restamp",
           "write_result"]
