"""Isolating the clean data with ensembles of weak learners, against the book's other filters (chapter 12).

One experiment (:func:`run_point`, also the runner's ``ensembles`` grid) takes a model recipe of the book
(:class:`experiments.Recipe`: the attack, the training subset, the CNN), and on its poisoned training set runs

* no defense: the recipe's model (shared with every chapter through the cache);
* the ensemble of weak learners (:class:`defenses.weak_learners.WeakLearnerEnsemble`), then a fresh model of the
  recipe trained on what it keeps;
* ITLM (:func:`defenses.weak_learners.itlm_keep`), Spectral Signatures over every label (the removal budget of the
  weak-learner paper: 1.5 × the poisoned share of the source class) and Activation Clustering, each followed by
  the same retraining;
* the paper's own defense (target scan, filtering, one-epoch neutralization);
* optionally a clean model of the recipe, whose share of triggered source images sent to the target is the
  paper's "L" column (what the trigger does without any poison).

Every model is scored on the whole clean test set (clean accuracy C), and on the source class's test images with
and without the trigger: attack success (triggered images classified as the target) and the weak-learner paper's
targeted misclassification A (Eq. 7: correct without the trigger *and* sent to the target with it). Filters also
report FP (clean training samples removed) and FN (poisoned ones kept).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .. import report

if TYPE_CHECKING:
    from ..report import Result

#: The defenses of an experiment, in the order the chapter shows them.
METHODS = ("none", "Ensembles of weak learners", "ITLM", "Spectral Signatures", "Activation Clustering",
           "Poison as a Cure")
#: The weak-learner paper's ITLM keep ratios by the poisoned share of the source class (A-Q9).
ITLM_KEEP = {0.05: 0.98, 0.1: 0.96, 0.2: 0.92}

def itlm_keep_ratio(rate: float) -> float:
    """The paper's ITLM keep ratio for a poisoned share ``rate`` of the source class (98/96/92 % for 5/10/20 %).
    The paper gives no rule for other shares, so none is invented: ``ValueError`` (pass ``itlm_keep``)."""
    for r, keep in ITLM_KEEP.items():
        if abs(rate - r) < 1e-9:
            return keep
    raise ValueError(f"the paper gives ITLM keep ratios for poisoned shares {sorted(ITLM_KEEP)}, got {rate}; "
                     "pass baselines.itlm_keep explicitly")


def scores(model, test, spec, device) -> dict[str, float]:
    """C, attack success and Eq. 7's A of ``model`` (all in %) on the test set and its triggered source images."""
    from ... import metrics
    from ...train import predict

    pred = predict(model, test.x, device=device)
    src = np.flatnonzero(test.y == spec.base)
    pred_src = pred[src]
    pred_trig = predict(model, spec.trigger.apply(test.x[src]), device=device)
    return {"clean_accuracy": metrics.accuracy(pred, test.y),
            "attack_success": metrics.attack_success_rate(pred_trig, spec.target),
            "targeted": metrics.targeted_misclassification(pred_src, pred_trig, spec.base, spec.target)}


def model_factory(recipe):
    """``seed -> fresh model`` of the recipe's architecture (what the weak learners and ITLM train)."""
    import torch

    from ..store import build_model_arch

    def make(seed: int):
        torch.manual_seed(seed)
        return build_model_arch(recipe)

    return make


def get_itlm(tm, keep_ratio: float, rounds: int, first_epochs: int, epochs: int, device, progress: bool,
             cache=None) -> np.ndarray:
    """ITLM's kept mask after each round (rounds, N) on a trained model's training set, cached under the recipe
    and the ITLM settings; every round trains the recipe's architecture with the recipe's optimiser."""
    from ... import provenance
    from ...cache import Cache
    from ...defenses.weak_learners import itlm_keep

    cache = cache or Cache()
    config = {"model": tm.recipe.cache_config(), "keep_ratio": keep_ratio, "rounds": rounds,
              "first_epochs": first_epochs, "epochs": epochs}

    def build(folder):
        with provenance.stopwatch() as t:
            hist = itlm_keep(model_factory(tm.recipe), tm.train_set.as_imageset(), keep_ratio, rounds, first_epochs,
                             epochs, tm.recipe.train_config(), device, progress)
        np.save(folder / "itlm.npy", np.stack(hist))
        return {"provenance": provenance.collect(device, seed=tm.recipe.seed, wall_seconds=round(t["seconds"], 1))}

    return cache.get_or_build("itlm", config, build, lambda folder: np.load(folder / "itlm.npy")).value


#: The chapter's parameters that configure the defense (``wl_<field>`` -> EnsembleConfig field).
ENSEMBLE_FIELDS = ("components", "bags", "alpha", "eta", "warmup_epochs", "iter_epochs", "learner_epochs",
                   "min_active", "spl_rounds", "spl_epochs", "spl_momentum", "lr", "batch_size", "augment",
                   "eval_augment")
#: The chapter's parameters of the other methods.
BASELINE_FIELDS = ("itlm_rounds", "itlm_first_epochs", "itlm_epochs", "ss_layer", "ac_layer", "threshold", "eta")


def live_trigger(nb: dict[str, Any]) -> dict[str, Any]:
    """The chapter's trigger as a sweep trigger: ``wl_poison`` with the shared ``opacity`` (blend) or
    ``wl_patch_size`` (patch)."""
    kind = nb["wl_poison"]
    extra = {"blend": {"opacity": nb.get("opacity")}, "patch": {"patch_size": nb.get("wl_patch_size")}}
    return {"poison": kind, **extra.get(kind, {})}


def experiment_params(nb: dict[str, Any], trigger: dict[str, Any], rate: float, seed: int,
                      clean_reference: bool) -> dict[str, Any]:
    """The parameters of one experiment (:func:`run_point`) from a namespace holding the chapter's parameters
    (the notebook's globals, or the profile's shared recipe merged with its ``12_weak_learners`` section).

    The recipe is the book's shared one (``Recipe.param_names()``) with the chapter's training subset
    (``wl_train_per_class``), epochs (``wl_epochs``), the ``trigger`` (a sweep trigger: ``{"poison": "blend",
    "opacity": 0.2}``, ``{"poison": "pixel"}``, ``{"poison": "patch", "patch_size": 3}``), the poisoned share
    ``rate`` of the source class and ``seed``.
    """
    from ..store import Recipe, recipe_fields
    from .sweep import check_trigger

    missing = [n for n in (*Recipe.param_names(), "wl_train_per_class", "wl_epochs",
                           *(f"wl_{f}" for f in ENSEMBLE_FIELDS), *BASELINE_FIELDS) if n not in nb]
    if missing:
        raise ValueError(f"parameters missing for the experiment: {missing}")
    recipe = recipe_fields(nb)
    recipe.update(check_trigger(trigger), train_per_class=nb["wl_train_per_class"], epochs=nb["wl_epochs"],
                  poison_rate=float(rate), seed=int(seed))
    Recipe(**recipe)  # validates
    ensemble = {f: nb[f"wl_{f}"] for f in ENSEMBLE_FIELDS}
    ensemble["seed"] = int(seed)
    return {"recipe": recipe, "ensemble": ensemble, "baselines": {f: nb[f] for f in BASELINE_FIELDS},
            "clean_reference": bool(clean_reference)}


def same_experiment(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two experiments' parameters describe the same recipe, defense and baselines (whether the clean
    reference was trained does not matter)."""
    return all(a[k] == b[k] for k in ("recipe", "ensemble", "baselines"))


def grid(prof: dict[str, Any], spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The runner's ``ensembles`` grid: every trigger of ``spec['triggers']`` at every poisoned share
    (``poison_rates``) and seed, with the chapter's settings from the profile. Returns (name, params) pairs."""
    from .sweep import trigger_slug

    known = {"triggers", "poison_rates", "seeds", "clean_reference"}
    if set(spec) - known:
        raise ValueError(f"unknown keys in reproduce.ensembles: {sorted(set(spec) - known)}; known: {sorted(known)}")
    nb = {**prof["experiment"], **prof["notebooks"]["12_weak_learners"]}
    triggers = spec.get("triggers") or [live_trigger(nb)]
    out = []
    for rate in spec.get("poison_rates", [nb["wl_poison_rate"]]):
        for seed in spec.get("seeds", [nb["seed"]]):
            for trig in triggers:
                params = experiment_params(nb, trig, rate, seed, spec.get("clean_reference", True))
                name = f"pair{nb['pair']}-{trigger_slug(trig)}-{nb['model']}-r{rate:g}-s{seed}"
                out.append((name, params))
    return out


def run_point(params: dict[str, Any], device: str = "auto", data=None, progress: bool = False,
              methods: tuple[str, ...] = METHODS) -> tuple[dict[str, Any], dict[str, float]]:
    """One experiment: the ``methods`` (default: every one of :data:`METHODS`) on one recipe. Returns (results,
    stage wall times in s). The undefended model ('none') is always trained and scored.

    ``params``: ``recipe`` (fields of :class:`experiments.Recipe`), ``ensemble`` (fields of
    :class:`defenses.weak_learners.EnsembleConfig`), ``baselines`` (``itlm_rounds``, ``itlm_first_epochs``,
    ``itlm_epochs``, optional ``itlm_keep``; ``ss_layer``, ``ac_layer``; ``threshold``, ``eta`` of the paper's
    defense) and ``clean_reference`` (train the recipe's clean model for the "L" column).
    """
    from ...defenses.weak_learners import EnsembleConfig, WeakLearnerEnsemble, removal_counts
    from ...provenance import stage
    from ...train import resolve_device
    from .. import pipeline, store

    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; methods are {METHODS}")
    dev = resolve_device(device)
    data = data or store.load_cifar10()
    recipe = store.Recipe(**params["recipe"])
    if recipe.poison not in ("blend", "pixel", "patch"):
        raise ValueError(f"an isolation experiment poisons one source class (blend, pixel or patch), got "
                         f"{recipe.poison!r}")
    cfg = EnsembleConfig(**params["ensemble"])
    b = params["baselines"]
    stages: dict[str, float] = {}
    with stage(stages, "train"):
        tm = store.get_model(recipe, device=dev, data=data, progress=progress)
    train = tm.train_set
    spec = train.spec
    is_poison = train.is_poison
    out: dict[str, Any] = {"source": int(spec.base), "target": int(spec.target), "n_train": len(train),
                           "n_poison": int(is_poison.sum()), "trigger": spec.to_dict()["trigger"], "methods": {}}
    res = out["methods"]
    res["none"] = {**scores(tm.model, data.test, spec, dev), "fp": None, "fn": None, "removed": 0}

    def retrained(name: str, kept: np.ndarray) -> None:
        with stage(stages, f"{name}_retrain"):
            model = store.get_retrained(tm, ~kept, device=dev, progress=progress).model
        res[name] = {**scores(model, data.test, spec, dev), **removal_counts(kept, is_poison)}

    if "Ensembles of weak learners" in methods:
        with stage(stages, "ensemble"):
            ens = WeakLearnerEnsemble(cfg, device=dev, progress=progress).run(
                model_factory(recipe), train.as_imageset(), f"{recipe.model}-w{recipe.width}")
        n_classes = len(data.train.classes)
        clean_y = np.where(is_poison, -1, train.y)  # the clean samples' labels; -1 for the poison
        # the labels each learner trained on (as given), and its accuracy per clean class
        held, acc = ens.per_class(train.y, n_classes, clean=~is_poison)
        out["ensemble"] = {
            "components": [{"bag": c.bag, "index": c.index, "size": len(c.rows), "active": c.active,
                            "poison": int(is_poison[c.rows].sum()), "seconds": c.seconds,
                            "learner_accuracy_clean": float(np.mean(c.preds[~is_poison] == train.y[~is_poison]) * 100),
                            "learner_target_on_poison": float(np.mean(c.preds[is_poison] == spec.target) * 100),
                            "per_label": held[j].tolist(), "learner_accuracy_per_class": acc[j].tolist()}
                           for j, c in enumerate(ens.components)],
            "vote": removal_counts(ens.vote_kept, is_poison),
            "spl": [removal_counts(k, is_poison) for k in ens.spl_kept], "seconds": ens.seconds,
            "clean_per_class": np.bincount(clean_y[clean_y >= 0], minlength=n_classes).tolist(),
            "clean_removed_per_class": np.bincount(clean_y[~ens.kept & (clean_y >= 0)], minlength=n_classes).tolist()}
        retrained("Ensembles of weak learners", ens.kept)

    if "ITLM" in methods:
        keep_ratio = b.get("itlm_keep") or itlm_keep_ratio(recipe.poison_rate)
        with stage(stages, "itlm"):
            itlm = get_itlm(tm, keep_ratio, b["itlm_rounds"], b["itlm_first_epochs"], b["itlm_epochs"], dev,
                            progress)
        out["itlm_rounds"] = [removal_counts(k, is_poison) for k in itlm]
        retrained("ITLM", itlm[-1])

    # the book's other defenses through the one pipeline: Spectral Signatures over every label with the true poison
    # rate as its budget (this paper's protocol), both removal defenses retrained from scratch, the paper's defense
    run = pipeline.run_defenses(
        tm, data, [m for m in (pipeline.SPECTRAL, pipeline.CLUSTERING, pipeline.POISON_CURE) if m in methods],
        pipeline.DefenseSettings(eps=recipe.poison_rate, ss_scope="all", ss_layer=b["ss_layer"], ac_layer=b["ac_layer"],
                                 threshold=b["threshold"], eta=b["eta"], seed=recipe.seed,
                                 retrain=("activation_clustering", "spectral")),
        device=dev, progress=progress, stages=stages)
    for name in (pipeline.SPECTRAL, pipeline.CLUSTERING):
        if name in run:
            kept = ~run[name].flagged
            res[name] = {**scores(run[name].repaired, data.test, spec, dev), **removal_counts(kept, is_poison)}
    if pipeline.POISON_CURE in run:
        ours = run[pipeline.POISON_CURE]
        scan = ours.artefact.result.scan
        res[pipeline.POISON_CURE] = {
            **(scores(ours.repaired, data.test, spec, dev) if ours.repaired is not None else res["none"]),
            **removal_counts(~ours.flagged, is_poison), "flags_target": ours.names_target(int(spec.target)),
            "scan_ratio": float(scan.ratio), "scan_label": int(scan.target)}

    out["clean_reference"] = None
    if params.get("clean_reference"):
        with stage(stages, "clean_reference"):
            clean = store.get_model(recipe.replace(poison="clean"), device=dev, data=data, progress=progress)
        out["clean_reference"] = scores(clean.model, data.test, spec, dev)
    return out, stages


def defense_step(tm, data, s, clean, target, rows, repair, device, progress) -> Any:
    """The ensembles of weak learners in the one pipeline (:func:`..pipeline.run_defenses`, ``steps={ENSEMBLE:
    defense_step}``; settings in ``DefenseSettings.ensemble``): the ensemble's kept set; its repair is a model of
    the recipe retrained on what it keeps."""
    from ...attacks import PoisonedSet
    from ...defenses.weak_learners import EnsembleConfig, WeakLearnerEnsemble
    from .. import store
    from ..pipeline import ENSEMBLE, Outcome

    cfg = EnsembleConfig(**{"seed": s.seed, **s.ensemble})
    images = tm.train_set.as_imageset() if isinstance(tm.train_set, PoisonedSet) else tm.train_set  # clean model
    ens = WeakLearnerEnsemble(cfg, device=device, progress=progress).run(
        model_factory(tm.recipe), images, f"{tm.recipe.model}-w{tm.recipe.width}")
    flagged = ~np.asarray(ens.kept, dtype=bool)
    repaired = store.get_retrained(tm, flagged, device=device, progress=progress).model if repair else None
    return Outcome(ENSEMBLE, flagged=flagged, repaired=repaired, artefact=ens)


def trigger_label(params: dict[str, Any]) -> str:
    """Short name of an experiment's trigger: '1 px', '3×3', 'blend 0.2'."""
    from .sweep import trigger_name, trigger_of

    return trigger_name(trigger_of(params["recipe"]))


def method_table(records: list[Result]):
    """One row per (experiment, method): trigger, rate, C, attack success, A, FP, FN, removed, device, commit."""
    import pandas as pd

    rows = []
    for rec in records:
        p, r = rec.params, rec.report
        for name in METHODS:
            if name == "none":
                scores, filtering = r.before, report.Filtering(0, scope="training set")
            elif name in r.defenses:
                scores, filtering = r.defenses[name].after, r.defenses[name].filtering
            else:
                continue
            rows.append({"trigger": trigger_label(p), "rate": p["recipe"]["poison_rate"],
                         "method": name, "clean acc %": scores.clean_accuracy, "ASR %": scores.attack_success_rate,
                         "A (Eq. 7) %": scores.targeted, "FP": filtering.false_positives,
                         "FN": filtering.false_negatives, "removed": filtering.flagged, "poisons": r.n_poison,
                         "device": rec.provenance["device"], "commit": report.short_commit(rec.provenance["commit"])})
    df = pd.DataFrame(rows)
    for col in ("FP", "FN", "removed"):
        if col in df:
            df[col] = df[col].astype("Int64")  # counts: integers, with <NA> where a method removes nothing
    return df


__all__ = ["BASELINE_FIELDS", "ENSEMBLE_FIELDS", "METHODS", "experiment_params",
           "get_itlm", "grid", "itlm_keep_ratio", "live_trigger", "method_table", "model_factory",
           "run_point", "same_experiment", "scores",
           "trigger_label"]
