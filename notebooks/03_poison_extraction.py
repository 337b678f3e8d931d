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
# # Extracting the poison signal
#
# Chapter 1 showed why the poisoned samples' input gradients share a trigger-shaped component. This chapter
# extracts it. Model each input gradient of the target class as $g = \mu + \beta v + n$, where $\beta = 1$ for
# a poisoned sample (probability $\epsilon$) and $0$ otherwise, and $n$ is noise with covariance $\sigma^2 I$.
# The centred covariance is then $\epsilon(1-\epsilon)\,vv^\top + \sigma^2 I$: its top eigenvector is
# $v/\|v\|$ and its eigen-gap is $\epsilon(1-\epsilon)\|v\|^2$ (the paper's Theorem 4.1 states it for the
# uncentred second moment, $\epsilon\|v\|^2$). So one SVD of the normalised, centred gradients of a class should
# return the poison signal $\hat v$. We check this twice: on synthetic gradients drawn from the model, where the
# answer is known, and on the CIFAR-10 models of chapter 2, where we compare $\hat v$ with the trigger itself.
#
# Reproduces: {cite}`chan2019poison` §4.2, Theorem 4.1, Figure 2 and Appendix Tables 8–9.

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
synthetic_d = 3072  # dimension of the synthetic gradients (3 x 32 x 32)
synthetic_n = 5000  # synthetic samples per draw
synthetic_strengths = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]  # eps ||v||^2 / sigma^2 values to sweep
synthetic_ns = [500, 1000, 2000, 5000, 10000]  # sample sizes to sweep at strength 4

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from myst_nb import glue

from poisoncure import attacks, data, experiments, models, signal
from poisoncure.book import plots

plots.set_style(profile)
cols = plots.colours(4)
EPS = 500 / 5500  # the paper's poisoned share inside the target class

# %% [markdown]
# ## Synthetic check: is the top singular vector the planted signal?
#
# We draw $n$ gradients of dimension $d = 3072$ from the model with the paper's poisoned share
# $\epsilon = 500/5500$ and run the same extraction the defense uses (normalise rows, centre, randomised SVD).
# The dashed line is the large-sample prediction for a spiked covariance (Paul 2007): with
# $\ell = (1-\epsilon)\,\epsilon\|v\|^2/\sigma^2$ and $\gamma = d/n$,
# $\cos^2(\hat v, v) = (1-\gamma/\ell^2)/(1+\gamma/\ell)$ above the threshold $\ell > \sqrt\gamma$, and the
# direction is lost below it. Theorem 4.1 is about the population covariance; with finite $n$ the recovery is
# capped below 1, and the prediction says by how much.

# %%
rows = []
for strength in synthetic_strengths:
    g, v, _ = signal.planted_gradients(synthetic_n, synthetic_d, EPS, np.sqrt(strength / EPS), seed=seed)
    sig = signal.extract_signal(g, seed=seed)
    scale = np.mean(np.linalg.norm(g - g.mean(0), axis=1) ** 2)  # squared row norm used by the normalisation
    rows.append({"strength": strength, "n": synthetic_n, "cos": signal.abs_cosine(sig.v_hat, v),
                 "predicted cos": signal.predicted_cosine(strength, EPS, synthetic_n, synthetic_d),
                 "eigen-gap": sig.eigen_gap, "population gap": (1 - EPS) * strength / scale,
                 "predicted gap": signal.predicted_gap(strength, EPS, synthetic_n, synthetic_d) / scale})
for n in synthetic_ns:
    g, v, _ = signal.planted_gradients(n, synthetic_d, EPS, np.sqrt(4.0 / EPS), seed=seed + 1)
    rows.append({"strength": 4.0, "n": n, "cos": signal.abs_cosine(signal.extract_signal(g, seed=seed).v_hat, v),
                 "predicted cos": signal.predicted_cosine(4.0, EPS, n, synthetic_d)})
synth = pd.DataFrame(rows)
by_strength = synth.iloc[:len(synthetic_strengths)]
by_n = synth.iloc[len(synthetic_strengths):]

fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
axes[0].plot(by_strength["strength"], by_strength["cos"], "o-", color=cols[0], label="measured")
axes[0].plot(by_strength["strength"], by_strength["predicted cos"], "k--", lw=1, label="prediction")
axes[0].axhline(0.95, color="grey", lw=0.8, ls=":")
axes[0].set_xscale("log")
axes[0].set_xlabel("signal strength ε‖v‖² / σ²")
axes[0].set_ylabel("|cos(v̂, v)|")
axes[0].set_title(f"n = {synthetic_n}, d = {synthetic_d}", fontsize=9)
axes[0].legend(fontsize=8, loc="lower right")  # the curve is high there; the 0.5 tick stays readable
axes[1].plot(by_n["n"], by_n["cos"], "o-", color=cols[1], label="measured")
axes[1].plot(by_n["n"], by_n["predicted cos"], "k--", lw=1, label="prediction")
axes[1].set_xscale("log")
axes[1].set_xlabel("samples n")
axes[1].set_ylabel("|cos(v̂, v)|")
axes[1].set_title("strength ε‖v‖² = 4σ²", fontsize=9)
axes[1].legend(fontsize=8)
lim = [0, by_strength[["eigen-gap", "population gap"]].max().max() * 1.1]
axes[2].plot(lim, lim, "k--", lw=1)
axes[2].plot(by_strength["predicted gap"], by_strength["eigen-gap"], "o", color=cols[2], label="finite-n prediction")
axes[2].plot(by_strength["population gap"], by_strength["eigen-gap"], "x", color="grey",
             label="population ε(1-ε)‖v‖²")
axes[2].legend(fontsize=8)
axes[2].set_xlabel("predicted gap")
axes[2].set_ylabel("measured gap λ1 - λ2")
axes[2].set_title("eigen-gap (normalised units)", fontsize=9)
plots.label_panels(axes)
fig.tight_layout()
glue("fig_synthetic_recovery", fig, display=False)
plt.close(fig)
at4 = by_strength.loc[by_strength["strength"] == 4.0].iloc[0]
glue("syn_cos4", float(at4["cos"]), display=False)
glue("syn_pred4", float(at4["predicted cos"]), display=False)
first95 = by_strength.loc[by_strength["cos"] >= 0.95, "strength"]
glue("syn_first95", float(first95.min()) if len(first95) else float("nan"), display=False)

# %% [markdown]
# ```{glue:figure} fig_synthetic_recovery
# :name: fig-synthetic-recovery
#
# Synthetic gradients. (a) Recovery of the planted direction against signal strength (dashed: the
# spiked-covariance prediction). (b) Against the number of samples. (c) The measured eigen-gap against two
# predictions (all in the units of the normalised rows): the population gap of Theorem 4.1, and its finite-sample
# value, for which the top sample eigenvalue lies at $(1+\ell)(1+\gamma/\ell)$ and the second at the edge of the
# noise bulk, $(1+\sqrt\gamma)^2$ (Baik, Ben Arous and Péché 2005). With $n$ comparable to $d$ the bulk's edge eats
# into the gap, most at weak signals.
# ```
#
# At strength $\epsilon\|v\|^2 = 4\sigma^2$ with $n = 5000$ and $d = 3072$ the recovered direction has
# $|\cos| =$ {glue:text}`syn_cos4:.3f` (prediction {glue:text}`syn_pred4:.3f`); the first swept strength with
# $|\cos| \ge 0.95$ is {glue:text}`syn_first95:.0f`$\sigma^2$. More samples push the recovery towards 1, as the
# panel (b) shows.

# %% [markdown]
# ## Real gradients: does $\hat v$ look like the trigger?
#
# For each poisoned model of chapter 2 we take all training samples labelled with the target class (clean
# targets and the poisoned base images), compute their input gradients with the **base class** as the
# cross-entropy target (as the paper does for filtering, §5), and extract $\hat v$. We compare it with the true
# poison signal: the mean pixel change $\bar\delta$ the trigger makes on the poisoned images. Two controls: the
# same class with the poisoned rows removed (no signal left), and a clean model's gradients for the same class.

# %%
cifar = data.load_cifar10()
recipes = {p: experiments.Recipe.from_params(globals(), poison=p) for p in (*poisons, "clean")}
trained = {p: experiments.get_model(r, device=device, data=cifar) for p, r in recipes.items()}
target_idx = attacks.class_index(recipes["blend"].target)
base_idx = attacks.class_index(recipes["blend"].base)
clean_train = trained["clean"].train_set

results, images = [], {}
for p in poisons:
    tm = trained[p]
    ps = tm.train_set
    rows_t = np.flatnonzero(ps.y == target_idx)  # what the defender sees as the target class
    poisoned = ps.is_poison[rows_t]
    g = experiments.get_gradients(tm, rows_t, base_idx, device=device)
    delta = attacks.mean_perturbation(clean_train.x[ps.poison_index], ps.spec.trigger).ravel()
    v_all = signal.extract_signal(g, seed=seed)
    v_clean_rows = signal.extract_signal(g[~poisoned], seed=seed)
    rows_c = np.flatnonzero(clean_train.y == target_idx)
    g_cm = experiments.get_gradients(trained["clean"], rows_c, base_idx, device=device)
    v_clean_model = signal.extract_signal(g_cm, seed=seed)
    settings = {"poisoned model, target class": v_all, "poisoned model, poisoned rows removed": v_clean_rows,
                "clean model, same class": v_clean_model}
    seen = models.trigger_as_seen(tm.model, delta.reshape(3, 32, 32))  # δ̄ behind the model's first layer
    for name, sig in settings.items():
        res = {"poison": p, "gradients from": name, "|cos(v̂, δ̄)|": signal.abs_cosine(sig.v_hat, delta),
               "|cos(v̂, δ̄ as seen)|": max(signal.abs_cosine(sig.v_hat, seen.ravel()),
                                           signal.abs_cosine(sig.v_hat, seen[:, :, ::-1].ravel())),
               "λ1 / λ2": float(sig.eigenvalues[0] / sig.eigenvalues[1])}
        if p == "pixel":
            heat = np.abs(sig.v_hat.reshape(3, 32, 32)).sum(0)
            r, c = np.unravel_index(int(np.argmax(heat)), heat.shape)
            trig = ps.spec.trigger
            res["brightest pixel of v̂"] = f"({r}, {c})"
            res["trigger pixel found"] = bool((r, c) in {(trig.row, trig.col), (trig.row, 31 - trig.col)})
        results.append(res)
    images[p] = [delta.reshape(3, 32, 32), seen] + [s.v_hat.reshape(3, 32, 32) for s in settings.values()]
    glue(f"cos_{p}", results[-3]["|cos(v̂, δ̄)|"], display=False)
    glue(f"cos_seen_{p}", results[-3]["|cos(v̂, δ̄ as seen)|"], display=False)
    glue(f"gap_{p}", results[-3]["λ1 / λ2"], display=False)
    glue(f"gap_control_{p}", max(r["λ1 / λ2"] for r in results[-2:]), display=False)
    glue(f"cos_{p}_removed", results[-2]["|cos(v̂, δ̄)|"], display=False)
    glue(f"asr_{p}", tm.metrics.attack_success_rate, display=False)

table = pd.DataFrame(results).set_index(["poison", "gradients from"]).round(3)
first = table.xs("poisoned model, target class", level="gradients from")
raw_cos, seen_cos = first["|cos(v̂, δ̄)|"], first["|cos(v̂, δ̄ as seen)|"]
moves = [f"from {raw_cos[p]:.2f} to {seen_cos[p]:.2f} for the {p} model" for p in poisons]
glue("seen_text", ("" if all(raw_cos == seen_cos) else  # a network without a fixed first layer: nothing to correct
                   "Compared with the trigger seen this way, the agreement goes " + " and ".join(moves) + ".")
     + (" The rest of the blend's difference is the network's own: its deeper layers respond to some parts of the "
        "photo more than to others, which no argument about the first layer predicts."
        if "blend" in poisons and seen_cos["blend"] < 0.8 and not all(raw_cos == seen_cos) else ""), display=False)
glue("tab_extraction", table, display=False)
pix = trained["pixel"].train_set.spec.trigger if "pixel" in poisons else None
fig = plots.image_grid([images[p] for p in poisons], [{"blend": "blend", "pixel": "one pixel"}[p] for p in poisons],
                       ["true trigger δ̄", "δ̄ as the\nnetwork sees it", "v̂: target class", "v̂: poisoned\nrows removed",
                        "v̂: clean model"],
                       size=1.7,
                       markers={(poisons.index("pixel"), j): (pix.row, pix.col) for j in range(5)} if pix else None)
if "pixel" in poisons:
    cos_pixel = table.loc[("pixel", "poisoned model, target class"), "|cos(v̂, δ̄)|"]
    found = bool(table.loc[("pixel", "poisoned model, target class"), "trigger pixel found"])
    asr_pixel = trained["pixel"].metrics.attack_success_rate
    glue("pixel_extraction", f"For the pixel model (attack success {asr_pixel:.1f}%, chapter 2), |cos| = "
         f"{cos_pixel:.2f}, and the brightest pixel of v̂ "
         + ("is the trigger pixel or its mirror image: one pixel among 1,024, found from the gradients alone."
            if found else "is not the trigger pixel.")
         + ("" if asr_pixel >= 50 else " Where a backdoor was not learned there is no poison neuron for the "
            "gradients to expose."), display=False)
else:
    glue("pixel_extraction", "The one-pixel model is not among this build's poisons (chapter 2); the paper's "
         "pixel result needs it.", display=False)
glue("fig_extracted_signals", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} fig_extracted_signals
# :name: fig-extracted-signals
#
# The true poison signal (mean pixel change of the trigger), the same signal as the network's first layer passes it
# to input gradients ($W^\top W \bar\delta$, see below), the extracted $\hat v$ and the two controls, each shown
# min–max scaled (the sign of a singular vector is arbitrary). A circle marks a one-pixel trigger.
# ```
#
# ```{glue:figure} tab_extraction
# :name: tab-extraction
#
# Agreement between $\hat v$ and the trigger's mean pixel change, and between $\hat v$ and that change as the
# network sees it ($W^\top W\bar\delta$ or its mirror image), the ratio of the top two eigenvalues, and for a pixel
# trigger whether the brightest pixel of $\hat v$ (summed over channels) is the trigger pixel or its mirror image
# (training flips images).
# ```
#
# For the blend model, whose backdoor works (attack success {glue:text}`asr_blend:.1f`%), the top direction stands
# out — the eigenvalue ratio is {glue:text}`gap_blend:.2f`, against at most {glue:text}`gap_control_blend:.2f` in
# the two controls — and it disappears once the poisoned rows are removed: the direction comes from the poisoned
# samples. Yet it does not look like the photo: $|\cos(\hat v, \bar\delta)| =$ {glue:text}`cos_blend:.2f`. The
# reason is the network's first layer. Input gradients reach the pixels through it, so for a first layer that
# computes $z = Wx$ every input gradient is $W^\top$ times a gradient at $z$, and a neuron that responds to the
# trigger's image $W\bar\delta$ there leaves $W^\top W\bar\delta$ in the input gradients — the direction
# Theorem 4.1 speaks of, for this network. The whitening layer of chapter 2 scales its filters by the inverse square
# root of the patch covariance, so $W^\top W$ is close to the *inverse* covariance: it suppresses the smooth,
# large-scale part of the photo, which natural images share, and amplifies its sharp, local contrasts.
# {glue:text}`seen_text` For a network without whitening (the small CNN, the paper's ResNet-18) the first layer is
# learned and the paper compares with $\bar\delta$ itself. {glue:text}`pixel_extraction`
#
# ## Exercises
#
# 1. Using the formula above, what strength $\epsilon\|v\|^2/\sigma^2$ makes $|\cos| = 0.95$ at $n = 5000$ and
#    $d = 3072$? Check it by adding it to `synthetic_strengths`.
# 2. Compute the gradients with each sample's own label instead of the base class. Does $\hat v$ still match
#    the blend?
# 3. Why can the extracted signal of a *flipped* training set point at the mirror image of the trigger pixel?
#
# :::{admonition} Solutions (hints, and how to check them)
# :class: dropdown
#
# 1. Solve the spiked-covariance formula for the strength numerically, e.g.
#    `scipy.optimize.brentq(lambda s: signal.predicted_cosine(s, EPS, 5000, 3072) - 0.95, 1, 50)`, then add the
#    value to `synthetic_strengths` (`-p "synthetic_strengths=[..., s]"`) and compare the measured $|\cos|$.
# 2. With its own label (the target), a poisoned sample is already classified as the target with high
#    confidence, so its loss and its gradient are small; the gradient still points along "remove the trigger",
#    because the trigger is the only thing that makes these images look like the target. Expect $\hat v$ to keep
#    the blend's shape but with a weaker eigen-gap; pass the target labels to the gradient call and compare
#    $|\cos(\hat v, \text{trigger})|$ with the chapter's value.
# 3. With flip augmentation the network is trained on the trigger at position $(i, j)$ *and* at its mirror
#    $(i, W-1-j)$, so it learns to react to both. The input gradient of an unflipped poisoned image is
#    largest where the network looks for the trigger, which includes the mirror position; the singular vector
#    can therefore put its weight on either pixel (or both).
# :::
