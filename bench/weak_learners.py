"""Benchmark: what the ensemble of weak learners costs, as a multiple of training the undefended model once.

The paper's setting costs about 2.7 ordinary trainings (SPEC-related-defenses Part II A.7). This script measures
the ratio for a chapter-12 configuration on this machine, from an empty temporary cache (so nothing is read from
earlier runs): the undefended model of the recipe, then the whole defense (ISPL components, weak learners, vote,
self-training), and, separately, the final model on the kept set. Everything is timed in this one run and printed;
nothing is asserted (timings never go in tests).

    .venv/bin/python bench/weak_learners.py [--per-class 1000] [--profile smoke] [--set wl_learner_epochs=20 ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import yaml

from poisoncure import experiments, provenance
from poisoncure.cache import Cache
from poisoncure.defenses.weak_learners import EnsembleConfig, WeakLearnerEnsemble
from poisoncure.experiments import profiles
from poisoncure.experiments.grids import ensembles
from poisoncure.train import resolve_device


def chapter12_settings(description: str) -> tuple[argparse.Namespace, dict, dict]:
    """Parse ``--profile``, ``--per-class``, ``--device`` and ``--set``; return (arguments, the chapter's parameters
    with the overrides, the live experiment's parameters of :func:`ensembles.experiment_params`)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--profile", default="smoke", help="whose chapter-12 settings to use")
    parser.add_argument("--per-class", type=int, default=None, help="training images per class (default: the "
                        "profile's wl_train_per_class)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", nargs="+", default=[], metavar="NAME=VALUE",
                        help="chapter-12 parameters to override, e.g. wl_learner_epochs=20 wl_lr=0.1")
    args = parser.parse_args()
    prof = profiles.load(args.profile)
    nb = {**prof["experiment"], **prof["notebooks"]["12_weak_learners"]}
    if args.per_class is not None:
        nb["wl_train_per_class"] = args.per_class
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or name not in nb:
            parser.error(f"--set takes NAME=VALUE with a chapter-12 parameter of the profile, got {item!r}")
        nb[name] = yaml.safe_load(value)
    params = ensembles.experiment_params(nb, ensembles.live_trigger(nb), nb["wl_poison_rate"], nb["seed"], False)
    return args, nb, params


def main() -> None:
    args, _, params = chapter12_settings(__doc__.splitlines()[0])
    dev = resolve_device(args.device)
    data = experiments.load_cifar10()
    recipe = experiments.Recipe(**params["recipe"])
    with tempfile.TemporaryDirectory() as tmp:
        cache = Cache(tmp)
        t0 = time.perf_counter()
        tm = experiments.get_model(recipe, device=dev, data=data, cache=cache, progress=False)
        t_train = time.perf_counter() - t0
        ens = WeakLearnerEnsemble(EnsembleConfig(**params["ensemble"]), device=dev, progress=False, cache=cache)
        t0 = time.perf_counter()
        res = ens.run(ensembles.model_factory(recipe), tm.train_set.as_imageset(), f"{recipe.model}-w{recipe.width}")
        t_def = time.perf_counter() - t0
        t0 = time.perf_counter()
        experiments.get_retrained(tm, ~res.kept, device=dev, cache=cache, progress=False)
        t_final = time.perf_counter() - t0
    print(f"{provenance.device_name(dev)}, commit {provenance.git_commit()}, {len(tm.train_set):,} training images, "
          f"{len(res.components)} weak learners")
    print(f"undefended model (recipe, {recipe.epochs} epochs): {t_train:7.1f} s")
    print(f"defense (components {res.seconds['components']:.1f} s, self-training {res.seconds['self_training']:.1f} s):"
          f" {t_def:7.1f} s   = {t_def / t_train:.2f} x the undefended training")
    print(f"final model on the {int(res.kept.sum()):,} kept samples: {t_final:7.1f} s")
    print(f"defense + final model: {(t_def + t_final) / t_train:.2f} x the undefended training "
          "(the paper's setting: about 2.7 x)")


if __name__ == "__main__":
    main()
