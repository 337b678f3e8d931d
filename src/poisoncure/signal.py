"""The paper's maths on input gradients: signal extraction and PC1 scores (SPEC §3(b), §3(c); Theorem 4.1).

Model (Theorem 4.1): a target-class gradient is ``g = mu + beta v + n`` with ``beta ~ Bernoulli(eps)`` and
isotropic noise of variance sigma^2. The centred second-moment matrix is ``eps v v^T + sigma^2 I``, whose top
eigenvector is ``v / ||v||`` with eigen-gap ``eps ||v||^2``. So the first right singular vector of the centred,
row-normalised gradient matrix estimates the poison signal, and each sample's projection on it (its first
principal component, PC1) separates poisoned from clean samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Signal:
    """The extracted signal ``v_hat`` (d,) with unit norm, and the top singular values of the matrix it came from
    (``singular_values[k]**2 / n`` are the top eigenvalues of the second-moment matrix)."""

    v_hat: np.ndarray
    singular_values: np.ndarray
    n: int

    @property
    def eigenvalues(self) -> np.ndarray:
        return self.singular_values**2 / self.n

    @property
    def eigen_gap(self) -> float:
        """lambda_1 - lambda_2 — Theorem 4.1 predicts eps (1 - eps) ||v||^2 for the population; with finite n,
        :func:`predicted_gap`."""
        ev = self.eigenvalues
        return float(ev[0] - ev[1]) if len(ev) > 1 else float(ev[0])


def _check_matrix(g: np.ndarray, min_rows: int = 2) -> np.ndarray:
    g = np.asarray(g)
    if g.ndim != 2:
        raise ValueError(f"gradients must be a 2-D array (n, d), got shape {g.shape}")
    if len(g) < min_rows:
        raise ValueError(f"need at least {min_rows} gradient rows, got {len(g)} (is the class empty?)")
    if not np.isfinite(g).all():
        raise ValueError("gradients contain NaN or infinity")
    return g.astype(np.float32, copy=False)


def normalise_rows(g: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Each row divided by its L2 norm (rows of norm below ``eps`` are left at zero)."""
    norms = np.linalg.norm(g, axis=1, keepdims=True)
    return g / np.maximum(norms, eps)


def extract_signal(g: np.ndarray, center: bool = True, k: int = 2, seed: int = 0) -> Signal:
    """Top right singular vector of the row-normalised (and, with ``center``, mean-centred) gradients.

    Uses a randomised low-rank SVD (:func:`top_singular`; only the top ``k`` components are needed). The sign is
    fixed so that the mean of the normalised rows projects non-negatively (the loss-ascent direction); for centred
    data that mean is zero and downstream code must not depend on the sign.
    """
    return _signal_of_normalised(normalise_rows(_check_matrix(g)), center, k, seed)


def _signal_of_normalised(gt: np.ndarray, center: bool, k: int, seed: int) -> Signal:
    """:func:`extract_signal` on rows already normalised (``gt``), so that a pipeline normalises them once."""
    mean = gt.mean(axis=0)
    s, v_hat = top_singular(gt - mean if center else gt, k=k, oversamples=8, n_iter=10, seed=seed)
    v_hat = v_hat.astype(np.float64)
    v_hat /= np.linalg.norm(v_hat)
    if float(mean @ v_hat) < 0:
        v_hat = -v_hat
    return Signal(v_hat, s.astype(np.float64), len(gt))


def top_singular(m: np.ndarray, k: int = 2, oversamples: int = 8, n_iter: int = 6,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` singular values (k,) and the top right singular vector (d,) of a matrix (n, d), by the randomised
    range finder of Halko, Martinsson & Tropp (2011) with ``n_iter`` power iterations (scikit-learn's
    ``randomized_svd``, which keeps float32). ``seed`` fixes the random test matrix. Where the top two singular
    values lie close together (a weak signal) more power iterations bring the vector closer to the exact one;
    ``bench/svd.py`` measures speed and |cos| to the exact vector against ``torch.svd_lowrank``, which the book used
    before and whose products with the transposed matrix are slow on the CPU."""
    from sklearn.utils.extmath import randomized_svd

    k = min(k, *m.shape)
    _, s, vt = randomized_svd(m, n_components=k, n_oversamples=min(oversamples, min(m.shape) - k), n_iter=n_iter,
                              random_state=seed)
    return s, vt[0]


def pc1_scores(g: np.ndarray, v_hat: np.ndarray) -> np.ndarray:
    """First principal component of each sample: <normalised row - mean of normalised rows, v_hat>, shape (n,)."""
    g = _check_matrix(g, min_rows=1)
    if v_hat.shape != (g.shape[1],):
        raise ValueError(f"v_hat must have shape ({g.shape[1]},), got {v_hat.shape}")
    return _pc1_of_normalised(normalise_rows(g), v_hat)


def _pc1_of_normalised(gt: np.ndarray, v_hat: np.ndarray) -> np.ndarray:
    """:func:`pc1_scores` on rows already normalised (``gt``)."""
    return (gt @ v_hat.astype(gt.dtype) - gt.mean(axis=0) @ v_hat.astype(gt.dtype)).astype(np.float64)


def abs_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """|cos| between two vectors of the same size (flattened)."""
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"vectors differ in size: {a.shape} vs {b.shape}")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        raise ValueError("cosine with a zero vector is undefined")
    return float(abs(a @ b) / (na * nb))


def _spike(strength: float, eps: float, n: int, d: int) -> tuple[float, float]:
    """The spike l = (1 - eps) * strength of the centred covariance and the aspect ratio gamma = d / n, validated
    (shared by the large-sample predictions below)."""
    if n < 1 or d < 1 or not 0 < eps < 1 or strength < 0:
        raise ValueError("need n, d >= 1, eps in (0, 1) and strength >= 0")
    return (1.0 - eps) * strength, d / n


def predicted_cosine(strength: float, eps: float, n: int, d: int) -> float:
    """Large-sample prediction of |cos(v_hat, v)| for the centred model of Theorem 4.1.

    ``strength`` is eps ||v||^2 / sigma^2. The centred covariance is sigma^2 (I + l u u^T) with
    l = (1 - eps) * strength, a spiked covariance; with gamma = d / n the top sample eigenvector satisfies
    cos^2 = (1 - gamma / l^2) / (1 + gamma / l) above the detection threshold l > sqrt(gamma), and 0 below it
    (Paul 2007; Baik, Ben Arous and Peche 2005). Finite n therefore caps the recovery below 1.
    """
    spike, gamma = _spike(strength, eps, n, d)
    if spike <= np.sqrt(gamma):
        return 0.0
    return float(np.sqrt((1.0 - gamma / spike**2) / (1.0 + gamma / spike)))


def predicted_gap(strength: float, eps: float, n: int, d: int) -> float:
    """Large-sample prediction of the sample eigen-gap lambda_1 - lambda_2, in units of sigma^2, for the centred
    model of Theorem 4.1 (spike l = (1 - eps) * strength, gamma = d / n, as in :func:`predicted_cosine`).

    The population gap is l (the theorem's eps (1 - eps) ||v||^2 / sigma^2). With finite n the top sample
    eigenvalue lies at (1 + l)(1 + gamma / l) above the detection threshold l > sqrt(gamma), and the second at the
    edge of the noise bulk, (1 + sqrt(gamma))^2 (Baik, Ben Arous and Peche 2005); below the threshold both sit at
    that edge and the gap is 0.
    """
    spike, gamma = _spike(strength, eps, n, d)
    if spike <= np.sqrt(gamma):
        return 0.0
    return float((1.0 + spike) * (1.0 + gamma / spike) - (1.0 + np.sqrt(gamma)) ** 2)


def planted_gradients(n: int, d: int, eps: float, signal_norm: float, sigma: float = 1.0, seed: int = 0,
                      mu_norm: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic gradients of Theorem 4.1: ``mu + beta v + n`` with ``||v|| = signal_norm``, noise N(0, sigma^2 I).

    Returns (G (n, d) float32, v (d,) unit direction, is_poison (n,) bool). Used by tests and chapter 3.
    """
    if not 0 <= eps <= 1:
        raise ValueError(f"eps must lie in [0, 1], got {eps}")
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(d)
    v /= np.linalg.norm(v)
    mu = rng.standard_normal(d)
    mu *= mu_norm / np.linalg.norm(mu)
    is_poison = rng.random(n) < eps
    g = mu + sigma * rng.standard_normal((n, d)) + np.outer(is_poison, signal_norm * v)
    return g.astype(np.float32), v, is_poison


# ----------------------------------------------------------------------------------- filtering (SPEC 3(d))
@dataclass
class MixtureFilter:
    """A 2-component 1-D Gaussian mixture on PC1 scores and the samples it flags as poisoned (SPEC 3(d)).

    The poisoned component is the one whose mean lies further from 0 (clean samples cluster at 0).
    """

    flagged: np.ndarray  #: bool (n,)
    scores: np.ndarray  #: the PC1 scores it was fitted on (n,)
    labels: np.ndarray  #: hard component assignment (n,)
    means: np.ndarray  #: component means (2,)
    stds: np.ndarray  #: component standard deviations (2,)
    weights: np.ndarray  #: component weights (2,)
    poisoned_component: int
    posterior: np.ndarray  #: probability of the poisoned component for each sample (n,)

    @property
    def wasserstein(self) -> float:
        """1-D Wasserstein-1 distance between the scores of the two hard clusters (0 if one is empty), SPEC 3(e)."""
        from scipy.stats import wasserstein_distance

        a, b = self.scores[self.labels == 0], self.scores[self.labels == 1]
        return float(wasserstein_distance(a, b)) if len(a) and len(b) else 0.0

    @property
    def consistent(self) -> bool:
        """Whether the far-from-zero component is also the smaller one (the SPEC's sanity check)."""
        return bool(self.weights[self.poisoned_component] <= 0.5)


def gmm_filter(scores: np.ndarray, seed: int = 0, n_init: int = 10) -> MixtureFilter:
    """Fit the SPEC's mixture (K = 2, full covariance, n_init 10, max_iter 500, tol 1e-4, reg_covar 1e-6)."""
    from sklearn.mixture import GaussianMixture

    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or len(s) < 2:
        raise ValueError(f"scores must be 1-D with at least 2 values, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinity")
    gmm = GaussianMixture(n_components=2, covariance_type="full", n_init=n_init, max_iter=500, tol=1e-4,
                          reg_covar=1e-6, random_state=seed).fit(s[:, None])
    labels = gmm.predict(s[:, None])
    means = gmm.means_.ravel()
    k_p = int(np.argmax(np.abs(means)))
    return MixtureFilter(labels == k_p, s, labels, means, np.sqrt(gmm.covariances_.ravel()), gmm.weights_, k_p,
                         gmm.predict_proba(s[:, None])[:, k_p])


# ------------------------------------------------------------------------------ target class (SPEC 3(e))
@dataclass
class TargetDetection:
    """Per-class Wasserstein distances, the most separated class and its ratio R to the mean of the others."""

    distances: np.ndarray  #: W_k for every class (K,)
    target: int  #: argmax_k W_k
    ratio: float  #: R = W_target / mean of the other W_k
    threshold: float  #: lambda
    poisoned: bool  #: R > lambda


def detect_target(distances: np.ndarray, threshold: float = 2.0) -> TargetDetection:
    """Flag the class whose mixture components are furthest apart if its W exceeds ``threshold`` x the others' mean.

    A NaN entry marks a class that was not scanned (too few training samples, e.g. a base class that an attack
    relabelled entirely); it takes no part in the test: the candidate and the mean of the others are taken over the
    scanned classes, of which there must be at least two.
    """
    w = np.asarray(distances, dtype=np.float64)
    if w.ndim != 1 or len(w) < 2:
        raise ValueError(f"distances must be 1-D with one value per class (>= 2), got shape {w.shape}")
    scanned = ~np.isnan(w)
    if scanned.sum() < 2:
        raise ValueError(f"at least 2 classes must be scanned (not NaN), got {int(scanned.sum())}")
    if (w[scanned] < 0).any() or not np.isfinite(w[scanned]).all():
        raise ValueError("distances must be finite and non-negative (NaN only for a class not scanned)")
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    t = int(np.nanargmax(w))
    others = w[scanned & (np.arange(len(w)) != t)].mean()
    ratio = float(w[t] / others) if others > 0 else float("inf")
    return TargetDetection(w, t, ratio, threshold, ratio > threshold)


# -------------------------------------------------------------------------------- base class (SPEC 3(f))
def base_scores(scores_per_label: np.ndarray, flagged: np.ndarray) -> np.ndarray:
    """m_j = mean |PC1| over the flagged samples when the cross-entropy target is label j.

    ``scores_per_label`` is (K, n): row j holds the target-class samples' PC1 scores computed with label j.
    """
    s = np.asarray(scores_per_label, dtype=np.float64)
    f = np.asarray(flagged, dtype=bool)
    if s.ndim != 2 or f.shape != (s.shape[1],):
        raise ValueError(f"scores_per_label must be (K, n) and flagged (n,), got {s.shape} and {f.shape}")
    if not f.any():
        raise ValueError("no sample is flagged: the base class cannot be scored")
    return np.abs(s[:, f]).mean(axis=1)


def detect_base(m: np.ndarray, target: int) -> int:
    """The label with the largest m_j, the target itself excluded."""
    m = np.asarray(m, dtype=np.float64)
    if not 0 <= target < len(m):
        raise ValueError(f"target must lie in [0, {len(m) - 1}], got {target}")
    masked = m.copy()
    masked[target] = -np.inf
    return int(np.argmax(masked))


# ----------------------------------------------------------------------- filtering error (Theorem 5.1)
def extract_and_filter(g: np.ndarray, seed: int = 0) -> tuple[Signal, MixtureFilter]:
    """The filtering pipeline of SPEC 3(d) on a gradient matrix: extraction, PC1 scores, 2-component mixture."""
    gt = normalise_rows(_check_matrix(g))  # once, for both the extraction and the scores
    sig = _signal_of_normalised(gt, center=True, k=2, seed=seed)
    return sig, gmm_filter(_pc1_of_normalised(gt, sig.v_hat), seed=seed)


def filter_gradients(g: np.ndarray, seed: int = 0) -> MixtureFilter:
    """The mixture of :func:`extract_and_filter` (the signal itself not needed)."""
    return extract_and_filter(g, seed)[1]


def filtering_error(n: int, d: int, eps: float, signal_norm: float, sigma: float = 1.0, seed: int = 0) -> float:
    """Fraction m / n of samples the real pipeline (SVD + mixture) misclassifies on synthetic gradients drawn
    from the model of Theorem 4.1 (``planted_gradients``) — one Monte-Carlo draw of Theorem 5.1's error."""
    g, _, is_poison = planted_gradients(n, d, eps, signal_norm, sigma, seed=seed)
    return float(np.mean(filter_gradients(g, seed=seed).flagged != is_poison))


def subsample_class(is_poison: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` samples drawn without replacement keeping the poisoned share of ``is_poison`` (stratified)."""
    is_poison = np.asarray(is_poison, dtype=bool)
    if not 2 <= n <= len(is_poison):
        raise ValueError(f"n must lie in [2, {len(is_poison)}], got {n}")
    rng = np.random.default_rng(seed)
    pois, clean = np.flatnonzero(is_poison), np.flatnonzero(~is_poison)
    k = int(round(n * len(pois) / len(is_poison)))
    return np.sort(np.concatenate([rng.choice(pois, k, replace=False), rng.choice(clean, n - k, replace=False)]))
