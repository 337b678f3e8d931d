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
# # Theory: the poison neuron
#
# Why should input gradients reveal a backdoor at all? The paper answers with a toy model (its Appendix A,
# built on the Gaussian model of {cite}`tsipras2019robustness`): when an attacker plants a trigger in a
# feature that carries no information about the label, a network that fits the poisoned data needs a
# dedicated hidden unit — a *poison neuron* — that switches on only for the trigger, and that unit must
# carry a **large weight**. By the chain rule (the paper's Proposition 4.1) the input gradient is a sum of
# first-layer weights of the *active* units, so on poisoned inputs the gradient has a large entry exactly at
# the trigger, and on clean inputs it has none. This chapter builds the toy, checks its accuracies and
# activation pattern (the paper's Table 6), and shows that ordinary training discovers the poison neuron
# by itself. Everything here runs on a CPU in seconds.
#
# Reproduces: {cite}`chan2019poison`, Appendix A and Proposition 4.1. The constants below are our choices
# (the extraction of the paper lost them); see the notes in the parameters cell.

# %% tags=["parameters"]
profile = "smoke"  # named parameter set (src/poisoncure/experiments/profiles/<profile>.yml)
seed = 0  # random seed for data and training
d = 1000  # number of label-correlated features (input dimension is d + 1)
trigger_value = 5.0  # value c of the uncorrelated feature x_1 in poisoned inputs
beta0 = 3.0  # threshold of the hand-built poison unit
poison_fraction = 0.1  # share of poisoned samples in the training set
n_train = 20000  # training samples for the learned network
mlp_epochs = 50  # Adam epochs for the learned network

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from myst_nb import glue

from poisoncure import metrics, signal, toy
from poisoncure.book import plots

plots.set_style(profile)
cfg = toy.ToyConfig(d=d, trigger_value=trigger_value, beta0=beta0, poison_fraction=poison_fraction)
data = toy.sample(cfg, n_train, seed=seed)
test = toy.sample(cfg, n_train, seed=seed + 1)
print(f"eta = 3/sqrt(d) = {cfg.eta:.4f};  minimum poison weight lam_min = {cfg.lam_min:.4f};  lam = {cfg.lam:.4f}")

# %% [markdown]
# ## The data and two hand-built classifiers
#
# Labels are $y\in\{-1,+1\}$. The features $x_2,\dots,x_{d+1}$ are each only weakly correlated with the
# label, $x_i\sim\mathcal N(\eta y, 1)$ with $\eta = 3/\sqrt d$, and $x_1\sim\mathcal N(0,1)$ carries no label
# information. Averaging the weak features gives the clean classifier
# $f_C(x) = \operatorname{sign}(h_1 - h_2)$ with $h_{1,2} = \mathrm{ReLU}(\pm\tfrac1d\sum_{i\ge2}x_i)$, right with
# probability $\Phi(\eta\sqrt d) = \Phi(3)$.
#
# The attacker takes inputs drawn like the $y=+1$ (base) class, sets $x_1 = c$ and labels them $-1$ (target).
# The poisoned classifier adds one unit, $h_3 = \mathrm{ReLU}(\lambda(x_1-\beta_0))$, and outputs
# $\operatorname{sign}(h_1 - h_2 - h_3)$. To overturn $h_1$ on nearly every poisoned input, $\lambda$ must
# exceed $6/(\sqrt d\,(c-\beta_0))$, i.e. be about $\sqrt d$ times larger than the clean units' weights $1/d$.

# %%
f_clean, f_pois = toy.clean_classifier(cfg), toy.poisoned_classifier(cfg)
clean_mask = data.group < 2
rows = []
for name, params in [("clean classifier $f_C$", f_clean), ("poisoned classifier $f_P$", f_pois)]:
    pred = toy.predict(params, test.x)
    rows.append({"classifier": name,
                 "accuracy on clean data (%)": 100 * np.mean(pred[test.group < 2] == test.y[test.group < 2]),
                 "accuracy on poisoned data (%)": 100 * np.mean(pred[test.group == 2] == test.y[test.group == 2])})
acc_table = pd.DataFrame(rows).set_index("classifier").round(2)
glue("toy_analytic_clean", 100 * toy.analytic_clean_accuracy(cfg), display=False)
glue("toy_fp_clean", float(acc_table.iloc[1, 0]), display=False)
glue("toy_fp_poison", float(acc_table.iloc[1, 1]), display=False)
glue("tab_toy_accuracy", acc_table, display=False)

# %% [markdown]
# The analytic clean accuracy is $\Phi(3)$ = {glue:text}`toy_analytic_clean:.2f`%, the paper's "99.8%".
# Measured on fresh samples, the poisoned classifier keeps {glue:text}`toy_fp_clean:.2f`% on clean data and
# sends {glue:text}`toy_fp_poison:.2f`% of the poisoned inputs to the target label: the backdoor costs the
# clean task almost nothing.
#
# ```{glue:figure} tab_toy_accuracy
# :name: tab-toy-accuracy
#
# Accuracy of the two hand-built classifiers on fresh clean and poisoned samples. On poisoned data,
# "accuracy" means agreeing with the attacker's label.
# ```

# %% [markdown]
# ## Which units fire (the paper's Table 6)
#
# For each group of inputs, the fraction with a positive pre-activation $z_j$ in each hidden unit of $f_P$.
# Look for the third column: the poison unit is silent on every clean input and on for every poisoned one.

# %%
act = toy.activation_table(f_pois, test)
act_table = pd.DataFrame(act, index=list(toy.ToyData.GROUPS),
                         columns=["unit 1 (+features)", "unit 2 (-features)", "unit 3 (poison)"]).round(3)
act_table.index.name = "inputs"
glue("tab_toy_activations", act_table, display=False)

# %% [markdown]
# ```{glue:figure} tab_toy_activations
# :name: tab-toy-activations
#
# Fraction of inputs with $z_j>0$ for each hidden unit of the poisoned classifier $f_P$ (1 = always active).
# The paper's Table 6 shows the same pattern as signs.
# ```

# %% [markdown]
# ## Gradients: a spike at the trigger, on poisoned inputs only
#
# With ReLU units only active units pass gradient back, so
# $\partial\mathcal L/\partial x = \frac{\partial\mathcal L}{\partial f}\sum_j u_j\,\mathbb 1[z_j>0]\,w_j$
# (Proposition 4.1). For poisoned inputs the sum contains $\lambda e_1$, so $|\partial\mathcal L/\partial x_1|$ is
# large; for clean inputs it is exactly zero. Below: the gradient magnitude at the trigger feature against
# the average magnitude over the other features, for every test input of the hand-built $f_P$.

# %%
grads = toy.input_gradients(f_pois, test.x, test.y)
fig, ax = plt.subplots(figsize=(6.2, 3.6))
cols = plots.colours(3)
for g, name in enumerate(toy.ToyData.GROUPS):
    m = test.group == g
    ax.scatter(np.abs(grads[m, 1:]).mean(1), np.abs(grads[m, 0]) + 1e-12, s=4, alpha=0.5, color=cols[g],
               label=name)
ax.set_yscale("log")
ax.set_xlabel("mean |dL/dx_i| over the label features i ≥ 2")
ax.set_ylabel("|dL/dx_1| at the trigger feature\n(+1e-12 to show zeros)")
ax.legend(fontsize=8, markerscale=3)
glue("fig_toy_gradients", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} fig_toy_gradients
# :name: fig-toy-gradients
#
# Input-gradient magnitude at the trigger feature $x_1$ (vertical, log scale) against the mean magnitude at the
# label features, for the hand-built poisoned classifier. Clean inputs sit on the floor (exactly zero);
# poisoned inputs are lifted far above it.
# ```

# %% [markdown]
# ## Does training find the poison neuron?
#
# The hand-built unit shows that a poison neuron *suffices*. The paper's argument is that fitting the poisoned
# data *needs* one. We train one-hidden-layer ReLU networks (3 and 32 units, Adam, logistic loss) on
# {glue:text}`toy_n_train` samples of which a share {glue:text}`toy_eps` is poisoned, and look at the
# first-layer weights: is there a unit whose weight on $x_1$ dwarfs every weight on the label features?

# %%
glue("toy_n_train", n_train, display=False)
glue("toy_eps", poison_fraction, display=False)
learned = {}
for width in (3, 32):
    model = toy.train_mlp(data, width, epochs=mlp_epochs, seed=seed)
    unit, ratio = toy.poison_unit_ratio(model)
    with torch.inference_mode():
        out = model(torch.from_numpy(test.x)).numpy()
    pred = np.where(out >= 0, 1, -1)
    learned[width] = {"model": model, "unit": unit, "ratio": ratio,
                      "clean acc (%)": 100 * np.mean(pred[test.group < 2] == test.y[test.group < 2]),
                      "attack success (%)": 100 * np.mean(pred[test.group == 2] == -1)}
learned_table = pd.DataFrame({f"{w} hidden units": {"test accuracy on clean inputs (%)": v["clean acc (%)"],
                                                     "poisoned inputs sent to the target (%)": v["attack success (%)"],
                                                     "poison unit: |w_x1| / mean |w_label features|": v["ratio"]}
                              for w, v in learned.items()}).round(2)
glue("tab_toy_learned", learned_table, display=False)
glue("toy_ratio32", float(learned[32]["ratio"]), display=False)

w = learned[32]["model"].hidden.weight.detach().numpy()
order = np.argsort(-np.abs(w[:, 0]))[:12]
fig, ax = plt.subplots(figsize=(7.2, 3.4))
lim = np.abs(w[order, :21]).max()
im = ax.imshow(w[order, :21], cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
ax.set_xticks(range(21), ["$x_1$"] + [f"$x_{{{i}}}$" for i in range(2, 22)], fontsize=7)
ax.set_yticks(range(len(order)), [f"unit {u}" for u in order], fontsize=7)
ax.set_xlabel("input feature ($x_1$ = trigger feature)")
ax.set_ylabel("hidden unit (sorted by |weight on $x_1$|)")
ax.grid(False)
fig.colorbar(im, ax=ax, label="first-layer weight")
glue("fig_toy_weights", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} tab_toy_learned
# :name: tab-toy-learned
#
# Networks trained on the poisoned toy data. The last row is the weight of the strongest unit on the trigger
# feature divided by the mean absolute weight on the label features.
# ```
#
# In the 32-unit network the strongest unit's weight on the trigger feature is
# {glue:text}`toy_ratio32:.0f` times the average weight on the label features — training built the poison
# neuron the theory predicts.
#
# ```{glue:figure} fig_toy_weights
# :name: fig-toy-weights
#
# First-layer weights of the trained 32-unit network: the 12 units with the largest weight on $x_1$ (rows), over
# the trigger feature and the first 20 label features (columns). One column stands out: the trigger.
# ```

# %% [markdown]
# Finally, the gradients of the *trained* network, for the samples labelled with the target class $-1$ —
# exactly the set the defense will look at in the next chapters. Clean and poisoned samples of that class
# separate on the trigger coordinate alone.

# %%
model32 = learned[32]["model"]
tg = data.y == -1
g_learned = toy.mlp_input_gradients(model32, toy.ToyData(data.x[tg], data.y[tg], data.group[tg]))
# scale-free per-sample statistic: gradient at the trigger feature relative to the label features;
# samples the network fits so confidently that their whole gradient underflows to 0 carry no direction
alive = np.abs(g_learned[:, 1:]).mean(1) > 0
is_p = (data.group[tg] == 2)[alive]
dominance = np.abs(g_learned[alive, 0]) / np.abs(g_learned[alive, 1:]).mean(1)
glue("toy_zero_grads", int((~alive).sum()), display=False)
fig, ax = plt.subplots(figsize=(6.2, 3.4))
bins = np.logspace(np.log10(max(dominance.min(), 1e-6)), np.log10(dominance.max() * 1.05), 60)
ax.hist(dominance[~is_p], bins=bins, alpha=0.7, label="clean, labelled -1", color=cols[1])
ax.hist(dominance[is_p], bins=bins, alpha=0.7, label="poisoned, labelled -1", color=cols[2])
ax.set_xscale("log")
ax.xaxis.set_minor_formatter(plt.NullFormatter())
ax.set_xlabel("|dL/dx_1| / mean |dL/dx_i|, i ≥ 2  (trained 32-unit network)")
ax.set_ylabel("samples")
ax.legend(fontsize=8)
glue("fig_toy_trained_gradients", fig, display=False)
plt.close(fig)
glue("toy_dom_poison", float(np.median(dominance[is_p])), display=False)
glue("toy_dom_clean", float(np.median(dominance[~is_p])), display=False)

# %% [markdown]
# ```{glue:figure} fig_toy_trained_gradients
# :name: fig-toy-trained-gradients
#
# How strongly each target-class training sample's input gradient (trained 32-unit network) concentrates on
# the trigger feature: its magnitude at $x_1$ relative to the mean over the label features (log scale).
# Median for poisoned samples: {glue:text}`toy_dom_poison:.1f`; for clean samples: {glue:text}`toy_dom_clean:.2f`
# ({glue:text}`toy_zero_grads` samples whose gradient underflows to exactly zero are left out).
# ```
#
# ## A first look at the defense
#
# The defense of the next chapters needs no knowledge of the trigger: it takes the input gradients of every
# sample of a class, normalises and centres them, and keeps their top singular vector $\hat v$ (Theorem 4.1 says
# it points along the poison signal). Each sample's projection on $\hat v$ (its first principal component) is
# then split by a two-component Gaussian mixture. On the toy's target class:

# %%
sig = signal.extract_signal(g_learned[alive])
pc1 = signal.pc1_scores(g_learned[alive], sig.v_hat)
filt = signal.gmm_filter(pc1, seed=seed)
glue("toy_vhat_top", int(np.argmax(np.abs(sig.v_hat))) + 1, display=False)
glue("toy_vhat_share", float(sig.v_hat[0] ** 2), display=False)
glue("toy_sens", metrics.sensitivity(filt.flagged, is_p), display=False)
glue("toy_spec", metrics.specificity(filt.flagged, is_p), display=False)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.3))
axes[0].bar(np.arange(1, 41), np.abs(sig.v_hat[:40]), color=cols[0])
axes[0].set_xlabel("input feature index (1 = trigger feature)")
axes[0].set_ylabel("|v̂_i|")
axes[0].set_title("extracted signal, first 40 of d + 1 features", fontsize=9)
bins = np.linspace(pc1.min(), pc1.max(), 60)
axes[1].hist(pc1[~is_p], bins=bins, alpha=0.7, color=cols[1], label="clean")
axes[1].hist(pc1[is_p], bins=bins, alpha=0.7, color=cols[2], label="poisoned")
axes[1].set_yscale("log")
axes[1].set_xlabel("first principal component (PC1)")
axes[1].set_ylabel("samples (log)")
axes[1].legend(fontsize=8)
plots.label_panels(axes)
fig.tight_layout()
glue("fig_toy_defense", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} fig_toy_defense
# :name: fig-toy-defense
#
# (a) The top singular vector of the target class's normalised, centred input gradients; its largest entry is
# feature {glue:text}`toy_vhat_top` (the trigger feature is 1), which alone holds {glue:text}`toy_vhat_share:.0%`
# of its squared norm. (b) Each sample's projection on it. The toy's clean gradients are nearly parallel (every
# clean sample activates the same units), so after normalisation they pile up in a few narrow spikes, while the
# poisoned ones spread out with the varying weight of the trigger term.
# ```
#
# The two-component mixture on these projections flags {glue:text}`toy_sens:.1f`% of the poisoned samples and
# keeps {glue:text}`toy_spec:.1f`% of the clean ones, without being told where the trigger is. The toy's degenerate
# clean spikes are a poor fit for a Gaussian mixture; chapter 4 studies the filter on real gradients, where the
# clean scores form the broad cluster around zero that the paper's Theorem 5.1 assumes.

# %% [markdown]
# **What to take away.** A backdoor in an otherwise uninformative feature is carried by a few hidden units
# with large weights that are active only on triggered inputs; input gradients inherit those weights, so the
# poisoned samples of the target class share a common, trigger-shaped gradient component. Chapter 3 recovers
# that component from real CIFAR-10 gradients with one singular value decomposition.
#
# ## Exercises
#
# 1. Lower `trigger_value` towards `beta0`. How does the minimum poison weight $\lambda_{\min}$ change, and what
#    happens to the trained network's weight ratio?
# 2. Set `poison_fraction = 0.01`. Does the 32-unit network still learn the backdoor in 50 epochs?
# 3. Show from Proposition 4.1 that for a *clean* input of $f_P$ the gradient at $x_1$ is exactly zero.
#
# :::{admonition} Solutions (hints, and how to check them)
# :class: dropdown
#
# 1. $\lambda_{\min} = 6/(\sqrt d\,(c-\beta_0))$ grows like $1/(c-\beta_0)$: as the trigger value approaches the
#    threshold, the poison unit's pre-activation $\lambda(c-\beta_0)$ shrinks and only a larger weight can still
#    overturn $h_1$. The *learned* network has no $\beta_0$ of its own, but a smaller trigger value is a smaller
#    input, so the same push on the output needs a larger weight on $x_1$: expect the weight ratio of the
#    learned network to grow as `trigger_value` falls. Check: `python3 tasks.py book --only 01_theory_toy -p
#    trigger_value=4.0`, then 3.5, and read the weight-ratio figure.
# 2. Fewer poisoned samples contribute less to the loss, so the gradient that grows the poison unit is weaker.
#    Whether 50 epochs suffice is an empirical question: rerun with `-p poison_fraction=0.01` and read the
#    poisoned-data column of the learned network's accuracy; if it falls, raise `mlp_epochs`.
# 3. By Proposition 4.1, $\partial\mathcal L/\partial x_1 = \frac{\partial\mathcal L}{\partial f}\sum_j
#    u_j\,\mathbb 1[z_j>0]\,W_{j1}$. Units 1 and 2 have $W_{11} = W_{21} = 0$ (they read only $x_2,\dots$). Unit 3
#    has $z_3 = \lambda(x_1-\beta_0)$, which is negative whenever $x_1 < \beta_0$; then its indicator is 0. Every
#    term vanishes, so the gradient at $x_1$ is exactly zero. (A clean $x_1\sim\mathcal N(0,1)$ exceeds
#    $\beta_0 = 3$ with probability $1-\Phi(3)$, about one input in 740: those rare inputs do fire the unit.)
# :::
