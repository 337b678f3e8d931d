"""Chapter 10 (detection without the training set): the tables, figures and sentences built from the pair
search, Neural Cleanse and the paper's scan on the same models, and from the committed full-profile runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from ... import data, models
from ...experiments import report, store

if TYPE_CHECKING:
    from ...experiments.report import Result
from .. import formatting, plots
from ..formatting import MISSING
from .rows import trained_model_row

OFF_DIAGONAL = ~np.eye(10, dtype=bool)


def models_table(trained: dict[str, Any]) -> pd.DataFrame:
    """One row per model: training images, poisons, clean accuracy, attack success, training time."""
    rows = [trained_model_row(name, tm) for name, tm in trained.items()]
    return formatting.rounded(pd.DataFrame(rows).set_index("model"))


def heatmaps(results: dict[str, Any], shown: list[str], classes: tuple[str, ...]):
    """The searched norm of every (source, target) pair per model, one map per row (wide enough for the class
    names at the body text's size), the reported pair boxed."""
    fig, axes = plt.subplots(len(shown), 1, figsize=(5.2, 4.6 * len(shown)), squeeze=False)
    for ax, name in zip(axes[:, 0], shown, strict=True):
        n = results[name].search.norms.copy()
        np.fill_diagonal(n, np.nan)
        im = ax.imshow(n, cmap="viridis", vmin=0, vmax=np.nanpercentile(n, 95))
        ax.set_xticks(range(10), classes, rotation=90)
        ax.set_yticks(range(10), classes)
        ax.set_xlabel("target t")
        ax.set_ylabel("source s")
        ax.grid(False)
        r = results[name]
        ax.add_patch(plt.Rectangle((r.target - 0.5, r.source - 0.5), 1, 1, fill=False, color="red", lw=2))
        ax.set_title(f"{name} model: p = {r.p_value:.1e}", fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046, label="‖v_st‖₂")
    fig.tight_layout()
    return fig


def null_fits(results: dict[str, Any], shown: list[str]):
    """Per model: the histogram of the K(K-1) statistics, the truncated and the naive gamma null, the largest."""
    cols = plots.colours(6)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    for ax, name in zip(axes, shown, strict=True):
        r = results[name]
        s = r.statistics[OFF_DIAGONAL]
        grid = np.linspace(0, s.max() * 1.05, 300)
        ax.hist(s, bins=30, density=True, color=cols[0], alpha=0.6, label="statistics r = 1/‖v‖")
        ax.plot(grid, stats.gamma.pdf(grid, r.null.shape, scale=r.null.scale), color="k", label="truncated null")
        ax.plot(grid, stats.gamma.pdf(grid, r.naive.shape, scale=r.naive.scale), color="k", ls="--",
                label="naive null")
        ax.axvline(r.null.r_max, color=cols[3], lw=1.5, label="largest")
        ax.set_title(f"{name}: p = {r.null.p_value:.1e} (naive {r.naive.p_value:.1e})", fontsize=11)
        ax.set_xlabel("r")
    handles, labels = axes[0].get_legend_handles_labels()  # one key for the three panels, off the data
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=9, frameon=False)
    return fig


def detection_table(results: dict[str, Any], trained: dict[str, Any], provenance: dict[str, dict],
                    classes: tuple[str, ...]) -> pd.DataFrame:
    """The search's verdict per model: the pair it reports, its norm beside the median, both p-values, time."""
    rows = []
    for name, r in results.items():
        n = r.search.norms[OFF_DIAGONAL]
        rows.append({"model": name, "clean accuracy %": trained[name].metrics.clean_accuracy,
                     "reported pair": f"{classes[r.source]} → {classes[r.target]}",
                     "its norm": r.search.norms[r.source, r.target], "median norm": float(np.median(n)),
                     "p (truncated null)": r.null.p_value, "p (naive null)": r.naive.p_value,
                     "called attacked": r.detected, "pairs not reached": int((~r.search.reached[OFF_DIAGONAL]).sum()),
                     "search (s)": provenance[name].get("wall_seconds", np.nan)})
    table = pd.DataFrame(rows).set_index("model")
    for c in ("p (truncated null)", "p (naive null)"):
        table[c] = table[c].map(lambda v: f"{v:.2e}")
    return table.round(2)


def search_texts(results: dict[str, Any], additive: str, true_pair: tuple[int, int], blend_pair: tuple[str, str],
                 classes: tuple[str, ...]) -> dict[str, Any]:
    """The sentences reading the search on the additive, blend and clean models (``true_pair``: the additive
    attack's (source, target); ``blend_pair``: the blend attack's (base, target) names)."""
    ra, rb, rc = results[additive], results["blend"], results["clean"]
    base, target = classes.index(blend_pair[0]), classes.index(blend_pair[1])
    return {"xiang_pair_additive": f"{classes[ra.source]} → {classes[ra.target]}",
            "xiang_true_pair": f"{classes[true_pair[0]]} → {classes[true_pair[1]]}",
            "xiang_p_additive": f"{ra.null.p_value:.1e}", "xiang_pnaive_additive": f"{ra.naive.p_value:.1e}",
            "xiang_correct": "the true pair" if (ra.source, ra.target) == tuple(true_pair) else "not the true pair",
            "xiang_pair_blend": f"{classes[rb.source]} → {classes[rb.target]}",
            "xiang_p_blend": f"{rb.null.p_value:.1e}",
            "xiang_blend_true_norm": float(rb.search.norms[base, target]),
            "xiang_blend_true_pair": f"{blend_pair[0]} → {blend_pair[1]}",
            "xiang_pair_clean": f"{classes[rc.source]} → {classes[rc.target]}",
            "xiang_p_clean": f"{rc.null.p_value:.1e}",
            "xiang_clean_verdict": "a false alarm" if rc.detected else "no alarm"}


def false_alarm_figure(results: dict[str, Any], trained: dict[str, Any], clean_names: list[str],
                       full_clean: list[Result], model: str, theta: float, classes: tuple[str, ...]):
    """The p-value of every clean model against its clean accuracy: this build's (circles) and the committed
    full-profile ResNet-18s (squares), with θ."""
    cols = plots.colours(6)
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    for i, name in enumerate(clean_names):
        r = results[name]
        acc = trained[name].metrics.clean_accuracy
        ax.scatter(acc, r.null.p_value, color=cols[i], s=40, zorder=3,
                   label=f"{models.MODEL_NAMES[model]}, this build (CPU)" if i == 0 else None)
        ax.annotate(f"{name}\n{classes[r.source]} → {classes[r.target]}", (acc, r.null.p_value), fontsize=7,
                    xytext=(6, -4), textcoords="offset points", va="top")  # below: the squares' labels sit above
    for j, rec in enumerate(full_clean):
        x = rec.report[report.XIANG].details
        acc = rec.report.before.clean_accuracy
        ax.scatter(acc, x["p_value"], marker="s", color=cols[5], s=40, zorder=3,
                   label="ResNet-18, full profile (GPU, committed)" if j == 0 else None)
        ax.annotate(f"{rec.params['recipe']['train_per_class'] or 5000}/class", (acc, x["p_value"]), fontsize=7,
                    xytext=(0, 6 + 8 * (j % 2)), textcoords="offset points", ha="center", va="bottom")
    ax.axhline(theta, color="black", ls="--", lw=1, label=f"θ = {theta:g}")
    ax.set_xlim(right=max(ax.get_xlim()[1], 100))
    ax.set_yscale("log")
    lo = ax.get_ylim()[0]
    ax.set_ylim(lo / 300, 30)  # room for the labels below the lowest point and above p = 1
    ax.set_xlabel("clean accuracy %")
    ax.set_ylabel("p-value (truncated null)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def full_profile_texts(full_runs: list[Result], search_per_class: int, classes: tuple[str, ...]
                       ) -> dict[str, str]:
    """The sentences reading the committed full-profile runs: the additive model, and the clean ResNet-18s'
    false alarms."""
    out = {}
    full_add = [r for r in full_runs if r.params["poison"] in store.ADDITIVE]
    if full_add:
        ra = full_add[0].report
        x, ours, nc = ra[report.XIANG].details, ra[report.POISON_CURE], ra[report.CLEANSE]
        asr = ra.before.attack_success_rate
        recipe = full_add[0].params["recipe"]
        out["full_additive"] = (
            f"The additive model (chessboard, ‖v‖₂ = {recipe['additive_l2']:g}) reached an attack success of only "
            f"{asr:.1f}%: in {recipe['epochs']} epochs the ResNet-18 did not learn so faint a pattern. "
            f"The pair search calls it {'attacked' if x['detected'] else 'clean'} (p = "
            f"{x['p_value']:.2f}), the paper's method flags "
            f"{', '.join(classes[k] for k in ours.labels) or 'nothing'}, and Neural Cleanse flags "
            f"{', '.join(classes[k] for k in nc.labels) or 'nothing'} (the attack's target is "
            f"{classes[ra.target]}). Whether the search finds a learned additive backdoor at this scale stays "
            "open until a stronger pattern or a longer schedule is run." if asr < 50 else
            f"The additive model (chessboard, ‖v‖₂ = {recipe['additive_l2']:g}) sends {asr:.1f}% of the triggered "
            f"images to the target; the search reports {classes[x['source']]} → {classes[x['target']]} with "
            f"p = {x['p_value']:.1e}.")
    else:
        out["full_additive"] = "No committed full-profile result for the additive model."
    full_clean = [r for r in full_runs if r.params["poison"] == "clean"]
    n_fa = sum(r.report[report.XIANG].details["detected"] for r in full_clean)
    ps = ", ".join(f"p = {r.report[report.XIANG].details['p_value']:.2f} at {r.report.before.clean_accuracy:.1f}% "
                   "clean accuracy" for r in sorted(full_clean, key=lambda r: r.report.before.clean_accuracy))
    if not full_clean:
        out["full_clean_text"] = "No committed full-profile clean models."
    elif n_fa == 0:
        out["full_clean_text"] = (
            f"None of the {len(full_clean)} clean ResNet-18s is called attacked ({ps}), including the least accurate "
            "one: at the full profile's scale the false alarms of this build's CPU models disappear, which is the "
            "regime of the paper's false-positive rate. Architecture, schedule, augmentation and the number of "
            f"search images (100 per class instead of {search_per_class}) all differ between the two, so this does "
            "not say which of them matters")
    else:
        out["full_clean_text"] = (f"{n_fa} of the {len(full_clean)} clean ResNet-18s are called attacked ({ps}): "
                                  "false alarms persist at the full profile's scale")
    return out


def comparison_rows(name: str, tm: Any, search: Any, reversed_triggers: Any, cure: Any,
                    classes: tuple[str, ...]) -> list[dict[str, Any]]:
    """Three rows for one model: what the pair search, Neural Cleanse and the paper's scan call it and name, and
    whether the names are right (NaN where there is nothing to be right about)."""
    spec = store.attack_spec_or_none(tm)
    t_true = spec.target if spec else None
    s_true = spec.base if spec else None
    r = search
    rows = [{"model": name, "detector": "Xiang et al. (pairs)", "called attacked": r.detected,
             "target named": classes[r.target] if r.detected else MISSING,
             "source named": classes[r.source] if r.detected else MISSING,
             "right target": (r.target == t_true) if (r.detected and spec) else np.nan,
             "right source": (r.source == s_true) if (r.detected and spec) else np.nan}]
    flagged = np.flatnonzero(reversed_triggers.flagged)
    nc_t = int(np.argmax(reversed_triggers.anomaly)) if len(flagged) else None
    rows.append({"model": name, "detector": "Neural Cleanse (labels)", "called attacked": bool(len(flagged)),
                 "target named": ", ".join(classes[k] for k in flagged) or MISSING, "source named": "n/a",
                 "right target": (nc_t == t_true) if (nc_t is not None and spec) else np.nan,
                 "right source": np.nan})
    scan, base = cure.scan, cure.base
    rows.append({"model": name, "detector": "Poison as a Cure (gradients)", "called attacked": bool(scan.poisoned),
                 "target named": classes[scan.target] if scan.poisoned else MISSING,
                 "source named": classes[base.base] if (scan.poisoned and base is not None) else MISSING,
                 "right target": (scan.target == t_true) if (scan.poisoned and spec) else np.nan,
                 "right source": (base.base == s_true) if (scan.poisoned and spec and base is not None)
                 else np.nan})
    return rows


#: what each detector of the chapter needs and names
NEEDS = pd.DataFrame([
    ("Xiang et al. (pairs)", "no", "yes (a few per class)", "gradients w.r.t. the input", "source and target"),
    ("Neural Cleanse (labels)", "no", "yes", "gradients w.r.t. the input", "target"),
    ("Poison as a Cure (gradients)", "yes", "no", "gradients w.r.t. the input", "target, base, poisoned samples"),
], columns=["detector", "training set", "clean data", "model access", "what it names"]).set_index("detector")


def reverse_table(records: list[Result]):
    """One row per ``reverse`` result (the reverse-engineering chapter's table of committed runs): accuracy,
    attack success, the pair search's reported pair, norms and p-values, what Neural Cleanse and the paper's
    method flag, and where it ran."""
    rows = []
    for rec in records:
        res = rec.report
        x = res[report.XIANG].details
        norms = np.asarray(x["norms"], dtype=float)
        off = ~np.eye(len(norms), dtype=bool)
        rows.append({
            "model": f"{rec.params['poison']} ({rec.params['recipe']['train_per_class'] or 5000}/class)",
            "clean accuracy %": res.before.clean_accuracy,
            "attack success %": res.before.attack_success_rate,
            "reported pair": f"{data.CLASSES[x['source']]} → {data.CLASSES[x['target']]}",
            "its norm": norms[x["source"], x["target"]], "median norm": float(np.median(norms[off])),
            "p (truncated)": x["p_value"], "p (naive)": x["p_naive"], "Xiang: attacked": x["detected"],
            "Neural Cleanse flags": ", ".join(data.CLASSES[k] for k in res[report.CLEANSE].labels) or "none",
            "ours flags": ", ".join(data.CLASSES[k] for k in res[report.POISON_CURE].labels) or "none",
            "device, commit": f"{rec.provenance['device'].replace('NVIDIA ', '')}, "
                              f"{report.short_commit(rec.provenance['commit'])}"})
    return pd.DataFrame(rows).set_index("model") if rows else pd.DataFrame()
