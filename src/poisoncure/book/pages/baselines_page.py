"""Chapter 7 (baselines on the same models): the tables, figures and sentences built from the four baselines'
results beside the paper's method."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ... import metrics
from ...experiments import paper, pipeline
from .. import plots

#: what each defense of the chapter needs and how it repairs
NEEDS = pd.DataFrame([
    ("Poison as a Cure (chapters 3–6)", "yes", "no", "no", "no", "one-epoch fine-tuning"),
    ("Spectral Signatures", "yes", "no", "bound ε", "yes, in the paper's comparison", "retrain from scratch"),
    ("Activation Clustering", "yes", "no", "no (size rule)", "no", "retrain from scratch"),
    ("Neural Cleanse", "no", "yes", "no", "no", "unlearning fine-tune"),
    ("Fine-Pruning", "no", "yes", "no", "no", "pruning + fine-tune"),
], columns=["defense", "training set", "clean data", "poison rate", "target class", "repair"]).set_index("defense")


#: the detection table's rows: (method label, the flags within the target class from a defense run and its rows)
DETECTION_ROWS = (
    ("Poison as a Cure", lambda run, rows: run[pipeline.POISON_CURE].flagged[rows]),
    ("Activation Clustering (own rule)", lambda run, rows: run[pipeline.CLUSTERING].artefact.flagged[rows]),
    ("Activation Clustering (smaller target cluster)",
     lambda run, rows: run[pipeline.CLUSTERING].artefact.cluster[rows] == 1),
    ("Spectral Signatures (target, 1.5ε)", lambda run, rows: run[pipeline.SPECTRAL].artefact.removed))


def detection_table(runs: dict[str, Any], trained: dict[str, Any], poisons: list[str]) -> pd.DataFrame:
    """Specificity and sensitivity within the target class of every sample detector (:data:`DETECTION_ROWS`) on
    each poisoned model, one row per (poison, method), from the pipeline's runs (:func:`pipeline.run_defenses`)."""
    out = []
    for p in poisons:
        rows = runs[p].target_rows
        is_poison = trained[p].train_set.is_poison[rows]
        for method, flags in DETECTION_ROWS:
            flagged = flags(runs[p], rows)
            out.append({"poison": p, "method": method, "specificity": metrics.specificity(flagged, is_poison),
                        "sensitivity": metrics.sensitivity(flagged, is_poison)})
    return pd.DataFrame(out)


def pruning_curve(fp: Any, model: Any, pruning: Any, test: Any, spec: Any) -> pd.DataFrame:
    """Clean accuracy and attack success of ``model`` pruned at every ratio Fine-Pruning tried (``pruning``, its
    :meth:`~poisoncure.defenses.fine_pruning.FinePruning.pruning`), on ``test`` (computed by
    :meth:`~poisoncure.defenses.fine_pruning.FinePruning.evaluate_curve`, on ``fp``'s device): one row per ratio."""
    curve = fp.evaluate_curve(model, pruning, test, spec)
    return pd.DataFrame([{"ratio": r, "clean accuracy (held out)": m.clean_accuracy, "ASR": m.attack_success_rate}
                         for r, m in zip(pruning.ratios, curve, strict=True)])


#: the comparison table's columns (:func:`final_table`)
FINAL_COLUMNS = ["poison", "defense", "sensitivity", "specificity", "clean acc", "ASR", "note"]


def final_table(runs: dict[str, Any], trained: dict[str, Any], attacked: list[str], detection: pd.DataFrame,
                scorers: dict[str, Any], classes: tuple[str, ...]) -> pd.DataFrame:
    """The comparison of every repair on each attacked model, one row per (poison, defense): the detection numbers
    of :func:`detection_table` where the defense filters samples, and the repaired model's clean accuracy and attack
    success by ``scorers[poison]`` (:func:`..experiments.pipeline.held_out_scorer`: the held-out test images; a
    repair that changed nothing is scored on the model itself), with a note on what the repair did."""
    def row(p, method, model_after, detected=None, note=""):
        m = scorers[p](model_after) if model_after is not None else None
        d = detection[(detection.poison == p) & (detection.method == detected)]
        return {"poison": p, "defense": method,
                "sensitivity": d["sensitivity"].iloc[0] if len(d) else None,
                "specificity": d["specificity"].iloc[0] if len(d) else None,
                "clean acc": None if m is None else m.clean_accuracy,
                "ASR": None if m is None else m.attack_success_rate, "note": note}

    out = []
    for p in attacked:
        tm, run = trained[p], runs[p]
        out.append(row(p, "none", tm.model))
        cure, nc_out, fp_out = run[pipeline.POISON_CURE], run[pipeline.CLEANSE], run[pipeline.PRUNING]
        out.append(row(p, cure.method, tm.model if cure.unchanged else cure.repaired, cure.method,
                       "nothing flagged: model unchanged" if cure.unchanged else ""))
        for name, detected in ((pipeline.SPECTRAL, "Spectral Signatures (target, 1.5ε)"),
                               (pipeline.CLUSTERING, "Activation Clustering (own rule)")):
            o = run[name]
            out.append(row(p, name, o.repaired, detected, "not run here (see the retrain parameter)"
                           if o.repaired is None else f"retrained without {int(o.flagged.sum())} samples"))
        out.append(row(p, nc_out.method, tm.model if nc_out.unchanged else nc_out.repaired,
                       note=f"flagged: {', '.join(classes[k] for k in nc_out.labels) or 'none'}"))
        out.append(row(p, fp_out.method, fp_out.repaired,
                       note=f"{100 * fp_out.artefact.chosen_ratio:.0f}% of channels pruned"))
    return pd.DataFrame(out, columns=FINAL_COLUMNS)


#: a middle layer per architecture, where the chapter also compares Spectral Signatures and Activation Clustering
INTERMEDIATE = {"small_cnn": "features.5", "small_cnn_whitened": "features.7", "whitened_net": "features.4",
                "resnet18": "features.9", "vgg19": "features.15"}


def layer_table(trained: dict[str, Any], runs: dict[str, Any], poisons: list[str], ss: Any, ac: Any,
                compare_layer: str | None, device: Any) -> pd.DataFrame:
    """Spectral Signatures' and Activation Clustering's (smaller cluster) sensitivity and specificity within the
    target class on the penultimate features and on ``compare_layer``, one row per (poison, layer)."""
    from ...experiments import store

    out = []
    for p in poisons:
        tm, rows = trained[p], runs[p].target_rows
        is_poison = tm.train_set.is_poison[rows]
        for name, layer in (("penultimate", None), *([(compare_layer, compare_layer)] if compare_layer else [])):
            reps = store.get_features(tm, layer, rows, device=device) if layer is not None else \
                store.get_features(tm, None, device=device)[rows]
            removed = ss.score_features(reps, tm.train_set.y[rows]).removed
            small = ac.cluster_label(reps)[0] == 1
            out.append({"poison": p, "layer": name,
                        "SS sensitivity": metrics.sensitivity(removed, is_poison),
                        "SS specificity": metrics.specificity(removed, is_poison),
                        "AC (smaller) sensitivity": metrics.sensitivity(small, is_poison),
                        "AC (smaller) specificity": metrics.specificity(small, is_poison)})
    return pd.DataFrame(out).set_index(["poison", "layer"])


def ac_seed_table(trained: dict[str, Any], runs: dict[str, Any], poisons: list[str], layer: str | None, seeds: range,
                  device: Any) -> pd.DataFrame:
    """The range (min, max) over k-means ``seeds`` of Activation Clustering's smaller-cluster sensitivity and
    specificity within the target class, per poison."""
    from ...defenses.activation_clustering import ActivationClustering
    from ...experiments import store

    out = []
    for p in poisons:
        tm, rows = trained[p], runs[p].target_rows
        is_poison, reps = tm.train_set.is_poison[rows], store.get_features(tm, layer, device=device)[rows]
        for s in seeds:
            small = ActivationClustering(layer=layer, seed=s, progress=False).cluster_label(reps)[0] == 1
            out.append({"poison": p, "seed": s, "sensitivity": metrics.sensitivity(small, is_poison),
                        "specificity": metrics.specificity(small, is_poison)})
    return pd.DataFrame(out).groupby("poison")[["sensitivity", "specificity"]].agg(["min", "max"])


def with_paper_detection(detection: pd.DataFrame, poisons: list[str], pair: int) -> pd.DataFrame:
    """The detection rows (poison, method, specificity, sensitivity) with the paper's Tables 3–4 beside the rows
    the paper reports (its method and Activation Clustering's smaller cluster)."""
    detection = detection.copy()
    for p in poisons:
        for m, key in (("Poison as a Cure", "ours"), ("Activation Clustering (smaller target cluster)", "ac")):
            sel = (detection.poison == p) & (detection.method == m)
            spec_p, sens_p = paper.detection(p, pair, key)
            detection.loc[sel, "paper, Tables 3–4: specificity"] = spec_p
            detection.loc[sel, "paper, Tables 3–4: sensitivity"] = sens_p
    return detection


def ac_sizes_figure(ac_res: dict[str, Any], size_threshold: float, target: int, classes: tuple[str, ...]):
    """Activation Clustering's smaller-cluster share per label and model, with its flagging threshold."""
    cols = plots.colours(6)
    fig, ax = plt.subplots(figsize=(9, 3))
    w = 0.27
    for i, (p, res) in enumerate(ac_res.items()):
        ax.bar(np.arange(10) + (i - (len(ac_res) - 1) / 2) * w, res.relative_size, w, color=cols[i], label=f"{p} model")
    ax.axhline(size_threshold, color="black", ls="--", lw=1, label=f"flag below {size_threshold:g}")
    ax.set_xticks(np.arange(10), [c + (" (target)" if k == target else "") for k, c in enumerate(classes)],
                  rotation=20)
    ax.set_ylabel("smaller cluster / label")
    ax.set_ylim(0, 0.55)
    ax.legend(fontsize=8, ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def ss_scores_figure(ss_res: dict[str, Any], is_poison: dict[str, np.ndarray]):
    """Spectral Signatures' outlier scores of the target class per poisoned model, clean and poisoned apart, with
    the cut above which it removes."""
    cols = plots.colours(6)
    fig, axes = plt.subplots(1, len(ss_res), figsize=(5 * len(ss_res), 3), squeeze=False)
    for ax, (p, res) in zip(axes[0], ss_res.items(), strict=True):
        s = np.log10(res.scores + 1e-12)
        bins = np.linspace(s.min(), s.max(), 60)
        ax.hist(s[~is_poison[p]], bins, color=cols[0], alpha=0.7, label="clean")
        ax.hist(s[is_poison[p]], bins, color=cols[1], alpha=0.7, label="poisoned")
        ax.axvline(s[res.removed].min(), color="black", ls="--", lw=1, label="removed to the right")
        ax.set_xlabel("log10 τ")
        ax.set_title(f"{p} model")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def neural_cleanse_figures(nc_res: dict[str, Any], anomaly_threshold: float, target: int,
                           classes: tuple[str, ...]):
    """The reversed triggers (mask × pattern) per label and model, and the mask sizes and anomaly indices."""
    cols = plots.colours(6)
    grid = plots.image_grid([[res.masks[k][..., None] * res.patterns[k].transpose(1, 2, 0) for k in range(10)]
                             for res in nc_res.values()], [f"{p} model" for p in nc_res],
                            [plots.short(c) for c in classes], size=1.2)
    fig, ax = plt.subplots(1, 2, figsize=(11, 3))
    w = 0.8 / len(nc_res)
    for i, (p, res) in enumerate(nc_res.items()):
        x = np.arange(10) + (i - (len(nc_res) - 1) / 2) * w
        ax[0].bar(x, res.l1, w, color=cols[i if p != "clean" else 2], label=f"{p} model")
        ax[1].bar(x, res.anomaly, w, color=cols[i if p != "clean" else 2], label=f"{p} model")
    ax[1].axhline(anomaly_threshold, color="black", ls="--", lw=1, label="flag above")
    for a, title in zip(ax, ("mask size ‖m‖₁ (pixels)", "anomaly index"), strict=True):
        a.set_xticks(np.arange(10), [c + ("*" if k == target else "") for k, c in enumerate(classes)], rotation=30,
                     fontsize=8)
        a.set_title(title)
        a.legend(fontsize=7)
    fig.tight_layout()
    return grid, fig


def nc_flags(res: Any, classes: tuple[str, ...]) -> str:
    """The labels Neural Cleanse flags on one model, or "none"."""
    return ", ".join(classes[k] for k in np.flatnonzero(res.flagged)) or "none"


def nc_text(nc_res: dict[str, Any], poisons: list[str], target: int, classes: tuple[str, ...]) -> str:
    """What Neural Cleanse flags on each poisoned model, with the target's anomaly index and mask size."""
    text = [f"On the {p} model Neural Cleanse flags: {nc_flags(nc_res[p], classes)} (the target's anomaly index is "
            f"{nc_res[p].anomaly[target]:.2f}, its mask covers {nc_res[p].l1[target]:.0f} pixels against a median of "
            f"{np.median(nc_res[p].l1):.0f} over the ten labels)." for p in poisons if p in nc_res]
    text += [f"The {p} model was not searched: its backdoor did not work." for p in poisons if p not in nc_res]
    return " ".join(text)


def fine_pruning_figure(fp_res: dict[str, Any], fp_curves: dict[str, pd.DataFrame]):
    """Per attacked model: clean accuracy (defender's and held-out) and attack success against the share of
    channels pruned, with the ratio chosen."""
    if not fp_res:
        return plots.placeholder("no model with a working backdoor")
    cols = plots.colours(6)
    fig, axes = plt.subplots(1, len(fp_res), figsize=(5 * len(fp_res), 3.2), squeeze=False)
    for ax, (p, res) in zip(axes[0], fp_res.items(), strict=True):
        c = fp_curves[p]
        ax.plot(100 * c["ratio"], res.clean_accuracy, "o-", ms=3, color=cols[0], label="clean acc. (defender)")
        ax.plot(100 * c["ratio"], c["clean accuracy (held out)"], "s-", ms=3, color=cols[2],
                label="clean acc. (held out)")
        ax.plot(100 * c["ratio"], c["ASR"], "^-", ms=3, color=cols[1], label="attack success")
        ax.axvline(100 * res.chosen_ratio, color="black", ls="--", lw=1, label="chosen")
        ax.set_xlabel("channels pruned (%)")
        ax.set_ylabel("%")
        ax.set_title(f"{p} model")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def repairs_text(final: pd.DataFrame, poisons: list[str], attacked: list[str], pair: int) -> tuple[pd.DataFrame, str]:
    """The comparison table with the paper's Table 5 beside the rows it reports, and the sentence reading it:
    each repair's attack success, which bring it below 10 %, which do not, and the models with nothing to
    repair."""
    final = final.copy()
    repairs = []
    for p in attacked:
        sel = final.poison == p
        final.loc[sel & (final.defense == "Poison as a Cure"), "paper, Table 5: ASR"] = paper.final_asr(pair, "ours")
        final.loc[sel & (final.defense == "Spectral Signatures"), "paper, Table 5: ASR"] = paper.final_asr(pair, "ss")
        listed = ", ".join(f"{r['defense']} " + (f"{r['ASR']:.1f}%" if pd.notna(r["ASR"]) else "not run here")
                           for _, r in final[sel & (final.defense != "none")].iterrows())
        before = final.loc[sel & (final.defense == "none"), "ASR"].iloc[0]
        ran = final[sel & final["ASR"].notna() & (final.defense != "none")]
        repairs.append(f"On the {p} model ({before:.1f}% attack success undefended), the attack success rate after "
                       f"each repair: {listed}. Repairs that bring it "
                       f"below 10 %: {', '.join(ran.defense[ran.ASR < 10]) or 'none'}; repairs that leave it at 10 % "
                       f"or more: {', '.join(ran.defense[ran.ASR >= 10]) or 'none'}.")
    missed = [p for p in poisons if p not in attacked]
    text = " ".join(repairs) + (f" The {' and '.join(missed)} model{'s' if len(missed) > 1 else ''} never learned its "
                                "backdoor (chapter 2), so there is nothing to repair on it." if missed else "")
    return final, text
