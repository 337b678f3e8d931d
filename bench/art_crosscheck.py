"""Benchmark and cross-check: our Spectral Signatures and Activation Clustering against the Adversarial Robustness
Toolbox (ART) on identical features — by default the penultimate features of the book's poisoned model (chapter 2, smoke
recipe; trained or loaded from the cache).

Prints, for each method: the overlap of the flagged sets (|ours ∩ ART| / |ours ∪ ART|), the rank correlation of the
scores (Spectral Signatures), and the time per image of each implementation and their ratio, all measured in this
one run. Settings are matched: Spectral Signatures with the authors' code score |R·v| (ART's) and the removal
budget 1.5·ε; Activation Clustering with FastICA to 10 dimensions, 2-means, and the smaller cluster of every label
flagged (ART's "smaller" analysis = ours with ``size_threshold=0.5``). ART seeds nothing, so its k-means start
varies from run to run; ``--repeats`` runs it several times. Nothing is asserted (timings never go in tests).

    .venv/bin/python bench/art_crosscheck.py [--poison blend] [--eps 0.1] [--repeats 3] [--layer features.7]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from scipy.stats import spearmanr
from torch import nn

from poisoncure import data, experiments, provenance
from poisoncure.defenses.activation_clustering import ActivationClustering
from poisoncure.defenses.spectral import SpectralSignatures


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--poison", default="blend", choices=["blend", "pixel"])
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--layer", default=None, help="module whose output is the representation (default: penultimate)")
    args = ap.parse_args()
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense
    from art.estimators.classification import PyTorchClassifier

    warnings.filterwarnings("ignore")
    cifar = data.load_cifar10()
    tm = experiments.get_model(experiments.Recipe(poison=args.poison), data=cifar)
    reps = experiments.get_features(tm, args.layer).astype(np.float32)
    y = tm.train_set.y
    n, d = reps.shape
    target = tm.train_set.spec.target
    clf = PyTorchClassifier(model=nn.Sequential(nn.Identity()), loss=nn.CrossEntropyLoss(), input_shape=(d,),
                            nb_classes=10, device_type="cpu")
    onehot = np.eye(10, dtype=np.float32)[y]
    print(f"features: {n} x {d} ({args.layer or 'penultimate'}, {args.poison} model); "
          f"{provenance.collect('cpu')['device']}")

    # Spectral Signatures, all labels
    t = time.perf_counter()
    ours = SpectralSignatures(eps=args.eps, score="code", progress=False).score_features(reps, y)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    report, clean = SpectralSignatureDefense(clf, reps, onehot, expected_pp_poison=args.eps,
                                             eps_multiplier=1.5).detect_poison()
    t_art = time.perf_counter() - t
    art_flag = np.asarray(clean) == 0
    rho = np.mean([spearmanr(ours.scores[y == k], SpectralSignatureDefense.spectral_signature_scores(
        reps[y == k]).ravel()).statistic for k in range(10)])
    print(f"Spectral Signatures: flagged ours {ours.removed.sum()}, ART {art_flag.sum()}, "
          f"overlap {overlap(ours.removed, art_flag):.4f}, mean per-label Spearman rho of the scores {rho:.4f}; "
          f"time per image ours {1e6 * t_ours / n:.1f} us, ART {1e6 * t_art / n:.1f} us, "
          f"ratio ours/ART {t_ours / t_art:.2f}")

    # Activation Clustering: FastICA, 2-means, smaller cluster of every label. Ours restarts k-means n_init times
    # (10 by default), ART once; both are timed, and each is compared with itself across seeds (how reproducible
    # the flagged set is) as well as with the other.
    ours_runs, ours_time = {}, {}
    for n_init in (10, 1):
        for s in range(2):
            ac = ActivationClustering(size_threshold=0.5, n_init=n_init, seed=s, progress=False)
            t = time.perf_counter()
            ours_runs[n_init, s] = ac.score_features(reps, y).flagged
            ours_time[n_init] = time.perf_counter() - t
    art_runs, art_time = [], []
    for r in range(args.repeats):
        np.random.seed(r)  # noqa: NPY002 — ART draws its k-means start from the global generator
        t = time.perf_counter()
        _, clean = ActivationDefence(clf, reps, onehot).detect_poison(nb_clusters=2, nb_dims=10, reduce="FastICA",
                                                                       cluster_analysis="smaller")
        art_time.append(time.perf_counter() - t)
        art_runs.append(np.asarray(clean) == 0)
    tgt = y == target

    def both(a, b):
        return f"target label {overlap(a & tgt, b & tgt):.3f}, all labels {overlap(a, b):.3f}"

    print("Activation Clustering, overlap of flagged sets:")
    for r, art_flag in enumerate(art_runs):
        print(f"  ours (n_init 10) vs ART run {r}: {both(ours_runs[10, 0], art_flag)}")
    for r in range(1, len(art_runs)):
        print(f"  ART run 0 vs ART run {r}: {both(art_runs[0], art_runs[r])}")
    print(f"  ours n_init 10, seed 0 vs seed 1: {both(ours_runs[10, 0], ours_runs[10, 1])}")
    print(f"  ours n_init 1, seed 0 vs seed 1: {both(ours_runs[1, 0], ours_runs[1, 1])}")
    t_art = float(np.median(art_time))
    print(f"Activation Clustering time per image: ours n_init 10 {1e6 * ours_time[10] / n:.1f} us, "
          f"ours n_init 1 {1e6 * ours_time[1] / n:.1f} us, ART (one k-means start) {1e6 * t_art / n:.1f} us; "
          f"ratio ours/ART {ours_time[10] / t_art:.2f} (n_init 10), {ours_time[1] / t_art:.2f} (n_init 1)")

if __name__ == "__main__":
    main()
