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
# # Finding the target and base classes
#
# Chapters 3 and 4 assumed we knew which class was attacked and which class the poisoned images came from. A
# defender knows neither. This chapter finds both from the model and its training set alone. For the target:
# run chapter 4's filter on **every** class, with each sample's own label as the cross-entropy target, and
# measure how far apart the two mixture components lie (the 1-D Wasserstein distance $W_k$ between the two
# clusters of PC1 scores). A class holding a backdoor splits into two clusters; a clean class gives two halves
# of one blob. The class with the largest $W_k$ is flagged when $R = W_k / \operatorname{mean}_{k' \ne k}
# W_{k'}$ exceeds a threshold $\lambda$. For the base: recompute the target class's gradients with every other
# label $j$ as the cross-entropy target; with the base label, the poisoned samples' gradients concentrate on the
# trigger (removing it would restore the base prediction), so their mean $|\text{PC1}|$, $m_j$, is largest.
#
# Reproduces: {cite}`chan2019poison` §6 and Appendix Algorithm 1 (Appendix Tables 10–13, whose numbers are lost
# in the text we work from).

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
threshold = 2.0  # lambda: flag the class whose W exceeds lambda times the mean W of the others

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from myst_nb import glue

from poisoncure import data, experiments, signal
from poisoncure.book import plots
from poisoncure.book.pages import detection_page

plots.set_style(profile)
cols = plots.colours(4)
classes = data.CLASSES

cifar = data.load_cifar10()
recipes = {p: experiments.Recipe.from_params(globals(), poison=p) for p in (*poisons, "clean")}
cured = {}
for p, r in recipes.items():
    tm = experiments.get_model(r, device=device, data=cifar)
    cured[p] = experiments.get_poison_cure(tm, experiments.poison_cure_for(r, threshold=threshold, device=device),
                                           neutralize=False, data=cifar)

# %% [markdown]
# ## The target: which class splits in two?
#
# We run the scan on the poisoned models of chapter 2 and on the clean model, which no class should fail.

# %%
fig, axes = plt.subplots(1, len(cured), figsize=(4.4 * len(cured), 3.2), sharey=False)
rows = []
for ax, (p, c) in zip(axes, cured.items(), strict=True):
    scan = c.result.scan
    true_t = c.trained.train_set.spec.target if p != "clean" else None
    colours = [cols[3] if k == true_t else cols[0] for k in range(len(classes))]
    ax.bar(range(len(classes)), scan.distances, color=colours)
    others = np.delete(scan.distances, scan.target).mean()
    ax.axhline(threshold * others, color="k", ls="--", lw=1, label=f"λ × mean of the others (λ = {threshold:g})")
    ax.set_xticks(range(len(classes)), classes, rotation=60, fontsize=8)
    ax.set_title(f"{p} model: R = {scan.ratio:.2f}" + (" — flagged" if scan.poisoned else " — nothing flagged"),
                 fontsize=9)
    ax.set_ylabel("W_k")
    ax.legend(fontsize=7, loc="upper left")
    rows.append({"model": p, "true target": classes[true_t] if true_t is not None else "—",
                 "largest W": classes[scan.target], "R": scan.ratio, "flagged": bool(scan.poisoned),
                 "correct": (scan.poisoned and scan.target == true_t) if true_t is not None else not scan.poisoned,
                 "scan seconds": c.result.seconds.get("scan", float("nan"))})
    glue(f"R_{p}", float(scan.ratio), display=False)
fig.tight_layout()
glue("fig_wasserstein", fig, display=False)
plt.close(fig)
glue("tab_target", pd.DataFrame(rows).set_index("model").round(2), display=False)
glue("target_blend", classes[cured["blend"].result.scan.target], display=False)
if "pixel" in cured:
    pix_flag = cured["pixel"].result.scan.poisoned
    glue("pixel_scan_note", f"The pixel model reaches R = {cured['pixel'].result.scan.ratio:.2f} (attack success "
         f"{cured['pixel'].before.attack_success_rate:.1f}%): " + ("flagged." if pix_flag else
         "not flagged; where its backdoor was not learned there is nothing to find, and the defense leaves it "
         "alone."), display=False)
else:
    glue("pixel_scan_note", "(The one-pixel model is not among this build's poisons.)", display=False)

# %% [markdown]
# ```{glue:figure} fig_wasserstein
# :name: fig-wasserstein
#
# Wasserstein distance between the two mixture clusters of every class (true target in red). The dashed line
# is the threshold for the class with the largest distance.
# ```
#
# ```{glue:figure} tab_target
# :name: tab-target
#
# The target test on each model. "correct" means: the true target flagged for a poisoned model, nothing
# flagged for the clean one.
# ```
#
# On the blend model, {glue:text}`target_blend` has by far the largest distance, $R =$
# {glue:text}`R_blend:.2f`. On the clean model the largest class reaches only $R =$ {glue:text}`R_clean:.2f`,
# under $\lambda$. {glue:text}`pixel_scan_note` The
# paper leaves the value of $\lambda$ unstated; the ratios above show how much room there is around our choice.

# %% [markdown]
# ## The base: which label makes the poisoned gradients largest?
#
# For each model where a class was flagged, $m_j$ is the mean $|\text{PC1}|$ over the samples the scan put in
# the far cluster (what the defender has), for every cross-entropy target $j$. For comparison we also show it
# over the truly poisoned samples (what the paper's appendix tables report).

# %%
flagged = {p: c for p, c in cured.items() if c.result.base is not None}
base_rows = []
fig, axes = plt.subplots(1, max(1, len(flagged)), figsize=(5.5 * max(1, len(flagged)), 3.2), squeeze=False)
for ax, (p, c) in zip(axes[0], flagged.items(), strict=False):
    b = c.result.base
    truth = c.trained.train_set.is_poison[b.rows]
    m_true = signal.base_scores(b.scores, truth)
    xs = np.arange(len(classes))
    ax.bar(xs - 0.2, b.m, width=0.4, color=cols[0], label="over the flagged cluster (defender)")
    ax.bar(xs + 0.2, m_true, width=0.4, color=cols[2], label="over the truly poisoned (ground truth)")
    ax.set_xticks(xs, classes, rotation=60, fontsize=8)
    ax.set_ylabel("m_j = mean |PC1|")
    ax.set_title(f"{p}: base found = {classes[b.base]} (true: {classes[c.trained.train_set.spec.base]})",
                 fontsize=9)
    ax.set_ylim(0, 1.4 * max(b.m.max(), m_true.max()))  # room above the bars for the legend
    ax.legend(fontsize=7, loc="upper right")
    for j in range(len(classes)):
        base_rows.append({"model": p, "CE target j": classes[j], "m_j (flagged)": b.m[j], "m_j (truth)": m_true[j]})
if not flagged:
    axes[0, 0].text(0.5, 0.5, "no class flagged: no base to find", ha="center", transform=axes[0, 0].transAxes)
fig.tight_layout()
glue("fig_base", fig, display=False)
plt.close(fig)
glue("tab_base", pd.DataFrame(base_rows).pivot(index="CE target j", columns="model").round(3)
     if base_rows else pd.DataFrame({"note": ["no class flagged"]}), display=False)
glue("base_reading", detection_page.base_reading(cured, classes), display=False)

# %% [markdown]
# ```{glue:figure} fig_base
# :name: fig-base
#
# Mean $|\text{PC1}|$ of the flagged samples for each cross-entropy target. The target itself is excluded from
# the choice.
# ```
#
# ```{glue:figure} tab_base
# :name: tab-base
#
# The same numbers as a table (the shape of the paper's Appendix Tables 11 and 13).
# ```
#
# {glue:text}`base_reading`
#
# ## Exercises
#
# 1. The scan uses each sample's own label. Rerun it with the base class as the label for every class (a
#    variant that does not trust the training labels). Does the clean model stay unflagged?
# 2. Lower `threshold` until the clean model is flagged. What false-positive rate would you expect over many
#    clean models, and how would you estimate it?
# 3. Why is the score with the target itself as label ($m_t$) large even though it is not the base?
#
# :::{admonition} Solutions (hints, and how to check them)
# :class: dropdown
#
# 1. Pass the base label to the class scan for every class instead of each sample's own label, and compare the
#    clean model's ratio $R$ with $\lambda$. If the variant is robust, the clean model's largest $W_k$ stays
#    within the spread of the others and $R$ stays below the threshold.
# 2. The clean model is flagged as soon as $\lambda$ drops below its ratio $R$ (printed in the chapter). One clean
#    model says nothing about a *rate*: train several clean models with different `seed` values, compute $R$ for
#    each, and report the fraction above $\lambda$ with a binomial confidence interval (e.g. Clopper–Pearson);
#    the distribution of $R$ over clean models is the null that $\lambda$ should be set against.
# 3. The filter works on *normalised* gradients, so what counts is their direction, not their size. With the
#    target as label, the loss of a poisoned image is small, and it *rises* most steeply by taking the trigger
#    away — the trigger is what makes the image look like the target — so the gradient of every poisoned image
#    points along the trigger (with a minus sign), the poisoned gradients line up with one another and their PC1
#    projections are large, whatever the base class. That is why the base search skips the target label.
# :::
