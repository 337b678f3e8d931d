"""Chapter 12 (ensembles of weak learners): the figures, tables and sentences built from the synthetic
expansion-error model, the live experiment and the committed grid."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ... import attacks
from ...experiments import paper, report
from ...experiments.grids import ensembles
from ...experiments.result_files import provenance_text
from .. import formatting, plots
from ..formatting import MISSING

if TYPE_CHECKING:
    from ...experiments.report import Report, Result

ENSEMBLES = report.ENSEMBLE


def boosting_figure(err: np.ndarray, names: list[str]):
    """The 0-1 error of each set's boosted learners on every set, in %, as an annotated heat map."""
    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    im = ax.imshow(100 * err, cmap="RdBu_r", vmin=0, vmax=100)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), [f"learners of {n}" for n in names])
    ax.grid(False)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{100 * err[i, j]:.0f}", ha="center", va="center", fontsize=8,
                    color="white" if abs(err[i, j] - 0.5) > 0.3 else "black")
    fig.colorbar(im, ax=ax, label="0-1 error (%)")
    return fig


def scenarios_table(classes: tuple[str, ...]) -> pd.DataFrame:
    """The paper's trigger of every (source, target) pair in each of its poison scenarios."""
    rows = []
    for s_i, s in enumerate(attacks.ENSEMBLE_SEEDS):
        for (src, tgt), t in attacks.ensemble_scenario(s).items():
            shape = {"pattern": "X", "ell": "L", "pixel": "pixel"}[t.shape]
            rows.append({"pair": f"{src}→{tgt} ({classes[src]} → {classes[tgt]})", "scenario": f"poison {s_i + 1}",
                         "trigger": f"{shape} ({t.row}, {t.col}) rgb{t.colour}"})
    scen = pd.DataFrame(rows).pivot(index="pair", columns="scenario", values="trigger")
    return scen.reindex([r["pair"] for r in rows[:len(attacks.ENSEMBLE_PAIRS)]])


def growth_figure(live: Report) -> tuple[Any, dict[str, str]]:
    """The live experiment's ISPL components (clean and poisoned samples) and the kept set after the vote and each
    self-training round; and the sentences reading them (``learner_acc``, ``vote_text``, ``spl_text``,
    ``learner_size``)."""
    ens = live[ENSEMBLES].details
    comp = pd.DataFrame(ens["components"])
    comp["clean"] = comp["size"] - comp["poison"]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(6.1, 6.6))
    labels = [f"bag {b}, #{i}" for b, i in zip(comp["bag"], comp["index"], strict=True)]
    ax1.bar(labels, comp["clean"], label="clean")
    ax1.bar(labels, comp["poison"], bottom=comp["clean"], label="poisoned", color="C3")
    for k, (c, p) in enumerate(zip(comp["clean"], comp["poison"], strict=True)):
        ax1.text(k, c + p, f"{p} poisoned", ha="center", va="bottom", fontsize=8)
    ax1.set_ylim(0, 1.15 * comp["size"].max())
    ax1.set_ylabel("samples in the component")
    ax1.set_title("ISPL components, each training one weak learner", fontsize=10)
    ax1.legend(fontsize=8, loc="lower right")
    stages = [ens["vote"], *ens["spl"]]
    xs = ["vote", *[f"SPL {r + 1}" for r in range(len(ens["spl"]))]]
    ax2.plot(xs, [s["kept"] for s in stages], "o-", label="kept")
    ax2.plot(xs, [s["fp"] for s in stages], "s--", label="clean removed (FP)")
    ax2.set_ylabel("training samples")
    ax2b = ax2.twinx()
    ax2b.plot(xs, [s["fn"] for s in stages], "^-", color="C3", label="poisoned kept (FN)")
    ax2b.set_ylabel("poisoned samples kept", color="C3")
    ax2b.set_ylim(0, max(1, live.n_poison))
    ax2b.grid(False)
    ax2.set_title("the kept set after the vote and each self-training round", fontsize=10)
    h1, l1 = ax2.get_legend_handles_labels()
    h2, l2 = ax2b.get_legend_handles_labels()
    ax2.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=3,
               frameon=False)  # below the panel, off the lines
    plots.label_panels([ax1, ax2])
    fig.tight_layout()
    last = stages[-1]
    return fig, {
        "learner_acc": f"{comp['learner_accuracy_clean'].min():.0f}–{comp['learner_accuracy_clean'].max():.0f} %",
        "vote_text": f"{ens['vote']['kept']:,} kept, {ens['vote']['fp']:,} clean samples removed and "
                     f"{ens['vote']['fn']} of {live.n_poison} poisoned samples kept",
        "spl_text": f"{last['kept']:,} kept ({last['fp']:,} clean samples still out, {last['fn']} poisoned in)",
        "learner_size": f"{comp['size'].mean():,.0f}"}


def composition_figure(live: Report, classes: tuple[str, ...]) -> tuple[Any, dict[str, str]]:
    """Why the vote removes clean samples: (a) each ISPL component's images per label (colour) with its weak learner's
    accuracy on that class's clean images (number, %); (b) the share of each class's clean images the defense removes
    in the end. With the sentences reading them (``comp_range``, ``skew_acc``, ``removed_range``). A record written
    before these were measured (no ``per_label``) gives a placeholder figure and dashes."""
    ens = live[ENSEMBLES].details
    comps = ens.get("components", [])
    if not comps or "per_label" not in comps[0] or "clean_removed_per_class" not in ens:
        return plots.placeholder("this record holds no per-class measurements of the components"), {
            "comp_range": MISSING, "skew_acc": MISSING, "removed_range": MISSING}
    held = np.array([c["per_label"] for c in comps], dtype=float)  # components x labels
    acc = np.array([c["learner_accuracy_per_class"] for c in comps], dtype=float)
    removed = 100 * np.array(ens["clean_removed_per_class"], float) / np.maximum(ens["clean_per_class"], 1)
    names = [plots.short(c) for c in classes]
    rows = [f"bag {c['bag']}, #{c['index']}" for c in comps]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(6.0, 2.2 + 0.5 * len(rows) + 2.2),
                                   gridspec_kw={"height_ratios": [max(len(rows), 2), 3]})
    im = ax1.imshow(held, cmap="Blues", aspect="auto")
    ax1.set_xticks(range(len(names)), names, rotation=45, ha="right", rotation_mode="anchor")
    ax1.set_yticks(range(len(rows)), rows)
    ax1.grid(False)
    for i in range(held.shape[0]):
        for j in range(held.shape[1]):
            ax1.text(j, i, f"{acc[i, j]:.0f}", ha="center", va="center", fontsize=9,
                     color="white" if held[i, j] > 0.6 * held.max() else "black")
    fig.colorbar(im, ax=ax1, label="images", fraction=0.05, pad=0.02)
    ax1.set_title("learner accuracy per class (%)")
    ax2.bar(names, removed, color="C3")
    ax2.set_ylim(0, 100)
    ax2.set_ylabel("removed (%)")
    ax2.set_xticks(range(len(names)), names, rotation=45, ha="right", rotation_mode="anchor")
    ax2.set_title("clean images removed, per class")
    plots.label_panels([ax1, ax2])
    fig.tight_layout()
    even = held.sum(axis=1, keepdims=True) / held.shape[1]
    scarce, ample = held < even / 4, held >= even
    if scarce.any() and ample.any():
        skew = (f"{acc[scarce].mean():.0f} % of the clean images of the classes its component holds little of (under "
                f"a quarter of an even share: {int(scarce.sum())} of {held.size} component–class pairs), against "
                f"{acc[ample].mean():.0f} % on the classes it holds an even share or more of")
    else:
        skew = f"{acc.min():.0f}–{acc.max():.0f} % per class; no component holds a class far below an even share"
    lo, hi = int(np.argmin(removed)), int(np.argmax(removed))
    return fig, {
        "comp_range": f"between {int(held.min()):,} and {int(held.max()):,} images of one label (an even share "
                      f"would be about {float(even.mean()):,.0f})",
        "skew_acc": skew,
        "removed_range": f"from {removed[lo]:.0f} % of the clean {classes[lo]} images to {removed[hi]:.0f} % of the "
                         f"clean {classes[hi]} images"}


def methods_table(live_rec: Result, committed: Result | None, live_methods: tuple[str, ...]
                  ) -> pd.DataFrame:
    """Every method on the live experiment: the methods run in this build, the others from the committed file of
    the same experiment (labelled by source), in the chapter's order."""
    table = ensembles.method_table([live_rec]).assign(source="this build")
    if committed is not None:
        file_rows = ensembles.method_table([committed]).assign(source="committed file")
        table = pd.concat([table, file_rows[~file_rows["method"].isin(live_methods)]], ignore_index=True)
    order = {m: i for i, m in enumerate(ensembles.METHODS)}
    return table.sort_values("method", key=lambda s: s.map(order)).reset_index(drop=True)


def shown_methods(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`methods_table` as the page shows it: the reader's columns, rounded, "—" for what did not run."""
    cols = ["method", "clean acc %", "ASR %", "A (Eq. 7) %", "FP", "FN", "removed", "source", "commit"]
    return formatting.rounded(table[cols].set_index("method")).rename(columns={"FP": "clean removed (FP)",
                                                                           "FN": "poison kept (FN)"})


def live_texts(table: pd.DataFrame, live: Result, committed: Result | None, threshold: float,
               classes: tuple[str, ...]) -> dict[str, str]:
    """The sentences reading the live experiment: attack success and clean accuracy before and after the
    ensembles, what they keep and remove, the paper's scan, and where the other methods' rows come from."""
    m = table.set_index("method")
    none, ours = m.loc["none"], m.loc[ENSEMBLES]
    pac = live.report[report.POISON_CURE]
    return {
        "asr_none": f"{none['ASR %']:.1f} %", "asr_ens": f"{ours['ASR %']:.1f} %",
        "acc_change": f"{none['clean acc %']:.1f} % → {ours['clean acc %']:.1f} %",
        "ens_fn": f"{int(ours['FN'])} of {live.report.n_poison}", "ens_fp": f"{int(ours['FP']):,}",
        "pac_text": ("the paper's scan names the target" if pac.names_target else
                     f"the paper's scan does not name the target (largest ratio {pac.details['scan_ratio']:.2f} "
                     f"for {classes[pac.details['scan_label']]}, threshold {threshold:g}), so it leaves the model "
                     "as it is"),
        "committed_note": (f"ITLM, Spectral Signatures and Activation Clustering come from the committed file "
                           f"(commit {report.short_commit(committed.provenance['commit'])}, "
                           f"{committed.provenance['device']})"
                           if committed is not None else
                           "No committed file matches these parameters, so ITLM, Spectral Signatures and Activation "
                           "Clustering are not shown; run the grid to add them")}


def grid_outputs(records: list[Result], exps: list[Any], results_profile: str
                 ) -> tuple[pd.DataFrame, dict[str, str]]:
    """The committed grid, one column per (trigger, quantity), and its sentences: the grid's points, each learned
    attack before and after the ensembles, the clean references' attack success and the provenance."""
    done = {r.name for r in records}
    texts = {"grid_text": "; ".join(
        f"{ensembles.trigger_label(e.params)} at {100 * e.params['recipe']['poison_rate']:g} % of the source "
        f"class{'' if e.name in done else ' (not run yet)'}" for e in exps) or "empty"}
    all_tab = ensembles.method_table(records) if records else pd.DataFrame()
    if not len(all_tab):
        texts.update({"ref_text": "not run", "prov_all": MISSING,
                      "wl_summary": "no committed experiments to summarise"})
        return pd.DataFrame({"note": [f"no committed results under results/{results_profile}/ensembles"]}), texts
    wide = all_tab.pivot_table(index="method", columns="trigger", values=["ASR %", "clean acc %", "FN"],
                               aggfunc="first")
    wide = wide.reindex([x for x in ensembles.METHODS if x in set(all_tab["method"])])
    wide.columns = [f"{trig}: {what}" for what, trig in wide.columns]
    wide = wide[sorted(wide.columns, key=lambda c: (c.split(":")[0], c.split(":")[1]))]
    refs = {r.name: r.report.details.get("clean_reference") for r in records}
    ref_text = "; ".join(f"{ensembles.trigger_label(r.params)}: {refs[r.name]['attack_success_rate']:.1f} %"
                         for r in records if refs[r.name])
    by = all_tab.set_index(["trigger", "method"])
    learned = [t for t in all_tab["trigger"].unique()
               if by.loc[(t, "none"), "ASR %"] >= 50 and (t, ENSEMBLES) in by.index]
    texts["wl_summary"] = "; ".join(
        f"{t}: attack success {by.loc[(t, 'none'), 'ASR %']:.1f} % → {by.loc[(t, ENSEMBLES), 'ASR %']:.1f} %, clean "
        f"accuracy {by.loc[(t, 'none'), 'clean acc %']:.1f} % → {by.loc[(t, ENSEMBLES), 'clean acc %']:.1f} %"
        for t in learned) or "no committed experiment has an attack that the model learned"
    texts["ref_text"] = ref_text or "not run"
    texts["prov_all"] = provenance_text(records)
    return formatting.rounded(wide), texts


def paper_rows(rate: float) -> list[dict[str, Any]]:
    """The ensembles paper's Table 1 at one poisoned share (ε = ``rate``): C and A of every method, one row per pair."""
    eps = int(round(rate * 100))
    return [{"pair (source/target)": pair, **{f"paper {col} C/A": f"{c:.1f} / {a:.1f}" for col, (c, a) in v.items()}}
            for (pair, e), v in paper.ENSEMBLES_TABLE1.items() if e == eps]
