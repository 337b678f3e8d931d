"""The variable-size sweep (chapter 9): every defense against trigger size, blend opacity and poison rate.

The paper tests two trigger sizes (one pixel, a full-image blend at 20 % opacity). The sweep walks between and
beyond them on one pair and one model recipe: the pair's pixel trigger, then the same colour grown into solid
k x k squares (:func:`attacks.grown_patch`), then full-image blends of rising opacity, each at several poison rates.
Every point is one ``sweep`` experiment of the runner (:mod:`poisoncure.experiments.runner`, one result file each) and
measures, on the same trained model:

* the attack: clean accuracy and attack success before any defense;
* the poison signal: its norm ``‖v‖`` in normalised input gradients of the target class and the spread ``σ`` of
  the clean samples along it (the two quantities of Theorem 5.1, :func:`signal_to_noise`), and the error of the
  paper's filtering step run on the target class whatever its class scan decides (the theorem's setting);
* each defense (:data:`DEFENSES`): whether it flags the target label, its sensitivity and specificity in the target
  class when it filters samples, and clean accuracy and attack success after its repair, on the test images the
  defenders never saw.

:func:`point_table` flattens result files into one row per (point, defense) for the chapter's figures, and
:func:`breaking_points` reads off where each defense stops working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .. import report
from ..pipeline import DEFENSES  # the defenses of a sweep point, in the order the chapter shows them

if TYPE_CHECKING:
    from ..report import Result

#: A repaired model counts as rid of the backdoor below this attack success (%), as in chapter 7.
REMOVED_BELOW = 10.0


# ------------------------------------------------------------------------------------------ the grid
def _kind_and_size(trigger: dict[str, Any]) -> tuple[str, Any]:
    kind = trigger.get("poison")
    if kind not in ("pixel", "patch", "blend"):
        raise ValueError(f"a sweep trigger is pixel, patch or blend, got {trigger!r}")
    return kind, {"pixel": None, "patch": trigger.get("patch_size"), "blend": trigger.get("opacity")}[kind]


def trigger_name(trigger: dict[str, Any]) -> str:
    """Short label of a sweep trigger: '1 px', '3×3', 'blend 0.2'."""
    kind, size = _kind_and_size(trigger)
    if kind == "pixel":
        return "1 px"
    return f"{size}×{size}" if kind == "patch" else f"blend {size:g}"


def trigger_slug(trigger: dict[str, Any]) -> str:
    """File-name form of :func:`trigger_name`: 'pixel', 'patch3', 'blend0.2'."""
    kind, size = _kind_and_size(trigger)
    return kind if kind == "pixel" else f"{kind}{size:g}"


def trigger_of(recipe: dict[str, Any]) -> dict[str, Any]:
    """The sweep trigger of a point's recipe (its poison with only the field that sizes it)."""
    kind = recipe["poison"]
    size = {"patch": {"patch_size": recipe.get("patch_size")}, "blend": {"opacity": recipe.get("opacity")}}
    return {"poison": kind, **size.get(kind, {})}


def trigger_pixels(trigger: dict[str, Any]) -> int:
    """How many pixels the trigger changes (1, k², or all 1,024 for a blend): the x axis of the size plots."""
    kind = trigger.get("poison")
    return {"pixel": 1, "patch": int(trigger.get("patch_size", 0)) ** 2, "blend": 32 * 32}[kind]


def check_trigger(trigger: dict[str, Any]) -> dict[str, Any]:
    """Validate one trigger of a profile's ``reproduce.sweep.triggers`` list and return it with only its fields."""
    if not isinstance(trigger, dict) or trigger.get("poison") not in ("pixel", "patch", "blend"):
        raise ValueError(f"a sweep trigger is a mapping with poison: pixel | patch | blend, got {trigger!r}")
    kind = trigger["poison"]
    need = {"pixel": (), "patch": ("patch_size",), "blend": ("opacity",)}[kind]
    extra = set(trigger) - {"poison", *need}
    missing = [k for k in need if k not in trigger]
    if missing or extra:
        raise ValueError(f"a {kind} trigger needs exactly {list(need)} besides 'poison'; got {trigger!r}")
    from ..store import Recipe

    Recipe(**trigger)  # validates patch_size / opacity
    return dict(trigger)


# ------------------------------------------------------------------------------------------ measurements
def signal_to_noise(g: np.ndarray, is_poison: np.ndarray) -> tuple[float, float]:
    """``(‖v‖, σ)`` of one class's input gradients ``g`` (n, d) with the true poison mask.

    Rows are normalised to unit length (as the paper's filtering does). ``‖v‖`` is the distance between the mean
    normalised gradient of the poisoned and of the clean samples; ``σ`` the standard deviation of the clean samples'
    projections on that direction. Theorem 5.1 bounds the filtering error by a quantity falling like σ²/‖v‖².
    """
    from ...signal import normalise_rows

    g = np.asarray(g, dtype=np.float64)
    mask = np.asarray(is_poison, dtype=bool)
    if g.ndim != 2 or len(g) != len(mask):
        raise ValueError(f"g must be (n, d) with one mask entry per row, got {g.shape} and {mask.shape}")
    if mask.sum() < 1 or (~mask).sum() < 2:
        raise ValueError("signal_to_noise needs at least one poisoned and two clean rows")
    gn = normalise_rows(g)
    diff = gn[mask].mean(0) - gn[~mask].mean(0)
    norm = float(np.linalg.norm(diff))
    if norm == 0:
        return 0.0, float("nan")
    sigma = float(np.std(gn[~mask] @ (diff / norm), ddof=1))
    return norm, sigma


def run_point(params: dict[str, Any], device: str = "auto", data=None, progress: bool = False
              ) -> tuple[dict[str, Any], dict[str, float]]:
    """One point of the sweep (a ``sweep`` experiment of the runner). Returns (results, stage wall times in s).

    ``params``: ``recipe`` (an :class:`experiments.Recipe`'s fields, its poison the point's trigger) and ``defense``
    (threshold, eta, eps, ss_layer, ac_layer, clean_per_class, nc_steps, fp_max_drop, retrain). Repairs run only
    when the attack works (attack success ≥ ``defense.min_asr`` %): without a backdoor there is nothing to remove.
    """
    from ...metrics import detection_rates
    from ...provenance import stage
    from ...signal import filter_gradients
    from ...train import evaluate
    from .. import pipeline, store

    data = data or store.load_cifar10()
    d = params["defense"]
    stages: dict[str, float] = {}
    recipe = store.Recipe(**params["recipe"])
    with stage(stages, "train"):
        tm = store.get_model(recipe, device=device, data=data, progress=progress)
    spec = tm.train_set.spec
    target = spec.target
    rows = np.flatnonzero(tm.train_set.y == target)
    is_poison = tm.train_set.is_poison[rows]
    clean_set, held_out = store.defender_split(data.test, d["clean_per_class"], seed=recipe.seed)

    def scored(model) -> dict[str, Any]:
        m = evaluate(model, held_out, spec, device)
        return {"clean_accuracy": m.clean_accuracy, "attack_success": m.attack_success_rate}

    before = scored(tm.model)
    works = before["attack_success"] >= d["min_asr"]
    out: dict[str, Any] = {"target": int(target), "base": int(spec.base), "n_train": len(tm.train_set),
                           "n_poison": int(tm.train_set.is_poison.sum()), "n_target": len(rows),
                           "before": before, "test_before": tm.metrics.to_dict(), "attack_works": bool(works),
                           "train_seconds": round(tm.history.seconds, 1), "defenses": {}}
    res = out["defenses"]

    with stage(stages, "signal"):
        g = store.get_gradients(tm, rows, int(target), device=device)
        out["signal_norm"], out["signal_sigma"] = signal_to_noise(g, is_poison)
        # the filtering step alone on the target class (Theorem 5.1's setting), whatever the scan decides
        mf = filter_gradients(g, seed=recipe.seed)
        out["target_filter"] = {"error": float(np.mean(mf.flagged != is_poison)) * 100,
                                **detection_rates(mf.flagged, is_poison)}

    # without a working backdoor there is nothing to repair, and Fine-Pruning (a repair only) is not run
    methods = [m for m in pipeline.DEFENSES if works or m != pipeline.PRUNING]
    run = pipeline.run_defenses(tm, data, methods, pipeline.DefenseSettings.from_params(d, seed=recipe.seed),
                                clean=clean_set, repair=works, device=device, progress=progress, stages=stages)

    def after(outcome: pipeline.Outcome) -> dict[str, Any] | None:
        """The repaired model's scores (the model's own when the repair left it unchanged; None: no repair)."""
        if outcome.unchanged:
            return before
        return None if outcome.repaired is None else scored(outcome.repaired)

    ours = run[pipeline.POISON_CURE]
    flagged_rows = ours.flagged[rows]
    res[pipeline.POISON_CURE] = {"flags_target": ours.names_target(int(target)), "flagged_labels": ours.labels,
                                 "ratio": float(ours.artefact.result.scan.ratio),
                                 **detection_rates(flagged_rows, is_poison),
                                 "filter_error": float(np.mean(flagged_rows != is_poison)) * 100, "after": after(ours)}
    for name in (pipeline.SPECTRAL, pipeline.CLUSTERING):
        o = run[name]
        res[name] = {"flags_target": o.names_target(int(target)),
                     "flagged_labels": [int(target)] if o.labels is None else o.labels,
                     **detection_rates(o.flagged[rows], is_poison), "after": None}
        if o.repaired is not None:
            res[name]["after"] = {**scored(o.repaired), "removed": int(o.flagged.sum())}
    nc = run[pipeline.CLEANSE]
    res[pipeline.CLEANSE] = {"flags_target": nc.names_target(int(target)), "flagged_labels": nc.labels,
                             "anomaly_target": float(nc.artefact.anomaly[target]), "sensitivity": None,
                             "specificity": None, "after": after(nc)}
    fp = run.outcomes.get(pipeline.PRUNING)
    res[pipeline.PRUNING] = {"flags_target": None, "flagged_labels": [], "sensitivity": None, "specificity": None,
                             "after": None if fp is None else {**scored(fp.repaired),
                                                              "pruned": float(fp.artefact.chosen_ratio)}}
    return out, stages


# ------------------------------------------------------------------------------------------ reading results
def point_table(records: list[Result]):
    """One row per (sweep result, defense), plus a 'none' row per result (the undefended model).

    Columns: trigger, family, pixels, rate, seed, clean/attack before, signal norm and σ, the defense, whether it
    flags the target, sensitivity, specificity, filtering error, clean accuracy and attack success after the repair
    (NaN where no repair ran), and where it ran."""
    import pandas as pd

    rows = []
    for rec in records:
        p, r = rec.params, rec.report
        trig = trigger_of(p["recipe"])
        common = {"trigger": trigger_name(trig), "family": trig["poison"], "pixels": trigger_pixels(trig),
                  "opacity": trig.get("opacity"), "rate": p["recipe"]["poison_rate"], "seed": p["recipe"]["seed"],
                  "clean before": r.before.clean_accuracy, "ASR before": r.before.attack_success_rate,
                  "attack works": r.details["attack_works"], "signal norm": r.details["signal_norm"],
                  "signal sigma": r.details["signal_sigma"], "n poison": r.n_poison, "n target": r.details["n_target"],
                  "target filter error": r.details["target_filter"]["error"],
                  "device": rec.provenance["device"], "commit": report.short_commit(rec.provenance["commit"])}
        rows.append({**common, "defense": "none", "flags target": None, "sensitivity": None, "specificity": None,
                     "filter error": None, "clean after": r.before.clean_accuracy,
                     "ASR after": r.before.attack_success_rate})
        for name in DEFENSES:
            dd = r.defenses.get(name)
            if dd is None:
                continue
            filtering = dd.filtering or report.Filtering()
            rows.append({**common, "defense": name, "flags target": dd.names_target,
                         "sensitivity": filtering.sensitivity, "specificity": filtering.specificity,
                         "filter error": dd.details.get("filter_error"),
                         "clean after": np.nan if dd.after is None else dd.after.clean_accuracy,
                         "ASR after": np.nan if dd.after is None else dd.after.attack_success_rate})
    cols = ["trigger", "family", "pixels", "opacity", "rate", "seed", "clean before", "ASR before", "attack works",
            "signal norm", "signal sigma", "n poison", "n target", "target filter error", "defense", "flags target",
            "sensitivity", "specificity", "filter error", "clean after", "ASR after", "device", "commit"]
    df = pd.DataFrame(rows, columns=cols)
    for c in ("opacity", "rate", "clean before", "ASR before", "signal norm", "signal sigma", "target filter error",
              "sensitivity", "specificity", "filter error", "clean after", "ASR after"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    df["attack works"] = df["attack works"].astype(bool)
    return df


def trigger_order(df) -> list[str]:
    """The triggers of a :func:`point_table` from smallest to largest: pixel, patches by side, blends by opacity."""
    keys = df.drop_duplicates("trigger")[["trigger", "family", "pixels", "opacity"]]
    fam = {"pixel": 0, "patch": 1, "blend": 2}
    keys = keys.assign(f=keys["family"].map(fam), o=keys["opacity"].fillna(0))
    return keys.sort_values(["f", "pixels", "o"])["trigger"].tolist()


def breaking_points(df):
    """Where each defense stops working, per poison rate: the triggers (smallest to largest) on which the attack
    works and the defense's repair leaves attack success ≥ :data:`REMOVED_BELOW` %, or — for detectors without a
    repair here — the ones on which it misses the target. One row per (defense, rate)."""
    import pandas as pd

    order = trigger_order(df)
    rows = []
    works = df[(df["attack works"]) & (df["defense"] != "none")]
    for (name, rate), g in works.groupby(["defense", "rate"], sort=False):
        g = g.set_index("trigger").reindex([t for t in order if t in set(g["trigger"])])
        repaired = g["ASR after"].notna()
        fails = g.index[repaired & (g["ASR after"] >= REMOVED_BELOW)].tolist()
        holds = g.index[repaired & (g["ASR after"] < REMOVED_BELOW)].tolist()
        missed = g.index[g["flags target"] == False].tolist()  # noqa: E712 (None = does not detect labels)
        rows.append({"defense": name, "rate": rate, "working attacks": len(g),
                     "repair fails on": ", ".join(fails) or "—", "repair works on": ", ".join(holds) or "—",
                     "target missed on": ", ".join(missed) or "—"})
    out = pd.DataFrame(rows, columns=["defense", "rate", "working attacks", "repair fails on", "repair works on",
                                      "target missed on"])
    if len(out):
        out["defense"] = pd.Categorical(out["defense"], [d for d in DEFENSES if d in set(out["defense"])])
        out = out.sort_values(["defense", "rate"]).reset_index(drop=True)
    return out
