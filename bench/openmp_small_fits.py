"""scikit-learn's small fits — the paper's 2-component mixture (its k-means start) on one class's PC1 scores, one
Monte-Carlo draw of chapter 4 (randomised SVD, then the mixture), Activation Clustering's 2-means on one label's
reduced activations — with scikit-learn's OpenMP threads as they come (the library's way) and held to one
(threadpoolctl), in one run on this machine. A measurement of a change not adopted: bench/README.md.

The process first trains a small network for a few batches, as a chapter does before it filters, so that torch's
OpenMP threads exist beside scikit-learn's own OpenMP runtime. Each fit runs ``--repeats`` times, the two settings
alternating, and the best time of each is kept; their outputs are compared bit for bit. With ``--beside-load``
another process keeps every core busy meanwhile (torch matrix products), as when a chapter builds beside a grid run.

    python bench/openmp_small_fits.py [--repeats 5] [--beside-load]
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from unittest import mock

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from poisoncure import data, models, provenance, signal, train
from poisoncure.defenses import activation_clustering

LOAD = "import torch\nx = torch.randn(1024, 1024)\nwhile True:\n    x = torch.tanh(x @ x / 32)\n"


def torch_warm_up() -> None:
    """A few training steps of the smoke profile's network: the chapters' state when they reach the fits."""
    x = data.load_cifar10().test.subset(np.arange(512))
    train.fit(models.whitened_net(width=16), x, train.TrainConfig(epochs=1, batch_size=128), "cpu", progress=False)


def one_thread_fit(cls):
    """``cls`` whose ``fit`` runs with one OpenMP thread."""

    class Serial(cls):
        def fit(self, *args, **kwargs):
            with threadpool_limits(limits=1, user_api="openmp"):
                return super().fit(*args, **kwargs)

    return Serial


def timed(fn, serial: bool) -> tuple[float, object]:
    """One call of ``fn``, scikit-learn's threads as they come or (``serial``) its mixture and k-means held to one."""
    patches = (mock.patch("sklearn.mixture.GaussianMixture", one_thread_fit(GaussianMixture)),
               mock.patch.object(activation_clustering, "KMeans", one_thread_fit(KMeans))) if serial else ()
    with contextlib.ExitStack() as stack:
        for p in patches:
            stack.enter_context(p)
        t = time.perf_counter()
        out = fn()
        return time.perf_counter() - t, out


def workloads() -> dict:
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(0, 1, 4950), rng.normal(5, 1, 550)])  # a target class: 10 % poisons at 5 sd
    acts = np.concatenate([rng.normal(0, 1, (4500, 64)), rng.normal(1.5, 1, (500, 64))]).astype(np.float32)
    ac = activation_clustering.ActivationClustering()
    return {"mixture, 5,500 scores (one class's scan)": lambda: signal.gmm_filter(scores).posterior,
            "Monte-Carlo draw, n 2,000 (chapter 4)": lambda: signal.filtering_error(2000, 3072, 0.1, 6.0, seed=7),
            "AC, one label: 5,000 x 64 activations": lambda: ac.cluster_label(acts)[1]}


def table(repeats: int) -> None:
    print(f"{'workload':42s} {'as they come (s)':>17s} {'one thread (s)':>15s} {'speed-up':>9s}  outputs")
    for name, fn in workloads().items():
        times, outs = {False: [], True: []}, {}
        for _ in range(repeats):
            for serial in (False, True):
                t, outs[serial] = timed(fn, serial)
                times[serial].append(t)
        a, b = min(times[False]), min(times[True])
        same = np.array_equal(np.asarray(outs[False]), np.asarray(outs[True]))
        print(f"{name:42s} {a:17.4f} {b:15.4f} {a / b:8.1f}×  {'identical' if same else 'differ'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--beside-load", action="store_true", help="another process keeps every core busy meanwhile")
    args = ap.parse_args()
    print(f"{provenance.device_name('cpu')}, torch {torch.__version__}"
          f"{', beside a process that keeps every core busy' if args.beside_load else ''}")
    torch_warm_up()
    load = subprocess.Popen([sys.executable, "-c", LOAD]) if args.beside_load else None
    try:
        table(args.repeats)
    finally:
        if load is not None:
            load.kill()


if __name__ == "__main__":
    main()
