"""Spectral Signatures: Tran, Li & Mądry, *Spectral Signatures in Backdoor Attacks* (NeurIPS 2018), Algorithm 1;
SPEC-related-defenses Part I, A.3 and A.6. Compared with in Chan & Ong (2019), Table 5 (SPEC §6).

For every training label y, the representations R(x) of the samples labelled y are centred; their top right
singular vector v carries the poison (a poisoned sub-population shifts the mean along one direction, which then
dominates the covariance). Each sample gets the outlier score τ = ((R(x) − R̂)·v)², and the ⌈β·ε·n⌉ highest-scoring
samples of the label are removed; the model is retrained from scratch on what is left.

What the defender must know: an upper bound ε on the poisoned fraction of a label (the removal budget), and, for
the variant the paper compares with, the target class (``labels=<int>``). No clean data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from .. import signal
from ..train import resolve_device
from .base import Arrays, Memo, RepresentationDefense, check_features

SCORES = ("paper", "code")
#: Above this many dimensions the top singular vector comes from a randomised SVD (SPEC-related A.7: a full SVD
#: of 5,500 x 4,096 takes minutes on 2 cores); below it, from an exact SVD.
EXACT_SVD_MAX_DIM = 1024


@dataclass
class SpectralScores(Arrays):
    """Algorithm 1 on every scanned label (K labels, N samples)."""

    scores: np.ndarray  #: (N,) outlier score τ (0 for labels not scanned)
    removed: np.ndarray  #: (N,) bool — among the ⌈β ε n⌉ highest scores of its label
    scanned: np.ndarray  #: (K,) bool — which labels were scanned
    n_removed: np.ndarray  #: (K,) samples removed per label
    singular_values: np.ndarray  #: (K, 3) top singular values of each label's centred representation matrix


def top_singular(m: np.ndarray, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` singular values (k,) and the top right singular vector (d,) of a matrix (n, d).

    Exact (LAPACK) up to :data:`EXACT_SVD_MAX_DIM` columns, randomised (:func:`poisoncure.signal.top_singular`)
    above: there the top value and vector match the exact SVD to 1e-3, the 2nd and 3rd values to 1 % on a flat noise
    spectrum (tested)."""
    if m.shape[1] <= EXACT_SVD_MAX_DIM:
        _, s, vt = np.linalg.svd(m, full_matrices=False)
        return s[:k], vt[0]
    return signal.top_singular(m, k=k, oversamples=20, n_iter=10, seed=seed)


def outlier_scores(reps: np.ndarray, score: str = "paper", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Outlier scores (n,) of one label's representations (n, d), and the top singular values (3,).

    ``score`` 'paper': τ = ((R − R̂)·v)² (Algorithm 1); 'code': |R·v| (the authors' released code, uncentred)."""
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    centred = reps - reps.mean(axis=0)
    s, v = top_singular(centred, seed=seed)
    s = np.pad(s, (0, max(0, 3 - len(s))))
    tau = (centred @ v) ** 2 if score == "paper" else np.abs(reps @ v)
    return tau, s


def n_to_remove(n: int, eps: float, beta: float) -> int:
    """⌈β·ε·n⌉, capped at n (SPEC-related A-5)."""
    return min(n, math.ceil(beta * eps * n - 1e-9))


class SpectralSignatures(RepresentationDefense):
    """Spectral Signatures with validated parameters (defaults: Tran et al.'s settings, as the book runs them).

    Parameters
    ----------
    eps:
        Upper bound on the poisoned fraction of a label, in (0, 1) (the defender must know it; 0.1 here).
    beta:
        Removal multiplier: ⌈beta · eps · n⌉ samples are removed from each scanned label of size n (> 0; 1.5).
    score:
        'paper' (centred squared projection, default) or 'code' (uncentred absolute projection).
    labels:
        'all' (Algorithm 1: scan every label) or one label index (the target, when the defender knows it).
    layer:
        Module name whose output is the representation; None = the penultimate features (``model.embed``).
    num_classes:
        Number of classes K.
    seed:
        Seed of the randomised SVD (used above :data:`EXACT_SVD_MAX_DIM` dimensions only).
    device, progress:
        "auto" (CUDA when present), "cpu" or "cuda"; show progress bars.
    """

    #: score: the outlier score τ (0 outside the scanned labels); detect: the samples Algorithm 1 removes
    score_field, flag_field = "scores", "removed"

    def __init__(self, eps: float = 0.1, beta: float = 1.5, score: str = "paper", labels: str | int = "all",
                 layer: str | None = None, num_classes: int = 10, seed: int = 0,
                 device: str | torch.device = "auto", progress: bool = True):
        if not 0 < eps < 1:
            raise ValueError(f"eps must lie in (0, 1), got {eps}")
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if labels != "all" and not (isinstance(labels, int | np.integer) and 0 <= labels < num_classes):
            raise ValueError(f"labels must be 'all' or a label in [0, {num_classes - 1}], got {labels!r}")
        self.eps, self.beta, self.score_kind, self.labels = float(eps), float(beta), score, labels
        self.layer, self.num_classes, self.seed = layer, num_classes, seed
        self.device = resolve_device(device)
        self.progress = progress
        self._memo = Memo()

    def config(self) -> dict:
        """The parameters that determine the results (for cache keys and provenance)."""
        return {"method": "spectral_signatures", "eps": self.eps, "beta": self.beta, "score": self.score_kind,
                "labels": self.labels if self.labels == "all" else int(self.labels), "layer": self.layer}

    def score_features(self, reps: np.ndarray, y: np.ndarray) -> SpectralScores:
        """Algorithm 1, steps 3-11, on given representations (N, d) with training labels (N,)."""
        reps, y = check_features(reps, y, self.num_classes)
        k_all = self.num_classes
        scores, removed = np.zeros(len(y)), np.zeros(len(y), dtype=bool)
        scanned, n_removed, svals = np.zeros(k_all, dtype=bool), np.zeros(k_all, np.int64), np.zeros((k_all, 3))
        wanted = range(k_all) if self.labels == "all" else [int(self.labels)]
        for k in tqdm(wanted, desc="spectral signatures", disable=not self.progress):
            rows = np.flatnonzero(y == k)
            if len(rows) < 2:
                continue
            tau, svals[k] = outlier_scores(reps[rows], self.score_kind, self.seed)
            n = n_to_remove(len(rows), self.eps, self.beta)
            order = np.lexsort((rows, -tau))  # highest score first, ties by index (SPEC-related A.3)
            removed[rows[order[:n]]] = True
            scores[rows], scanned[k], n_removed[k] = tau, True, n
        return SpectralScores(scores, removed, scanned, n_removed, svals)
