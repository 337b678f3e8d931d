"""The full reproduction: the paper's grid run experiment by experiment, one result file each, resumable.

``python -m poisoncure.experiments --profile full`` runs every experiment of a profile's ``reproduce`` section
that has no valid result file yet and writes ``results/<profile>/<grid>/<name>.json``. Six grids:

``main``
    The paper's Tables 1-5: for every (pair, poison, poison rate, seed), train the poisoned model of the
    profile's recipe, run the paper's full defense (target scan, base class, filtering, one-epoch
    neutralization), Activation Clustering and Spectral Signatures on the same training set, and optionally
    Spectral Signatures' retraining from scratch (Table 5).
``reverse``
    The models of the reverse-engineering chapter (``10_reverse_engineering``) at the profile's scale (the
    additive attack, the blend attack and clean models of several training-set sizes): Xiang et al.'s pair
    search with both nulls, Neural Cleanse and the paper's target scan on each.
``sweep``
    The variable-size sweep of chapter 9 (:mod:`poisoncure.experiments.grids.sweep`): every defense against trigger size
    and poison rate on one pair.
``hygiene``
    The PoisHygiene chapter's suspects, one attack each, on Fashion-MNIST and CIFAR-10
    (:func:`poisoncure.experiments.grids.hygiene.run_point`): the suspect, DETECT against the references, MITIGATE and
    its clean-only baseline, Neural Cleanse and the paper's target scan.
``learning``
    Chapter 2's learning curves (:func:`poisoncure.experiments.learning_curve`): clean accuracy and attack success
    after every epoch, for the small CNN with and without the whitening stem and for the whitened network, with
    the one-pixel and the blend trigger; why one network learns the one-pixel backdoor and another does not.
``ensembles``
    The chapter on ensembles of weak learners (:func:`poisoncure.experiments.grids.ensembles.run_point`): on one small
    recipe per trigger, the weak-learner ensemble, ITLM, Spectral Signatures, Activation Clustering and the paper's
    defense, each with its retrained (or neutralized) model.

A result file holds every number the chapters read, the experiment's parameters, its provenance (commit,
device, library versions, profile, seed, wall time of every stage) and a SHA-256 of its content. It is written
atomically (temporary file, then rename), and :func:`read_result` accepts it only when it parses, names the
same experiment key and its checksum matches: a corrupt, partial or stale file counts as missing, so the
next run redoes that experiment, and :func:`load_results` never shows it. Trained models stay in the cache.

Experiments are independent units. ``--engine ray`` runs them as Ray tasks (a local Ray instance, or a cluster
with ``--ray-address``: several GPUs on one or more nodes) and ``--engine submitit`` as Slurm jobs through
submitit (``--cluster local`` runs the jobs as subprocesses here); the default runs them one after another in
this process. Without any engine, ``--shard 1/3`` runs every third experiment, so several processes (on one
GPU, or on several machines sharing ``results/``) can run disjoint shards at once.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .. import paths, provenance
from ..cache import canonical
from ..train import resolve_device
from . import profiles

GRIDS = ("main", "reverse", "sweep", "hygiene", "ensembles", "learning")
FORMAT = 1  #: version of the result-file layout; files of another version count as stale
_RECORD_KEYS = ("format", "grid", "name", "key", "profile", "params", "results", "provenance", "sha256")


class ResultWarning(UserWarning):
    """A result file was unusable (corrupt, partial, stale) and is treated as missing."""


@dataclass(frozen=True)
class Experiment:
    """One unit of the grid: what to run (``params``, JSON values) and where its result goes (``grid/name``)."""

    grid: str
    name: str
    params: dict[str, Any]

    @property
    def key(self) -> str:
        """SHA-256 of the grid and the canonical parameters: a result file is valid only for this key."""
        blob = json.dumps({"grid": self.grid, "params": canonical(self.params), "format": FORMAT}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def path(self, profile: str, root: Path | None = None) -> Path:
        return (root or results_root()) / profile / self.grid / f"{self.name}.json"


def results_root() -> Path:
    """``<project>/results`` (override with ``POISONCURE_RESULTS``)."""
    env = os.environ.get("POISONCURE_RESULTS")
    if env:
        return Path(env).expanduser()
    root = paths.project_root()
    return (root if root is not None else Path.cwd()) / "results"


# ------------------------------------------------------------------------------------------ the grids
def plan(profile: str, grids: Iterable[str] | None = None, only: Iterable[str] | None = None) -> list[Experiment]:
    """The experiments of ``profile``'s ``reproduce`` section, in a fixed order; ``only`` keeps the names that
    match any of its shell patterns (e.g. ``pair1-*``, ``*-pixel-*``)."""
    prof = profiles.load(profile)
    section = prof.get("reproduce") or {}
    grids = list(grids) if grids else [g for g in GRIDS if g in section]
    exps: list[Experiment] = []
    for grid in grids:
        if grid not in GRIDS:
            raise ValueError(f"unknown grid {grid!r}; grids are {GRIDS}")
        if grid not in section:
            raise ValueError(f"profile {profile!r} has no reproduce.{grid} section")
        exps += {"main": _main_grid, "reverse": _reverse_grid, "sweep": _sweep_grid,
                 "hygiene": _hygiene_grid, "ensembles": _ensembles_grid,
                 "learning": _learning_grid}[grid](prof, section[grid] or {})
    if only:
        patterns = list(only)
        exps = [e for e in exps if any(fnmatch.fnmatchcase(e.name, p) for p in patterns)]
        if not exps:
            raise ValueError(f"no experiment of profile {profile!r} matches {patterns}")
    return exps


def _recipe_fields(prof: dict[str, Any]) -> dict[str, Any]:
    """The profile's shared recipe (:func:`experiments.recipe_fields`)."""
    from .store import recipe_fields

    return recipe_fields(prof["experiment"])


def _main_grid(prof: dict[str, Any], spec: dict[str, Any]) -> list[Experiment]:
    base = _recipe_fields(prof)
    nb6, nb7 = prof["notebooks"].get("06_neutralization", {}), prof["notebooks"].get("07_baselines", {})
    defense = {"threshold": spec.get("threshold", nb6.get("threshold", 2.0)),
               "eta": spec.get("eta", nb6.get("eta", 2.0)),
               "eps": nb7.get("eps", 0.1), "ss_layer": nb7.get("ss_layer"), "ac_layer": nb7.get("ac_layer"),
               "retrain": sorted(spec.get("retrain") or [])}
    out = []
    for rate in spec.get("poison_rates", [base["poison_rate"]]):
        for seed in spec.get("seeds", [base["seed"]]):
            for poison in spec.get("poisons", ["blend", "pixel"]):
                for pair in spec.get("pairs", list(range(1, 10))):
                    recipe = {**base, "pair": pair, "poison_rate": rate, "seed": seed}
                    name = f"pair{pair}-{poison}-{base['model']}-r{rate:g}-s{seed}"
                    out.append(Experiment("main", name, {"poison": poison, "recipe": recipe, "defense": defense}))
    return out


def _reverse_grid(prof: dict[str, Any], spec: dict[str, Any]) -> list[Experiment]:
    base = _recipe_fields(prof)
    nb = {**prof["notebooks"].get("10_reverse_engineering", {}), **spec}
    detector = {"per_class": nb["search_per_class"], "eta": nb["search_eta"], "bound": nb["search_bound"],
                "pi": nb["pi"], "theta": nb["theta"]}
    others = {"threshold": nb["threshold"], "clean_per_class": nb["clean_per_class"], "nc_steps": nb["nc_steps"]}
    models = {nb["additive_pattern"]: {"poison": nb["additive_pattern"], "additive_l2": nb["additive_l2"],
                                       "poison_rate": nb["additive_rate"],
                                       "train_per_class": nb["additive_train_per_class"]},
              "blend": {"poison": "blend"}, "clean": {"poison": "clean"},
              **{f"clean-{n}": {"poison": "clean", "train_per_class": n} for n in nb.get("clean_sizes") or []}}
    out = []
    for label, change in models.items():
        recipe = {**base, **{k: v for k, v in change.items() if k != "poison"}}
        out.append(Experiment("reverse", f"{label}-{base['model']}-s{base['seed']}",
                              {"poison": change["poison"], "recipe": recipe, "detector": detector, **others}))
    return out


def _sweep_grid(prof: dict[str, Any], spec: dict[str, Any]) -> list[Experiment]:
    """The variable-size sweep (:mod:`.grids.sweep`): every trigger at every poison rate and seed, on one pair,
    with the profile's recipe changed by ``spec['recipe']``; the defenses' settings are chapter 7's."""
    from .grids.sweep import check_trigger, trigger_slug

    known = {"pair", "recipe", "triggers", "poison_rates", "seeds", "retrain", "min_asr"}
    if set(spec) - known:
        raise ValueError(f"unknown keys in reproduce.sweep: {sorted(set(spec) - known)}; known: {sorted(known)}")
    base = {**_recipe_fields(prof), **(spec.get("recipe") or {})}
    base["pair"] = spec.get("pair", base["pair"])
    nb7 = prof["notebooks"].get("07_baselines", {})
    defense = {k: nb7.get(k, v) for k, v in (("threshold", 2.0), ("eta", 2.0), ("eps", 0.1), ("ss_layer", None),
                                             ("ac_layer", None), ("clean_per_class", 100), ("nc_steps", 200),
                                             ("fp_max_drop", 4.0))}
    defense.update(min_asr=float(spec.get("min_asr", nb7.get("min_asr", 50.0))),
                   retrain=sorted(spec.get("retrain") or []))
    triggers = [check_trigger(t) for t in spec.get("triggers") or []]
    if not triggers:
        raise ValueError("reproduce.sweep needs a non-empty 'triggers' list")
    out = []
    for rate in spec.get("poison_rates", [base["poison_rate"]]):
        for seed in spec.get("seeds", [base["seed"]]):
            for trig in triggers:
                recipe = {**base, **trig, "poison_rate": rate, "seed": seed}
                name = f"pair{base['pair']}-{trigger_slug(trig)}-{base['model']}-r{rate:g}-s{seed}"
                out.append(Experiment("sweep", name, {"recipe": recipe, "defense": defense}))
    return out


def _hygiene_grid(prof: dict[str, Any], spec: dict[str, Any]) -> list[Experiment]:
    """The PoisHygiene chapter's Fashion-MNIST and CIFAR-10 suspects (:func:`.grids.hygiene.grid`)."""
    from .grids.hygiene import grid

    return [Experiment("hygiene", name, params) for name, params in grid(prof, spec)]


def _ensembles_grid(prof: dict[str, Any], spec: dict[str, Any]) -> list[Experiment]:
    """The chapter on ensembles of weak learners (:func:`poisoncure.experiments.grids.ensembles.grid`)."""
    from .grids.ensembles import grid

    return [Experiment("ensembles", name, params) for name, params in grid(prof, spec)]


def _learning_grid(prof: dict[str, Any], spec: dict[str, Any]) -> list[Experiment]:
    """Chapter 2's learning curves: every model of ``spec['models']`` (each a mapping with ``model`` and ``width``)
    with every trigger of ``spec['triggers']`` (``{poison: pixel}``, ``{poison: blend}``) and seed, trained with the
    profile's recipe for ``spec['epochs']`` epochs (default: the recipe's)."""
    known = {"models", "triggers", "epochs", "seeds"}
    if set(spec) - known:
        raise ValueError(f"unknown keys in reproduce.learning: {sorted(set(spec) - known)}; known: {sorted(known)}")
    base = _recipe_fields(prof)
    models = spec.get("models") or []
    triggers = spec.get("triggers") or []
    if not models or not triggers:
        raise ValueError("reproduce.learning needs non-empty 'models' and 'triggers' lists")
    for m in models:
        if not isinstance(m, dict) or set(m) != {"model", "width"}:
            raise ValueError(f"a reproduce.learning model is a mapping with exactly 'model' and 'width', got {m!r}")
    for t in triggers:
        if not isinstance(t, dict) or t.get("poison") not in ("pixel", "blend") or set(t) - {"poison", "opacity"}:
            raise ValueError(f"a reproduce.learning trigger is {{poison: pixel}} or {{poison: blend[, opacity]}}, "
                             f"got {t!r}")
    out = []
    for seed in spec.get("seeds", [base["seed"]]):
        for trig in triggers:
            for m in models:
                recipe = {**base, **m, **{k: v for k, v in trig.items() if k != "poison"},
                          "epochs": int(spec.get("epochs", base["epochs"])), "seed": seed}
                name = f"pair{base['pair']}-{trig['poison']}-{m['model']}{m['width']}-s{seed}"
                out.append(Experiment("learning", name, {"poison": trig["poison"], "recipe": recipe}))
    return out


# ------------------------------------------------------------------------------------------ one experiment
def _trained(params: dict[str, Any], device: str, data, progress: bool, stages: dict[str, float]):
    """The experiment's recipe and its trained model (from the cache when it exists), timed as stage 'train'."""
    from . import store

    recipe = store.Recipe(poison=params["poison"], **params["recipe"])
    with provenance.stage(stages, "train"):
        tm = store.get_model(recipe, device=device, data=data, progress=progress)
    return recipe, tm


def _scan_summary(cure) -> dict[str, Any]:
    """What the paper's target scan and base scan found (both grids report it)."""
    scan, bscan = cure.result.scan, cure.result.base
    return {"distances": scan.distances.tolist(), "ratio": float(scan.ratio), "candidate": int(scan.target),
            "poisoned": bool(scan.poisoned), "base": None if bscan is None else int(bscan.base)}


def _rates(flagged: np.ndarray, is_poison: np.ndarray) -> dict[str, float | int | None]:
    from .. import metrics

    return {**metrics.detection_rates(flagged, is_poison), "flagged": int(np.asarray(flagged).sum())}


def run_main(params: dict[str, Any], device: str = "auto", data=None, progress: bool = False) -> tuple[dict, dict]:
    """One experiment of the ``main`` grid: the paper's defense, Activation Clustering and Spectral Signatures (told the
    target) through :func:`pipeline.run_defenses`, detection rates within the target class, the neutralized model
    and, when ``retrain`` names it, Spectral Signatures' retrained model on the whole test set. Returns (results,
    stage wall times in seconds)."""
    from ..train import evaluate
    from . import pipeline, store

    data = data or store.load_cifar10()
    stages: dict[str, float] = {}
    recipe, tm = _trained(params, device, data, progress, stages)
    spec = tm.train_set.spec
    target, base = spec.target, spec.base
    is_poison = tm.train_set.is_poison
    out: dict[str, Any] = {"target": target, "base": base, "n_train": len(tm.train_set),
                           "n_poison": int(is_poison.sum()), "before": tm.metrics.to_dict(),
                           "train_seconds": round(tm.history.seconds, 1),
                           "images_per_second": round(tm.history.images_per_second, 1)}
    run = pipeline.run_defenses(tm, data, (pipeline.POISON_CURE, pipeline.CLUSTERING, pipeline.SPECTRAL),
                                pipeline.DefenseSettings.from_params(  # this grid's repair column: SS's retraining
                                    params["defense"], seed=recipe.seed,
                                    retrain=[k for k in params["defense"]["retrain"] if k == "spectral"]),
                                device=device, progress=progress, stages=stages)
    rows = run.target_rows
    cure = run[pipeline.POISON_CURE].artefact
    ours = _scan_summary(cure)
    out["ours"] = {**ours, "target_found": ours["poisoned"] and ours["candidate"] == target,
                   "base_found": ours["base"] == base,
                   **_rates(run[pipeline.POISON_CURE].flagged[rows], is_poison[rows]),
                   "after": None if cure.after is None else cure.after.to_dict(),
                   "seconds": {k: round(v, 1) for k, v in cure.result.seconds.items()}}
    ac = run[pipeline.CLUSTERING]
    out["activation_clustering"] = {"flagged_labels": ac.labels,
                                    "own_rule": _rates(ac.flagged[rows], is_poison[rows]),
                                    "smaller_cluster": _rates(ac.artefact.cluster[rows] == 1, is_poison[rows])}
    ss = run[pipeline.SPECTRAL]
    out["spectral"] = _rates(ss.flagged[rows], is_poison[rows])
    if ss.repaired is not None:
        out["spectral"]["after"] = evaluate(ss.repaired, data.test, spec, device).to_dict()
    return out, stages


def run_reverse(params: dict[str, Any], device: str = "auto", data=None, progress: bool = False) -> tuple[dict, dict]:
    """One experiment of the ``reverse`` grid (the reverse-engineering chapter's measurements on one model)."""
    from ..defenses.neural_cleanse import NeuralCleanse
    from ..defenses.reverse_engineer import ReverseEngineeringDetector, pattern_correlation
    from . import store

    data = data or store.load_cifar10()
    stages: dict[str, float] = {}
    recipe, tm = _trained(params, device, data, progress, stages)
    spec = store.attack_spec_or_none(tm)
    clean_set, _ = store.defender_split(data.test, params["clean_per_class"], seed=recipe.seed)
    out: dict[str, Any] = {"target": None if spec is None else spec.target, "base": None if spec is None else spec.base,
                           "n_train": len(tm.train_set), "before": tm.metrics.to_dict(),
                           "train_seconds": round(tm.history.seconds, 1)}
    detector = ReverseEngineeringDetector(**params["detector"], seed=recipe.seed, device=device, progress=progress)
    with provenance.stage(stages, "pair_search"):
        r, _ = store.get_pair_search(tm, detector, clean_set)
    out["xiang"] = {"norms": r.search.norms.tolist(), "reached": r.search.reached.tolist(),
                    "p_value": float(r.null.p_value), "p_naive": float(r.naive.p_value),
                    "null": [float(r.null.shape), float(r.null.scale)],
                    "naive": [float(r.naive.shape), float(r.naive.scale)],
                    "detected": bool(r.detected), "source": int(r.source), "target": int(r.target)}
    if params["poison"] in store.ADDITIVE:
        v = spec.trigger.delta()
        est = r.search.patterns[spec.base, spec.target]
        out["xiang"]["pattern_correlation"] = pattern_correlation(est, v)
        out["xiang"]["pattern_correlation_mirror"] = pattern_correlation(est, v[:, ::-1])
    nc = NeuralCleanse(steps=params["nc_steps"], seed=recipe.seed, device=device, progress=progress)
    with provenance.stage(stages, "neural_cleanse"):
        trig, _ = store.get_reversed_triggers(tm, nc, clean_set)
    out["neural_cleanse"] = {"anomaly": trig.anomaly.tolist(), "flagged": np.flatnonzero(trig.flagged).tolist()}
    with provenance.stage(stages, "poison_cure"):
        cure = store.get_poison_cure(tm, store.poison_cure_for(
            recipe, threshold=params["threshold"], device=device, progress=progress), neutralize=False, data=data)
    out["ours"] = _scan_summary(cure)
    return out, stages


def run_sweep(params: dict[str, Any], device: str = "auto", data=None, progress: bool = False) -> tuple[dict, dict]:
    """One experiment of the ``sweep`` grid: :func:`poisoncure.experiments.grids.sweep.run_point`."""
    from .grids.sweep import run_point

    return run_point(params, device=device, data=data, progress=progress)


def run_hygiene(params: dict[str, Any], device: str = "auto", data=None, progress: bool = False
                ) -> tuple[dict, dict]:
    """One experiment of the ``hygiene`` grid: :func:`poisoncure.experiments.grids.hygiene.run_point`."""
    from .grids.hygiene import run_point

    return run_point(params, device=device, data=data, progress=progress)


def run_ensembles(params: dict[str, Any], device: str = "auto", data=None, progress: bool = False
                  ) -> tuple[dict, dict]:
    """One experiment of the ``ensembles`` grid: :func:`poisoncure.experiments.grids.ensembles.run_point`."""
    from .grids.ensembles import run_point

    return run_point(params, device=device, data=data, progress=progress)


def run_learning(params: dict[str, Any], device: str = "auto", data=None, progress: bool = False
                 ) -> tuple[dict, dict]:
    """One experiment of the ``learning`` grid: :func:`poisoncure.experiments.learning_curve`."""
    from . import store

    recipe = store.Recipe(poison=params["poison"], **params["recipe"])
    stages: dict[str, float] = {}
    with provenance.stage(stages, "train"):
        curve = store.learning_curve(recipe, device=device, data=data, progress=progress)
    return curve, stages


RUNNERS: dict[str, Callable[..., tuple[dict, dict]]] = {"main": run_main, "reverse": run_reverse, "sweep": run_sweep,
                                                         "hygiene": run_hygiene, "ensembles": run_ensembles,
                                                         "learning": run_learning}


# ------------------------------------------------------------------------------------------ result files
def _checksum(record: dict[str, Any]) -> str:
    body = {k: record[k] for k in _RECORD_KEYS if k != "sha256"}
    return hashlib.sha256(json.dumps(canonical(body), sort_keys=True).encode()).hexdigest()


def write_result(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` (with its checksum) to ``path`` atomically: a reader sees the old file or the new one."""
    record = {**record, "sha256": ""}
    record["sha256"] = _checksum(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(canonical(record), fh, indent=1, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_result(path: Path, exp: Experiment | None = None) -> dict[str, Any] | None:
    """The record in ``path`` if it is complete and intact (and belongs to ``exp`` when given), else ``None``
    with a :class:`ResultWarning` saying why (a missing file is ``None`` without a warning)."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        problem = None
        if not isinstance(record, dict) or any(k not in record for k in _RECORD_KEYS):
            problem = "fields missing"
        elif record["format"] != FORMAT:
            problem = f"format {record['format']} (this library writes {FORMAT})"
        elif record["sha256"] != _checksum(record):
            problem = "checksum mismatch (edited or damaged)"
        elif exp is not None and (record["key"] != exp.key or record["grid"] != exp.grid):
            problem = "made with other parameters (stale)"
    except (OSError, ValueError, TypeError) as err:
        problem = f"unreadable ({err.__class__.__name__}: {err})"
    if problem:
        warnings.warn(f"result {path} ignored: {problem}; it will be recomputed", ResultWarning, stacklevel=2)
        return None
    return record


def load_results(profile: str, grid: str, root: Path | None = None) -> list[dict[str, Any]]:
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
        record = read_result(path, exp)
        if record is not None and exp is None:
            warnings.warn(f"result {path} is not in profile {profile!r}'s plan; ignored", ResultWarning, stacklevel=2)
            continue
        if record is not None:
            out.append(record)
    return out


def provenance_text(records: list[dict[str, Any]]) -> str:
    """One sentence on where a set of result files ran: devices, commits (7 characters) and total wall time."""
    if not records:
        return "none run yet"
    devices = ", ".join(sorted({r["provenance"]["device"] for r in records}))
    commits = ", ".join(sorted({r["provenance"]["commit"][:7] for r in records}))
    minutes = sum(r["provenance"]["wall_seconds"] for r in records) / 60
    return (f"run on {devices} at commit {commits}, {minutes:.0f} minutes of wall time in all "
            f"(each file holds its own stage times){artifact_text(records)}")


#: a train stage shorter than this means the record's model was read from the cache, not trained by its run (the
#: fastest real training in the committed files, the gpu profile's on an H200, took 5.4 s)
CACHED_TRAIN_SECONDS = 5.0
LEGACY_TRAINED = "trained in this run"  #: ``provenance.legacy_artifacts`` of a record whose run trained its model
LEGACY_CACHED = "model read from an older cache entry (commit not recorded)"  #: ... whose run read it from the cache


def mark_legacy_provenance(record: dict[str, Any]) -> dict[str, Any] | None:
    """For a record written before result files listed their cached artifacts: the record with
    ``provenance.legacy_artifacts`` saying what its stage times show — ``"trained in this run"`` when its train
    stage took a training's time, else ``"model read from an older cache entry (commit not recorded)"``. ``None`` for
    a record that lists its artifacts or is already marked (nothing to do)."""
    prov = record["provenance"]
    if "artifacts" in prov or "legacy_artifacts" in prov:
        return None
    train_s = (prov.get("stages") or {}).get("train")
    origin = LEGACY_TRAINED if train_s is not None and train_s >= CACHED_TRAIN_SECONDS else LEGACY_CACHED
    return {**record, "provenance": {**prov, "legacy_artifacts": origin}}


def restamp(root: Path | None = None) -> list[Path]:
    """Mark every committed result file written before artifact lists (:func:`mark_legacy_provenance`), rewriting
    it with its checksum; returns the files changed. Its numbers are untouched."""
    changed = []
    for path in sorted((root or results_root()).glob("*/*/*.json")):
        record = read_result(path)
        marked = None if record is None else mark_legacy_provenance(record)
        if marked is not None:
            write_result(path, {k: v for k, v in marked.items() if k != "sha256"})
            changed.append(path)
    return changed


def artifact_text(records: list[dict[str, Any]]) -> str:
    """The clause :func:`provenance_text` adds on the cached artifacts (models, scans) behind a set of records:
    which were computed at another commit than the record that used them, and which files predate the artifact
    list (their artifacts' commits were not recorded)."""
    other: set[str] = set()
    n_other = unrecorded = from_old_cache = 0
    for r in records:
        arts = r["provenance"].get("artifacts")
        if arts is None:
            unrecorded += 1
            from_old_cache += r["provenance"].get("legacy_artifacts") == LEGACY_CACHED
            continue
        mine = r["provenance"]["commit"]
        for a in arts:
            if a.get("commit") and a["commit"] != mine:
                n_other += 1
                other.add(a["commit"][:7])
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


# ------------------------------------------------------------------------------------------ running
def execute(profile: str, exp: Experiment, device: str = "auto", runners: dict | None = None, data=None
            ) -> dict[str, Any]:
    """Run one experiment where this function is called (this process, a Ray worker or a Slurm job) and return
    its complete record with provenance (device, versions, stage times); :func:`write_result` stores it."""
    from ..cache import record_artifacts

    runners = runners or RUNNERS
    with provenance.stopwatch() as t, record_artifacts() as artifacts:
        results, stages = runners[exp.grid](exp.params, device=device, data=data, progress=False)
    seed = (exp.params.get("recipe") or exp.params.get("suspect") or {}).get("seed")
    return {"format": FORMAT, "grid": exp.grid, "name": exp.name, "key": exp.key, "profile": profile,
            "params": exp.params, "results": results,
            "provenance": provenance.collect(resolve_device(device), seed=seed, stages=stages,
                                             wall_seconds=round(t["seconds"], 1),
                                             versions=provenance.library_versions(), artifacts=artifacts)}


def _local(profile, todo, device, runners, options) -> Iterator[tuple[Experiment, dict]]:
    data = {}  # loaded once per data set: Fashion-MNIST for the hygiene grid's suspects, CIFAR-10 for the rest
    for exp in todo:
        if runners is RUNNERS:
            from ..data import load_cifar10, load_fashion_mnist

            name = "fashion" if "suspect" in exp.params else "cifar"
            if name not in data:
                data[name] = load_fashion_mnist() if name == "fashion" else load_cifar10()
            yield exp, execute(profile, exp, device, runners, data[name])
        else:
            yield exp, execute(profile, exp, device, runners, None)


def _gpus(options: dict[str, Any], device: str) -> float:
    """GPUs each experiment asks the engine for: the option, else 1 when this machine sees CUDA and the device
    is not 'cpu' (several experiments then share no GPU), else 0."""
    if options.get("gpus") is not None:
        return float(options["gpus"])
    import torch

    return 1.0 if device != "cpu" and torch.cuda.is_available() else 0.0


def _ray(profile, todo, device, runners, options) -> Iterator[tuple[Experiment, dict]]:
    """One Ray task per experiment (``ray.init(address)``: an existing cluster, or a local instance when None);
    records come back to this process in completion order."""
    try:
        import ray
    except ImportError as err:
        raise RuntimeError("engine 'ray' needs Ray: pip install ray") from err
    if not todo:
        return
    started = not ray.is_initialized()
    if started:  # a local instance may be sized (num_cpus); an existing cluster brings its own resources
        sizing = {"num_cpus": options.get("num_cpus")} if options.get("address") is None else {}
        ray.init(address=options.get("address"), include_dashboard=False, log_to_driver=False, **sizing)
    try:
        task = ray.remote(num_gpus=_gpus(options, device), num_cpus=options.get("cpus_per_experiment", 1))(execute)
        refs = {task.remote(profile, exp, device, None if runners is RUNNERS else runners): exp for exp in todo}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                yield refs[ref], ray.get(ref)
    finally:
        if started:
            ray.shutdown()


def _submitit(profile, todo, device, runners, options) -> Iterator[tuple[Experiment, dict]]:
    """One job per experiment through submitit: Slurm where ``sbatch`` exists (``cluster=None``), or
    ``cluster='local'`` (subprocesses on this machine) / ``'debug'`` (in this process)."""
    try:
        import submitit
    except ImportError as err:
        raise RuntimeError("engine 'submitit' needs submitit: pip install submitit") from err
    if not todo:
        return
    from ..cache import Cache

    folder = options.get("folder") or Cache().root / "submitit" / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster=options.get("cluster"))
    params = {"timeout_min": int(options.get("timeout_min", 60)), "gpus_per_node": int(_gpus(options, device)),
              "cpus_per_task": int(options.get("cpus_per_experiment", 1))}
    if options.get("partition"):
        params["slurm_partition"] = options["partition"]
    executor.update_parameters(**params)
    jobs = {}
    with executor.batch():
        for exp in todo:
            jobs[exp.name] = (exp, executor.submit(execute, profile, exp, device,
                                                   None if runners is RUNNERS else runners))
    by_job = {id(job): exp for exp, job in jobs.values()}
    for job in submitit.helpers.as_completed([job for _, job in jobs.values()]):
        yield by_job[id(job)], job.result()


ENGINES: dict[str, Callable[..., Iterator[tuple[Experiment, dict]]]] = {
    "local": _local, "ray": _ray, "submitit": _submitit}


def run(profile: str, grids: Iterable[str] | None = None, only: Iterable[str] | None = None,
        root: Path | None = None, device: str = "auto", shard: tuple[int, int] = (1, 1), force: bool = False,
        progress: bool = True, runners: dict[str, Callable[..., tuple[dict, dict]]] | None = None,
        engine: str = "local", engine_options: dict[str, Any] | None = None) -> list[tuple[Experiment, str]]:
    """Run the planned experiments that have no valid result (all of them with ``force``); ``shard = (k, n)``
    keeps every n-th experiment starting at the k-th. Returns (experiment, 'done' | 'skipped') in order.

    ``engine`` 'local' runs them one after another in this process; 'ray' and 'submitit' hand each experiment
    to Ray or submitit (Slurm) as an independent task and write each record here as it comes back
    (``engine_options``: 'address', 'num_cpus' for Ray; 'cluster', 'partition', 'timeout_min', 'folder' for
    submitit; 'gpus' and 'cpus_per_experiment' for both). Either way an interrupted run loses at most the
    experiments in progress, and the records are the same as the local run's (up to wall times and device)."""
    k, n = shard
    if not 1 <= k <= n:
        raise ValueError(f"shard must be k/n with 1 <= k <= n, got {k}/{n}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {tuple(ENGINES)}, got {engine!r}")
    runners = runners or RUNNERS
    exps = plan(profile, grids, only)[k - 1::n]
    todo = [e for e in exps if force or read_result(e.path(profile, root), e) is None]
    status = {e.name: "skipped" for e in exps}
    bar = tqdm(total=len(todo), desc=f"reproduce {profile} ({engine})", unit="experiment", disable=not progress)
    for exp, record in ENGINES[engine](profile, todo, device, runners, engine_options or {}):
        write_result(exp.path(profile, root), record)
        status[exp.name] = "done"
        bar.set_postfix_str(exp.name)
        bar.update()
    bar.close()
    return [(e, status[e.name]) for e in exps]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m poisoncure.experiments", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="full", help="profile with a 'reproduce' section (default: full)")
    parser.add_argument("--grid", action="append", choices=GRIDS, help="grid(s) to run (default: all of the profile's)")
    parser.add_argument("--only", action="append", metavar="PATTERN",
                        help="run only experiments whose name matches this shell pattern (repeatable)")
    parser.add_argument("--shard", default="1/1", metavar="K/N", help="run every N-th experiment from the K-th")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu' or 'cuda'")
    parser.add_argument("--results", type=Path, default=None, help="results folder (default: <project>/results)")
    parser.add_argument("--force", action="store_true", help="rerun experiments that already have a valid result")
    parser.add_argument("--list", action="store_true", help="list the experiments and their state; run nothing")
    parser.add_argument("--restamp", action="store_true",
                        help="mark the result files written before artifact lists with what their stage times show "
                             "(mark_legacy_provenance); run nothing")
    parser.add_argument("--engine", default="local", choices=tuple(ENGINES),
                        help="'local' (one after another, here; default), 'ray' (a Ray cluster or a local Ray "
                             "instance) or 'submitit' (Slurm, or --cluster local)")
    parser.add_argument("--ray-address", default=None, help="Ray cluster to join (default: start a local one)")
    parser.add_argument("--cluster", default=None, choices=("slurm", "local", "debug"),
                        help="submitit executor (default: Slurm when available, else local)")
    parser.add_argument("--partition", default=None, help="Slurm partition (submitit)")
    parser.add_argument("--timeout-min", type=int, default=60, help="time limit per experiment job (submitit)")
    parser.add_argument("--gpus", type=float, default=None,
                        help="GPUs per experiment for ray/submitit (default: 1 if this machine sees CUDA, else 0)")
    args = parser.parse_args(argv)
    try:
        k, n = (int(x) for x in args.shard.split("/"))
        exps = plan(args.profile, args.grid, args.only)
    except ValueError as err:
        parser.error(str(err))
    if args.restamp:
        for path in restamp(args.results):
            print(f"marked {path}")
        return 0
    if args.list:
        for e in exps:
            state = "done" if read_result(e.path(args.profile, args.results), e) is not None else "to do"
            print(f"{state:6s} {e.grid}/{e.name}")
        return 0
    options = {"address": args.ray_address, "cluster": args.cluster, "partition": args.partition,
               "timeout_min": args.timeout_min, "gpus": args.gpus}
    done = run(args.profile, args.grid, args.only, args.results, args.device, (k, n), args.force,
               engine=args.engine, engine_options=options)
    print(f"{sum(s == 'done' for _, s in done)} run, {sum(s == 'skipped' for _, s in done)} already done "
          f"(results under {(args.results or results_root()) / args.profile})")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["ENGINES", "Experiment", "GRIDS", "ResultWarning", "execute", "load_results", "plan", "read_result",
           "run", "run_ensembles", "run_hygiene", "run_main", "run_reverse", "write_result"]
