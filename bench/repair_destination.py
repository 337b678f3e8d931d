"""Where the triggered base-class images go, before and after the paper's repair: one experiment, from the cache.

    .venv/bin/python bench/repair_destination.py --profile cpu-full --name 'pair6-blend-*'

For one experiment of a profile's ``main`` (or ``compare``) grid whose model and repaired model are both in the
cache (the script never trains nor repairs), it applies the experiment's trigger to every test image of the base
class and prints, for the model before and after the repair, the share of them each class receives (the largest
``--top``), beside the attacked base and target and the base class the paper's scan named.

The repair relabels the filtered images to the base class the scan names. When that is the wrong class, the target's
attack success falls, yet the triggered images need not go back to their class: they can follow the trigger to the
named class. Chapter 8's verdict counts a repair as removing the backdoor only when at least half of the triggered
base images go back to their class; this script shows where the others went. Nothing is asserted; this is a
measurement (bench/README.md, "A repair that moves the backdoor").
"""

from __future__ import annotations

import argparse
import time

from _cached import cached_experiment, destinations

from poisoncure import cache, data, provenance
from poisoncure.experiments import store


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu-full", help="profile whose grid holds the experiment")
    ap.add_argument("--grid", default="main", choices=("main", "compare"), help="the grid (default: main)")
    ap.add_argument("--name", required=True, help="experiment name or shell pattern (one match), e.g. 'pair6-blend-*'")
    ap.add_argument("--top", type=int, default=4, help="classes to print per model")
    args = ap.parse_args(argv)
    if args.top < 1:
        ap.error(f"--top must be >= 1, got {args.top}")

    exp, recipe = cached_experiment(ap, args.profile, args.name, args.grid)
    d = exp.params["defense"]
    defense = store.poison_cure_for(recipe, threshold=d["threshold"], eta=d["eta"], progress=False)
    detection = {"model": recipe.cache_config(), "threshold": defense.threshold, "seed": defense.seed,
                 "num_classes": defense.num_classes}
    store_ = cache.Cache()
    if store_.lookup("poison_cure", detection) is None:
        ap.error(f"{exp.name}: the paper's scan of this model is not in the cache (run the grid first)")
    cifar = data.load_cifar10()
    tm = store.get_model(recipe, data=cifar, progress=False)
    names = cifar.test.classes
    cure = store.get_poison_cure(tm, defense, neutralize=False, data=cifar)
    if not cure.result.scan.poisoned or cure.result.counter is None:
        print(f"{args.profile} {exp.name}: the scan flagged no class, so no repair ran; nothing to compare")
        return 0
    if store_.lookup("neutralized", {**detection, **defense.config()}) is None:
        ap.error(f"{exp.name}: its repaired model is not in the cache (run the grid first; this script never repairs)")
    cure = store.get_poison_cure(tm, defense, neutralize=True, data=cifar)
    spec = tm.train_set.spec
    triggered = spec.trigger.apply(cifar.test.x[cifar.test.y == spec.base])
    named = cure.result.base.base
    print(f"{args.profile} {exp.name}: base {names[spec.base]}, target {names[spec.target]}, the scan named "
          f"{names[int(cure.result.scan.target)]} as the target and {names[named]} as the base; {len(triggered)} "
          f"triggered test images of the base class; {provenance.device_name()}, commit {provenance.git_commit()}")
    for label, model in (("before the repair", tm.model), ("after the repair", cure.result.model)):
        start = time.perf_counter()
        print(f"  {label}: {destinations(model, triggered, names, defense.device, args.top)} "
              f"({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
