"""Self-expansion and compatibility on synthetic data (the theory of the ensembles-of-weak-learners paper, Part II
A.3), small enough to run in seconds.

The data: clean points ``x ~ N(0, I_d)`` labelled ``1[x₀ + x₁ > 0]``; poisoned points carry a "trigger" (the last
coordinate set to ``trigger``) and the *opposite* label. Each kind alone is linearly separable, the two together
are not (for a linear learner): they are incompatible in the paper's sense. The learner is logistic regression.

* :func:`expansion_error` estimates Definition 4.1, ε(S | T; α): train on an α-subsample of S drawn with
  replacement (plus all of T), measure the 0-1 error on S, average over draws.
* :func:`error_by_poison_share` walks from an all-clean to an all-poison set of one size: Theorem 4.5 says the
  minimisers of ε(S; α) are homogeneous, so the curve peaks inside and is lowest at the ends.
* :func:`boosting_errors` trains ``B`` learners on bootstrap samples of each homogeneous set and returns the error
  matrix that Algorithm 1 (:func:`defenses.weak_learners.boost_homogeneous`) votes on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Points:
    """Synthetic points: ``x`` (n, d), binary labels ``y`` (n,), ``is_poison`` (n,)."""

    x: np.ndarray
    y: np.ndarray
    is_poison: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def take(self, rows: np.ndarray) -> Points:
        return Points(self.x[rows], self.y[rows], self.is_poison[rows])


def mixture(n_clean: int, n_poison: int, d: int = 10, trigger: float = 4.0, seed: int = 0) -> Points:
    """``n_clean`` clean and ``n_poison`` poisoned points in ``d`` ≥ 3 dimensions (see the module docstring)."""
    if d < 3:
        raise ValueError(f"d must be >= 3 (two signal coordinates and a trigger), got {d}")
    if n_clean < 0 or n_poison < 0 or n_clean + n_poison == 0:
        raise ValueError(f"need a non-negative number of each kind and at least one point, got {n_clean}, {n_poison}")
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_clean + n_poison, d))
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    is_poison = np.zeros(len(y), dtype=bool)
    is_poison[n_clean:] = True
    x[is_poison, -1] = trigger
    y[is_poison] = 1 - y[is_poison]
    return Points(x, y, is_poison)


def _learn(x: np.ndarray, y: np.ndarray):
    """Logistic regression, or a constant predictor when the sample holds one label (or none)."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y)) < 2:
        label = int(y[0]) if len(y) else 0
        return lambda z: np.full(len(z), label)
    return LogisticRegression(max_iter=200).fit(x, y).predict


def expansion_error(s: Points, t: Points | None = None, alpha: float = 0.25, draws: int = 20,
                    seed: int = 0) -> float:
    """Monte-Carlo estimate of ε(S | T; α) (Definition 4.1): the mean 0-1 error on ``s`` of a learner trained on
    ``round(alpha·|S|)`` points of ``s`` drawn with replacement together with all of ``t``."""
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must lie in (0, 1], got {alpha}")
    if len(s) == 0 or draws < 1:
        raise ValueError("s must be non-empty and draws >= 1")
    rng = np.random.default_rng(seed)
    k = max(1, int(round(alpha * len(s))))
    errs = []
    for _ in range(draws):
        rows = rng.integers(0, len(s), k)
        x, y = s.x[rows], s.y[rows]
        if t is not None and len(t):
            x, y = np.concatenate([x, t.x]), np.concatenate([y, t.y])
        errs.append(np.mean(_learn(x, y)(s.x) != s.y))
    return float(np.mean(errs))


def error_by_poison_share(size: int = 200, shares: np.ndarray | None = None, alpha: float = 0.25, draws: int = 20,
                          d: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """ε(S; α) of sets of ``size`` points whose share of poison runs over ``shares`` (default 0, 0.1, ..., 1).
    Returns (shares, errors)."""
    shares = np.linspace(0, 1, 11) if shares is None else np.asarray(shares, dtype=float)
    errors = []
    for i, f in enumerate(shares):
        n_poison = int(round(f * size))
        pts = mixture(size - n_poison, n_poison, d=d, seed=seed + i)
        errors.append(expansion_error(pts, None, alpha, draws, seed + 1000 + i))
    return shares, np.asarray(errors)


def boosting_errors(sets: list[Points], learners: int = 10, alpha: float = 0.5,
                    seed: int = 0) -> np.ndarray:
    """``errors[i, k]``: the mean 0-1 error on ``sets[k]`` of ``learners`` logistic regressions, each trained on an
    ``alpha``-bootstrap of ``sets[i]`` — the ``V`` of Algorithm 1 with B = ``learners``."""
    rng = np.random.default_rng(seed)
    n = len(sets)
    errors = np.zeros((n, n))
    for i, s in enumerate(sets):
        for _ in range(learners):
            rows = rng.integers(0, len(s), max(1, int(round(alpha * len(s)))))
            predict = _learn(s.x[rows], s.y[rows])
            for k, other in enumerate(sets):
                errors[i, k] += np.mean(predict(other.x) != other.y) / learners
    return errors
