"""Batched all-pairs search (chapter 10) vs one pair per forward/backward pass, on the same model and images.

Runs Xiang et al.'s perturbation search for a fixed number of steps (every pair stays active, so all versions do
the same arithmetic): all 90 pairs in one batch per step (the library's default ``chunk``), 25 pairs per pass,
and one pair per pass (``chunk`` = images per class). Prints the time per step of each and their ratios,
measured in this run, with the device. Uses chapter 2's cached clean model when the cache has it
(``POISONCURE_CACHE``), else trains it.

    .venv/bin/python bench/pair_search.py [--steps 10] [--per-class 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from poisoncure import data, experiments, provenance
from poisoncure.defenses.reverse_engineer import ReverseEngineeringDetector


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10, help="gradient steps per run (>= 1)")
    ap.add_argument("--per-class", type=int, default=10, help="clean images per class (>= 2)")
    args = ap.parse_args()
    cifar = data.load_cifar10()
    tm = experiments.get_model(experiments.Recipe(poison="clean"), data=cifar)
    clean, _ = experiments.defender_split(cifar.test, 100)
    times = {}
    patterns = {}
    # pi = 1 and a large bound keep every pair active for all steps, so both runs do the same work
    runs = (("batched (90 pairs per pass)", 1 << 20), ("25 pairs per pass", 25 * args.per_class),
            ("one pair per pass", args.per_class))
    for name, chunk in runs:
        det = ReverseEngineeringDetector(per_class=args.per_class, pi=1.0, eta=0.01, bound=1e3, max_iter=args.steps,
                                         refine=False, chunk=chunk, progress=False)
        det.search(tm.model, clean)  # warm-up
        start = time.perf_counter()
        patterns[name] = det.search(tm.model, clean).patterns
        times[name] = (time.perf_counter() - start) / (args.steps + 1)
    names = list(times)
    diff = max(float(np.abs(patterns[n] - patterns[names[0]]).max()) for n in names[1:])
    print(f"device: {provenance.device_name()}, commit {provenance.git_commit()}, {args.per_class} images per class, "
          f"{args.steps} steps")
    for name, t in times.items():
        print(f"  {name:28s} {1000 * t:8.1f} ms per step")
    print(f"  ratio one-pair / batched: {times[names[-1]] / times[names[0]]:.2f}, 25 pairs / batched: "
          f"{times[names[1]] / times[names[0]]:.2f}; largest difference of the perturbations: {diff:.1e}")


if __name__ == "__main__":
    main()
