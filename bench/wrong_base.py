"""The paper's repair with the right and with wrong base classes: where the triggered base images go.

    .venv/bin/python bench/wrong_base.py --poison blend --bases 1 7 0

The repair (chapter 6) relabels the filtered poisons to the base class the scan names and adds counter-poison copies
of the other classes. This script takes one of the book's shared models of a profile (trained, or read from the
cache, as the chapters do), its cached scan, filter and counter-poison signals, and runs the one-epoch repair once
per base in ``--bases`` (the scan's own base first when it is among them); for each it prints the share of the base
class's triggered test images each class receives. A network that keys on the trigger firmly sends them to the base
it was told, a weaker one sends most back to their own class: ``bench/repair_destination.py`` reads a `cpu-full`
run where the former happened, this script shows the book's smoke network (bench/README.md, "A repair that moves
the backdoor"). Nothing is asserted; this is a measurement.
"""

from __future__ import annotations

import argparse
import time

from _cached import destinations

from poisoncure import data, experiments, provenance
from poisoncure.experiments import profiles


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="smoke", help="profile whose shared model to repair (default: smoke)")
    ap.add_argument("--poison", default="blend", choices=("blend", "pixel"), help="which shared model")
    ap.add_argument("--bases", type=int, nargs="+", default=[1, 7, 0], help="class indices to relabel the poisons to")
    ap.add_argument("--threshold", type=float, default=2.0, help="lambda of the scan (chapters 5-6: 2)")
    ap.add_argument("--eta", type=float, default=2.0, help="counter-poison step (chapter 6: 2)")
    ap.add_argument("--top", type=int, default=4, help="classes to print per repair")
    args = ap.parse_args(argv)
    bad = [b for b in args.bases if not 0 <= b < len(data.CLASSES)]
    if bad:
        ap.error(f"--bases must be class indices 0..{len(data.CLASSES) - 1}, got {bad}")

    params = profiles.load(args.profile)["experiment"]
    recipe = experiments.Recipe.from_params(params, poison=args.poison)
    cifar = data.load_cifar10()
    tm = experiments.get_model(recipe, data=cifar, progress=False)
    defense = experiments.poison_cure_for(recipe, threshold=args.threshold, eta=args.eta, progress=False)
    res = experiments.get_poison_cure(tm, defense, neutralize=False, data=cifar).result
    if res.counter is None:
        print(f"{args.profile} {args.poison}: the scan flagged no class, so there is nothing to repair")
        return 0
    spec, names = tm.train_set.spec, cifar.test.classes
    triggered = spec.trigger.apply(cifar.test.x[cifar.test.y == spec.base])
    train = tm.train_set.as_imageset()
    print(f"{args.profile} {args.poison}: base {names[spec.base]}, target {names[spec.target]}; the scan named "
          f"{names[res.base.base]} as the base; {len(triggered)} triggered test images of the base class; "
          f"{provenance.device_name(defense.device)}, commit {provenance.git_commit()}")
    print(f"  no repair: {destinations(tm.model, triggered, names, defense.device, args.top)}")
    for base in sorted(args.bases, key=lambda b: b != res.base.base):
        start = time.perf_counter()
        model, _ = defense.neutralize(tm.model, train, res.filtering.flagged_index, base, res.counter)
        told = " (the scan's)" if base == res.base.base else ""
        print(f"  relabelled to {names[base]}{told}: {destinations(model, triggered, names, defense.device, args.top)} "
              f"({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
