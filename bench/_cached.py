"""What the diagnosis scripts of ``bench/`` share: one experiment of a profile's grid, read from the cache only
(the scripts measure a model the runner already trained, ``python -m poisoncure.experiments``; they never train one),
and where a model sends a set of images.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poisoncure import cache  # noqa: E402
from poisoncure.experiments import plans, store  # noqa: E402
from poisoncure.experiments.plans import Experiment  # noqa: E402
from poisoncure.train import predict  # noqa: E402


def cached_experiment(ap: argparse.ArgumentParser, profile: str, pattern: str,
                      grid: str = "main") -> tuple[Experiment, store.Recipe]:
    """The one experiment of ``profile``'s ``grid`` whose name matches ``pattern``, and its model's recipe; exits
    through ``ap.error`` when the pattern matches none or several, or when the model is not in the cache at this
    commit (the code fingerprint is part of the key: a model trained by other code is not this code's model)."""
    found = [e for e in plans.plan(profile, [grid]) if fnmatch.fnmatch(e.name, pattern)]
    if len(found) != 1:
        ap.error(f"--name must match one experiment of {profile}'s {grid} grid; it matches {[e.name for e in found]}")
    exp = found[0]
    recipe = store.Recipe(poison=exp.params["poison"], **exp.params["recipe"])
    if cache.Cache().lookup("model", recipe.cache_config()) is None:
        ap.error(f"{exp.name}: its model is not in the cache at this commit (run the grid first; this script never "
                 "trains)")
    return exp, recipe


def destinations(model, images: np.ndarray, names: tuple[str, ...] | list[str], device, top: int) -> str:
    """The ``top`` classes ``model`` sends ``images`` to, with their shares: 'airplane 91.2 %, truck 5.7 %, ...'."""
    share = np.bincount(predict(model, images, device=device), minlength=len(names)) / len(images)
    return ", ".join(f"{names[c]} {100 * share[c]:.1f} %" for c in np.argsort(-share)[:top])
