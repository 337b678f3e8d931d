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
# # Filtering with a guarantee
#
# Chapter 3 found the poison direction $\hat v$. This chapter uses it to sort the target class into clean and
# poisoned samples: project every sample's normalised, centred gradient on $\hat v$ (its first principal
# component, PC1), fit a two-component Gaussian mixture to these numbers, and call poisoned the component
# whose mean lies further from zero. The gradients use the **base class** as the cross-entropy target, as in the
# paper's §5. We then ask when this can be trusted, first in theory and on synthetic data, then on CIFAR-10.
#
# Reproduces: {cite}`chan2019poison` §5, Theorem 5.1, Figure 3 and Tables 3–4.

# %% tags=["parameters"]
profile = "smoke"  # named parameter set (src/poisoncure/experiments/profiles/<profile>.yml)
device = "auto"  # "auto" (CUDA if available), "cpu" or "cuda"
pair = 1  # row of the paper's target-base pair table, 1..9
poison_rate = 0.1  # fraction of the base class poisoned, in (0, 1]
opacity = 0.2  # blend opacity, in (0, 1]
blend_source = "skimage"  # blend pattern: "noise" or "skimage"
train_per_class = None  # training images per class; None means all 5,000
model = "whitened_net"  # "whitened_net" (fast, CPU), "small_cnn", "small_cnn_whitened", "resnet18" or "vgg19"
width = 16  # channel width of the model's first stage
epochs = 8  # training epochs
batch_size = 256  # training batch size
lr = 0.2  # peak learning rate
augment = "flip"  # "flip", "crop_flip" or "none"
label_smoothing = 0.2  # label smoothing of the training loss
seed = 0  # seed of the poisoned subset, model initialisation and data order
tta = True  # flip test-time augmentation: classify by the summed logits of each image and its mirror
poisons = ["blend", "pixel"]  # poisoned models of chapter 2: "blend" and/or "pixel"
mc_d = 3072  # dimension of the synthetic gradients
mc_trials = 12  # Monte-Carlo draws per setting
mc_ns = [250, 500, 1000, 2000, 4000]  # synthetic sample sizes (at signal norm mc_norm)
mc_norm = 6.0  # ||v|| / sigma for the sweep over n
mc_n = 2000  # synthetic sample size for the sweep over the signal norm
mc_norms = [3.0, 4.0, 5.0, 6.0, 8.0, 12.0]  # ||v|| / sigma values to sweep
error_level = 0.05  # error rate gamma: we estimate the probability that m/n reaches it
class_sizes = [550, 1100, 2750, 5500]  # CIFAR target-class sizes (subsampled at the same poisoned share)
size_seeds = 5  # subsamples per class size
opacities = [0.1, 0.2]  # blend opacities of the sweep (each needs its own trained model)

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from myst_nb import glue

from poisoncure import attacks, data, experiments, metrics, signal
from poisoncure.book import plots
from poisoncure.book.pages import filtering_page as page
from poisoncure.experiments import paper

plots.set_style(profile)
EPS = 500 / 5500  # the paper's poisoned share inside the target class

# %% [markdown]
# ## The guarantee
#
# Write each normalised gradient of the target class as $X_i = \beta_i v + n_i$ (after centring), with
# $\beta_i = 1$ for a poisoned sample (probability $\epsilon < 1/2$), independent noise $n_i$ of covariance
# $\sigma^2 I_d$, and $\|X_i\| \le 1$. Let $\hat v$ be the top eigenvector of the sample second-moment matrix of
# $n$ such vectors and call a sample poisoned when its projection on $\hat v$ is large; let $m$ be the number of
# samples classified wrongly. Theorem 5.1 of the paper bounds the probability that the error rate $m/n$ is large.
# Its exact form and constants did not survive in the text we work from; we reconstruct it from the tools the
# paper names (matrix Bernstein, then Davis–Kahan) as
#
# $$\Pr\Big[\tfrac{m}{n} \ge C\,\tfrac{\sigma^2 + \tau}{\|v\|^2}\Big] \le 2d\,\exp\big(-c\,n\min(\tau^2, \tau)\big),
# \qquad 0 < \tau \le \epsilon\|v\|^2/4 .$$
#
# Two predictions follow, and they are the ones the paper states in words: for a fixed error level the
# probability of exceeding it falls **exponentially in $n$**, and the error itself shrinks like
# $\sigma^2/\|v\|^2$ as the **signal grows**. We test both by running the real pipeline (randomised SVD, then the
# mixture) on draws from the model, not an idealised threshold.

# %%
rows = []
for n in mc_ns:
    for t in range(mc_trials):
        rows.append({"sweep": "n", "n": n, "norm": mc_norm,
                     "error": signal.filtering_error(n, mc_d, EPS, mc_norm, seed=1000 * t + n)})
for v in mc_norms:
    for t in range(mc_trials):
        rows.append({"sweep": "norm", "n": mc_n, "norm": v,
                     "error": signal.filtering_error(mc_n, mc_d, EPS, v, seed=1000 * t + int(10 * v))})
mc = pd.DataFrame(rows)
by_n = mc[mc["sweep"] == "n"].groupby("n")["error"].agg(
    exceed=lambda e: float(np.mean(e >= error_level)), mean="mean").reset_index()
by_v = mc[mc["sweep"] == "norm"].groupby("norm")["error"].agg(["mean", "median"]).reset_index()

fig = page.monte_carlo_figure(by_n, by_v, error_level, mc_trials, mc_ns, mc_norms, mc_norm, mc_n)
glue("fig_monte_carlo", fig, display=False)
plt.close(fig)
glue("mc_first_n", float(by_n.loc[by_n["exceed"] == 0, "n"].min()) if (by_n["exceed"] == 0).any()
     else float("nan"), display=False)

# %% [markdown]
# ```{glue:figure} fig_monte_carlo
# :name: fig-monte-carlo
#
# Monte-Carlo check of Theorem 5.1 on synthetic gradients ($d = 3072$, $\epsilon = 500/5500$). (a) The
# probability that the error rate exceeds the chosen level, and the mean error rate, against $n$. (b) The
# mean error rate against the signal norm.
# ```
#
# Both predictions hold in shape, with a feature the bound does not show: a **threshold**. Below a critical
# $n$ (or signal norm) the top eigenvector is not the poison direction at all (chapter 3's spiked-covariance
# threshold); the mixture then splits the noise roughly in half and the error is near 50%, far worse than
# calling everything clean. Past the threshold the error falls fast: from $n =$ {glue:text}`mc_first_n:.0f` on,
# no draw exceeded the level. In panel (b), once the direction is found, the error falls much faster than
# $\sigma^2/\|v\|^2$ — like the Gaussian tail of two well-separated clusters — so the bound's rate is loose,
# not wrong.
#
# Near the threshold the two largest singular values lie close together, and the randomised SVD that finds the
# top direction (`signal.top_singular`) needs enough power iterations to tell them apart; with too few it returns
# a mixture of the top directions and the drop of panel (a) moves to larger $n$ than the exact eigenvector
# would give. The book uses ten (`bench/svd.py` compares six and ten with the exact vector).

# %% [markdown]
# ## On CIFAR-10: the two clusters
#
# Now the real gradients of chapter 3 (target class, base-class cross-entropy target). The histogram shows each
# sample's PC1, coloured by the ground truth the defender does not have, with the two fitted mixture
# components on top.

# %%
cifar = data.load_cifar10()
recipes = {p: experiments.Recipe.from_params(globals(), poison=p) for p in poisons}
trained = {p: experiments.get_model(r, device=device, data=cifar) for p, r in recipes.items()}
target_idx = attacks.class_index(recipes["blend"].target)
base_idx = attacks.class_index(recipes["blend"].base)


def target_class_filter(tm):
    """PC1 scores and the mixture for a model's target class (base-class CE target), with the ground truth."""
    ps = tm.train_set
    rows_t = np.flatnonzero(ps.y == target_idx)
    g = experiments.get_gradients(tm, rows_t, base_idx, device=device)
    return g, signal.filter_gradients(g, seed=seed), ps.is_poison[rows_t]


grads, results = {}, []
fig, axes = plt.subplots(1, len(trained), figsize=(5 * len(trained), 3.3), squeeze=False)
for ax, (p, tm) in zip(axes[0], trained.items(), strict=True):
    g, mf, truth = target_class_filter(tm)
    grads[p] = (g, truth)
    page.pc1_histogram(ax, mf, truth, f"{p}: attack success {tm.metrics.attack_success_rate:.1f}%")
    sens, spec = metrics.sensitivity(mf.flagged, truth), metrics.specificity(mf.flagged, truth)
    p_spec, p_sens = paper.detection(p, pair)
    results.append({"poison": p, "n": len(mf.scores), "poisoned": int(truth.sum()), "flagged": int(mf.flagged.sum()),
                    "sensitivity %": sens, "specificity %": spec,
                    "paper, Tables 3–4: sensitivity %": p_sens, "paper, Tables 3–4: specificity %": p_spec})
    glue(f"sens_{p}", sens, display=False)
    glue(f"spec_{p}", spec, display=False)
fig.tight_layout()
glue("fig_pc1_histograms", fig, display=False)
plt.close(fig)
glue("tab_filtering", pd.DataFrame(results).set_index("poison").round(1), display=False)
note = page.pixel_note(trained, results)
glue("pixel_filter_note", note, display=False)

# %% [markdown]
# ```{glue:figure} fig_pc1_histograms
# :name: fig-pc1-histograms
#
# PC1 scores of the target class (log counts) with the fitted mixture: solid, the component called poisoned;
# dashed, the other.
# ```
#
# ```{glue:figure} tab_filtering
# :name: tab-filtering
#
# Filtering the target class. Sensitivity: poisoned samples caught; specificity: clean target samples kept.
# The paper's columns are its ResNet-18 results for the same pair (Tables 3 and 4; the paper does not define
# its specificity column, and we read it as the share of clean target samples kept).
# ```
#
# For the blend poison, sensitivity is {glue:text}`sens_blend:.1f`% and specificity
# {glue:text}`spec_blend:.1f`%. {glue:text}`pixel_filter_note`

# %% [markdown]
# ## On CIFAR-10: error against the class size and the signal strength
#
# The theorem's two knobs have CIFAR counterparts. The sample size $n$: we subsample the blend model's target
# class at the same poisoned share (several draws per size). The signal norm: the blend opacity. We train one
# model per opacity (same recipe otherwise) and measure, besides the filtering error, the signal's norm directly
# as the distance between the mean normalised gradient of the poisoned and of the clean samples.

# %%
g_b, truth_b = grads["blend"]
size_rows = []
for n in class_sizes:
    for s_ in range(size_seeds):
        idx = signal.subsample_class(truth_b, min(n, len(truth_b)), seed=s_)
        mf = signal.filter_gradients(g_b[idx], seed=s_)
        size_rows.append({"n": n, "error %": 100 * float(np.mean(mf.flagged != truth_b[idx]))})
by_size = pd.DataFrame(size_rows).groupby("n")["error %"].agg(["mean", "min", "max"]).reset_index()

op_rows = []
for alpha in opacities:
    tm = experiments.get_model(recipes["blend"].replace(opacity=alpha), device=device, data=cifar)
    g, mf, truth = target_class_filter(tm)
    gn = signal.normalise_rows(g)
    op_rows.append({"opacity": alpha, "attack success %": tm.metrics.attack_success_rate,
                    "signal norm ‖v‖": float(np.linalg.norm(gn[truth].mean(0) - gn[~truth].mean(0))),
                    "error %": 100 * float(np.mean(mf.flagged != truth)),
                    "sensitivity %": metrics.sensitivity(mf.flagged, truth),
                    "specificity %": metrics.specificity(mf.flagged, truth)})
by_opacity = pd.DataFrame(op_rows)

fig = page.cifar_error_figure(by_size, by_opacity, class_sizes, size_seeds)
glue("fig_cifar_error", fig, display=False)
plt.close(fig)
glue("tab_opacity", by_opacity.set_index("opacity").round(2), display=False)
glue("err_small", float(by_size["mean"].iloc[0]), display=False)
glue("err_full", float(by_size["mean"].iloc[-1]), display=False)

# %% [markdown]
# ```{glue:figure} fig_cifar_error
# :name: fig-cifar-error
#
# (a) Filtering error of the blend model's target class against its size. (b) Error against the measured
# signal norm, one point per blend opacity (one trained model each).
# ```
#
# ```{glue:figure} tab_opacity
# :name: tab-opacity
#
# The opacity sweep: how well each model learned its backdoor, the measured signal norm, and the filtering.
# ```
#
# The mean filtering error is {glue:text}`err_small:.2f`% at the smallest class size and
# {glue:text}`err_full:.2f`% on the whole class: the blend model's clusters lie so far apart (figure above)
# that the class size does not matter here — this is the right-hand end of the Monte-Carlo curves. The opacity
# sweep is harder: at the lowest opacity the backdoor may not be learned at all (see its attack success), and
# what separates the poisoned samples is then their wrong label rather than the trigger (the poisoned samples
# are base-class images labelled as the target, so with the base class as the cross-entropy target their loss
# and gradients differ from those of real target images even without a backdoor). The theorem's assumptions are
# not met exactly on real gradients — the noise is neither isotropic nor
# independent of the signal — so this checks the trend, not the constants.
#
# ## Exercises
#
# 1. Add 0.3 to `opacities` (one more model, a few minutes on a laptop). Does the error keep falling?
# 2. The Monte-Carlo panel (a) uses $\|v\| = 6\sigma$. Predict, with chapter 3's threshold formula, the $n$ at
#    which the error collapses for $\|v\| = 4\sigma$, then check it with `mc_norm = 4.0`.
# 3. Replace the mixture by the idealised rule of the theorem (poisoned iff the projection exceeds $\|v\|/2$,
#    with the true $\|v\|$). Is it better or worse than the mixture, and why can a defender not use it?
#
# :::{admonition} Solutions (hints, and how to check them)
# :class: dropdown
#
# 1. `python3 tasks.py book --only 04_filtering -p "opacities=[0.1, 0.2, 0.3]"`. A stronger blend gives a larger
#    signal norm $\|v\|$, and Theorem 5.1's bound falls with $\|v\|/\sigma$; the curve should keep falling unless
#    something else than the signal norm limits the error (for instance poisoned samples the model never learned
#    to send to the target).
# 2. From chapter 3, $\hat v$ carries information only above the threshold $\ell > \sqrt{d/n}$, with
#    $\ell = (1-\epsilon)\epsilon\|v\|^2/\sigma^2$, i.e. for $n > d/\ell^2$. Compute $n^\ast$ for
#    $\|v\| = 4\sigma$ at the chapter's $\epsilon$, expect the error to collapse somewhat above it (the filter
#    also needs $\hat v$ to be *well* aligned, not just above threshold), and check with `-p mc_norm=4.0`.
# 3. With the true $\|v\|$ (and the true direction) the midpoint rule is the natural optimal cut for two
#    equal-variance clusters, so it is at least as good as the mixture whenever $\hat v$ is accurate; the mixture
#    pays for estimating the cluster means, weights and variances from the data. A defender knows neither $v$ nor
#    its norm nor the poisoned share — that is exactly what the mixture estimates.
# :::
