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
# # Parameters, reruns and run times
#
# Every chapter takes its settings from one cell at its top, tagged `parameters`. A *profile* fills those cells:
# `smoke` (the default: small models, a laptop CPU, minutes) or `full` (the paper's setup, a GPU job). This page
# lists every parameter — what it means, which values it accepts, and its value in each profile — and how long
# each chapter took the last time this book was built.
#
# ## Rerunning one chapter
#
# After one full build (`python3 tasks.py book`), rerun a single chapter with other values and re-render the
# book; only the pages whose notebook changed are rebuilt:
#
# ```bash
# python3 tasks.py book --only 04_filtering -p opacity=0.1          # another blend opacity
# python3 tasks.py book --only 02_attack -p pair=3 -p poison_rate=0.05
# python3 tasks.py book --only 07_baselines --profile full         # one chapter in the GPU profile
# .venv/bin/python -m poisoncure.book params 04_filtering          # a chapter's parameters, meaning, valid values
# ```
#
# Names and values are checked before anything runs: a misspelt name or a value outside its range stops the
# command with the list of valid names or the valid range. Models trained with a new recipe are cached like the
# default ones, so a second rerun with the same values starts from the cache. The page of a rerun chapter shows
# its new parameters (in the folded cell under the defaults), beside the other chapters as last built.

# %% tags=["parameters"]
profile = "smoke"  # named parameter set (src/poisoncure/experiments/profiles/<profile>.yml)

# %%
import matplotlib.pyplot as plt
from myst_nb import glue

from poisoncure import book
from poisoncure.book import plots
from poisoncure.experiments import profiles

table = book.parameter_table(tuple(profiles.available()[::-1]))
shared = list(profiles.load("smoke")["experiment"])
columns = ["parameter", "meaning", "valid values"] + [c for c in table.columns if c.endswith("profile")]

# %% [markdown]
# ## The shared model recipe
#
# These parameters describe the poisoned models that chapters 2–7 share; every chapter gets the same values from
# the profile, so each model is trained once and then loaded from the cache. Changing one of them for a single
# chapter (with `--only`) trains a new model for that chapter.

# %%
recipe = table[table["parameter"].isin(shared)].drop_duplicates("parameter")
recipe = recipe.set_index("parameter").loc[[p for p in shared if p in set(recipe["parameter"])]].reset_index()
# one column per profile: wider than the text column, so it scrolls sideways with the parameter's name fixed
glue("recipe_table", recipe[columns].style.hide(axis="index").set_properties(**{"text-align": "left"})
     .set_table_attributes('class="wide-table"'), display=False)

# %% [markdown]
# ```{glue:figure} recipe_table
# :name: tab-recipe
#
# The shared model recipe: meaning, valid values, and the value in each profile.
# ```
#
# ## Each chapter's own parameters

# %%
own = table[~table["parameter"].isin(shared)]
glue("chapter_table", own[["chapter"] + columns].style.hide(axis="index").set_properties(**{"text-align": "left"})
     .set_table_attributes('class="wide-table"'), display=False)

# %% [markdown]
# ```{glue:figure} chapter_table
# :name: tab-chapter-parameters
#
# The parameters of each chapter beyond the shared recipe.
# ```
#
# ## How long each chapter takes
#
# Recorded by the build itself (`book/_build/execution.json`) when each chapter last ran: seconds of execution,
# the profile, the machine and the commit. Before the first chapter, the build trains the models that chapters 2-7,
# 10 and 11 share (the first line, "shared models"; later builds find them in the cache); a chapter then trains
# only what is its own. A chapter run alone on a fresh machine with other recipe values trains its new models in
# that step too.

# %%
times = book.execution_times()
times = times[times["chapter"] != "99_parameters"]  # this page's own last run is not a chapter's
glue("times_table", times.style.hide(axis="index").format({"seconds": "{:.0f}"}), display=False)
glue("total_minutes", f"{times['seconds'].sum() / 60:.0f}", display=False)

plots.set_style(profile)
fig, ax = plt.subplots(figsize=(7, 0.45 * len(times) + 1))
ax.barh(times["chapter"], times["seconds"] / 60, color=plots.colours(1)[0])
ax.invert_yaxis()
ax.set_xlabel("execution time (minutes)")
for y, (sec, prof) in enumerate(zip(times["seconds"], times["profile"], strict=True)):
    ax.annotate(f"{sec:.0f} s ({prof})", (sec / 60, y), xytext=(4, 0), textcoords="offset points", va="center")
if len(times):
    ax.set_xlim(0, times["seconds"].max() / 60 * 1.3)
else:  # a build that executed only this page, with no record of the others
    ax.text(0.5, 0.5, "no chapter run recorded yet", ha="center", va="center", transform=ax.transAxes)
fig.tight_layout()
glue("fig_times", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} fig_times
# :name: fig-times
#
# Execution time of each chapter in its last recorded build (this page excluded), with the profile it ran in.
# ```
#
# ```{glue:figure} times_table
# :name: tab-times
#
# Execution time of each chapter in its last recorded build (this page excluded), with the profile, device
# and commit of that run.
# ```
#
# Together the chapters above took {glue:text}`total_minutes` minutes in their last recorded runs.
