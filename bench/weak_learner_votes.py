"""Measurement: on a CLEAN training set, which samples does the weak-learner ensemble's vote remove, and why?

On a toy where the first ISPL component takes whole classes, the authors' vote (modal prediction = label, cast by at
least two learners) removes those classes whole: a label that only one learner trained on cannot collect two votes
(`tests/test_weak_learners.py`). This script asks whether the same happens on CIFAR-10 at the chapter-12 scale. It
runs the defense of the profile's chapter-12 settings on a class-balanced clean subset (no poison, empty temporary
cache), then prints, per class: how many images each component holds, each weak learner's accuracy, and what the
vote removes under three rules computed from the same learners' predictions:

- the authors' rule (the library's :func:`poisoncure.defenses.weak_learners.vote_keep`);
- "abstain, under s": a learner votes on a sample only when its component holds more than ``s`` × an even share of
  the sample's label (s = 0: any image of it; 0.25, 0.5: a quarter, half of an even share); a sample is kept when
  its label holds the most votes (a tie counts for it) and at least two, or all the votes there are.

If the abstaining rules remove about as much as the authors' rule, the clean samples are not lost to labels the
learners never saw but to learners too weak to recognise clean data they did not train on. Nothing is asserted.

    .venv/bin/python bench/weak_learner_votes.py [--per-class 1000] [--profile smoke] [--set wl_learner_epochs=20 ...]
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
from weak_learners import chapter12_settings  # bench/weak_learners.py, beside this script

from poisoncure import data, experiments, provenance
from poisoncure.cache import Cache
from poisoncure.defenses.weak_learners import EnsembleConfig, WeakLearnerEnsemble, vote_keep
from poisoncure.experiments.grids import ensembles
from poisoncure.train import resolve_device


def abstaining_vote(preds: np.ndarray, y: np.ndarray, eligible: np.ndarray, num_classes: int,
                    min_count: int = 2) -> np.ndarray:
    """Keep-mask of a vote where learner j votes on sample i only if ``eligible[j, i]``."""
    counts = np.zeros((len(y), num_classes), dtype=np.int64)
    for row, ok in zip(preds, eligible, strict=True):
        np.add.at(counts, (np.flatnonzero(ok), row[ok]), 1)
    best = counts.max(axis=1)
    return (counts[np.arange(len(y)), y] == best) & (best >= np.minimum(min_count, eligible.sum(axis=0)))


def main() -> None:
    args, nb, params = chapter12_settings(__doc__.splitlines()[0])
    per_class = nb["wl_train_per_class"]
    recipe = experiments.Recipe(**params["recipe"])
    dev = resolve_device(args.device)
    train = data.balanced_subset(experiments.load_cifar10().train, per_class, seed=nb["seed"])
    y = train.y
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = WeakLearnerEnsemble(EnsembleConfig(**params["ensemble"]), device=dev, progress=False,
                                  cache=Cache(tmp)).run(ensembles.model_factory(recipe), train,
                                                        f"{recipe.model}-w{recipe.width}")
        seconds = time.perf_counter() - t0
    print(f"{provenance.device_name(dev)}, commit {provenance.git_commit()}, profile {args.profile}, "
          f"{len(train):,} clean training images ({per_class} per class), {len(res.components)} weak learners, "
          f"{seconds:.0f} s{'; overrides ' + ' '.join(args.set) if args.set else ''}")
    preds, n = res.preds, len(train.classes)
    held, acc = res.per_class(y, n)  # learners x classes
    for j, c in enumerate(res.components):
        print(f"component {j}: {len(c.rows):5d} images, per class {held[j].tolist()}")
        print(f"   its learner's accuracy per class (%): {np.round(acc[j]).astype(int).tolist()}")
    even = held.sum(axis=1, keepdims=True) / n
    rules = {"authors' rule": vote_keep(preds, y, n, min_count=2)}
    for s in (0.0, 0.25, 0.5):
        rules[f"abstain, under {s:g}"] = abstaining_vote(preds, y, held[:, y] > s * even, n)
    for name, kept in rules.items():
        print(f"{name:20s} removes {int((~kept).sum()):5d} ({100 * np.mean(~kept):4.1f} %), per class "
              f"{np.bincount(y[~kept], minlength=n).tolist()}")
    print(f"after self-training (authors' rule) {int((~res.kept).sum()):5d} removed, per class "
          f"{np.bincount(y[~res.kept], minlength=n).tolist()}")


if __name__ == "__main__":
    main()
