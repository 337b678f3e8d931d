"""Chapter 8 (*The paper's tables, rerun*): the paper's Tables 1-5 as the page shows them.

The tables themselves (paper, ours, difference and spread per cell) are computed by
:mod:`poisoncure.experiments.paper_tables` from the result files; this module only decides how they read.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from ...experiments import paper_tables
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
    relabels the filtered images to that class. Their sensitivity and attack success after the defense, beside the
    medians of the experiments where both were found; ``""`` when no repaired experiment named a wrong base."""
    repaired = rows[rows["target found"] & rows["repaired"]]
    wrong, both = repaired[~repaired["base found"]], repaired[repaired["base found"]]
    if not len(wrong):
        return ""
    text = (f"Where the target was found but another class was named as the base "
            f"({paper_tables.by_poison(wrong)}), the filter scores the target class with that label's gradients and "
            "the neutralization relabels the filtered images to it: sensitivity "
            f"{paper_tables.by_poison(wrong, 'ours: sensitivity')}, attack success after the defense "
            f"{paper_tables.by_poison(wrong, 'ASR after ours')}")
    if len(both):
        text += (f", against medians of {both['ours: sensitivity'].median():.1f} % and "
                 f"{both['ASR after ours'].median():.1f} % over the {len(both)} experiments where both were found")
    return text + "."


def _rank_words(k: int, n: int) -> str:
    return {1: "the lowest", n: "the highest"}.get(k, f"number {k} from the bottom")


def pixel_table(contrast: pd.DataFrame, success: pd.DataFrame) -> pd.DataFrame:
    """The one-pixel triggers of the nine pairs (:func:`~poisoncure.experiments.paper_tables.pixel_contrast`) beside
    the attack success each set of results reached with them
    (:func:`~poisoncure.experiments.paper_tables.pixel_success`): rows the pairs, columns the brightness share, the
    two contrasts and one attack-success column per set (its label), rounded; a dash where a set has no result."""
    out = pd.DataFrame({("trigger", "brightness share"): contrast["brightness share"].round(2),
                        ("contrast", "raw"): contrast["raw"].round(2),
                        ("contrast", "whitened"): contrast["whitened"].round(1)}, index=contrast.index)
    for label, part in success.groupby("set", sort=False):
        out[("attack success %", label)] = part.set_index("pair")["ASR"].reindex(out.index).round(1)
    out.index = [paper_tables.pair_label(p) for p in out.index]
    out.index.name = "pair"
    out.columns = pd.MultiIndex.from_tuples(out.columns)
    return formatting.rounded(out, 2)


def pixel_figure(contrast: pd.DataFrame, success: pd.DataFrame, learned: float = 50.0):
    """Attack success against the trigger's contrast, one point per pair and set of results: (a) networks whose
    first layer whitens patches, against the whitened contrast; (b) the others, against the raw contrast (left out
    when there are none). Pairs that a whitened network did not learn (below ``learned`` %) are labelled."""
    panels = [(True, "whitened", "first layer whitens 2×2 patches"), (False, "raw", "first layer learned from pixels")]
    panels = [p for p in panels if (success["whitened"] == p[0]).any()] or panels[:1]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.4), squeeze=False)
    missed = sorted(set(success.loc[success["whitened"] & (success["ASR"] < learned), "pair"]))
    labels = list(dict.fromkeys(success["set"]))
    colours = dict(zip(labels, plots.colours(max(len(labels), 1)), strict=False))
    markers = dict(zip(labels, "osD^v<>" * len(labels), strict=False))  # overlapping sets stay apart
    for ax, (whitened, column, title) in zip(axes[0], panels, strict=True):
        part = success[success["whitened"] == whitened]
        for label, rows in part.groupby("set", sort=False):
            x = contrast.loc[rows["pair"], column].to_numpy()
            ax.scatter(x, rows["ASR"], s=30, color=colours[label], marker=markers[label], label=label, alpha=0.7,
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
        ax.set(ylim=(-3, 103), title=title, ylabel="attack success before the defense (%)",
               xlabel=f"contrast of the trigger, {column} (typical patch sizes)")
        ax.legend(fontsize=7, loc="lower right")
    plots.label_panels(axes[0])
    fig.tight_layout()
    return fig


def pixel_text(contrast: pd.DataFrame, success: pd.DataFrame, networks: dict[str, str], learned: float = 50.0
               ) -> str:
    """What the measurement says, in words: for each set of results with four pairs or more, the rank correlation
    (Spearman) between attack success and the contrast its network's first layer sees (whitened or raw); each pair
    a whitened network did not learn (below ``learned`` %), with its rank among the nine by whitened contrast and by
    brightness share; and which pair each network that learns its first layer learned best. ``networks`` names the
    network of each set label."""
    from scipy.stats import spearmanr

    n = len(contrast)
    parts = []
    corr = []
    for label, rows in success.groupby("set", sort=False):
        if len(rows) < 4:
            continue
        column = "whitened" if rows["whitened"].iloc[0] else "raw"
        rho = spearmanr(contrast.loc[rows["pair"], column], rows["ASR"]).statistic
        corr.append(f"{rho:.2f} for {label} ({networks.get(label, label)}, {len(rows)} pairs, {column} contrast)")
    if corr:
        parts.append("Rank correlation between a pair's attack success and the contrast its network's first layer "
                     "sees: " + "; ".join(corr) + ".")
    white = success[success["whitened"]]
    missed = white[white["ASR"] < learned]
    by_white = contrast["whitened"].rank(method="min").astype(int)
    by_grey = contrast["brightness share"].rank(method="min").astype(int)
    for pair in sorted(set(missed["pair"])):
        sets = missed[missed["pair"] == pair]
        others = contrast.drop(index=pair)
        c = contrast.loc[pair]
        parts.append(
            f"Pair {pair}'s pixel ({c['base → target']}) was not learned by the whitened networks of "
            + " and ".join(f"{s} ({a:.1f} %)" for s, a in zip(sets["set"], sets["ASR"], strict=True))
            + f". Its trigger moves its patch by {c['whitened']:.1f} typical patch sizes after whitening, "
            f"{_rank_words(int(by_white[pair]), n)} of the {n} ({others['whitened'].min():.1f}–"
            f"{others['whitened'].max():.1f} for the others), and its colour {tuple(c['colour'])} changes the pixel "
            f"mostly in brightness: a share of {c['brightness share']:.2f}, {_rank_words(int(by_grey[pair]), n)} of "
            f"the {n} ({others['brightness share'].min():.2f}–{others['brightness share'].max():.2f}).")
    if not len(missed) and len(white):
        low = white.loc[white["ASR"].idxmin()]
        parts.append(f"Every whitened network learned every pair's pixel that it was given; the lowest attack "
                     f"success, {low['ASR']:.1f} % (pair {low['pair']}, {low['set']}), goes with a whitened contrast "
                     f"{_rank_words(int(by_white[low['pair']]), n)} of the {n}.")
    for label, rows in success[~success["whitened"]].groupby("set", sort=False):
        if len(rows) < 4:
            continue
        best = rows.loc[rows["ASR"].idxmax()]
        parts.append(f"The {networks.get(label, label)} of {label}, which learns its first layer from the raw "
                     f"pixels, learned pair {best['pair']}'s pixel best ({best['ASR']:.1f} %; raw contrast "
                     f"{_rank_words(int(contrast['raw'].rank(method='min')[best['pair']]), n)} of the {n})"
                     + (", the very pair the whitened networks missed" if best["pair"] in set(missed["pair"]) else "")
                     + (f"; none of its {len(rows)} pixels reached {learned:g} %." if not (rows["ASR"] >= learned).any()
                        else f"; {int((rows['ASR'] >= learned).sum())} of its {len(rows)} pixels reached "
                        f"{learned:g} %."))
    return " ".join(parts)
