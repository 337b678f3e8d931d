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
# # Baselines on the same models
#
# The paper's method is only as convincing as what it beats. This chapter runs four earlier defenses on exactly
# the models and training sets of chapters 3–6. Two inspect the training set: **Spectral Signatures**
# {cite}`tran2018spectral` looks, within a label, for one direction along which a sub-population of internal
# representations stands out, and removes the samples furthest along it; **Activation Clustering**
# {cite}`chen2018activation` splits each label's last-layer activations into two clusters and calls a small
# cluster poison. Two inspect only the model, with a little clean data: **Neural Cleanse**
# {cite}`wang2019neural` searches every label for the smallest stamp that sends all images to it, and flags a
# label whose stamp is abnormally small; **Fine-Pruning** {cite}`liu2018fine` removes the channels clean images
# leave dormant, where a backdoor may hide, and fine-tunes. The paper compares its detection with Activation
# Clustering (its Tables 3–4) and its final attack success with Spectral Signatures (Table 5); it argues, without
# running them, that Neural Cleanse needs small triggers and Fine-Pruning clean data. The last section sets all
# eight defenses of the book side by side on the same attacked models, from the runner's committed results.
#
# Reproduces: {cite}`chan2019poison` Tables 3–5 and §8.3 (the comparison), with the baselines' own papers.

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
threshold = 2.0  # lambda of the paper's target test (chapter 5)
eta = 2.0  # counter-poison step of the paper's repair (chapter 6)
eps = 0.1  # Spectral Signatures: the defender's bound on the poisoned fraction of a label
ss_layer = None  # Spectral Signatures' representation: a module name, e.g. features.4 (None: penultimate features)
ac_layer = None  # Activation Clustering's activations (None: the last hidden layer)
clean_per_class = 100  # clean test images per class given to Neural Cleanse and Fine-Pruning
nc_steps = 200  # Neural Cleanse optimisation steps (all labels at once)
fp_max_drop = 4.0  # Fine-Pruning: largest clean-accuracy drop (points) allowed while pruning
min_asr = 50.0  # repairs run only on models whose attack success (%) reaches this: no backdoor, nothing to repair
retrain = None  # defenses whose repair retrains from scratch here, e.g. ["spectral"] (each is one full training)
compare_profile = "smoke"  # whose committed all-defenses comparison to show (results/<profile>/compare)

# %%
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown
from myst_nb import glue

from poisoncure import data, experiments, provenance
from poisoncure.book import formatting, plots
from poisoncure.book.pages import baselines_page as page
from poisoncure.book.pages import compare_page
from poisoncure.defenses.activation_clustering import ActivationClustering
from poisoncure.defenses.fine_pruning import FinePruning
from poisoncure.defenses.neural_cleanse import NeuralCleanse
from poisoncure.defenses.spectral import SpectralSignatures
from poisoncure.experiments import pipeline

plots.set_style(profile)
classes = data.CLASSES

cifar = data.load_cifar10()
models = (*poisons, "clean")
recipes = {p: experiments.Recipe.from_params(globals(), poison=p) for p in models}
trained = {p: experiments.get_model(r, device=device, data=cifar) for p, r in recipes.items()}
spec = experiments.training_set(recipes["blend"], cifar).spec  # the blend attack, to test the clean model with
specs = {p: experiments.attack_spec_or_none(tm) or spec for p, tm in trained.items()}
target, base = specs["blend"].target, specs["blend"].base
clean_set, held_out = experiments.defender_split(cifar.test, clean_per_class, seed=seed)
attacked = [p for p in poisons if trained[p].metrics.attack_success_rate >= min_asr]
# every defense on every model through the library's one pipeline (the call the runner's grids make): repairs only
# where the attack works; Neural Cleanse also on the clean model (false alarms); Fine-Pruning, a repair, where it works
methods = {p: [m for m in pipeline.DEFENSES if p in attacked or m not in (pipeline.PRUNING, pipeline.CLEANSE)
               or (p == "clean" and m == pipeline.CLEANSE)] for p in models}
runs = {p: pipeline.run_defenses(trained[p], cifar, methods[p], pipeline.DefenseSettings.from_params(globals()),
                                 clean=clean_set, repair=p in attacked, target=target, device=device) for p in models}

# %% [markdown]
# ## What each defense needs to know
#
# A defense that needs information an attacker can withhold is weaker than its numbers suggest. The table lists
# what each method here takes as input besides the model.

# %%
needs = page.NEEDS
glue("tab_needs", needs, display=False)

# %% [markdown]
# ```{glue:figure} tab_needs
# :name: tab-needs
#
# Inputs each defense relies on. Neural Cleanse and Fine-Pruning get {glue:text}`n_clean` clean test images
# ({glue:text}`clean_per_class` per class); every repaired model below is scored on the other
# {glue:text}`n_held_out` test images, never on images a defense saw.
# ```

# %%
glue("n_clean", len(clean_set), display=False)
glue("clean_per_class", clean_per_class, display=False)
glue("n_held_out", len(held_out), display=False)

# %% [markdown]
# ## Detecting the poisoned samples
#
# The layout of the paper's Tables 3 and 4: within the target class, the share of clean samples kept
# (specificity) and of poisoned samples caught (sensitivity). For Activation Clustering two readings: its own
# decision rule over all labels (a label is flagged when its smaller cluster holds at most 35 % of it), and the
# protocol of the paper's comparison, which takes the smaller cluster of the target label whatever its size.
# Spectral Signatures scans the target label and removes its top ⌈1.5·ε·n⌉ scores.

# %%
ac_res = {p: runs[p][pipeline.CLUSTERING].artefact for p in models}  # each defense's own result, from the pipeline
ss_res = {p: runs[p][pipeline.SPECTRAL].artefact for p in models}
detection = page.with_paper_detection(page.detection_table(runs, trained, poisons), poisons, pair)
glue("tab_detection", formatting.rounded(detection.set_index(["poison", "method"])), display=False)
for p in models:
    glue(f"ac_flagged_{p}", ", ".join(classes[k] for k in np.flatnonzero(ac_res[p].poisoned)) or "none",
         display=False)
glue("ac_flagged_all", "; ".join(f"{', '.join(classes[k] for k in np.flatnonzero(ac_res[p].poisoned)) or 'none'} on "
                                 f"the {p} model" for p in models), display=False)

# %% [markdown]
# ```{glue:figure} tab_detection
# :name: tab-detection
#
# Poisoned-sample detection in the target class ({glue:text}`target_name`), in %. "paper" columns: the paper's
# ResNet-18 on the same pair; the paper's Activation Clustering row is its within-target protocol.
# ```
#
# Activation Clustering's own rule flags {glue:text}`ac_flagged_all` — the
# relative-size rule cannot tell a label holding a backdoor from a label that is simply diverse:

# %%
glue("target_name", classes[target], display=False)
# the two detectors again, for their settings and for the layer comparison below
ac = ActivationClustering(layer=ac_layer, seed=seed, device=device, progress=False)
ss = SpectralSignatures(eps=eps, labels=int(target), layer=ss_layer, seed=seed, device=device, progress=False)
fig = page.ac_sizes_figure(ac_res, ac.size_threshold, target, classes)
glue("fig_ac_sizes", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} fig_ac_sizes
# :name: fig-ac-sizes
#
# Activation Clustering: share of each label's samples in its smaller cluster, for the models of chapter 2.
# Below the dashed line a label is declared poisoned.
# ```
#
# Spectral Signatures, in its own paper, reads an intermediate convolutional representation, not the
# penultimate features; here it reads {glue:text}`ss_layer_name`. The histograms show its scores in the target
# class, clean and poisoned samples apart, with the removal cut:

# %%
# an intermediate convolutional representation of each architecture, compared with the penultimate features below
compare_layer = ss_layer or page.INTERMEDIATE.get(model)
glue("ss_layer_name", "the penultimate features (ss_layer None), as Activation Clustering does" if ss_layer is None
     else f"the output of the module {ss_layer} (the parameter ss_layer)", display=False)
fig = page.ss_scores_figure({p: ss_res[p] for p in poisons},
                            {p: trained[p].train_set.is_poison[runs[p].target_rows] for p in poisons})
glue("fig_ss_scores", fig, display=False)
plt.close(fig)

# the layer matters: the same two detectors on the penultimate features, target label only
glue("tab_layers", page.layer_table(trained, runs, poisons, ss, ac, compare_layer, device).round(1), display=False)
glue("compare_layer_name", f"module {compare_layer}" if compare_layer else "none for this architecture",
     display=False)

# Activation Clustering's clusters depend on the random starts of FastICA and k-means: the same protocol (smaller
# cluster of the target label, last hidden layer) under five seeds
ac_seeds = page.ac_seed_table(trained, runs, poisons, ac_layer, range(seed, seed + 5), device)
glue("tab_ac_seeds", ac_seeds.round(1), display=False)

# %% [markdown]
# ```{glue:figure} fig_ss_scores
# :name: fig-ss-scores
#
# Spectral Signatures' outlier score τ in the target class (log scale), clean vs poisoned samples.
# ```
#
# ```{glue:figure} tab_layers
# :name: tab-layers
#
# The same two detectors on the penultimate features and on an intermediate convolutional representation
# ({glue:text}`compare_layer_name`; target class, %).
# ```
#
# ```{glue:figure} tab_ac_seeds
# :name: tab-ac-seeds
#
# Activation Clustering (smaller cluster of the target label, last hidden layer) under five seeds of its random
# starts: lowest and highest sensitivity and specificity (%). A spread here means the method's answer depends on
# its seed, not only on the data; `bench/art_crosscheck.py` shows the same for the Adversarial Robustness
# Toolbox's implementation.
# ```

# %% [markdown]
# ## Neural Cleanse: reverse-engineered triggers
#
# For each label, the smallest mask (and its pattern) that sends at least 99 % of the clean images of the other
# labels to it. A backdoor label should need a far smaller mask than the rest; the anomaly index measures how
# far below the median a label's mask norm lies, in robust standard deviations.

# %%
nc_res = {p: runs[p][pipeline.CLEANSE].artefact for p in [*attacked, "clean"]}
fig, fig_index = page.neural_cleanse_figures(nc_res, NeuralCleanse().anomaly_threshold, target, classes)
glue("fig_nc", fig, display=False)
glue("fig_nc_index", fig_index, display=False)
plt.close(fig)
plt.close(fig_index)
glue("nc_text", page.nc_text(nc_res, poisons, target, classes), display=False)
glue("nc_flagged_clean", page.nc_flags(nc_res["clean"], classes), display=False)

# %% [markdown]
# ```{glue:figure} fig_nc
# :name: fig-nc
#
# Neural Cleanse: the reversed trigger (mask × pattern) of every label, for the models with a working backdoor
# and the clean model.
# ```
#
# ```{glue:figure} fig_nc_index
# :name: fig-nc-index
#
# The mask sizes and the anomaly index (target class starred; dashed: the detection threshold 2).
# ```
#
# {glue:text}`nc_text` On the clean model it flags: {glue:text}`nc_flagged_clean`; any flag there is a false
# alarm. The stamp replaces pixels, while the blend shifts every pixel a little, so the reversed trigger of the blend
# model is not the blend pattern but whatever small patch the model has learned to read as the target. A one-pixel
# trigger is the smallest stamp there is; whether it is flagged depends on how far the target's mask stands out
# from the other labels' natural ones, which is what the anomaly index above measures. With ten labels the median
# and its deviation rest on few values, and the index moves with the optimisation budget (exercise 3).

# %% [markdown]
# ## Fine-Pruning: accuracy and attack success against pruning
#
# The last convolutional block's channels, least active on the clean data first. The defender only sees the
# clean-data accuracy and stops before it drops more than {glue:text}`fp_max_drop_v:g` points; the attack
# success (which the defender cannot measure) is shown for the reader.

# %%
glue("fp_max_drop_v", fp_max_drop, display=False)
fp = FinePruning(max_accuracy_drop=fp_max_drop, device=device, progress=False)
curve_set = data.balanced_subset(held_out, 200, seed=seed)  # the curve's 20 evaluations on 2,000 held-out images
fp_res, fp_curves = {}, {}
for p in attacked:
    fp_res[p] = runs[p][pipeline.PRUNING].artefact
    fp_curves[p] = page.pruning_curve(fp, trained[p].model, fp_res[p], curve_set, specs[p])
fig = page.fine_pruning_figure(fp_res, fp_curves)
glue("fig_fp", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} fig_fp
# :name: fig-fp
#
# Fine-Pruning before fine-tuning: clean accuracy on the defender's data (which sets the stopping point) and on
# 2,000 held-out test images, and the attack success rate (their 200 base-class images with the trigger),
# against the share of channels pruned.
# ```

# %% [markdown]
# ## After the repairs: one table
#
# Every defense's repair on every model whose attack works (attack success ≥ {glue:text}`min_asr_v:g` %),
# scored on the held-out test images: the layout of the paper's Table 5, plus clean accuracy and the detection
# numbers above. Spectral Signatures and Activation Clustering retrain from scratch with the model's own recipe
# (one full training each); the defenses listed in the `retrain` parameter do so in this profile, the others
# show "not run".

# %%
glue("min_asr_v", min_asr, display=False)


# the repairs ran in the pipeline above; a repair that changed nothing leaves the model itself
scorers = {p: pipeline.held_out_scorer(held_out, specs[p], device) for p in attacked}  # each model scored once
final = page.final_table(runs, trained, attacked, detection, scorers, classes)
final, repairs_text = page.repairs_text(final, poisons, attacked, pair)
glue("repairs_text", repairs_text, display=False)
glue("tab_final", formatting.rounded(final.set_index(["poison", "defense"])), display=False)

# %% [markdown]
# ```{glue:figure} tab_final
# :name: tab-final
#
# All defenses side by side on the models with a working backdoor: detection in the target class (the
# sample-level defenses), clean accuracy and attack success rate after each repair on the held-out test
# images (%), and the paper's Table 5 for its method and Spectral Signatures on the same pair (ResNet-18).
# ```
#
# {glue:text}`repairs_text` "Not run here" marks the retraining repairs this profile leaves out (the `retrain`
# parameter). Read the cost beside it: clean accuracy after each repair, and what each defense had to be given
# (first table).

# %% [markdown]
# (sec-compare)=
# ## All eight defenses on the same attacks
#
# So far each defense of the book met the paper's method on its own ground: the four above here, Xiang et al.'s
# pair search in chapter 10, PoisHygiene in chapter 11, the weak-learner ensembles in chapter 12. The runner's
# `compare` grid puts all eight on the same attacked models: the paper's nine pairs with both triggers, other
# attacks (a 3×3 patch, Xiang et al.'s additive chessboard, BadNets' all-to-one square, the ensembles paper's X and
# L shapes, PoisHygiene's Mislabel) and clean models, which no defense should call attacked. Mislabel is the odd one
# out: it has no trigger at all. It keeps a tenth of the base class, labelled as the target, and drops the rest, so
# the model learns "base-class images are the target"; its attack success is the share of clean base-class test
# images sent to the target, and a defense that looks for a trigger's signal has none to find. One experiment is
# one trained model and every defense through the same pipeline call, with the same knowledge: Spectral Signatures
# scans every label (nobody tells it the target), the defenses that need clean images share the same
# {glue:text}`n_clean` test images, every repair is scored on the same held-out images, and each defense's wall
# time is set beside the model's own training on the same machine.
# {glue:text}`compare_coverage`.
#
# What each of the eight is given and what it answers:

# %%
cmp = compare_page.load(compare_profile)
glue("compare_coverage", compare_page.coverage_text(cmp.records, cmp.planned), display=False)
glue("tab_compare_needs", compare_page.NEEDS, display=False)
glue("tab_compare_all", compare_page.all_defenses_table(cmp.cell, cmp.order), display=False)
glue("tab_compare_filter", compare_page.filtering_table(cmp.cell, cmp.order), display=False)
glue("tab_backdoorbench", compare_page.backdoorbench_table(cmp.cell), display=False)
glue("compare_reading", Markdown(compare_page.reading(cmp.cell, cmp.order)), display=False)
fig = compare_page.heatmap_figure(cmp.cell, cmp.order)
glue("fig_compare", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} tab_compare_needs
# :name: tab-compare-needs
#
# The eight defenses as the compare grid runs them: the data each is given besides the model, what it is told,
# what it answers and how it repairs.
# ```
#
# ```{glue:figure} fig_compare
# :name: fig-compare
#
# Attack success (%) with no defense and after each defense's repair, on the held-out test images (mean over
# seeds). ✓ under the number: the defense names the attacked target among its labels; ✗: it does not (a verdict
# per label; the sample filters and Fine-Pruning give none). †: the attack success fell but the backdoor moved rather
# than went away (see the table below). Grey: no repair ran (Xiang et al.'s search only detects, and no defense
# repairs an attack the model did not learn).
# ```
#
# ```{glue:figure} tab_compare_all
# :name: tab-compare-all
#
# Every defense on every committed attack: the label verdict (✓ names the target, "+k" and k other labels; over several
# seeds, in how many) and attack success | clean accuracy after the repair (held-out images, %; mean ± sd over seeds; †
# after the attack success: it fell, but fewer than half of the triggered images went back to their class, so the
# trigger still takes them away from it: the backdoor moved rather than went away). Below, the clean models' false
# alarms (a label named, or for the sample filters any sample removed) and the median cost of each defense on the
# working attacks as a multiple of one training of the same model (wall times within one run; where the machine was
# shared with other work they vary more than the work does, which the median tempers; every file's provenance holds its
# stage times).
# ```
#
# ```{glue:figure} tab_compare_filter
# :name: tab-compare-filter
#
# The defenses that remove training samples: sensitivity / specificity over the whole training set (%) and, in
# brackets, the samples removed.
# ```
#
# ```{glue:md} compare_reading
# ```
#
# BackdoorBench {cite}`wu2022backdoorbench` publishes the same kind of table for four of these defenses; the rows
# below set its leaderboard numbers (a larger PreAct-ResNet18, 10 % of the whole training set poisoned, labelled
# "BackdoorBench") beside ours for the attack of the same kind. Its numbers are typed from its leaderboard, never
# computed here; "not run yet" marks our settings still missing from the committed results.
#
# ```{glue:figure} tab_backdoorbench
# :name: tab-backdoorbench
#
# Clean accuracy and attack success (%) with no defense and after Spectral Signatures, Activation Clustering,
# Neural Cleanse and Fine-Pruning: ours (held-out test images) and BackdoorBench's published numbers.
# ```
#
# ### One cell, recomputed in this build
#
# The committed files were written by the runner; one of their cells is computed again here. This chapter's
# {glue:text}`live_model` model is the compare grid's model of the same recipe, and the defenses above ran on it with
# the same settings, so their numbers should equal the file's on the same kind of machine (CPU model, thread count);
# a difference means the code, the environment or the machine changed since the file was written.

# %%
live_p = "pixel" if "pixel" in attacked else (attacked[0] if attacked else None)
live, committed = None, None
if live_p:  # the chapter's own runs of that model as the grid's report, with the table's held-out scores
    committed = compare_page.matching_result(cmp.records, recipes[live_p],
                                             {k: globals()[k] for k in compare_page.LIVE_SETTINGS})
    score = scorers[live_p]
    live = pipeline.to_report(runs[live_p], trained[live_p], score(trained[live_p].model), score)
live_tab = compare_page.live_table(live, committed)
glue("tab_compare_live", live_tab, display=False)
glue("live_note", compare_page.live_note(live_tab, committed, provenance.device_name(device)), display=False)
glue("live_model", f"{live_p} ({'file ' + committed.name if committed else 'no committed file with its recipe'})"
     if live_p else "— (no working attack)", display=False)

# %% [markdown]
# ```{glue:figure} tab_compare_live
# :name: tab-compare-live
#
# The {glue:text}`live_model` model: Poison as a Cure, Activation Clustering (its verdict and filter; its retraining
# is not run in this build), Neural Cleanse and Fine-Pruning, computed in this build and as committed.
# ```
#
# {glue:text}`live_note`
#
# ## Exercises
#
# 1. Give Spectral Signatures every label (`SpectralSignatures(labels="all")`): how many clean samples does it
#    remove to catch the same poison, and does the retrained model change (`retrain = ["spectral"]` retrains)?
# 2. Run Activation Clustering at `ss_layer` instead of the last hidden layer. Which labels does its own rule
#    flag now?
# 3. Double `nc_steps`. Do Neural Cleanse's flags on the blend and clean models stay the same? What does that
#    say about reading one run of a detector with a fixed threshold?
# 4. Fine-Pruning's stopping rule uses {glue:text}`n_clean` clean images. Halve `clean_per_class`: does the chosen
#    ratio move?
#
# :::{admonition} Solutions (hints, and how to check them)
# :class: dropdown
#
# 1. With `labels="all"` the method removes $1.5\,\epsilon$ of *every* label, so about ten times as many samples,
#    nearly all clean in the nine untouched labels. The poison caught in the target label is the same, so the
#    retrained model's attack success should not change much; its clean accuracy can drop slightly with the
#    lost data. Build `SpectralSignatures(labels="all", eps=eps, layer=ss_layer)` in a code cell and compare; the
#    retraining itself is `python3 tasks.py book --only 07_baselines -p "retrain=[spectral]"` (one full training).
# 2. `python3 tasks.py book --only 07_baselines -p ac_layer=features.5`. Compare the flagged labels and the
#    sensitivity/specificity in the target with the chapter's layer ablation table.
# 3. `-p nc_steps=400`. If a flag appears or disappears, the decision depended on the optimisation budget, not on
#    the model: one run of a detector compared with a fixed threshold is a single noisy measurement. Repeat it
#    (budgets, seeds) and report how often a label is flagged.
# 4. `-p clean_per_class=50`. With fewer clean images the accuracy estimate behind the stopping rule is noisier
#    (its standard error grows like $1/\sqrt n$), so the chosen ratio can move by a step or two of the curve.
# :::
