"""The randomised SVD behind the paper's signal extraction: ``torch.svd_lowrank`` with six power iterations (the
book's until 1447cd1) against scikit-learn's ``randomized_svd`` with ten (:func:`poisoncure.signal.top_singular`,
as ``signal.extract_signal`` calls it), in one run on the same matrices.

Matrices: the model of Theorem 4.1 (``signal.planted_gradients``) at a CIFAR-10 class's size (5,000 x 3,072) and
at chapter 4's Monte-Carlo sizes. Prints the time of each (best of five), the ratio, |cos| of each top vector to
the exact one (float64 eigendecomposition of the smaller Gram matrix) and the mixture's filtering error with each
vector. With ``--scan``, also the paper's whole class scan (Algorithm 1a, ten classes) and base scan of the
smoke profile's blend model (trained and cached if missing) with each SVD, and whether they name the same target,
base and samples. With ``--monte-carlo``, chapter 4's Monte-Carlo cell (its 132 draws at the smoke profile's
settings) with each SVD: time and the mean error per setting.

    .venv/bin/python bench/svd.py [--scan] [--monte-carlo]
"""

import sys
import time

import numpy as np
import torch

from poisoncure import signal

EPS = 500 / 5500
D = 3072
REPEATS = 5


def torch_top(m: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The former implementation of ``extract_signal``'s SVD (q = k + 8, six power iterations)."""
    torch.manual_seed(seed)
    _, s, v = torch.svd_lowrank(torch.from_numpy(np.ascontiguousarray(m)), q=min(10, *m.shape), niter=6)
    return s[:2].numpy(), v[:, 0].numpy()


def sklearn_top(m: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return signal.top_singular(m, k=2, oversamples=8, n_iter=10, seed=seed)


def exact_top(m: np.ndarray) -> np.ndarray:
    """The exact top right singular vector, from the eigenvectors of the smaller of m m^T and m^T m (float64)."""
    m = m.astype(np.float64)
    if len(m) <= m.shape[1]:
        v = m.T @ np.linalg.eigh(m @ m.T)[1][:, -1]
    else:
        v = np.linalg.eigh(m.T @ m)[1][:, -1]
    return v / np.linalg.norm(v)


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return abs(float(a @ b)) / float(np.linalg.norm(a) * np.linalg.norm(b))


def error(g: np.ndarray, v: np.ndarray, is_poison: np.ndarray) -> float:
    return float(np.mean(signal.gmm_filter(signal.pc1_scores(g, v.astype(np.float64))).flagged != is_poison))


def best_of(fn, m: np.ndarray) -> tuple[float, tuple]:
    out, best = fn(m), float("inf")
    for _ in range(REPEATS):
        t = time.perf_counter()
        out = fn(m)
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; best of {REPEATS}")
    for n, norm in [(5000, 6.0), (5500, 3.0), (4000, 6.0), (2000, 4.0), (1000, 6.0), (250, 6.0)]:
        g, _, is_poison = signal.planted_gradients(n, D, EPS, norm, seed=n)
        gt = signal.normalise_rows(g.astype(np.float32))
        m = gt - gt.mean(axis=0)
        t_old, (_, v_old) = best_of(torch_top, m)
        t_new, (_, v_new) = best_of(sklearn_top, m)
        v_exact = exact_top(m)
        print(f"n={n:5d} d={D} |v|={norm:4.1f}: torch {1000 * t_old:7.1f} ms, scikit-learn {1000 * t_new:7.1f} ms "
              f"({t_old / t_new:4.1f}x); |cos| to exact: torch {cos(v_old, v_exact):.3f}, scikit-learn "
              f"{cos(v_new, v_exact):.3f}; filtering error: torch {error(g, v_old, is_poison):.4f}, scikit-learn "
              f"{error(g, v_new, is_poison):.4f}, exact {error(g, v_exact, is_poison):.4f}")


def scan_both() -> None:
    """The smoke blend model's class scan and base scan, with the former and the current SVD, in one process."""
    from unittest import mock

    from poisoncure import data, experiments
    from poisoncure.experiments import profiles

    recipe = experiments.Recipe.from_params(profiles.load("smoke")["experiment"], poison="blend")
    cifar = data.load_cifar10()
    tm = experiments.get_model(recipe, device="cpu", data=cifar)
    train = tm.train_set.as_imageset() if hasattr(tm.train_set, "as_imageset") else tm.train_set
    out = {}
    for name, top in [("torch", lambda m, k=2, oversamples=8, n_iter=6, seed=0: torch_top(m, seed)),
                      ("scikit-learn", signal.top_singular)]:
        defense = experiments.poison_cure_for(recipe, device="cpu")
        defense.progress = False
        with mock.patch.object(signal, "top_singular", top):
            t = time.perf_counter()
            res = defense.run(tm.model, train, neutralize=False)
            out[name] = (time.perf_counter() - t, res)
    (t_old, a), (t_new, b) = out["torch"], out["scikit-learn"]
    print(f"scan + base scan of the smoke blend model: torch {t_old:.1f} s, scikit-learn {t_new:.1f} s "
          f"({t_old / t_new:.2f}x); target {a.scan.target} / {b.scan.target}, R {a.scan.ratio:.2f} / "
          f"{b.scan.ratio:.2f}, base {a.base.base} / {b.base.base}, flagged {int(a.filtering.flagged.sum())} / "
          f"{int(b.filtering.flagged.sum())}, flagged differently "
          f"{int((a.filtering.flagged != b.filtering.flagged).sum())} of {len(a.filtering.flagged)}")


def monte_carlo_both() -> None:
    """Chapter 4's Monte-Carlo draws (smoke profile: 12 trials; n sweep at |v| = 6, norm sweep at n = 2,000)."""
    from unittest import mock

    trials, ns, norms = 12, (250, 500, 1000, 2000, 4000), (3.0, 4.0, 5.0, 6.0, 8.0, 12.0)
    draws = ([(n, 6.0, 1000 * t + n) for n in ns for t in range(trials)]
             + [(2000, v, 1000 * t + int(10 * v)) for v in norms for t in range(trials)])
    former = lambda m, k=2, oversamples=8, n_iter=6, seed=0: torch_top(m, seed)  # noqa: E731
    for name, top in [("torch", former), ("scikit-learn", signal.top_singular)]:
        with mock.patch.object(signal, "top_singular", top):
            t = time.perf_counter()
            err = np.array([signal.filtering_error(n, D, EPS, v, seed=s) for n, v, s in draws]).reshape(-1, trials)
            seconds = time.perf_counter() - t
        by_n = ", ".join(f"{n}: {e:.3f}" for n, e in zip(ns, err[:len(ns)].mean(1), strict=True))
        by_v = ", ".join(f"{v:g}: {e:.3f}" for v, e in zip(norms, err[len(ns):].mean(1), strict=True))
        print(f"chapter 4's {len(draws)} Monte-Carlo draws, {name}: {seconds:.1f} s; mean error by n ({by_n}); "
              f"by |v| ({by_v})")


if __name__ == "__main__":
    main()
    if "--scan" in sys.argv[1:]:
        scan_both()
    if "--monte-carlo" in sys.argv[1:]:
        monte_carlo_both()
