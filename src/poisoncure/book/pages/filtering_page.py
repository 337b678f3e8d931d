"""Chapter 4 (filtering with a guarantee): the figures and sentences built from the Monte-Carlo draws of
Theorem 5.1's setting and from the mixture filter on the shared models' target class."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.stats import norm

from .. import plots


def monte_carlo_figure(by_n: pd.DataFrame, by_v: pd.DataFrame, error_level: float, trials: int, ns: list[int],
                       norms: list[float], norm_n: float, n_v: int):
    """(a) The chance that a draw's error m/n reaches ``error_level``, and the mean m/n, against n; (b) the
    mean m/n against ‖v‖/σ with a σ²/‖v‖² line and the Gaussian tail."""
    cols = plots.colours(4)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    ax = axes[0]
    floor = 0.5 / trials  # where "no draw exceeded" is drawn on the log scale
    ax.plot(by_n["n"], by_n["exceed"].clip(lower=floor), "o-", color=cols[0], label=f"Pr[m/n ≥ {error_level}]")
    ax.plot(by_n["n"], by_n["mean"].where(by_n["mean"] > 0), "s--", color=cols[1], label="mean m/n")
    ax.axhline(floor, color="grey", lw=0.8, ls=":")
    ax.annotate("no draw exceeded", (by_n["n"].iloc[0], floor), fontsize=7, xytext=(0, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.minorticks_off()
    ax.set_xlabel("samples n")
    ax.set_title(f"‖v‖ = {norm_n:g}σ, {trials} draws each", fontsize=9)
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(by_v["norm"], by_v["mean"].where(by_v["mean"] > 0), "o-", color=cols[2], label="mean m/n (0 not drawn)")
    xs = np.array(norms)
    ref = by_v.iloc[0]
    ax.plot(xs, ref["mean"] * (ref["norm"] / xs) ** 2, "k:", lw=1, label="∝ σ²/‖v‖² (from the first point)")
    ax.plot(xs, norm.cdf(-xs / 2), "k--", lw=1, label="Gaussian tail Φ(-‖v‖/2σ)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(1e-5, 1)
    ax.set_xticks(norms, [f"{v:g}" for v in norms])
    ax.minorticks_off()
    ax.set_xlabel("signal norm ‖v‖ / σ")
    ax.set_title(f"n = {n_v}", fontsize=9)
    ax.legend(fontsize=7)
    plots.label_panels(axes)
    fig.tight_layout()
    return fig


def pc1_histogram(ax, mf: Any, truth: np.ndarray, title: str) -> None:
    """PC1 scores of one target class, clean and poisoned apart (log counts), with the mixture's two components
    (solid: the one flagged as poison)."""
    cols = plots.colours(4)
    s = mf.scores
    bins = np.linspace(s.min(), s.max(), 60)
    ax.hist(s[~truth], bins=bins, density=False, color=cols[0], alpha=0.7, label="clean (truth)")
    ax.hist(s[truth], bins=bins, density=False, color=cols[3], alpha=0.7, label="poisoned (truth)")
    grid = np.linspace(s.min(), s.max(), 400)
    width = bins[1] - bins[0]
    for k in range(2):
        dens = mf.weights[k] * norm.pdf(grid, mf.means[k], mf.stds[k]) * len(s) * width
        ax.plot(grid, dens, color="k", lw=1, ls="-" if k == mf.poisoned_component else "--")
    ax.set_yscale("log")
    ax.set_ylim(0.5, 3 * np.histogram(s, bins=bins)[0].max())
    ax.set_xlabel("PC1 score")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)


def pixel_note(trained: dict[str, Any], results: list[dict[str, Any]]) -> str:
    """What the filter does on the one-pixel model: its rates when the backdoor was learned, and why it still
    catches poisoned samples when it was not."""
    if "pixel" not in trained:
        return "The one-pixel model is not among this build's poisons (chapter 2)."
    if trained["pixel"].metrics.attack_success_rate >= 50:
        return (f"For the one-pixel poison the filter reaches {results[-1]['sensitivity %']:.1f}% sensitivity and "
                f"{results[-1]['specificity %']:.1f}% specificity.")
    return (f"The one-pixel backdoor was not learned (attack success "
            f"{trained['pixel'].metrics.attack_success_rate:.1f}%, chapter 2), so there is no poison neuron and no "
            f"trigger signal — yet the filter still catches {results[-1]['sensitivity %']:.1f}% of the poisoned "
            f"samples, at specificity {results[-1]['specificity %']:.1f}%. What it finds is the label, not the "
            "trigger: base-class images labelled as the target have gradients, with the base class as the "
            "cross-entropy target, unlike those of real target images; the two clusters overlap and the mixture "
            "cuts through the middle.")


def cifar_error_figure(by_size: pd.DataFrame, by_opacity: pd.DataFrame, class_sizes: list[int], seeds: int):
    """(a) Filtering error against the target class's size (poisoned share fixed); (b) filtering error
    against the measured signal norm, one point per blend opacity."""
    cols = plots.colours(4)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    axes[0].errorbar(by_size["n"], by_size["mean"], yerr=[by_size["mean"] - by_size["min"],
                     by_size["max"] - by_size["mean"]], fmt="o-", color=cols[0], capsize=3)
    axes[0].set_xscale("log")
    axes[0].set_xticks(class_sizes, [str(n) for n in class_sizes])
    axes[0].minorticks_off()
    axes[0].set_xlabel("target-class size n (poisoned share fixed)")
    axes[0].set_ylabel("filtering error %")
    axes[0].set_title(f"blend, {seeds} subsamples per size (range shown)", fontsize=9)
    axes[1].plot(by_opacity["signal norm ‖v‖"], by_opacity["error %"], "o-", color=cols[2])
    for _, r in by_opacity.iterrows():
        axes[1].annotate(f"α = {r['opacity']:g}", (r["signal norm ‖v‖"], r["error %"]), fontsize=8,
                         xytext=(4, 4), textcoords="offset points")
    axes[1].set_xlabel("measured signal norm ‖v‖ (normalised gradients)")
    axes[1].set_ylabel("filtering error %")
    plots.label_panels(axes)
    fig.tight_layout()
    return fig
