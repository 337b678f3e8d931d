"""What the runner runs: the grids of a profile's ``reproduce`` section, one :class:`Experiment` each.

:func:`plan` reads a profile (``poisoncure/experiments/profiles/<name>.yml``) and lists its experiments in a fixed
order; each has a grid, a name (its result file's stem) and JSON parameters, whose SHA-256 with the schema's
version (:data:`.report.FORMAT`) is the key a result file must carry to count as this experiment's. The grids are
described in :mod:`.runner`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cache import canonical
from ..paths import results_root
from . import profiles
from .report import FORMAT

GRIDS = ("main", "reverse", "sweep", "hygiene", "ensembles", "learning", "compare")


def experiment_key(grid: str, params: dict[str, Any], fmt: int = FORMAT) -> str:
    """SHA-256 of the grid, the canonical parameters and the result-file format ``fmt``."""
    blob = json.dumps({"grid": grid, "params": canonical(params), "format": fmt}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class Experiment:
    """One unit of the grid: what to run (``params``, JSON values) and where its result goes (``grid/name``)."""

    grid: str
    name: str
    params: dict[str, Any]

    @property
    def key(self) -> str:
        """SHA-256 of the grid and the canonical parameters: a result file is valid only for this key."""
        return experiment_key(self.grid, self.params)

    def path(self, profile: str, root: Path | None = None) -> Path:
        return (root or results_root()) / profile / self.grid / f"{self.name}.json"


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
                 "learning": _learning_grid, "compare": _compare_grid}[grid](prof, section[grid] or {})
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


def _compare_grid(prof: dict[str, Any], spec: dict[str, Any]) -> list[Experiment]:
    """Every defense on the same attacked and clean models (:func:`.grids.compare.grid`)."""
    from .grids.compare import grid

    return [Experiment("compare", name, params) for name, params in grid(prof, spec)]


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



__all__ = ["Experiment", "GRIDS", "experiment_key", "plan"]
