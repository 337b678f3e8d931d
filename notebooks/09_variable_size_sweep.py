# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The variable-size sweep
#
# The paper's title promises *variable-sized* backdoors, and its experiments test two sizes: a single pixel and a
# blended image over the whole picture. A defender choosing a method needs what lies between and around them:
# does a detector that catches a full-image blend still catch a 3×3 square? Does a repair that works at 10 %
# poison still work when the attacker poisons 2 %? This chapter goes beyond the papers and measures it, with the
# same recipe and the same pair for every point.
#
# The triggers grow in three steps. First the pair's one-pixel trigger of chapter 2; then the *same colour* grown
# into solid k×k squares anchored at that pixel (2×2 to 8×8); then full-image blends of rising opacity. Each trigger
# is planted at several poison rates (the share of the base class that is poisoned). Every point is one trained
# model on which every defense of chapter 7 runs: the paper's method (scan, filtering, one-epoch neutralization),
# Spectral Signatures and Activation Clustering (which inspect the training set) and Neural Cleanse and
# Fine-Pruning (which inspect the model with a little clean data).
#
# Training one model per point is the cost, so the points come from the reproduction runner
# (`python -m poisoncure.experiments --profile <profile> --grid sweep`, one result file per point with its commit,
# device, parameters, seed and stage times) and this page reads them from `results/<profile>/sweep/`. To show that
# those files are what the code produces, one point is recomputed here from scratch on every build and set beside
# its file.
#
# Reproduces: nothing in the papers directly — it extends {cite}`chan2019poison` §8 (two trigger sizes) and its
# Theorem 5.1 (filtering improves with the signal norm) to a grid of sizes, opacities and rates, with the
# baselines of {cite}`tran2018spectral`, {cite}`chen2018activation`, {cite}`wang2019neural` and
# {cite}`liu2018fine`.

# %% tags=["parameters"]
profile = "smoke"  # named parameter set (src/poisoncure/experiments/profiles/<profile>.yml)
device = "auto"  # "auto" (CUDA if available), "cpu" or "cuda"
results_profile = "smoke"  # whose committed sweep results to show (results/<profile>/sweep)
live_point = "pair1-patch3-whitened_net-r0.1-s0"  # sweep point recomputed here beside its file ("" or None: none)

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from myst_nb import glue

from poisoncure import data, experiments
from poisoncure.book import formatting, plots
from poisoncure.book.pages import sweep_page as page
from poisoncure.experiments import plans, profiles, report, result_files, runner
from poisoncure.experiments.grids import sweep

plots.set_style(profile)
classes = data.CLASSES
exps = plans.plan(results_profile, ["sweep"])
records = result_files.load_results(results_profile, "sweep")
table = sweep.point_table(records)
done = {r.name for r in records}
missing = [e.name for e in exps if e.name not in done]
rates = sorted({e.params["recipe"]["poison_rate"] for e in exps}, reverse=True)
triggers = [sweep.check_trigger(t) for t in profiles.load(results_profile)["reproduce"]["sweep"]["triggers"]]
order = [sweep.trigger_name(t) for t in triggers]
recipe0 = exps[0].params["recipe"]
spec0 = experiments.Recipe(**recipe0)
glue("n_done", len(done), display=False)
glue("n_plan", len(exps), display=False)
glue("results_profile", results_profile, display=False)
glue("sweep_recipe", f"{recipe0['model'].replace('_', ' ')} (width {recipe0['width']}), {recipe0['epochs']} epochs "
     f"on {recipe0['train_per_class'] or 5000} images per class, pair {recipe0['pair']} "
     f"({spec0.base} → {spec0.target})", display=False)
glue("rates_text", ", ".join(f"{100 * r:g} %" for r in rates), display=False)
prov_text = result_files.provenance_text(records)
glue("prov_text", prov_text, display=False)
glue("missing_text", f"The other {len(missing)} are marked missing in the table." if missing else
     "Every planned point has a result.", display=False)
print(f"{len(done)} of {len(exps)} points; {prov_text}")

# %% [markdown]
# ## The triggers
#
# The recipe of every point: {glue:text}`sweep_recipe`; poison rates {glue:text}`rates_text` of the base class.
# Below, one base-class training image under each trigger of the grid (the blends use the profile's pattern).

# %%
cifar = data.load_cifar10()
img = cifar.train.x[np.flatnonzero(cifar.train.y == classes.index(spec0.base))[3]][None]
row = [experiments.Recipe(**{**recipe0, **t}).trigger().apply(img)[0] for t in triggers]
fig = plots.image_grid([row], [], order, size=1.3)
glue("fig_triggers", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} fig_triggers
# :name: fig-sweep-triggers
#
# The sweep's triggers on one base-class image, smallest to largest: the pair's pixel, the same colour as k×k
# squares, and full-image blends at rising opacity.
# ```
#
# ## Which points have run
#
# {glue:text}`n_done` of the {glue:text}`n_plan` planned points of the {glue:text}`results_profile` profile have
# a valid result file ({glue:text}`prov_text`). {glue:text}`missing_text` The runner fills in what is missing and
# resumes where it stopped: `python -m poisoncure.experiments --profile <profile> --grid sweep`.

# %%
cover = page.coverage_table(table, order, rates)
glue("tab_cover", cover, display=False)

# %% [markdown]
# ```{glue:figure} tab_cover
# :name: tab-sweep-cover
#
# The grid: attack success of the undefended model (held-out triggered base-class images) where a result exists.
# ```

# %%
def per_rate_figure(df, col, ylabel, defenses, title):
    return page.per_rate_figure(df, col, ylabel, defenses, title, triggers, rates)


# %% [markdown]
# ## The attack: how large must a trigger be to be learned?
#
# Before any defense: the attack success (triggered base-class test images sent to the target) and the clean
# accuracy of each point's model. A point whose attack success stays below 50 % has no working backdoor: no repair
# runs on it, and detecting "nothing" there is the right answer.

# %%
if len(table):
    fig = per_rate_figure(table[table.defense == "none"], "ASR before", "attack success before (%)", ["none"],
                          "The undefended models")
else:
    fig = plots.placeholder("no sweep results yet")
glue("fig_attack", fig, display=False)
plt.close(fig)
works = table[(table.defense == "none")]
glue("n_working", int(works["attack works"].sum()), display=False)
glue("n_points", len(works), display=False)
glue("not_learned", ", ".join(f"{r.trigger} at {100 * r.rate:g} %" for r in works[~works["attack works"]]
                              .itertuples()) or "none", display=False)

# %% [markdown]
# ```{glue:figure} fig_attack
# :name: fig-sweep-attack
#
# Attack success of the undefended model against the trigger (the pixel and the squares before the dotted line, the
# blends after it), one panel per poison rate.
# ```
#
# The attack works on {glue:text}`n_working` of the {glue:text}`n_points` points that ran. Points where the model
# did not learn the backdoor: {glue:text}`not_learned`.
#
# ## Detection
#
# Three defenses name a poisoned *label*: the paper's method (its target scan), Activation Clustering (its
# relative-size rule) and Neural Cleanse (its anomaly index). Two remove *samples*, judged inside the target class
# by sensitivity (poison caught) and specificity (clean kept): the paper's filtering and Spectral Signatures
# (which is told the target label and the poison bound ε, as in its paper); Activation Clustering's own rule flags
# samples too.

# %%
fig = page.flags_figure(table, order)
glue("fig_flags", fig, display=False)
plt.close(fig)

sample_defs = ["Poison as a Cure", "Spectral Signatures", "Activation Clustering"]
if len(table):
    fig_sens = per_rate_figure(table[table["attack works"]], "sensitivity", "sensitivity in the target (%)",
                               sample_defs, "Poisoned samples caught (points with a working attack)")
    fig_spec = per_rate_figure(table[table["attack works"]], "specificity", "specificity in the target (%)",
                               sample_defs, "Clean samples kept")
else:
    fig_sens, fig_spec = (plots.placeholder("no sweep results yet") for _ in range(2))
glue("fig_sens", fig_sens, display=False)
glue("fig_spec", fig_spec, display=False)
plt.close("all")

# %% [markdown]
# ```{glue:figure} fig_flags
# :name: fig-sweep-flags
#
# Does each label-level detector name the target? One row per (defense, poison rate), one column per trigger;
# green with ✓: it names the target; grey with ✗: it does not; an asterisk marks points where the attack was not
# learned (no backdoor to find).
# ```
#
# ```{glue:figure} fig_sens
# :name: fig-sweep-sensitivity
#
# Sensitivity inside the target class against the trigger, per poison rate. The paper's method flags nothing
# when its scan misses the target, so its sensitivity there is 0.
# ```
#
# ```{glue:figure} fig_spec
# :name: fig-sweep-specificity
#
# Specificity inside the target class (clean samples kept), as above.
# ```
#
# ## After the repairs
#
# Attack success and clean accuracy after each defense's repair, on test images no defender saw: the paper's
# one-epoch neutralization, Neural Cleanse's unlearning (only when it flags a label; otherwise the model is left
# as it is), Fine-Pruning's pruning and fine-tuning, and — where the profile retrains from scratch — Spectral
# Signatures' and Activation Clustering's retraining without what they removed.

# %%
repair_defs = ["none", *sweep.DEFENSES]
ran = table[table["attack works"]]
if len(ran):
    fig_asr = per_rate_figure(ran, "ASR after", "attack success after (%)", repair_defs,
                              "What is left of the backdoor after each repair")
    fig_acc = per_rate_figure(ran, "clean after", "clean accuracy after (%)", repair_defs,
                              "What each repair costs")
else:
    fig_asr, fig_acc = (plots.placeholder("no point with a working attack yet") for _ in range(2))
glue("fig_asr", fig_asr, display=False)
glue("fig_acc", fig_acc, display=False)
plt.close("all")
retrained = [d for d in ("Spectral Signatures", "Activation Clustering")
             if ran[ran.defense == d]["ASR after"].notna().any()]
glue("retrain_note", ("Spectral Signatures and Activation Clustering detect only in this profile: their repair is "
                      "a retraining from scratch per point, which the profile leaves out (the full profile runs "
                      "it).") if not retrained else f"Retrained from scratch here: {', '.join(retrained)}.",
     display=False)

# %% [markdown]
# ```{glue:figure} fig_asr
# :name: fig-sweep-asr
#
# Attack success after each repair (black: no defense), per poison rate, on the points whose attack works.
# ```
#
# ```{glue:figure} fig_acc
# :name: fig-sweep-acc
#
# Clean accuracy after each repair, as above.
# ```
#
# {glue:text}`retrain_note`
#
# ## Where each defense breaks
#
# Read off the figures above: for every defense and poison rate, the working attacks on which its repair leaves
# the attack success at 10 % or more, those it brings below 10 %, and — for the label-level detectors — the
# triggers whose target it does not name.

# %%
breaks = sweep.breaking_points(table) if len(table) else pd.DataFrame()
if len(breaks):
    breaks["rate"] = [f"{100 * r:g} %" for r in breaks["rate"]]
    breaks = breaks.set_index(["defense", "rate"])
glue("tab_breaks", breaks, display=False)


for key, name in (("ours", "Poison as a Cure"), ("nc", "Neural Cleanse"), ("fp", "Fine-Pruning")):
    glue(f"fails_{key}", page.fails_on(breaks, name), display=False)

# %% [markdown]
# ```{glue:figure} tab_breaks
# :name: tab-sweep-breaks
#
# Where each defense stops working, per poison rate (triggers smallest to largest; "—": none).
# ```
#
# Working attacks that survive the repair (attack success ≥ 10 % after it), per rate — the paper's method:
# {glue:text}`fails_ours`. Neural Cleanse: {glue:text}`fails_nc`. Fine-Pruning: {glue:text}`fails_fp`.
#
# ## Theorem 5.1 on the sweep: filtering error against the signal
#
# Chapter 4's theorem says the filtering error falls as the poison signal grows relative to the noise, like
# σ²/‖v‖² (the reconstructed bound; its constant is lost) — for a Gaussian picture of the two clusters, like the
# tail Φ(−‖v‖/2σ). Every point of the sweep gives one measurement of both sides: ‖v‖ and σ from the normalised
# input gradients of the target class with the true poison labels, and the error of the paper's filtering step
# run on that class (the theorem's setting: the class is given, whatever the class scan of chapter 5 decided). The
# dotted curve is C·σ²/‖v‖² with the one constant C fitted to the points (least squares on the log of the
# non-zero errors); the dashed curve is the Gaussian tail, with no free constant.

# %%
ours = page.theorem_points(table)
fig, fit_c = page.theorem_figure(ours, rates)
glue("fig_theorem", fig, display=False)
plt.close(fig)
for name, text in page.theorem_texts(ours, fit_c).items():
    glue(name, text, display=False)

# %% [markdown]
# ```{glue:figure} fig_theorem
# :name: fig-sweep-theorem
#
# The paper's filtering error in the target class against the measured signal-to-noise ratio ‖v‖/σ, one point per
# sweep point (colour: trigger family; size: poison rate; filled: the attack works; ▼ in the grey band: an error of
# exactly 0, which a log scale cannot place), with Theorem 5.1's σ²/‖v‖² shape (one fitted constant) and the
# Gaussian tail.
# ```
#
# Over the sweep, ‖v‖/σ ranges over {glue:text}`snr_range`; the rank correlation between it and the filtering
# error is {glue:text}`snr_corr` (the theorem predicts a negative one: a stronger signal, a smaller error).
# {glue:text}`theorem_reading`
#
# ## The committed numbers, recomputed here
#
# One point of the grid, {glue:text}`live_name`, is run again from nothing (training included) while this page is
# built, and its numbers are set beside those of its committed file. On the same kind of machine (CPU model,
# precision and torch thread count) they agree in every number. A difference means the code, the environment or the
# machine changed since the file was written: the thread count alone changes the order of floating-point sums, and
# a network trained along a slightly different path can end some points apart, most visibly after a repair.

# %%
live = next((e for e in exps if e.name == live_point), None) if live_point else None
if live_point and live is None:
    raise ValueError(f"live_point {live_point!r} is not a point of profile {results_profile!r}'s sweep; "
                     f"points: {[e.name for e in exps]}")
if live is not None:
    fresh = runner.execute(results_profile, live, device=device, data=cifar)
    both = [("this build", fresh)] + [("committed file", r) for r in records if r.name == live.name]
    glue("live_where", "; ".join(f"{src}: {r.provenance['device']}, "
                                 f"commit {report.short_commit(r.provenance['commit'], 12)}"
                                 for src, r in both), display=False)
    glue("tab_live", page.live_table(both), display=False)
    glue("live_seconds", fresh.provenance["wall_seconds"], display=False)
    glue("live_name", live.name, display=False)
else:
    glue("tab_live", pd.DataFrame({"note": ["no live point (live_point is empty)"]}), display=False)
    glue("live_where", formatting.MISSING, display=False)
    glue("live_seconds", 0.0, display=False)
    glue("live_name", formatting.MISSING, display=False)

# %% [markdown]
# ```{glue:figure} tab_live
# :name: tab-sweep-live
#
# Point {glue:text}`live_name`, recomputed in this build ({glue:text}`live_seconds:.0f` s of wall time) and as
# committed: attack success before, detection in the target class and the model after each repair (%). Where:
# {glue:text}`live_where`.
# ```
#
# ## Exercises
#
# 1. Which trigger is the smallest that the models learn at 10 % poison, and at 2 %? Add a 4×4 square
#    (`{poison: patch, patch_size: 4}`) to the profile's `reproduce.sweep.triggers` and run the missing points.
# 2. On which points does the paper's method miss the target while Neural Cleanse names it, and the other way
#    round? Relate it to the trigger's size: what is each method looking for?
# 3. Fit the constant of Theorem 5.1's curve on the patches only, then on the blends only. Is one constant enough?
# 4. Where Fine-Pruning leaves a backdoor in place, why? Use chapter 7's pruning curve: could a small CNN hide a
#    backdoor in channels that clean images also use?
#
# :::{admonition} Solutions (hints, and how to check them)
# :class: dropdown
#
# 1. Read the attack figure: the first trigger whose attack success passes 50 % in each panel. Adding a trigger
#    changes the plan, so `python -m poisoncure.experiments --profile smoke --grid sweep` runs only the new points
#    (two to three minutes each on two cores) and this page shows them on the next build.
# 2. Compare the rows of the detection heat map. The paper's method looks for a direction shared by a *subset* of
#    the target's input gradients, which any learned trigger creates; Neural Cleanse looks for a stamp that flips
#    every image and is *abnormally small* next to the other labels' stamps. A small square is such a stamp; a large
#    square needs a mask nearly as large as a natural class feature, and a full-image blend is no stamp at all.
# 3. `ours` in the theorem cell holds the points; fit `exp(mean(log(error) + 2 log(snr)))` per `family`. If the two
#    constants differ by much, something besides ‖v‖/σ (for instance how well the model learned the trigger, or
#    the alignment of the estimated direction) limits the error.
# 4. Fine-Pruning assumes a backdoor lives in channels that clean data leaves dormant. A small network has few
#    dormant channels: the trigger shares channels with clean features, so pruning up to the accuracy budget
#    removes little of it. Check the chosen pruning ratio in the result files (`defenses → Fine-Pruning → after →
#    pruned`).
# :::
