"""Every defense of the book on the same attacked models: the ``compare`` grid of the runner.

One experiment (:func:`run_point`) trains one model of a recipe (an attack of the paper's grid, another paper's
attack, or a clean model), then runs all eight defenses of :data:`..pipeline.ALL_DEFENSES` on it through the one
pipeline call, under the same knowledge for all: Spectral Signatures scans every label with the defender's poison
budget ``eps`` (it is not told the target, so it can raise a false alarm on a clean model like the others), the
defenders that need clean images share one held-out set of ``clean_per_class`` test images per class, and every
repaired model is scored on the rest of the test set. Repairs run only when the attack works (attack success ≥
``min_asr`` %); on a clean model or a failed attack the detections alone run (a label named there is a false alarm)
and Fine-Pruning, a repair only, is skipped.

The report (:class:`..report.Report`) holds, per defense, the labels it names, its filtering judged over the whole
training set, its repaired model's scores, and in ``details`` the wall time of each defense's stages beside the
model's own training time, for the cost column (a multiple of one training on the same machine).
"""

from __future__ import annotations

import dataclasses
from typing import Any

#: the fields of a ``compare`` section (profiles' ``reproduce.compare``)
SECTION = {"recipe", "attacks", "seeds", "clean", "defense"}
#: the defense settings a section may give (over the profile's chapter 7 values)
DEFENSE_KEYS = {"threshold", "eta", "eps", "ss_beta", "ss_layer", "ac_layer", "nc_steps", "fp_max_drop", "retrain",
                "clean_per_class", "min_asr", "xiang", "hygiene", "ensemble"}


#: the attacks tied to a pair of the paper's table (named ``pair<k>-<poison>``); the others have their own classes
PAIRED = ("pixel", "blend", "patch", "xshape", "lshape", "mislabel")


def slug(attack: dict[str, Any]) -> str:
    """A short, file-safe name of an attack entry: ``pair1-pixel``, ``pair1-patch3``, ``pair1-xshape``,
    ``chessboard``, ``badnets``, ``clean``."""
    poison = attack["poison"]
    if poison in PAIRED:
        size = f"{attack['patch_size']}" if poison == "patch" and "patch_size" in attack else ""
        return f"pair{attack.get('pair', 1)}-{poison}{size}"
    return poison


def chapter_settings(prof: dict[str, Any]) -> dict[str, Any]:
    """The settings of the defenses of chapters 10-12 as their chapters run them (the profile's sections of
    ``10_reverse_engineering``, ``11_poishygiene`` and ``12_weak_learners``), in the pipeline's form
    (:class:`..pipeline.DefenseSettings` ``xiang``, ``hygiene``, ``ensemble``)."""
    from .ensembles import ENSEMBLE_FIELDS

    nb10, nb11, nb12 = (prof["notebooks"].get(k, {}) for k in ("10_reverse_engineering", "11_poishygiene",
                                                               "12_weak_learners"))
    xiang = {new: nb10[old] for old, new in (("search_per_class", "per_class"), ("search_eta", "eta"),
                                             ("search_bound", "bound"), ("pi", "pi"), ("theta", "theta"))
             if old in nb10}
    scan = {new: nb11[old] for old, new in (("probes", "probes"), ("hygiene_steps", "steps"),
                                            ("warm_steps", "warm_steps"), ("calibration_steps", "calibration_steps"),
                                            ("calibration_rounds", "calibration_rounds"), ("tau", "tau"))
            if old in nb11}
    hygiene = {"scan": scan, "craft": {k: nb11[f"craft_{k}"] for k in ("steps", "lr", "restarts")
                                       if f"craft_{k}" in nb11},
               "mitigation": {k: nb11[k] for k in ("clean_fraction", "crafted_fraction") if k in nb11}}
    if "cifar_ref_per_class" in nb11:
        hygiene["references"] = list(nb11["cifar_ref_per_class"])
    ensemble = {f: nb12[f"wl_{f}"] for f in ENSEMBLE_FIELDS if f"wl_{f}" in nb12}
    return {"xiang": xiang, "hygiene": hygiene, "ensemble": ensemble}


def grid(prof: dict[str, Any], spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The ``compare`` experiments of a profile: (name, params) for every attack of ``spec['attacks']`` (recipe fields
    over the profile's shared recipe and ``spec['recipe']``; an attack may list its own ``seeds``) and for the clean
    model at every seed of ``spec['clean']['seeds']``, with the defense settings of the profile's chapters 7 and
    10-12 (:func:`chapter_settings`) updated by ``spec['defense']``."""
    from ..store import Recipe, recipe_fields

    unknown = set(spec) - SECTION
    if unknown:
        raise ValueError(f"unknown keys in reproduce.compare: {sorted(unknown)}; known: {sorted(SECTION)}")
    if not spec.get("attacks"):
        raise ValueError("reproduce.compare needs a non-empty 'attacks' list")
    base = {**recipe_fields(prof["experiment"]), **(spec.get("recipe") or {})}
    nb7 = prof["notebooks"].get("07_baselines", {})
    defense = {"clean_per_class": 100, "min_asr": 50.0, **{k: nb7[k] for k in DEFENSE_KEYS if k in nb7},
               **chapter_settings(prof)}
    extra = spec.get("defense") or {}
    if set(extra) - DEFENSE_KEYS:
        raise ValueError(f"unknown defense settings {sorted(set(extra) - DEFENSE_KEYS)}; known: {sorted(DEFENSE_KEYS)}")
    defense.update(extra)
    defense["retrain"] = sorted(defense.get("retrain") or [])
    entries = [(dict(a), a.get("seeds", spec.get("seeds", [base["seed"]]))) for a in spec["attacks"]]
    clean = spec.get("clean") or {}
    if clean:
        entries.append(({"poison": "clean"}, clean.get("seeds", [base["seed"]])))
    out = []
    for attack, seeds in entries:
        attack.pop("seeds", None)
        for seed in seeds:
            recipe = {**base, **{k: v for k, v in attack.items() if k != "poison"}, "seed": seed}
            Recipe(poison=attack["poison"], **recipe)  # refuse a bad attack entry when planning, not when running
            name = f"{slug(attack)}-{base['model']}{recipe.get('width', '')}-s{seed}"
            out.append((name, {"poison": attack["poison"], "recipe": recipe, "defense": defense}))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(f"two compare experiments share a name: {sorted(n for n in names if names.count(n) > 1)}")
    return out


def steps() -> dict[str, Any]:
    """The pipeline steps of the defenses whose code lives with their grids (PoisHygiene, the ensembles)."""
    from ..pipeline import ENSEMBLE, HYGIENE
    from . import ensembles, hygiene

    return {HYGIENE: hygiene.defense_step, ENSEMBLE: ensembles.defense_step}


def run_point(params: dict[str, Any], device: str = "auto", data=None, progress: bool = False):
    """One ``compare`` experiment: (report, stage wall times in s). ``params``: ``poison``, ``recipe`` (an
    :class:`experiments.Recipe`'s fields) and ``defense`` (:class:`..pipeline.DefenseSettings` fields, with
    ``clean_per_class`` and ``min_asr``)."""
    from ...provenance import stage
    from .. import pipeline, store
    from ..report import Scores

    data = data or store.load_cifar10()
    d = dict(params["defense"])
    clean_per_class, min_asr = d.pop("clean_per_class"), d.pop("min_asr")
    recipe = store.Recipe(poison=params["poison"], **params["recipe"])
    stages: dict[str, float] = {}
    with stage(stages, "train"):
        tm = store.get_model(recipe, device=device, data=data, progress=progress)
    spec = store.attack_spec_or_none(tm)
    clean_set, held_out = store.defender_split(data.test, clean_per_class, seed=recipe.seed)

    score = pipeline.held_out_scorer(held_out, spec, device)
    before = score(tm.model)
    works = spec is not None and (before.attack_success_rate or 0.0) >= min_asr
    methods = [m for m in pipeline.ALL_DEFENSES if works or m != pipeline.PRUNING]
    settings = pipeline.DefenseSettings.from_params(d, seed=recipe.seed, ss_scope="all")
    run = pipeline.run_defenses(tm, data, methods, settings, clean=clean_set, repair=works, device=device,
                                progress=progress, stages=stages, steps=steps())
    details = {"attack_works": works, "train_seconds": round(tm.history.seconds, 1),
               "defense_seconds": {m: round(sum(v for k, v in stages.items()
                                                if k == pipeline.KEYS[m] or k.startswith(f"{pipeline.KEYS[m]}_")), 2)
                                   for m in methods},
               "test_before": dataclasses.asdict(Scores.of(tm.metrics))}
    return pipeline.to_report(run, tm, before, score, details, pipeline.target_class_details(run, tm)), stages


def setting(params: dict[str, Any]) -> str:
    """The attack setting of an experiment's parameters, seed left out: its :func:`slug` (``pair1-pixel``,
    ``chessboard``, ``clean``)."""
    return slug({"poison": params["poison"], **params["recipe"]})


#: the columns of :func:`cell_table`
CELL_COLUMNS = ("setting", "seed", "clean model", "attack works", "clean before", "ASR before", "defense", "labels",
                "names target", "flagged", "sensitivity", "specificity", "clean after", "ASR after", "seconds",
                "cost", "false alarm")


def cell_table(records: list) -> Any:
    """One row per (experiment, defense) of ``compare`` results (:class:`..report.Result`), columns
    :data:`CELL_COLUMNS`: the attack ``setting`` and ``seed``; whether it is a ``clean model`` and whether the
    ``attack works``; the undefended model's clean accuracy and attack success on the held-out test images; the
    ``labels`` the defense names (None: it gives no label verdict) and whether they hold the target (``names
    target``); the training samples it flags with ``sensitivity`` / ``specificity`` over the whole training set;
    its repaired model's scores (``clean after``, ``ASR after``; NaN where no repair ran); its wall ``seconds`` and
    their ``cost`` as a multiple of the model's own training on the same machine; and on a clean model whether it
    raised a ``false alarm`` (it names a label, or, for a defense without a label verdict, flags any sample).
    Percentages in %, NaN where not measured."""
    import pandas as pd

    rows = []
    for rec in records:
        rep, params = rec.report, rec.params
        clean = params["poison"] == "clean"
        before = rep.before
        train_s = rep.details.get("train_seconds") or float("nan")
        for name, d in rep.defenses.items():
            f, after = d.filtering, d.after
            seconds = rep.details.get("defense_seconds", {}).get(name, float("nan"))
            flagged = f.flagged if f is not None and f.flagged is not None else None
            alarm = None
            if clean:
                alarm = bool(d.labels) if d.labels is not None else bool(flagged)
            rows.append({
                "setting": setting(params), "seed": params["recipe"]["seed"], "clean model": clean,
                "attack works": bool(rep.details.get("attack_works")),
                "clean before": before.clean_accuracy if before else float("nan"),
                "ASR before": before.attack_success_rate if before and before.attack_success_rate is not None
                else float("nan"),
                "defense": name, "labels": d.labels, "names target": d.names_target,
                "flagged": float("nan") if flagged is None else flagged,
                "sensitivity": float("nan") if f is None or f.sensitivity is None else f.sensitivity,
                "specificity": float("nan") if f is None or f.specificity is None else f.specificity,
                "clean after": float("nan") if after is None else after.clean_accuracy,
                "ASR after": float("nan") if after is None or after.attack_success_rate is None
                else after.attack_success_rate,
                "seconds": seconds, "cost": seconds / train_s, "false alarm": alarm})
    return pd.DataFrame(rows, columns=list(CELL_COLUMNS)).astype({"clean model": bool, "attack works": bool})


__all__ = ["CELL_COLUMNS", "DEFENSE_KEYS", "PAIRED", "SECTION", "cell_table", "chapter_settings", "grid", "run_point",
           "setting", "slug", "steps"]
