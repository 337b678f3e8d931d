"""The paper's defense: detect, filter and neutralize a backdoor with input gradients.

Chan & Ong, *Poison as a Cure* (2019), §4–§7 and Appendix Algorithms 1–3; SPEC §3(a)–3(h). Four steps, each a
method of :class:`PoisonCure` returning a dataclass of arrays:

1. :meth:`PoisonCure.scan` (Algorithm 1a, §6.1) — for every class, input gradients with the class's own label,
   the top singular vector, PC1 scores and a two-component Gaussian mixture; the class whose two clusters lie
   furthest apart (1-D Wasserstein-1) is the target candidate, flagged when its distance exceeds ``threshold``
   times the mean of the other classes' (the ratio R).
2. :meth:`PoisonCure.find_base` (Algorithm 1b, §6.2) — for every label j, the target class's gradients with CE
   target j; the base class has the largest mean |PC1| m_j over the samples flagged in step 1.
3. :meth:`PoisonCure.filter` (Algorithm 2, §5, Theorem 5.1) — the mixture on the target class's base-label
   PC1 scores; the far-from-zero component is the filtered poison set P̂ (no new gradients: step 2 has them).
4. :meth:`PoisonCure.counter_poison` and :meth:`PoisonCure.neutralize` (Algorithm 3, §7) — from P̂ alone, one
   signal per non-target class c (CE target c, uncentred SVD); every clean training image of class c gets a
   copy shifted by ``eta`` times its class's signal; P̂ is relabelled to the base class; the poisoned model
   is fine-tuned for one epoch on the union.

:meth:`PoisonCure.run` chains them (SPEC 3(h)). The project's defense interface (:mod:`.base`): per sample ``score``
(higher = more suspicious) and ``detect`` (the filtered poison set), per label ``score_labels`` (the distances W_k)
and ``detect_labels`` (the flagged target), and ``repair`` (a new, neutralized model); called in a row on the same
model and data they share one scan.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .. import signal
from ..data import ImageSet
from ..gradients import input_gradients
from ..train import FitHistory, TrainConfig, fit, resolve_device
from .base import Arrays, Memo, check_train, scan_key

#: SPEC 3.0: the fine-tuning of the neutralization step (one epoch, constant lr 0.01, plain momentum SGD).
FINETUNE = TrainConfig(epochs=1, batch_size=128, lr=0.01, momentum=0.9, nesterov=False, weight_decay=5e-4,
                       label_smoothing=0.0, schedule="constant", warmup=0.0, augment="crop_flip", seed=0)


# ------------------------------------------------------------------------------------------ artefacts
@dataclass
class ClassScan(Arrays):
    """Algorithm 1a on every class (K classes, N training samples, d = 3072).

    PC1 scores are oriented so that each class's far-from-zero mixture component has a positive mean. A class with
    fewer than two training samples (an attack such as Mislabel can relabel a whole class away) is not scanned: its
    W_k, mixture means, standard deviations and weights are NaN, its signal is zero, and the target test runs over the
    scanned classes (:func:`poisoncure.signal.detect_target`).
    """

    distances: np.ndarray  #: W_k (K,): Wasserstein-1 distance between the two clusters of class k (NaN: not scanned)
    target: int  #: argmax_k W_k (the candidate, whether or not it is flagged)
    ratio: float  #: R = W_target / mean of the other W_k
    threshold: float  #: lambda
    poisoned: bool  #: R > lambda
    scores: np.ndarray  #: (N,) PC1 of every sample within its own class, own-label gradients
    far: np.ndarray  #: (N,) bool — the sample lies in its class's far-from-zero component (P̂0 for the target)
    signals: np.ndarray  #: (K, d) unit top singular vector of each class
    eigenvalues: np.ndarray  #: (K, 2) top two eigenvalues of each class's centred second-moment matrix
    means: np.ndarray  #: (K, 2) mixture means
    stds: np.ndarray  #: (K, 2) mixture standard deviations
    weights: np.ndarray  #: (K, 2) mixture weights
    far_component: np.ndarray  #: (K,) index of the far-from-zero component


@dataclass
class BaseScan(Arrays):
    """Algorithm 1b: the target class's PC1 scores with every label j as the cross-entropy target."""

    target: int
    rows: np.ndarray  #: (n_t,) training indices of the target class
    scores: np.ndarray  #: (K, n_t) PC1 with CE target j (oriented like the signals)
    signals: np.ndarray  #: (K, d)
    eigenvalues: np.ndarray  #: (K, 2)
    m: np.ndarray  #: (K,) mean |PC1| over the samples flagged by the scan
    base: int  #: argmax_{j != target} m_j


@dataclass
class Filtering(Arrays):
    """Algorithm 2: the mixture on the target class's base-label PC1 scores and the poison set it filters."""

    rows: np.ndarray  #: (n_t,) training indices of the target class
    scores: np.ndarray  #: (n_t,) PC1, oriented so the poisoned component's mean is positive
    flagged: np.ndarray  #: (n_t,) bool — in the poisoned (far-from-zero) component
    posterior: np.ndarray  #: (n_t,) probability of the poisoned component
    means: np.ndarray  #: (2,)
    stds: np.ndarray  #: (2,)
    weights: np.ndarray  #: (2,)
    poisoned_component: int
    signal: np.ndarray  #: (d,) the extracted v̂ (base-label gradients, centred)

    @property
    def flagged_index(self) -> np.ndarray:
        """Training indices of the filtered poison set P̂."""
        return self.rows[self.flagged]


@dataclass
class CounterPoison(Arrays):
    """Algorithm 3's per-class signals v_c (unit norm; the target's row is zero) and the step size."""

    signals: np.ndarray  #: (K, 3, 32, 32)
    target: int
    eta: float

    @property
    def offsets(self) -> np.ndarray:
        """eta * v_c: what is added to a clean image of class c, in [0, 1] pixel units."""
        return (self.eta * self.signals).astype(np.float32)


@dataclass
class PoisonCureResult:
    """Everything the defense computed. Steps after a negative detection are ``None``."""

    scan: ClassScan
    base: BaseScan | None = None
    filtering: Filtering | None = None
    counter: CounterPoison | None = None
    model: nn.Module | None = None  #: the neutralized model (a new object; the input model is not changed)
    history: FitHistory | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def is_poison(self, n: int) -> np.ndarray:
        """Boolean mask (n,) of the training samples the defense filtered out (all False if nothing flagged)."""
        mask = np.zeros(n, dtype=bool)
        if self.filtering is not None:
            mask[self.filtering.flagged_index] = True
        return mask


# ------------------------------------------------------------------------------------------ the method
def _oriented(g: np.ndarray, seed: int) -> tuple[signal.Signal, signal.MixtureFilter]:
    """Extraction, PC1 and mixture, with v̂ and the scores flipped so the far component has a positive mean."""
    sig, mf = signal.extract_and_filter(g, seed)
    if mf.means[mf.poisoned_component] < 0:
        sig = dataclasses.replace(sig, v_hat=-sig.v_hat)
        mf = dataclasses.replace(mf, scores=-mf.scores, means=-mf.means)
    return sig, mf


class PoisonCure:
    """The paper's defense with validated parameters (defaults: the settings this book reproduces it with).

    Parameters
    ----------
    threshold:
        lambda of the target test: a class is flagged when its W exceeds ``threshold`` x the mean W of the other
        classes (> 0; the paper does not state its value, the book uses 2).
    eta:
        L2 norm, in [0, 1] pixel units, of the counter-poison perturbation added to clean images (> 0).
    finetune:
        How the poisoned model is fine-tuned on the augmented set (default :data:`FINETUNE`: one epoch, SGD lr
        0.01, batch 128, crop + flip).
    num_classes:
        Number of classes K.
    gradient_batch:
        Images per backward pass of the gradient engine (speed and memory only; results do not depend on it). None:
        the engine's default for the device (:func:`poisoncure.gradients.default_batch`: 256 on a CPU, 500 on CUDA).
    seed:
        Seed of the randomised SVDs and of the mixtures' initialisations.
    device:
        "auto" (CUDA when present), "cpu" or "cuda".
    progress:
        Show progress bars.
    """

    def __init__(self, threshold: float = 2.0, eta: float = 2.0, finetune: TrainConfig = FINETUNE,
                 num_classes: int = 10, gradient_batch: int | None = None, seed: int = 0,
                 device: str | torch.device = "auto", progress: bool = True):
        if not threshold > 0:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        if not eta > 0:
            raise ValueError(f"eta must be > 0, got {eta}")
        if not isinstance(finetune, TrainConfig):
            raise ValueError(f"finetune must be a TrainConfig, got {type(finetune).__name__}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if gradient_batch is not None and gradient_batch < 1:
            raise ValueError(f"gradient_batch must be >= 1, got {gradient_batch}")
        self.threshold, self.eta, self.finetune = float(threshold), float(eta), finetune
        self.num_classes, self.gradient_batch, self.seed = num_classes, gradient_batch, seed
        self.device = resolve_device(device)
        self.progress = progress
        self._memo = Memo()

    def config(self) -> dict[str, Any]:
        """The parameters that determine the results (for cache keys and provenance)."""
        return {"threshold": self.threshold, "eta": self.eta, "finetune": dataclasses.asdict(self.finetune),
                "num_classes": self.num_classes, "seed": self.seed}

    def _grads(self, model: nn.Module, x: np.ndarray, labels: int | np.ndarray) -> np.ndarray:
        return input_gradients(model, x, labels, batch_size=self.gradient_batch, device=self.device,
                               num_classes=self.num_classes)

    # -- Algorithm 1a
    def scan(self, model: nn.Module, train: ImageSet) -> ClassScan:
        """Own-label gradients, signal, PC1 and mixture for every class; W_k and the target test."""
        check_train(train, self.num_classes)
        k_all = self.num_classes
        d = int(np.prod(train.x.shape[1:]))
        scores = np.zeros(len(train))
        far = np.zeros(len(train), dtype=bool)
        signals, eig = np.zeros((k_all, d)), np.zeros((k_all, 2))
        means, stds, weights = (np.full((k_all, 2), np.nan) for _ in range(3))
        far_comp, dist = np.zeros(k_all, dtype=np.int64), np.full(k_all, np.nan)
        counts = np.bincount(train.y, minlength=k_all)
        if (counts >= 2).sum() < 2:
            raise ValueError(f"at least 2 classes need 2 or more training samples; class counts {counts.tolist()}")
        for k in tqdm(range(k_all), desc="scanning classes", disable=not self.progress):
            if counts[k] < 2:
                continue  # not scanned: W_k stays NaN and takes no part in the target test
            rows = np.flatnonzero(train.y == k)
            sig, mf = _oriented(self._grads(model, train.x[rows], k), self.seed)
            scores[rows], far[rows] = mf.scores, mf.flagged
            signals[k], eig[k] = sig.v_hat, sig.eigenvalues[:2]
            means[k], stds[k], weights[k], far_comp[k] = mf.means, mf.stds, mf.weights, mf.poisoned_component
            dist[k] = mf.wasserstein
        det = signal.detect_target(dist, self.threshold)
        return ClassScan(dist, det.target, det.ratio, det.threshold, det.poisoned, scores, far, signals, eig,
                         means, stds, weights, far_comp)

    # -- Algorithm 1b
    def find_base(self, model: nn.Module, train: ImageSet, target: int, flagged_rows: np.ndarray) -> BaseScan:
        """m_j = mean |PC1| over ``flagged_rows`` (training indices) with CE target j, for every label j."""
        check_train(train, self.num_classes)
        if not 0 <= target < self.num_classes:
            raise ValueError(f"target must lie in [0, {self.num_classes - 1}], got {target}")
        rows = np.flatnonzero(train.y == target)
        if len(rows) < 2:
            raise ValueError(f"target class {target} has {len(rows)} training samples; need at least 2")
        in_flagged = np.isin(rows, flagged_rows)
        if not in_flagged.any():
            raise ValueError("none of flagged_rows is a sample of the target class")
        d = int(np.prod(train.x.shape[1:]))
        scores = np.zeros((self.num_classes, len(rows)))
        signals, eig = np.zeros((self.num_classes, d)), np.zeros((self.num_classes, 2))
        for j in tqdm(range(self.num_classes), desc="scoring labels", disable=not self.progress):
            sig, mf = _oriented(self._grads(model, train.x[rows], j), self.seed)
            scores[j], signals[j], eig[j] = mf.scores, sig.v_hat, sig.eigenvalues[:2]
        m = signal.base_scores(scores, in_flagged)
        return BaseScan(target, rows, scores, signals, eig, m, signal.detect_base(m, target))

    # -- Algorithm 2
    def filter(self, base: BaseScan) -> Filtering:
        """The mixture on the base-label PC1 scores of the target class (reuses the base scan's gradients)."""
        s = base.scores[base.base]
        mf = signal.gmm_filter(s, seed=self.seed)
        return Filtering(base.rows, s, mf.flagged, mf.posterior, mf.means, mf.stds, mf.weights, mf.poisoned_component,
                         base.signals[base.base])

    # -- Algorithm 3
    def counter_poison(self, model: nn.Module, train: ImageSet, target: int,
                       flagged_index: np.ndarray) -> CounterPoison:
        """One unit signal per non-target class c from the filtered poison set alone (CE target c, no centring),
        oriented towards loss ascent for label c."""
        check_train(train, self.num_classes)
        flagged_index = np.asarray(flagged_index, dtype=np.int64)
        if len(flagged_index) < 2:
            raise ValueError(f"the filtered poison set has {len(flagged_index)} samples; need at least 2")
        shape = (3, *train.x.shape[1:3])
        out = np.zeros((self.num_classes, *shape), dtype=np.float32)
        x_p = train.x[flagged_index]
        for c in tqdm(range(self.num_classes), desc="counter-poison signals", disable=not self.progress):
            if c != target:
                sig = signal.extract_signal(self._grads(model, x_p, c), center=False, seed=self.seed)
                out[c] = sig.v_hat.reshape(shape)
        return CounterPoison(out, target, self.eta)

    def augmented_set(self, train: ImageSet, flagged_index: np.ndarray, base: int,
                      counter: CounterPoison) -> tuple[ImageSet, np.ndarray]:
        """D_aug = (D with P̂ relabelled to the base class) ∪ (a shifted copy of every clean non-target image).

        Returns the uint8 images with their labels and ``offset_index`` (-1 for original images, the class c for
        a copy, which :func:`poisoncure.train.fit` shifts by ``counter.offsets[c]`` when drawn).
        """
        y = train.y.copy()
        y[flagged_index] = base
        is_flagged = np.zeros(len(train), dtype=bool)
        is_flagged[flagged_index] = True
        copies = np.flatnonzero((train.y != counter.target) & ~is_flagged)
        index = np.concatenate([np.arange(len(train)), copies])
        offset_index = np.concatenate([np.full(len(train), -1), y[copies]])
        return ImageSet(train.x[index], y[index], train.classes), offset_index

    def neutralize(self, model: nn.Module, train: ImageSet, flagged_index: np.ndarray, base: int,
                   counter: CounterPoison) -> tuple[nn.Module, FitHistory]:
        """Fine-tune a copy of ``model`` on the augmented set; the input model is left unchanged."""
        aug, offset_index = self.augmented_set(train, flagged_index, base, counter)
        new = copy.deepcopy(model)
        hist = fit(new, aug, self.finetune, self.device, progress=self.progress, offsets=counter.offsets,
                   offset_index=offset_index)
        return new, hist

    # -- the whole defense (SPEC 3(h)) and the project's defense interface
    def run(self, model: nn.Module, train: ImageSet, neutralize: bool = True) -> PoisonCureResult:
        """Scan, then (if a class is flagged) base class, filtering, counter-poison and (optionally) fine-tuning."""
        seconds: dict[str, float] = {}
        t0 = time.perf_counter()
        scan = self.scan(model, train)
        seconds["scan"] = time.perf_counter() - t0
        res = PoisonCureResult(scan, seconds=seconds)
        if not scan.poisoned:
            return res
        t0 = time.perf_counter()
        res.base = self.find_base(model, train, scan.target, np.flatnonzero(scan.far & (train.y == scan.target)))
        res.filtering = self.filter(res.base)
        seconds["base_and_filter"] = time.perf_counter() - t0
        if res.filtering.flagged.sum() < 2:
            return res
        t0 = time.perf_counter()
        res.counter = self.counter_poison(model, train, scan.target, res.filtering.flagged_index)
        seconds["counter_poison"] = time.perf_counter() - t0
        if neutralize:
            t0 = time.perf_counter()
            res.model, res.history = self.neutralize(model, train, res.filtering.flagged_index, res.base.base,
                                                     res.counter)
            seconds["neutralize"] = time.perf_counter() - t0
        return res

    def analysis(self, model: nn.Module, train: ImageSet) -> PoisonCureResult:
        """:meth:`run` without the fine-tuning, computed once for the same model and data and reused by
        :meth:`score`, :meth:`detect`, :meth:`score_labels`, :meth:`detect_labels` and :meth:`repair`."""
        return self._memo(scan_key("analysis", model, train), lambda: self.run(model, train, neutralize=False))

    def score(self, model: nn.Module, train: ImageSet) -> np.ndarray:
        """(N,) suspicion in [0, 1]: the poisoned-component posterior in the flagged class, 0 elsewhere."""
        res = self.analysis(model, train)
        out = np.zeros(len(train))
        if res.filtering is not None:
            out[res.filtering.rows] = res.filtering.posterior
        return out

    def detect(self, model: nn.Module, train: ImageSet) -> np.ndarray:
        """(N,) bool: the filtered poison set P̂ (all False when no class is flagged)."""
        return self.analysis(model, train).is_poison(len(train))

    def score_labels(self, model: nn.Module, train: ImageSet) -> np.ndarray:
        """(K,) the Wasserstein distance W_k between the two clusters of every class (higher = more suspicious; 0
        for a class with fewer than two training samples, which the scan leaves out)."""
        return np.nan_to_num(self.analysis(model, train).scan.distances, nan=0.0)

    def detect_labels(self, model: nn.Module, train: ImageSet) -> np.ndarray:
        """(K,) bool: True at the target class when the scan flags one (its ratio R above ``threshold``)."""
        scan = self.analysis(model, train).scan
        out = np.zeros(self.num_classes, dtype=bool)
        out[int(scan.target)] = bool(scan.poisoned)
        return out

    def repair(self, model: nn.Module, train: ImageSet) -> nn.Module:
        """The neutralized model: a copy of ``model`` fine-tuned on the training set with the filtered poison
        relabelled to the base class and the counter-poison added (:meth:`neutralize`). When no class is flagged, or
        fewer than two samples are filtered, there is nothing to neutralize and the copy is returned unchanged."""
        res = self.analysis(model, train)
        if res.counter is None:
            return copy.deepcopy(model)
        return self.neutralize(model, train, res.filtering.flagged_index, res.base.base, res.counter)[0]
