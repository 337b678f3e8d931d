"""Chapter 9 (the variable-size sweep): the figures, tables and sentences built from the sweep's result files."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import matplotlib.colors as mcolors
import matplotlib.patches as mpatches
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
from scipy.stats import norm as gauss

from ...experiments.grids import sweep
from .. import formatting, plots
from ..formatting import MISSING, NO, YES

if TYPE_CHECKING:
    from ...experiments.report import Result

#: the filtering-error figure draws a measured error of exactly 0 here, in its own band, as a downward triangle
ZERO_AT = 0.01
#: Theorem 5.1's shape "holds" when the median point lies within this many orders of magnitude (x3) of a curve
SHAPE_HOLDS = 0.5


def coverage_table(table: pd.DataFrame, order: list[str], rates: list[float]) -> pd.DataFrame:
    """Attack success per (trigger, poison rate) of the undefended models, "missing" where no file exists."""
    asr = table[table.defense == "none"].groupby(["trigger", "rate"])["ASR before"].mean()
    cover = pd.DataFrame([[f"ASR {asr[t, r]:.0f} %" if (t, r) in asr.index else "missing" for r in rates]
                          for t in order], index=order, columns=[f"{100 * r:g} %" for r in rates])
    cover.index.name = "trigger"
    cover.columns.name = "poison rate"
    return cover


def by_point(df: pd.DataFrame, col: str) -> pd.DataFrame:
    """Mean over seeds of one column, and its min and max (the seed spread), per (defense, rate, trigger)."""
    g = df.groupby(["defense", "rate", "trigger"])[col]
    return g.mean().rename("mean").to_frame().join(g.min().rename("lo")).join(g.max().rename("hi")).reset_index()


COLOURS = {"none": "black", **dict(zip(sweep.DEFENSES, plots.colours(len(sweep.DEFENSES)), strict=True))}
MARKERS = dict(zip(("none", *sweep.DEFENSES), "o^sDvP", strict=True))


def per_rate_figure(df: pd.DataFrame, col: str, ylabel: str, defenses: list[str], title: str,
                    triggers: list[dict[str, Any]], rates: list[float]):
    """One panel per poison rate; x: the triggers smallest to largest; one line per defense (seed spread as bars);
    a dotted line between the patches and the blends; one legend above the panels."""
    order = [sweep.trigger_name(t) for t in triggers]
    fig, axes = plt.subplots(1, len(rates), figsize=(3.4 * len(rates), 3.4), sharey=True, squeeze=False)
    pts = by_point(df, col)
    x_of = {t: i for i, t in enumerate(order)}
    for ax, rate in zip(axes[0], rates, strict=True):
        for name in defenses:
            p = pts[(pts.defense == name) & (pts.rate == rate)].dropna(subset=["mean"])
            if p.empty:
                continue
            p = p.assign(x=p.trigger.map(x_of)).sort_values("x")
            ax.errorbar(p.x, p["mean"], yerr=[p["mean"] - p.lo, p.hi - p["mean"]], marker=MARKERS[name], ls="-",
                        color=COLOURS[name], ms=4, lw=1.2, capsize=2, label=name if name != "none" else
                        "no defense")
        ax.axvline(len([t for t in triggers if t["poison"] != "blend"]) - 0.5, color="grey", lw=0.6, ls=":")
        ax.set_xticks(range(len(order)), order, rotation=45, ha="right", fontsize=8)
        ax.set_xlim(-0.5, len(order) - 0.5)
        ax.set_title(f"poison rate {100 * rate:g} %", fontsize=9)
    axes[0][0].set_ylabel(ylabel)
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        h, lab = ax.get_legend_handles_labels()
        for hh, ll in zip(h, lab, strict=True):
            if ll not in labels:
                handles.append(hh)
                labels.append(ll)
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=min(6, len(labels)), fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, 1.06))
    fig.suptitle(title, y=1.12, fontsize=10)
    fig.tight_layout()
    return fig


def flags_figure(table: pd.DataFrame, order: list[str]):
    """Which label-level detector names the target at each (rate, trigger): ✓ / ✗, * where the attack was not
    learned."""
    lab = table[(table.defense.isin(["Poison as a Cure", "Activation Clustering", "Neural Cleanse"]))]
    if not len(lab):
        return plots.placeholder("no sweep results yet")
    flags = (lab.assign(hit=lab["flags target"].astype(float))
             .groupby(["defense", "rate", "trigger"])["hit"].mean().unstack("trigger")
             .reindex(columns=[t for t in order if t in set(lab.trigger)]))
    fig, ax = plt.subplots(figsize=(2.5 + 0.6 * flags.shape[1], 1.8 + 0.38 * len(flags)))
    hit_colours = ("#eeeeee", "#7fc97f")  # does not name the target / names it (light, so the marks stay legible)
    ax.imshow(flags.to_numpy(dtype=float), cmap=mcolors.ListedColormap(hit_colours), vmin=0, vmax=1, aspect="auto")
    ax.grid(False)
    ax.set_xticks(range(flags.shape[1]), flags.columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(flags)), [f"{d}, {100 * r:g} %" for d, r in flags.index], fontsize=8)
    working = table[table.defense == "none"].set_index(["rate", "trigger"])["attack works"]
    for i, (_name, r) in enumerate(flags.index):
        for j, t in enumerate(flags.columns):
            v = flags.iloc[i, j]
            if np.isnan(v):
                continue
            ok = bool(working.get((r, t), False))
            ax.text(j, i, (YES if v >= 0.5 else NO) + ("" if ok else "*"), ha="center", va="center", fontsize=10,
                    color="black")
    ax.set_title("names the target label (* = attack not learned)", fontsize=9)
    ax.legend(handles=[mpatches.Patch(color=hit_colours[1], label=f"{YES} names the target"),
                       mpatches.Patch(color=hit_colours[0], label=f"{NO} does not")],
              loc="upper center", bbox_to_anchor=(0.5, -0.3), ncols=2, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def fails_on(breaks: pd.DataFrame, defense: str) -> str:
    """Where a defense's repair fails, per poison rate, from :func:`sweep.breaking_points`."""
    if not len(breaks) or defense not in breaks.index.get_level_values(0):
        return "— (no working attack)"
    sub = breaks.loc[defense]
    parts = [f"{r}: {v}" for r, v in sub["repair fails on"].items() if v != MISSING]
    return "; ".join(parts) or "none (its repair works on every working attack)"


def theorem_points(table: pd.DataFrame) -> pd.DataFrame:
    """The undefended rows with the measured signal-to-noise ratio ‖v‖/σ and the target-class filtering error."""
    out = table[(table.defense == "none")].copy()
    out["snr"] = out["signal norm"] / out["signal sigma"]
    out["error"] = out["target filter error"]
    return out


def theorem_figure(ours: pd.DataFrame, rates: list[float]) -> tuple[Any, float]:
    """Filtering error against ‖v‖/σ per point (zeros drawn as ▼ in their band), a fitted C·σ²/‖v‖² and the
    Gaussian tail; returns the figure and C (NaN when no error is above 0)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    fam_col = dict(zip(("pixel", "patch", "blend"), plots.colours(3), strict=True))
    ax.axhspan(0.005, 0.02, color="0.92", lw=0)
    for (fam, ok), g in ours.groupby(["family", "attack works"]):
        for zero, part in g.groupby(g.error <= 0):
            ax.scatter(part.snr, np.full(len(part), ZERO_AT) if zero else part.error,
                       s=[24 + 40 * r / max(rates) for r in part.rate],
                       marker="v" if zero else "o", facecolor=fam_col[fam] if ok else "none", edgecolor=fam_col[fam],
                       lw=1.2, alpha=0.9, label=None if zero else f"{fam}, attack {'works' if ok else 'not learned'}")
    fit_c = np.nan
    if len(ours):
        nz = ours[(ours.error > 0) & ours.snr.notna() & (ours.snr > 0)]
        xs = np.geomspace(max(ours.snr.min() * 0.8, 0.3), ours.snr.max() * 1.2, 100)
        if len(nz):
            fit_c = float(np.exp(np.mean(np.log(nz.error) + 2 * np.log(nz.snr))))
            ax.plot(xs, fit_c / xs ** 2, "k:", lw=1, label=f"C·σ²/‖v‖², C = {fit_c:.3g}")
        ax.plot(xs, 100 * gauss.cdf(-xs / 2), "k--", lw=1, label="100·Φ(−‖v‖/2σ)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(0.005, 150)
    lo, hi = ax.get_xlim()
    ax.set_xticks([t for t in (1, 2, 3, 5, 10, 20, 30, 50, 100, 200) if lo <= t <= hi])
    ax.xaxis.set_major_formatter(mticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(mticker.NullFormatter())
    ax.set_xlim(lo, hi)
    ax.text(ax.get_xlim()[0], 0.014, " error 0 (▼)", ha="left", va="center", fontsize=8, color="0.3")
    ax.set_xlabel("measured ‖v‖ / σ (normalised gradients, target class)")
    ax.set_ylabel("filtering error %")
    ax.legend(fontsize=7, title="marker size ∝ poison rate", title_fontsize=7, loc="upper left",
              bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig, fit_c


def theorem_texts(ours: pd.DataFrame, fit_c: float) -> dict[str, str]:
    """The reading of Theorem 5.1 on the sweep: the rank correlation, the range of ‖v‖/σ, and whether the
    direction and the shape of the bound hold (stated from the numbers, with :data:`SHAPE_HOLDS`)."""
    corr = ours[["snr", "error"]].corr(method="spearman").iloc[0, 1] if len(ours) > 2 else np.nan
    out = {"snr_corr": f"{corr:+.2f}" if np.isfinite(corr) else "undefined (fewer than three points, or a constant "
                                                                  "column)",
           "snr_range": f"{ours.snr.min():.1f}–{ours.snr.max():.1f}" if len(ours) else MISSING}
    works = ours[ours["attack works"] & (ours.error > 0) & (ours.snr > 0)]
    tail_gap = np.log10(works.error / (100 * gauss.cdf(-works.snr / 2))) if len(works) else pd.Series(dtype=float)
    fit_gap = (np.log10(works.error / (fit_c / works.snr ** 2)).abs() if len(works) and np.isfinite(fit_c)
               else pd.Series(dtype=float))
    n_zero = int((ours["attack works"] & (ours.error <= 0)).sum())
    if not len(works):
        out["theorem_reading"] = ("No learned attack has a non-zero filtering error here, so the curve's shape is not "
                                  "tested.")
        return out
    direction = ("The direction holds: the error falls as the signal grows" if np.isfinite(corr) and corr < 0 else
                 "Even the direction does not hold here: the error does not fall as the signal grows")
    shape = ("and the shape holds too" if tail_gap.abs().median() <= SHAPE_HOLDS or fit_gap.median() <= SHAPE_HOLDS
             else "but the shape does not")
    out["theorem_reading"] = (
        f"{direction}, {shape}. Over the {len(works)} learned attacks with a non-zero error, the measured error lies a "
        f"median of {tail_gap.median():.1f} orders of magnitude above the Gaussian tail (up to {tail_gap.max():.1f}), "
        f"and the fitted C·σ²/‖v‖² misses them by a median of {fit_gap.median():.1f} orders of magnitude (up to "
        f"{fit_gap.max():.1f}); a shape that held would put the median point within {SHAPE_HOLDS:g} of one of them. "
        f"{n_zero} learned attack{'s have' if n_zero != 1 else ' has'} no filtering error at all (▼), which neither "
        "curve reaches at a finite signal. The bound orders the attacks; it does not predict how large the error is.")
    return out


def live_table(both: list[tuple[str, Result]]) -> pd.DataFrame:
    """The live point beside its committed file: each defense's numbers, one row per (defense, source)."""
    cmp = sweep.point_table([r for _, r in both]).assign(
        source=[s for s, _ in both for _ in range(1 + len(sweep.DEFENSES))])
    cmp = cmp.set_index(["defense", "source"])[["ASR before", "sensitivity", "specificity", "clean after",
                                               "ASR after"]]
    cmp = cmp.reindex(pd.MultiIndex.from_product([["none", *sweep.DEFENSES], [s for s, _ in both]]))
    return formatting.rounded(cmp, 2)
