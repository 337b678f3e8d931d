"""Why the paper's class scan can miss a backdoor the model has learned: one experiment's target class, measured.

    .venv/bin/python bench/scan_diagnosis.py --profile cpu-full --name 'pair5-blend-*'

For one experiment of a profile's ``main`` grid whose model is in the cache (the script refuses to train one), it
takes the target class's own-label input gradients (what the scan of chapter 5 sees), row-normalised, and prints:

* the signal the theorem is about, ``v`` = mean of the poisoned rows - mean of the clean rows, its norm, and how far
  the poisoned rows lie from the clean ones along ``v`` (in the clean rows' standard deviations along ``v``);
* the variance the signal adds along ``v``, ``eps (1 - eps) |v|^2`` (``eps``: the poisoned share), beside the largest
  eigenvalues of the clean rows' covariance (the noise) and the mean eigenvalue; and chapter 3's isotropic threshold
  ``l = eps (1 - eps) |v|^2 / sigma^2`` against ``sqrt(d / n)``;
* the first principal direction of all rows (what the paper's method projects on), its |cosine| with ``v``, and the
  mixture filter's sensitivity and specificity on it, with its Wasserstein distance W (the scan's statistic).

When the signal's variance is below the noise's largest eigenvalues, the first principal direction follows the
noise, not ``v``, and the class looks like any other to the scan, although the poisoned rows stand apart along
``v``. Nothing is asserted; this is a measurement (bench/README.md, "A learned backdoor the scan misses").
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _cached import cached_experiment

from poisoncure import data, gradients, metrics, provenance, signal
from poisoncure.experiments import store


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu-full", help="profile whose main grid holds the experiment")
    ap.add_argument("--name", required=True, help="experiment name or shell pattern (one match), e.g. 'pair5-blend-*'")
    ap.add_argument("--top", type=int, default=3, help="noise eigenvalues to print")
    args = ap.parse_args(argv)

    exp, recipe = cached_experiment(ap, args.profile, args.name)
    cifar = data.load_cifar10()
    tm = store.get_model(recipe, data=cifar, progress=False)
    ps = tm.train_set
    target = ps.spec.target
    rows = np.flatnonzero(ps.y == target)
    truth = ps.is_poison[rows]
    start = time.perf_counter()
    g = gradients.input_gradients(tm.model, ps.x[rows], target)
    seconds = time.perf_counter() - start
    gn = signal.normalise_rows(g).astype(np.float64)
    n, d = gn.shape
    eps = truth.mean()
    v = gn[truth].mean(0) - gn[~truth].mean(0)
    unit = v / np.linalg.norm(v)
    along = gn @ unit
    clean_sd = along[~truth].std()
    noise = np.linalg.eigvalsh(np.cov(gn[~truth], rowvar=False))[::-1]
    sigma2 = noise.mean()
    spike = eps * (1 - eps) * float(v @ v)
    sig, mf = signal.extract_and_filter(g, 0)
    apart = (along[truth].mean() - along[~truth].mean()) / clean_sd

    print(f"{args.profile} {exp.name}: target class {cifar.train.classes[target]}, {n} rows ({truth.sum()} poisoned, "
          f"eps {eps:.3f}), d {d}; attack success {tm.metrics.attack_success_rate:.1f} %; gradients in {seconds:.1f} s "
          f"on {provenance.device_name()}, commit {provenance.git_commit()}")
    print(f"signal |v| = {np.linalg.norm(v):.4f}; poisoned rows along v: {apart:.2f} clean sd from the clean mean")
    print(f"signal variance eps(1-eps)|v|^2 = {spike:.5f}; noise eigenvalues (clean rows) "
          f"{', '.join(f'{x:.5f}' for x in noise[:args.top])}; mean {sigma2:.6f}")
    print(f"isotropic threshold (chapter 3): l = eps(1-eps)|v|^2 / sigma^2 = {spike / sigma2:.1f} against "
          f"sqrt(d/n) = {np.sqrt(d / n):.2f}")
    print(f"first principal direction: |cos(PC1, v)| = {abs(sig.v_hat @ unit):.3f}; mixture on PC1: sensitivity "
          f"{metrics.sensitivity(mf.flagged, truth):.1f} %, specificity "
          f"{metrics.specificity(mf.flagged, truth):.1f} %, W = {mf.wasserstein:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
