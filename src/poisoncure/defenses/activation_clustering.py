"""Activation Clustering: Chen et al., *Detecting Backdoor Attacks on Deep Neural Networks by Activation
Clustering* (2018), §3-4; the paper's detection baseline in Chan & Ong (2019), Tables 3-4 (SPEC §6).

For every training label, the last hidden layer's activations of the samples with that label are reduced to 10
dimensions (independent component analysis) and split in two by k-means. A poisoned label holds two populations —
its own images, and other-class images that reach the label only through the trigger — so its clusters are of very
unequal size; a clean label splits roughly in half. The smaller cluster of a label is flagged when it holds at most
``size_threshold`` of the label's samples (and, optionally, when the two clusters are well separated: silhouette
score at least ``silhouette_threshold``). The repair removes the flagged samples and retrains from scratch.

What the defender must know: nothing beyond the (poisoned) training set and the model; no clean data, no target, no
poison rate (the size threshold encodes a belief that poison is a minority of a label).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA, FastICA
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import silhouette_score
from torch import nn
from tqdm import tqdm

from ..data import ImageSet
from ..train import resolve_device
from .base import Arrays, Memo, RepresentationDefense, check_features

REDUCTIONS = ("ica", "pca")
#: Silhouette scores are computed on at most this many points of a label (a seeded subsample; O(n^2) otherwise).
SILHOUETTE_SAMPLE = 2000


@dataclass
class Clustering(Arrays):
    """Two-means clustering of every label's reduced activations (K labels, N samples)."""

    cluster: np.ndarray  #: (N,) 0/1 cluster of each sample within its label (1 = the smaller cluster)
    flagged: np.ndarray  #: (N,) bool — in the smaller cluster of a flagged label
    distance: np.ndarray  #: (N,) distance to the own cluster's centre minus distance to the other's (a score)
    relative_size: np.ndarray  #: (K,) fraction of the label's samples in its smaller cluster
    silhouette: np.ndarray  #: (K,) silhouette score of the two clusters
    poisoned: np.ndarray  #: (K,) bool — the label is flagged


def reduce(acts: np.ndarray, n_components: int = 10, method: str = "ica", seed: int = 0) -> np.ndarray:
    """(n, n_components) reduced activations; FastICA (max_iter 1000, tol 0.005, as Chen et al.'s code) or PCA.

    The whitening uses the eigendecomposition of the (d, d) covariance rather than an SVD of the (n, d) data: the same
    whitening, about three times faster when n is much larger than d, as for a label's activations.
    FastICA's convergence warning is silenced: a clean label's activations are close to Gaussian, which has no
    independent components to converge to; the whitened projection it returns is still what k-means needs."""
    if method not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {method!r}")
    n_components = min(n_components, *acts.shape)
    if method == "ica":
        proj = FastICA(n_components=n_components, max_iter=1000, tol=0.005, random_state=seed,
                       whiten="unit-variance", whiten_solver="eigh" if acts.shape[0] >= acts.shape[1] else "svd")
    else:
        proj = PCA(n_components=n_components, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return proj.fit_transform(acts)


class ActivationClustering(RepresentationDefense):
    """Activation Clustering with validated parameters (defaults: 10 ICA components, 2-means).

    Parameters
    ----------
    n_components:
        Dimensions after the reduction (>= 1; 10).
    reduce:
        'ica' (FastICA, Chen et al.) or 'pca'.
    size_threshold:
        A label is flagged when its smaller cluster holds at most this fraction of its samples, in (0, 0.5]
        (0.35, the relative-size rule of Chen et al. and ART).
    silhouette_threshold:
        If not None, a flagged label must also have a silhouette score of at least this value, in [-1, 1].
    layer:
        Module name whose output is the activation; None = the last hidden layer (``model.embed``).
    num_classes:
        Number of classes K.
    n_init:
        k-means restarts (>= 1; 10).
    seed:
        Seed of the reduction and of k-means.
    device, progress:
        "auto" (CUDA when present), "cpu" or "cuda"; show progress bars.
    """

    #: score: how much closer a sample lies to its label's smaller cluster than to the larger one;
    #: detect: the smaller clusters of the flagged labels
    score_field, flag_field = "distance", "flagged"

    def __init__(self, n_components: int = 10, reduce: str = "ica", size_threshold: float = 0.35,
                 silhouette_threshold: float | None = None, layer: str | None = None, num_classes: int = 10,
                 n_init: int = 10, seed: int = 0, device: str | torch.device = "auto", progress: bool = True):
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
        if not 0 < size_threshold <= 0.5:
            raise ValueError(f"size_threshold must lie in (0, 0.5], got {size_threshold}")
        if silhouette_threshold is not None and not -1 <= silhouette_threshold <= 1:
            raise ValueError(f"silhouette_threshold must lie in [-1, 1] or be None, got {silhouette_threshold}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if n_init < 1:
            raise ValueError(f"n_init must be >= 1, got {n_init}")
        self.n_components, self.reduce, self.size_threshold = n_components, reduce, float(size_threshold)
        self.silhouette_threshold, self.layer, self.num_classes = silhouette_threshold, layer, num_classes
        self.n_init, self.seed = n_init, seed
        self.device = resolve_device(device)
        self.progress = progress
        self._memo = Memo()

    def score_labels(self, model: nn.Module, train: ImageSet) -> np.ndarray:
        """(K,) how suspicious each label looks: one minus twice its smaller cluster's share (0 for an even split, 1
        for a cluster of one sample), from the same scan as :meth:`detect`."""
        return 1.0 - 2.0 * self.scan(model, train).relative_size

    def detect_labels(self, model: nn.Module, train: ImageSet) -> np.ndarray:
        """(K,) bool: the labels whose smaller cluster is flagged (the label-level verdict)."""
        return self.scan(model, train).poisoned

    def config(self) -> dict:
        """The parameters that determine the results (for cache keys and provenance)."""
        return {"method": "activation_clustering", "n_components": self.n_components, "reduce": self.reduce,
                "size_threshold": self.size_threshold, "silhouette_threshold": self.silhouette_threshold,
                "layer": self.layer, "n_init": self.n_init, "seed": self.seed}

    def cluster_label(self, acts: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Cluster one label's activations (n, d): (cluster (n,) with 1 = smaller, margin score (n,), silhouette)."""
        red = reduce(acts, self.n_components, self.reduce, self.seed)
        km = KMeans(n_clusters=2, n_init=self.n_init, random_state=self.seed).fit(red)
        small = int(np.argmin(np.bincount(km.labels_, minlength=2)))
        lab = (km.labels_ == small).astype(np.int64)
        dist = km.transform(red)  # (n, 2): distance to each centre
        margin = dist[:, 1 - small] - dist[:, small]
        rng = np.random.default_rng(self.seed)
        if len(np.unique(lab)) < 2:
            sil = -1.0
        else:
            sub = rng.choice(len(lab), size=min(len(lab), SILHOUETTE_SAMPLE), replace=False)
            sil = float(silhouette_score(red[sub], lab[sub])) if len(np.unique(lab[sub])) == 2 else -1.0
        return lab, margin, sil

    def score_features(self, acts: np.ndarray, y: np.ndarray) -> Clustering:
        """Cluster every label of given activations (N, d) with training labels (N,)."""
        acts, y = check_features(acts, y, self.num_classes, np.float32)  # float32: ICA and k-means need no more
        k_all = self.num_classes
        cluster, flagged, margin = np.zeros(len(y), np.int64), np.zeros(len(y), dtype=bool), np.zeros(len(y))
        rel, sil, poisoned = np.zeros(k_all), np.full(k_all, -1.0), np.zeros(k_all, dtype=bool)
        for k in tqdm(range(k_all), desc="activation clustering", disable=not self.progress):
            rows = np.flatnonzero(y == k)
            if len(rows) < max(3, self.n_components):
                continue
            lab, m, sil[k] = self.cluster_label(acts[rows])
            rel[k] = lab.mean()
            poisoned[k] = rel[k] <= self.size_threshold and (
                self.silhouette_threshold is None or sil[k] >= self.silhouette_threshold)
            cluster[rows], margin[rows] = lab, m
            flagged[rows] = poisoned[k] & (lab == 1)
        return Clustering(cluster, flagged, margin, rel, sil, poisoned)
