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
# # Detection without the training set
#
# Every defense so far either reads the training set (the paper's method, Spectral Signatures, Activation
# Clustering) or searches one stamp per *label* (Neural Cleanse). Xiang, Miller and Kesidis
# {cite}`xiang2019detection` ask a finer question of the finished model: for every ordered pair of classes
# (s, t), how small an *added* perturbation sends most clean images of s to t? Natural pairs need a sizeable
# change; a pair joined by a backdoor needs only about the trigger. So the reciprocal of the smallest norm,
# $r_{st} = 1/\lVert v_{st}\rVert$, of the backdoor pair should stand out to the right of the others. Whether it
# stands out *enough* is decided by a null model: a Gamma density fitted to the $(K-1)^2$ smallest statistics,
# cut off below the $K-1$ largest (at most one target class, so at most $K-1$ statistics can be attacked), and
# the p-value of the largest statistic among $K(K-1)$ null draws. A small p-value names the model attacked,
# and the arg-max pair names the source and the target; its perturbation is an estimate of the trigger.
#
# The defender needs the model's gradients and a handful of clean images per class — no training set, no
# retraining. The attack the method was designed for is the paper's own: an imperceptible pattern *added* to
# images of one source class (a chessboard over the whole image, or four pixels), with copies labelled as the
# target appended to the training set. We run it on that attack, on the companion's blend attack and on clean
# models, beside Neural Cleanse and the paper's method.
#
# Reproduces: {cite}`xiang2019detection` §3–5 (Algorithm 1, the order-statistic test, Tables 2 and 5 in kind),
# at CPU scale.

# %% tags=["parameters"]
profile = "smoke"  # named parameter set (src/poisoncure/experiments/profiles/<profile>.yml)
device = "auto"  # "auto" (CUDA if available), "cpu" or "cuda"
pair = 1  # row of the paper's target-base pair table, 1..9 (the blend model's pair)
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
additive_pattern = "chessboard"  # Xiang et al.'s added pattern: "chessboard" (global) or "sparse" (4 pixels)
additive_l2 = 2.0  # L2 norm of the added pattern in [0, 1] pixel units (the paper: 0.2 chessboard, 0.6 sparse)
additive_rate = 0.4  # triggered copies added, as a fraction of the source class (the paper: 1,000 of 5,000)
additive_train_per_class = 2500  # training images per class of the additive model; None means all 5,000
clean_sizes = [500]  # training images per class of extra clean models, to see false alarms against training
search_per_class = 10  # clean images per class the pair search uses (the paper: 100)
search_eta = 0.2  # length of each normalised gradient step of the search (L2, [0, 1] pixel units)
search_bound = 5.0  # largest perturbation norm searched; pairs that reach it count as not reached
pi = 0.8  # fraction of a class's images a perturbation must send to the target
theta = 0.05  # p-value below which a model is called attacked
threshold = 2.0  # lambda of the paper's target test (chapter 5)
clean_per_class = 100  # clean test images per class held by the defender (as in chapter 7)
nc_steps = 200  # Neural Cleanse optimisation steps (as in chapter 7, so its results are shared)
compare_profile = "smoke"  # whose committed all-defenses comparison to show (results/<profile>/compare)

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from myst_nb import glue

from poisoncure import data, experiments
from poisoncure.book import formatting, plots
from poisoncure.book.pages import compare_page
from poisoncure.book.pages import reverse_page as page
from poisoncure.defenses.neural_cleanse import NeuralCleanse
from poisoncure.defenses.reverse_engineer import ReverseEngineeringDetector, pattern_correlation
from poisoncure.experiments import report, result_files

plots.set_style(profile)
classes = data.CLASSES

cifar = data.load_cifar10()
shared = experiments.Recipe.from_params(globals(), poison="blend")
recipes = {
    additive_pattern: shared.replace(poison=additive_pattern, additive_l2=additive_l2, poison_rate=additive_rate,
                                     train_per_class=additive_train_per_class),
    "blend": shared,
    "clean": shared.replace(poison="clean"),
    **{f"clean ({n}/class)": shared.replace(poison="clean", train_per_class=n) for n in clean_sizes or []},
}
trained = {name: experiments.get_model(r, device=device, data=cifar) for name, r in recipes.items()}
add_spec = trained[additive_pattern].train_set.spec
src_true, tgt_true = add_spec.base, add_spec.target
clean_set, held_out = experiments.defender_split(cifar.test, clean_per_class, seed=seed)

# %% [markdown]
# ## The additive attack
#
# The pattern is added to the image and clipped, not pasted: every pixel of a chessboard moves by the same few
# grey levels, too little to see. The paper uses an L2 norm of 0.2 (1.3 grey levels per entry) on a ResNet-20
# trained for 200 epochs; a four-epoch CPU model does not learn so faint a pattern, so this profile uses
# {glue:text}`add_l2` (about {glue:text}`add_levels:.0f` grey levels), and to keep the build short it trains this
# model on {glue:text}`add_train_desc`. Our images are stored as 8-bit integers,
# so the added pattern is rounded to whole grey levels (negligible at this norm; at the paper's it would not
# be, see the module's documentation). Copies of {glue:text}`add_n_poison` source images
# ({glue:text}`add_source`) carrying the pattern are *added* with the label {glue:text}`add_target`; the
# originals stay.

# %%
delta = add_spec.trigger.delta()
src_rows = np.flatnonzero(cifar.test.y == src_true)[:4]
examples = cifar.test.x[src_rows]
fig = plots.image_grid([list(examples), list(add_spec.trigger.apply(examples)),
                        [np.abs(delta)]],
                       ["clean", "with pattern", "pattern |v|"], size=1.4)
glue("fig_additive", fig, display=False)
plt.close(fig)
glue("tab_models", page.models_table(trained), display=False)
glue("add_l2", f"‖v‖₂ = {additive_l2:g}", display=False)
glue("add_levels", float(255 * delta[delta > 0].mean()), display=False)
glue("add_n_poison", int(trained[additive_pattern].train_set.is_poison.sum()), display=False)
glue("add_train_desc", "all training images" if additive_train_per_class is None else
     f"{additive_train_per_class} training images per class (the shared recipe otherwise)", display=False)
glue("add_source", classes[src_true], display=False)
glue("add_target", classes[tgt_true], display=False)
glue("asr_additive", float(trained[additive_pattern].metrics.attack_success_rate), display=False)

# %% [markdown]
# ```{glue:figure} fig_additive
# :name: fig-additive
#
# Source-class test images before and after the pattern is added, and the pattern's magnitude (scaled).
# ```
#
# ```{glue:figure} tab_models
# :name: tab-xiang-models
#
# The models of this chapter: the additive attack, the blend attack of chapter 2 and clean models (the shared
# one of chapter 2 and smaller ones trained on fewer images). Attack success is on the source's test images.
# ```
#
# The additive model sends {glue:text}`asr_additive:.1f`% of the triggered source images to the target.

# %% [markdown]
# ## The pair search
#
# For each of the 90 ordered pairs, the search starts at $v = 0$ and steps down the gradient of minus the mean
# posterior of $t$ over the source images, until a fraction $\pi$ of them is classified as $t$. All pairs run in
# one batch: a step is one forward and backward pass over every pair's images, and each pair stops on its own.
# We step along the *normalised* gradient with a fixed length, then halve back within the last step to the
# smallest multiple that still reaches $\pi$ — the paper leaves its step size to a line search; this choice is
# ours. Each heat map shows the norm found for every (source, target): look for a
# cell much darker than its row and column.

# %%
detector = ReverseEngineeringDetector(per_class=search_per_class, pi=pi, eta=search_eta, bound=search_bound,
                                      theta=theta, seed=seed, device=device, progress=False)
results, search_prov = {}, {}
for name, tm in trained.items():
    results[name], search_prov[name] = experiments.get_pair_search(tm, detector, clean_set)

shown = [additive_pattern, "blend", "clean"]
fig = page.heatmaps(results, shown, classes)
glue("fig_heatmaps", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} fig_heatmaps
# :name: fig-heatmaps
#
# Smallest perturbation norm per (source, target) pair; the red box is the arg-max of $1/\lVert v\rVert$,
# the pair the method reports. Colour scale clipped at the 95th percentile of each model.
# ```

# %% [markdown]
# ## The null and the p-value
#
# The histograms show the 90 statistics of each model. The robust null (solid) is fitted to the 81 smallest,
# conditioned on lying below the smallest of the nine largest; the naive null (dashed) to all 90, outlier
# included, which widens it and weakens the test — the comparison of the paper's Table 5.

# %%
fig = page.null_fits(results, shown)
glue("fig_nulls", fig, display=False)
plt.close(fig)

glue("tab_xiang", page.detection_table(results, trained, search_prov, classes), display=False)
for name, text in page.search_texts(results, additive_pattern, (src_true, tgt_true), (shared.base, shared.target),
                                    classes).items():
    glue(name, text, display=False)

# %% [markdown]
# ```{glue:figure} fig_nulls
# :name: fig-nulls
#
# The 90 statistics with the truncated (solid) and naive (dashed) Gamma nulls; the vertical line is the
# largest statistic, whose p-value is given.
# ```
#
# ```{glue:figure} tab_xiang
# :name: tab-xiang
#
# The detection on every model of the chapter ({glue:text}`xiang_theta_text`).
# ```
#
# On the additive model the reported pair is {glue:text}`xiang_pair_additive` — {glue:text}`xiang_correct`
# ({glue:text}`xiang_true_pair`) — with p = {glue:text}`xiang_p_additive` under the truncated null and
# {glue:text}`xiang_pnaive_additive` under the naive one. On the blend model it reports
# {glue:text}`xiang_pair_blend` (p = {glue:text}`xiang_p_blend`): a blend at 20% opacity moves every pixel by
# tens of grey levels, and the smallest perturbation that does the blend's work for the true pair
# ({glue:text}`xiang_blend_true_pair`, norm {glue:text}`xiang_blend_true_norm:.2f`) is no smaller than natural
# pairs — the method assumes a small additive trigger, and this one is neither small nor additive. On the clean
# model it reports {glue:text}`xiang_pair_clean` with p = {glue:text}`xiang_p_clean`: {glue:text}`xiang_clean_verdict`.

# %%
glue("xiang_theta_text", f"π = {pi:g}, θ = {theta:g}, {search_per_class} clean images per class, step "
     f"{search_eta:g}, bound {search_bound:g}", display=False)

# %% [markdown]
# ## The recovered pattern
#
# The reported pair's perturbation is the method's estimate of the trigger. Training flipped the images
# horizontally, which on a 32-pixel-wide image turns a chessboard into its complement, so both phases acted as
# the trigger; we report the correlation with the true pattern and with its mirror image.

# %%
v_true = add_spec.trigger.delta()
v_mirror = v_true[:, ::-1]
est = results[additive_pattern].search.patterns[src_true, tgt_true]
corr = pattern_correlation(est, v_true)
corr_m = pattern_correlation(est, v_mirror)
fig = plots.image_grid([[v_true, est, np.abs(np.fft.fftshift(np.fft.fft2(est.mean(0))))]],
                       [], ["true pattern", f"estimated ({classes[src_true]} → {classes[tgt_true]})",
                            "|FFT| of the estimate"], size=2.2)
glue("fig_pattern", fig, display=False)
plt.close(fig)
glue("corr_true", corr, display=False)
glue("corr_mirror", corr_m, display=False)
glue("est_norm", float(np.linalg.norm(est)), display=False)

# %% [markdown]
# ```{glue:figure} fig_pattern
# :name: fig-pattern
#
# The true added pattern, the perturbation the search found for the true pair (each min–max scaled), and the
# magnitude of its 2-D Fourier transform (a chessboard is the highest spatial frequency: the corners after
# shifting the zero frequency to the centre).
# ```
#
# The estimate has norm {glue:text}`est_norm:.2f` against the trigger's {glue:text}`add_l2`; its correlation
# with the true pattern is {glue:text}`corr_true:.3f` and with the mirrored one {glue:text}`corr_mirror:.3f`.
# The search needs only *some* perturbation that flips 80% of the images, and the network's own
# sensitivities add to the trigger, so the estimate is a noisy, partial copy; the paper's Fig. 9 shows the same
# at ×30 scaling.

# %% [markdown]
# ## False alarms on clean models
#
# A clean model has no backdoor, so any detection is a false alarm. The paper reports none on its well-trained
# ResNet-20s. Small, briefly trained networks are different: some natural pairs (cat and dog, ship and
# airplane, horse and deer) are so close that a small perturbation confuses them, and they look as extreme as a
# backdoor. The statistic cannot tell "close because of a backdoor" from "close by nature"; the order-statistic
# p-value then measures how unusual the closest pair is, not whether it was planted. The table above has the
# shared clean model and clean models trained on fewer images; this figure sets their p-values against their
# accuracy.

# %%
clean_names = [n for n in results if n.startswith("clean")]
full_runs = result_files.load_results("full", "reverse")  # committed GPU results (python -m poisoncure.experiments)
full_clean = [r for r in full_runs if r.params["poison"] == "clean"]
fig = page.false_alarm_figure(results, trained, clean_names, full_clean, model, theta, classes)
glue("fig_false_alarms", fig, display=False)
plt.close(fig)
n_false = int(sum(results[n].detected for n in clean_names))
glue("n_false", n_false, display=False)
glue("n_clean_models", len(clean_names), display=False)
by_acc = sorted(clean_names, key=lambda n: trained[n].metrics.clean_accuracy)
glue("fa_trend", "; ".join(f"p = {results[n].null.p_value:.1e} at {trained[n].metrics.clean_accuracy:.1f}% clean "
                           f"accuracy ({n})" for n in by_acc), display=False)

# %% [markdown]
# ```{glue:figure} fig_false_alarms
# :name: fig-false-alarms
#
# Clean models: the p-value of the closest pair against clean accuracy (the reported pair is named). Points
# below the dashed line are false alarms.
# ```
#
# {glue:text}`n_false` of the {glue:text}`n_clean_models` clean models are called attacked. At this scale the
# p-values are not calibrated, and the statement "p < 0.05" should be read as "one pair is unusually close",
# which a backdoor causes and a fragile natural pair can too. Against training, from the least to the most
# accurate clean model: {glue:text}`fa_trend`. The square markers are the `full` profile's ResNet-18s, trained on a
# GPU and read from the committed results (next section).

# %% [markdown]
# ## At the full profile's scale (committed GPU results)
#
# The same measurements on the `full` profile's models — ResNet-18s trained for 40 epochs with crops and flips,
# 100 clean images per class for the search, step 0.02 — were run on a GPU by
# `python -m poisoncure.experiments --profile full --grid reverse` and committed under `results/full/reverse/`.
# This build reads them; it trains nothing. Each column names the commit and device that produced it.

# %%
full_table = page.reverse_table(full_runs)
if len(full_table):
    for c in ("p (truncated)", "p (naive)"):
        full_table[c] = full_table[c].map(lambda v: f"{v:.2e}")
    glue("tab_full", formatting.rounded(full_table, 2).T, display=False)  # one column per model
else:
    glue("tab_full", pd.DataFrame({"note": ["no committed full-profile results in results/full/reverse"]}),
         display=False)
for name, text in page.full_profile_texts(full_runs, search_per_class, classes).items():
    glue(name, text, display=False)

# %% [markdown]
# ```{glue:figure} tab_full
# :name: tab-xiang-full
#
# The `full` profile's models (ResNet-18, GPU), read from `results/full/reverse/`: the pair search with both
# nulls, and which labels Neural Cleanse and the paper's method flag.
# ```
#
# {glue:text}`full_clean_text`. {glue:text}`full_additive`

# %% [markdown]
# ## Side by side with Neural Cleanse and the paper's method
#
# The same models, three detectors. Neural Cleanse (chapter 7) flags a *label* whose reversed stamp is
# abnormally small; the paper's method (chapters 3–5) scans the training set's gradients and names a target
# class and a base class. A detector "finds" the target or the source when it names the true one; on a clean
# model, any flag is a false alarm.

# %%
nc = NeuralCleanse(steps=nc_steps, seed=seed, device=device, progress=False)
compare = []
for name in shown:
    tm = trained[name]
    cure = experiments.get_poison_cure(tm, experiments.poison_cure_for(
        recipes[name], threshold=threshold, progress=False, device=device), neutralize=False, data=cifar)
    compare += page.comparison_rows(name, tm, results[name], experiments.get_reversed_triggers(tm, nc, clean_set)[0],
                                    cure.result, classes)
comparison = formatting.dashed(pd.DataFrame(compare).set_index(["model", "detector"]))
glue("tab_compare", comparison, display=False)
needs = page.NEEDS
glue("tab_xiang_needs", needs, display=False)

# %% [markdown]
# ```{glue:figure} tab_compare
# :name: tab-compare
#
# Who detects, and who names the right target and source ("—": nothing named, or no attack to be right about).
# The paper's method names a base class, the source of its poisoned samples.
# ```
#
# ```{glue:figure} tab_xiang_needs
# :name: tab-xiang-needs
#
# What each detector needs.
# ```
#
# The three methods answer different questions with different inputs. The pair search is the only one that
# names a source without the training set, and it was built for small additive triggers; it does not suit a
# full-image blend, which the paper's method handles, and on small CPU models its clean-model p-values are not
# to be trusted. Neural Cleanse names labels only. The paper's method needs the training set but also returns
# the poisoned samples themselves, which the repair of chapter 6 uses.
#
# ## Beside the other seven defenses
#
# Chapter 7's comparison ({ref}`sec-compare`) runs Xiang et al.'s pair search with every other defense of the book
# on the same attacked models and the same clean models; there, as here, it is a detector only: it names a pair and
# repairs nothing. Its row, from the committed files of the {glue:text}`compare_profile_xiang` profile:

# %%
all_eight = compare_page.load(compare_profile)  # the committed compare results (chapter 7)
glue("tab_compare_xiang", compare_page.defense_rows(all_eight.cell, report.XIANG, all_eight.order), display=False)
glue("compare_profile_xiang", compare_profile, display=False)

# %% [markdown]
# ```{glue:figure} tab_compare_xiang
# :name: tab-compare-xiang
#
# Xiang et al.'s pair search in the all-defenses comparison: per attack, whether it names the target (✓ / ✗; over
# seeds, in how many), the attack success before and after its repair and the clean accuracy after (held-out test
# images, %; mean ± sd over seeds; † where the backdoor moved rather than went away, as in chapter 7), its cost as a
# multiple of one training; last, its false alarms on the clean models.
# ```
#
# ## Exercises
#
# 1. Rerun with `additive_pattern = "sparse"` and `additive_l2 = 0.6` (the paper's local pattern). Does the
#    search still name the right pair, and what does the estimated pattern look like?
# 2. Set `search_per_class = 5`. What happens to the statistics of the clean model, and why do fewer images make
#    extreme pairs more likely?
# 3. Add 2500 to `clean_sizes`. Does the clean models' p-value move with their accuracy?
#
# :::{admonition} Solutions (hints, and how to check them)
# :class: dropdown
#
# 1. `python3 tasks.py book --only 10_reverse_engineering -p additive_pattern=sparse -p additive_l2=0.6`
#    (one more model to train). Four pixels at a total norm of 0.6 are a weak pattern for a four-epoch model:
#    check the attack success first — if the backdoor is not learned there is nothing to find. Where it is, the
#    paper's Fig. 9 suggests the estimate is a blob near one of the four pixels, not all four.
# 2. With 5 images, π = 0.8 means 4 of 5: one easy image pair can make a perturbation look tiny, so the minimum
#    over 90 pairs gets more extreme and the p-value of clean models falls (more false alarms). The paper finds
#    detection stable from about 25 images per class on.
# 3. `-p "clean_sizes=[500, 2500]"`: better-trained models separate their classes further, which should raise
#    the smallest natural norms; whether the *p-value* follows depends on how the other 89 pairs move too — the
#    test is relative to the model's own pairs.
# :::
