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
# # Use it on your own model
#
# The chapters run the defenses on the book's own models. This page brings a model and a data set from outside the
# library, as a reader would: a **plain torch CNN** written on the page (any `nn.Module` classifier works the same
# way, a torchvision model included), trained with an ordinary torch loop on images that arrive as a torch
# `Dataset` of normalised tensors. We plant a
# backdoor in the data first, with a blend pattern of our own (an array, not one of the book's named patterns), so
# that there is something to find; with your own model you would start at "Check the model".
#
# Everything the defenses need is two adapters: the images as the library's uint8 `ImageSet`
# (`pc.image_set`, which undoes the `Normalize` transform), and a model that takes images in [0, 1] (put the
# normalisation in front of yours). The page runs in every build of the book on a small case: a few thousand
# images and a few epochs on a CPU.

# %% tags=["parameters"]
per_class = 500  # training images per class of "your" data set (CIFAR-10 stands in for it)
own_epochs = 8  # epochs of the ordinary torch training loop
poisoned_share = 0.3  # share of the base class's images the attacker blends and relabels
own_opacity = 0.2  # opacity of the attacker's blend pattern
seed = 0  # seed of the data subset, the pattern and the training
device = "auto"  # "auto" (CUDA when present), "cpu" or "cuda"

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown
from myst_nb import glue

import poisoncure as pc
from poisoncure import data
from poisoncure.book import plots

plots.set_style()
torch.manual_seed(seed)
dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                   ("cpu" if device == "auto" else device))
cifar = data.load_cifar10()
mean, std = (0.491, 0.482, 0.447), (0.247, 0.243, 0.262)

# %% [markdown]
# ## Your data and your model
#
# An attacker blends their own pattern (random stripes) into {glue:text}`n_poison` cat images and labels them
# "dog". The data set then reaches us the torch way: `ToTensor()` and `Normalize(mean, std)` already applied.

# %%
rng = np.random.default_rng(seed)
stripes = np.repeat(rng.integers(0, 256, size=(32, 1, 3)), 32, axis=1).astype(np.uint8)  # the attacker's own image
trigger = pc.BlendTrigger(stripes, own_opacity)
subset = data.balanced_subset(cifar.train, per_class, seed=seed)
attacked = pc.poison(subset, trigger, "cat", "dog", poisoned_share, seed=seed)
to_tensor = torch.from_numpy(attacked.x).permute(0, 3, 1, 2).float() / 255
dataset = torch.utils.data.TensorDataset((to_tensor - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None,
                                         None], torch.from_numpy(attacked.y))
glue("n_poison", int(attacked.is_poison.sum()), display=False)
glue("own_opacity_text", f"{own_opacity:.0%} opacity", display=False)
cats = subset.x[np.flatnonzero(subset.y == 3)[:4]]
fig = plots.image_grid([[stripes, *cats], [stripes, *trigger.apply(cats)]], ["clean", "blended"],
                       ["the attacker's pattern", "cat", "cat", "cat", "cat"], size=1.3)
glue("fig_own_data", fig, display=False)
plt.close(fig)



def block(cin, cout):
    return torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 3, padding=1, bias=False), torch.nn.BatchNorm2d(cout),
                               torch.nn.ReLU(), torch.nn.MaxPool2d(2))


model = torch.nn.Sequential(block(3, 32), block(32, 64), block(64, 128), torch.nn.AdaptiveAvgPool2d(1),
                            torch.nn.Flatten(), torch.nn.Linear(128, 10))  # your model: normalised images in
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
loader = torch.utils.data.DataLoader(dataset, batch_size=128, shuffle=True)
for _ in range(own_epochs):  # an ordinary training loop on normalised tensors
    for xb, yb in loader:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()

# %% [markdown]
# ```{glue:figure} fig_own_data
# :name: fig-own-data
#
# The attacker's own pattern (an array the library has never seen) and cat images before and after it is blended
# in at {glue:text}`own_opacity_text`; the blended cats are labelled "dog" in the training set.
# ```
#
# ## Check the model
#
# The two adapters, then the paper's defense and one baseline, Spectral Signatures (which reads a layer's
# representations; here the pooled features, `1.4`, the name `net.named_modules()` gives the `Flatten` layer):
#
# ```python
# train = pc.image_set(dataset, mean=mean, std=std)     # your Dataset -> uint8 ImageSet
# net = torch.nn.Sequential(pc.Normalize(mean, std), model).eval()  # takes images in [0, 1]
# cure = pc.PoisonCure(device=device).run(net, train)   # scan, base class, filter, counter-poison, repair
# ss = pc.SpectralSignatures(labels=cure.scan.target, layer="1.4").detect(net, train)
# ```

# %%
train = pc.image_set(dataset, mean=mean, std=std)
net = torch.nn.Sequential(pc.Normalize(mean, std), model).eval()
cure = pc.PoisonCure(device=dev, progress=False).run(net, train)
ss = pc.SpectralSignatures(labels=int(cure.scan.target), layer="1.4", device=dev, progress=False).detect(net,
                                                                                                            train)

# %% [markdown]
# ## What they found
#
# ```{glue:md} verdict_text
# :format: myst
# ```

# %%
spec = attacked.spec
found = cure.is_poison(len(train))
poisoned = attacked.is_poison
rows = []
for name, flags in (("Poison as a Cure", found), ("Spectral Signatures (its 1.5 ε removal)", ss)):
    rows.append({"defense": name, "flagged": int(flags.sum()),
                 "poisoned images found": f"{int((flags & poisoned).sum())} of {int(poisoned.sum())}",
                 "clean images flagged": int((flags & ~poisoned).sum())})
glue("tab_found", pd.DataFrame(rows).set_index("defense"), display=False)
before = pc.evaluate(net, cifar.test, spec, device=dev)
after = pc.evaluate(cure.model, cifar.test, spec, device=dev) if cure.model is not None else None
res = pd.DataFrame({"your model": [before.clean_accuracy, before.attack_success_rate]}, index=["clean accuracy %",
                                                                                             "attack success %"])
if after is not None:
    res["after the paper's repair"] = [after.clean_accuracy, after.attack_success_rate]
glue("tab_models", res.round(1), display=False)
names = cifar.train.classes
if cure.scan.poisoned:
    verdict_text = (f"The scan flags **{names[cure.scan.target]}** (ratio R = {cure.scan.ratio:.2f} against the "
                    f"threshold {cure.scan.threshold:g}; the attack's target is {names[spec.target]}) and names "
                    f"**{names[cure.base.base]}** as the base class (the attack's is {names[spec.base]}).")
else:
    verdict_text = (f"The scan flags no class (largest ratio R = {cure.scan.ratio:.2f}, for "
                    f"{names[cure.scan.target]}, under the threshold {cure.scan.threshold:g}); nothing is repaired.")
verdict_text += (f" Your model had learned the backdoor to {before.attack_success_rate:.1f} % attack success "
                 f"at {before.clean_accuracy:.1f} % clean accuracy on CIFAR-10's test images"
                 + (f"; after the one-epoch repair: {after.attack_success_rate:.1f} % and {after.clean_accuracy:.1f} %."
                    if after is not None else ".")
                 + f" A small CNN trained {own_epochs} epochs on {len(train):,} images is far from the paper's models: "
                 "this page shows the calls, chapters 2–7 what the method does on models that learned their task.")
glue("verdict_text", Markdown(verdict_text), display=False)
fig, ax = plt.subplots(figsize=(6.5, 3.2))
ax.bar(range(len(names)), cure.scan.distances,
       color=[plots.colours(2)[int(k == cure.scan.target)] for k in range(len(names))])
others = np.delete(cure.scan.distances, cure.scan.target).mean()
ax.axhline(cure.scan.threshold * others, color="black", ls="--", lw=1)
ax.set_title("dashed: the threshold × the other classes' mean", fontsize=10)
ax.set_ylabel("W between the two clusters")
ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
fig.tight_layout()
glue("fig_own_scan", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} fig_own_scan
# :name: fig-own-scan
#
# The paper's scan on your model: for every class, how far apart the two clusters of its input gradients lie; the
# class flagged is the one whose distance exceeds the threshold times the other classes' mean (dashed).
# ```
#
# ```{glue:figure} tab_found
# :name: tab-own-found
#
# What each defense flagged in your training set (the page knows which images were poisoned; you would not).
# ```
#
# ```{glue:figure} tab_models
# :name: tab-own-models
#
# Your model before and after the paper's repair, on CIFAR-10's 10,000 test images (attack success: triggered
# test images of the base class classified as the target).
# ```
#
# ## The same on other models and data
#
# - **Images of another size or other classes.** `pc.image_set` keeps any size and names labels as you pass them
#   (`classes=`); the gradient scan and Spectral Signatures work on any size, the book's own models expect 32 × 32.
# - **Grey images** (one channel) are repeated over three channels; give your model's first layer what it expects.
# - **A sample detector** (`detect`: one flag per training image) is how the paper's method, Spectral Signatures and
#   Activation Clustering answer; Neural Cleanse, Xiang et al.'s detector and PoisHygiene answer per label with
#   `detect_labels` (chapters 10 and 11), as the paper's method also can (`cure.detect_labels(net, train)`).
#   Calling `score`, `detect` and `repair` in a row on the same model and data runs the scan once.
