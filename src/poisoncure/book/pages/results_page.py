"""Chapter 8 (*The paper's tables, rerun*): the paper's Tables 1-5 as the page shows them.

The tables themselves (paper, ours, difference and spread per cell) are computed by
:mod:`poisoncure.experiments.paper_tables` from the result files; this module only decides how they read.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from ...experiments import paper_tables, verdict
from .. import formatting, plots


def shown(frame: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """A table of :mod:`~poisoncure.experiments.paper_tables` (Tables 1-5) as a page shows it: rounded to
    ``digits``, a dash where nothing was measured, and, in its ``before_after_table`` and ``detection_table``, the
    spread over seeds inside the "ours" cell ("83.7 ± 0.3") instead of a
    :data:`~poisoncure.experiments.paper_tables.SPREAD` column beside it. The spread exists only for rows with
    several seeds (pair 1 of the compare grid), so its own columns were mostly dashes and made Tables 2 and 4 wider
    than the text column (755 and 769 px in 688 px)."""
    out = formatting.rounded(frame, digits)
    spread = [c for c in frame.columns if c[1] == paper_tables.SPREAD]
    for col, _ in spread:
        sd = frame[(col, paper_tables.SPREAD)]
        has = sd.notna()  # two seeds or more, so "ours" (their mean) is there too
        out.loc[has, (col, "ours")] = [formatting.mean_sd(m, s, digits)
                                       for m, s in zip(frame.loc[has, (col, "ours")], sd[has], strict=True)]
    return out.drop(columns=spread)


def wrong_base_text(rows: pd.DataFrame) -> str:
    """The sentence that ties the paper's method's wrong base classes to its filtering and repair numbers: in the
    experiments of ``rows`` (:func:`~poisoncure.experiments.paper_tables.experiment_rows`) whose target was found
    but not the base, the filter scores the target class with the wrong label's gradients and the neutralization
    relabels the filtered images to that class. Their sensitivity, attack success after the defense and accuracy on
    the triggered base images after it (low where the trigger now sends them to the wrong base instead of the
    target), beside the medians of the experiments where both were found; ``""`` when no repaired experiment named a
    wrong base."""
    repaired = rows[rows["target found"] & rows["repaired"]]
    wrong, both = repaired[~repaired["base found"]], repaired[repaired["base found"]]
    if not len(wrong):
        return ""
    text = (f"Where the target was found but another class was named as the base "
            f"({paper_tables.by_poison(wrong)}), the filter scores the target class with that label's gradients and "
            "the neutralization relabels the filtered images to it: sensitivity "
            f"{paper_tables.by_poison(wrong, 'ours: sensitivity')}, attack success after the defense "
            f"{paper_tables.by_poison(wrong, 'ASR after ours')}, and triggered base images classified as their class "
            f"after it {paper_tables.by_poison(wrong, 'after: triggered')}")
    if len(both):
        text += (f", against medians of {both['ours: sensitivity'].median():.1f}, "
                 f"{both['ASR after ours'].median():.1f} and {both['after: triggered'].median():.1f} % over the "
                 f"{len(both)} experiments where both were found")
    moved = wrong[wrong["after: triggered"] < verdict.RECOVERED]
    if len(moved):
        text += (f". There the backdoor was moved rather than removed ({paper_tables.by_poison(moved)}): fewer than "
                 f"{verdict.RECOVERED:g} % of the triggered base images went back to their class: the trigger still "
                 "takes them away from it, towards the class the filtered images were relabelled to "
                 "(bench/repair_destination.py follows them in one such experiment), and the verdict's repair test "
                 "counts such an experiment as not repaired")
    return text + "."


#: Why a cell of Tables 1-4 differs from the paper's by more than the tolerance: cause -> what it means. Each large
#: difference gets one cause, chosen from what its own experiment measured (:func:`gap_causes`).
CAUSES = {
    "network and training": "our network and training are not the paper's: a smaller network than its ResNet-18 on "
                            "the CPU profiles, a shorter schedule than the public code it builds on (200 epochs or "
                            "more) on the GPU ones, and the JPEG copy of CIFAR-10 (about one point)",
    "carried over": "the clean-accuracy difference before the defense, carried through the defense: the repair "
                    "changed clean accuracy by about as much as the paper's did, or no repair ran",
    "repair cost": "one epoch of fine-tuning on the counter-poisoned set moved this network's clean accuracy by more "
                   "(or less) than it moved the paper's",
    "learned less firmly": "this run learned the trigger on fewer triggered images than the paper's did (lower "
                           "attack success); the section on triggers measures why some pairs' triggers are learned "
                           "less",
    "learned more firmly": "this run sent more triggered images to the target than the paper's did (higher attack "
                           "success), so fewer kept their class",
    "not learned": f"the attack was not learned (attack success below {verdict.LEARNED:g} %): the scan rightly named "
                   "no class, so there was no poison to find and no repair; triggered images keep about the base "
                   "class's own accuracy",
    "scan missed": "the attack was learned but the paper's scan did not name its target (every ratio below λ, or "
                   "another class named): no filter and no repair ran on the target class, so the backdoor stayed "
                   "and no poison was caught",
    "wrong base": "the scan found the target but named another class as the base, and the filter scores the target "
                  "class with that label's gradients instead of the base's",
    "backdoor left": f"the repair ran, but more than {verdict.NEUTRALIZED:g} % of the triggered images still go to the "
                     "target after its one epoch",
    "backdoor moved": f"the repair brought the attack success to {verdict.NEUTRALIZED:g} % or less, but fewer than "
                      f"{verdict.RECOVERED:g} % of the triggered images went back to their class: the trigger still "
                      "takes them away from it (where the scan named a wrong base, towards that class, to which the "
                      "repair relabels the filtered images)",
    "base-class accuracy": "the repair worked: triggered base images are classified about as well as clean images "
                           "of their class, and the difference follows that class's accuracy in each network (and "
                           "how much of the backdoor each repair left)",
    "mixture boundary": "the mixture's boundary on this model's gradients (chapter 4): where the poisoned and clean "
                        "gradients of the target class overlap more or less than in the paper's model, the filter "
                        "catches fewer or more of the poison and keeps fewer or more clean images",
    "AC clusters": "Activation Clustering's two k-means clusters on this network's features split the target class "
                   "elsewhere than on the paper's ResNet-18 (its smaller cluster is flagged, whatever it holds)",
}


def _cell_cause(quantity: str, delta: float, cell: pd.DataFrame, before_delta: float, tolerance: float) -> str:
    """The :data:`CAUSES` key of one large difference: ``quantity`` (a column of Tables 1-4), its difference to the
    paper, the experiments behind the cell (its seeds; booleans must hold in all of them, rates are averaged) and,
    for the clean accuracy after the defense, the same cell's difference before it."""
    learned = cell["ASR before"].mean() >= verdict.LEARNED
    found, base, repaired = cell["target found"].all(), cell["base found"].all(), cell["repaired"].all()
    if quantity.startswith("AC: "):
        return "AC clusters"
    if quantity == "before: all":
        return "network and training"
    if quantity == "after: all":
        return "carried over" if not repaired or abs(delta - before_delta) <= tolerance else "repair cost"
    if not learned:
        return "not learned"
    if quantity == "before: triggered":
        return "learned less firmly" if delta > 0 else "learned more firmly"
    if not (found and repaired):
        return "scan missed"
    if quantity == "after: triggered":
        if cell["ASR after ours"].mean() > verdict.NEUTRALIZED:
            return "backdoor left"
        moved = verdict.backdoor_moved(cell["ASR after ours"].mean(), cell["after: triggered"].mean())
        return "backdoor moved" if moved else "base-class accuracy"
    return "wrong base" if not base else "mixture boundary"  # the filter's sensitivity or specificity


def gap_causes(gaps: pd.DataFrame, rows: pd.DataFrame, tables: dict[str, pd.DataFrame],
               tolerance: float = 3.0) -> pd.Series:
    """One :data:`CAUSES` key per row of ``gaps`` (:func:`~poisoncure.experiments.paper_tables.large_gaps` of
    ``tables``: T1 and T2 from ``before_after_table``, T3 and T4 from ``detection_table``), read off the experiments
    behind the cell in ``rows`` (:func:`~poisoncure.experiments.paper_tables.experiment_rows`): whether the attack
    was learned, whether the scan found target and base, whether the repair ran and what it left, and for the clean
    accuracy after the defense whether the same difference was there before it."""
    poison_of = {"T1": "blend", "T2": "pixel", "T3": "blend", "T4": "pixel"}
    causes = []
    for _, g in gaps.iterrows():
        pair = int(str(g["pair"]).split(":")[0])
        cell = rows[(rows["pair"] == pair) & (rows["poison"] == poison_of[g["table"]])]
        if not len(cell):
            raise ValueError(f"no experiment behind the gap {g['table']} {g['pair']} {g['quantity']}")
        before = (tables[g["table"]].loc[g["pair"], ("before: all", "Δ")] if g["quantity"] == "after: all"
                  else float("nan"))
        causes.append(_cell_cause(g["quantity"], g["Δ"], cell, before, tolerance))
    return pd.Series(causes, index=gaps.index, name="cause", dtype=object)


def cause_table(gaps: pd.DataFrame, causes: pd.Series) -> pd.DataFrame:
    """What each cause among ``causes`` means (:data:`CAUSES`) and which cells it explains, by table and pair ('T1
    1–3, 6; T2 4'), in the order of :data:`CAUSES`."""
    out = []
    for key, text in CAUSES.items():
        mine = gaps[causes == key]
        if len(mine):
            cells = "; ".join(f"{t} " + formatting.runs(sorted({int(str(p).split(":")[0]) for p in grp["pair"]}))
                              for t, grp in mine.groupby("table", sort=True))
            out.append({"cause": key, "what it means": text, "cells (table, pairs)": cells})
    return pd.DataFrame(out).set_index("cause") if out else pd.DataFrame(columns=["what it means"])


def _rank_words(k: int, n: int) -> str:
    return {1: "the lowest", n: "the highest"}.get(k, f"number {k} from the bottom")


def _places(ranks: pd.Series, n: int, top: bool = False) -> str:
    """Ranks (1: the lowest value) in words: 'the lowest of the 9' for one, 'places 1, 2 and 4 from the bottom of the
    9' for several (``top``: counted from the highest value instead)."""
    ranks = [int(r) for r in ranks]
    if len(ranks) == 1:
        return f"{_rank_words(ranks[0], n)} of the {n}"
    places = sorted(n + 1 - r if top else r for r in ranks)
    listed = ", ".join(map(str, places[:-1])) + f" and {places[-1]}"
    return f"places {listed} from the {'top' if top else 'bottom'} of the {n}"


def _range(values: pd.Series, digits: int) -> str:
    lo, hi = values.min(), values.max()
    return f"{lo:.{digits}f}" if lo == hi else f"{lo:.{digits}f}–{hi:.{digits}f}"


#: How the page names each poison
POISON_WORDS = {"pixel": "one-pixel", "blend": "blend"}


def trigger_table(contrast: pd.DataFrame, success: pd.DataFrame) -> pd.DataFrame:
    """The nine pairs' triggers of one poison (:func:`~poisoncure.experiments.paper_tables.pair_trigger_contrast`)
    beside the attack success each set of results reached with them
    (:func:`~poisoncure.experiments.paper_tables.attack_success`): rows the pairs, columns the brightness share, the
    two contrasts and one attack-success column per set (its label), rounded; a dash where a set has no result."""
    out = pd.DataFrame({("trigger", "brightness share"): contrast["brightness share"].round(2),
                        ("contrast", "raw"): contrast["raw"].round(2),
                        ("contrast", "whitened"): contrast["whitened"].round(2)}, index=contrast.index)
    for label, part in success.groupby("set", sort=False):
        out[("attack success %", label)] = part.set_index("pair")["ASR"].reindex(out.index).round(1)
    out.index = [paper_tables.pair_label(p) for p in out.index]
    out.index.name = "pair"
    out.columns = pd.MultiIndex.from_tuples(out.columns)
    return formatting.rounded(out, 2)


def trigger_figure(contrasts: dict[str, pd.DataFrame], successes: dict[str, pd.DataFrame], learned: float = 50.0):
    """Attack success against the trigger's contrast, one point per pair and set of results, one row of panels per
    poison (``{poison: frame}`` of :func:`~poisoncure.experiments.paper_tables.pair_trigger_contrast` and
    :func:`~poisoncure.experiments.paper_tables.attack_success`): left, networks whose first layer whitens patches,
    against the whitened contrast; right, the others, against the raw contrast; one legend below for all. Pairs that
    a whitened network did not learn (below ``learned`` %) are labelled in both panels of their row."""
    poisons = list(contrasts)
    labels = list(dict.fromkeys(label for p in poisons for label in successes[p]["set"]))
    colours = dict(zip(labels, plots.colours(max(len(labels), 1)), strict=False))
    markers = dict(zip(labels, "osD^v<>" * len(labels), strict=False))  # overlapping sets stay apart
    fig, axes = plt.subplots(len(poisons), 2, figsize=(8.6, 3.1 * len(poisons) + 0.5), squeeze=False)
    handles = {}
    for row, poison in zip(axes, poisons, strict=True):
        contrast, success = contrasts[poison], successes[poison]
        missed = sorted(set(success.loc[success["whitened"] & (success["ASR"] < learned), "pair"]))
        for ax, whitened, column, who, where in ((row[0], True, "whitened", "whitened networks", "after whitening"),
                                                 (row[1], False, "raw", "other networks", "on the raw pixels")):
            part = success[success["whitened"] == whitened]
            for label, rows in part.groupby("set", sort=False):
                handles[label] = ax.scatter(contrast.loc[rows["pair"], column].to_numpy(), rows["ASR"], s=30,
                                            color=colours[label], marker=markers[label], label=label, alpha=0.7,
                                            edgecolors="none")
            middle = contrast[column].median()
            for pair in missed:
                here = part[part["pair"] == pair]
                if len(here):
                    right = contrast.loc[pair, column] > middle  # label towards the middle, inside the axes
                    ax.annotate(f"pair {pair}", (contrast.loc[pair, column], here["ASR"].min()),
                                xytext=(-6 if right else 6, 4), textcoords="offset points", fontsize=8,
                                ha="right" if right else "left")
            ax.axhline(learned, color="grey", ls=":", lw=1)
            ax.set(ylim=(-3, 103), title=f"{POISON_WORDS[poison]}: {who}", ylabel="attack success (%)",
                   xlabel=f"contrast {where}")
    plots.label_panels(axes.ravel())
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=len(handles), fontsize=8,
               frameon=False)  # one legend for every panel: the profiles keep their colour and marker throughout
    fig.set_layout_engine("tight", rect=(0, 0.08, 1, 1))  # a live engine: the page's re-layout keeps the room
    return fig


def _spearman(x: pd.Series, y: pd.Series) -> str:
    """Spearman's rank correlation to two decimals; a dash where it is undefined (one side constant)."""
    from scipy.stats import spearmanr

    if x.nunique() < 2 or y.nunique() < 2:
        return formatting.MISSING
    return f"{spearmanr(x, y).statistic:.2f}"


def trigger_text(contrast: pd.DataFrame, success: pd.DataFrame, networks: dict[str, str], poison: str = "pixel",
                 learned: float = 50.0) -> str:
    """What the measurement says for one poison, in words: for each set of results with four pairs or more, the rank
    correlation (Spearman) between attack success and the contrast its network's first layer sees (for a network
    that learns its first layer, also against the whitened contrast); the pairs a whitened network did not learn
    (below ``learned`` %), with their places among the nine by whitened contrast and by brightness share beside the
    range of the pairs it learned; and which pair each network that learns its first layer learned best.
    ``networks`` names the network of each set label."""
    n = len(contrast)
    parts = []
    corr = []
    for label, rows in success.groupby("set", sort=False):
        if len(rows) < 4:
            continue
        own = "whitened" if rows["whitened"].iloc[0] else "raw"
        rho = {c: _spearman(contrast.loc[rows["pair"], c], rows["ASR"]) for c in ("raw", "whitened")}
        corr.append(f"{rho[own]} for {label} ({networks.get(label, label)}, {len(rows)} pairs, {own} contrast"
                    + (f"; {rho['whitened']} against the whitened one" if own == "raw" else "") + ")")
    if corr:
        parts.append("Rank correlation between a pair's attack success and the contrast its network's first layer "
                     "sees: " + "; ".join(corr) + ".")
    white = success[success["whitened"]]
    missed = white[white["ASR"] < learned]
    by_white = contrast["whitened"].rank(method="min")
    by_grey = contrast["brightness share"].rank(method="min")
    what = "pixel" if poison == "pixel" else "image"
    if len(missed):
        pairs = sorted(set(missed["pair"]))
        kept = contrast.loc[sorted(set(white["pair"]) - set(pairs))]
        them = contrast.loc[pairs]
        listed = "; ".join(
            f"pair {p} ({contrast.loc[p, 'base → target']}, {contrast.loc[p, 'trigger']}: "
            + ", ".join(f"{s} {a:.1f} %" for s, a in zip(missed.loc[missed["pair"] == p, "set"],
                                                           missed.loc[missed["pair"] == p, "ASR"], strict=True)) + ")"
            for p in pairs)
        one = len(pairs) == 1
        its, s_, is_ = ("its", "", "is") if one else ("their", "s", "are")
        digits = 1 if poison == "pixel" else 2
        text = (f"A whitened network did not learn the {POISON_WORDS[poison]} trigger of {listed}. "
                f"{its.capitalize()} whitened contrast{s_} ({_range(them['whitened'], digits)}) {is_} "
                f"{_places(by_white[pairs], n)}, and {its} brightness share{s_} "
                f"({_range(them['brightness share'], 2)}) {is_} {_places(by_grey[pairs], n, top=True)}"
                + (f": the trigger changes the {what} mostly in brightness" if them["brightness share"].min() > 0.5
                   else ""))
        if len(kept):
            text += (f" (the pairs learned: contrast {_range(kept['whitened'], digits)}, brightness share "
                     f"{_range(kept['brightness share'], 2)})")
        parts.append(text + ".")
    elif len(white):
        low = white.loc[white["ASR"].idxmin()]
        parts.append(f"Every whitened network learned every pair's {POISON_WORDS[poison]} trigger it was given; the "
                     f"lowest attack success, {low['ASR']:.1f} % (pair {low['pair']}, {low['set']}), goes with a "
                     f"whitened contrast {_rank_words(int(by_white[low['pair']]), n)} of the {n}.")
    for label, rows in success[~success["whitened"]].groupby("set", sort=False):
        if len(rows) < 4:
            continue
        best = rows.loc[rows["ASR"].idxmax()]
        reached = int((rows["ASR"] >= learned).sum())
        parts.append(f"The {networks.get(label, label)} of {label}, which learns its first layer from the raw "
                     f"pixels, learned pair {best['pair']}'s trigger best ({best['ASR']:.1f} %; raw contrast "
                     f"{_rank_words(int(contrast['raw'].rank(method='min')[best['pair']]), n)} of the {n})"
                     + (", a pair the whitened networks missed" if best["pair"] in set(missed["pair"]) else "")
                     + (f"; none of its {len(rows)} triggers reached {learned:g} %." if not reached
                        else f"; {reached} of its {len(rows)} reached {learned:g} %."))
    return " ".join(parts)


def quiet_text(quiet: pd.DataFrame, lam: float, firm: float = 90.0) -> str:
    """The bracket after the count of the paper's method's misses, for the experiments of ``quiet`` (rows of
    :func:`~poisoncure.experiments.paper_tables.experiment_rows`) where its scan flagged nothing: their largest ratio
    R against ``lam``, then why, told apart by how firmly the attack was learned (attack success before the defense
    below or from ``firm`` %): a weak backdoor separates the target class's gradients less; a firmly learned one the
    scan missed did not show on the first principal direction. ``""`` when ``quiet`` is empty."""
    if not len(quiet):
        return ""
    weak, strong = quiet[quiet["ASR before"] < firm], quiet[quiet["ASR before"] >= firm]
    text = (f" (where nothing was flagged, the largest ratio stayed below λ = {lam:g}: "
            f"{paper_tables.by_poison(quiet, 'ratio', '{:.2f}')}")
    if len(weak):
        text += (f"; {paper_tables.by_poison(weak, 'ASR before')} attack success: a weaker backdoor separates the "
                 "target class's gradients less")
    if len(strong):
        text += (f"; {paper_tables.by_poison(strong, 'ASR before')} attack success, learned firmly and still missed: "
                 "the scan reads only the first principal direction of each class's gradients, and a poison that "
                 "adds less variance than the largest directions of the clean gradients does not show on it "
                 "(bench/scan_diagnosis.py measures this for one experiment)")
    return text + ")"
