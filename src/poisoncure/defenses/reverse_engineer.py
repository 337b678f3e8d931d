"""Reverse-engineering detection without the training set: Xiang, Miller & Kesidis, *Detection of Backdoors in
Trained Classifiers Without Access to the Training Set* (IEEE TNNLS; arXiv v. Aug 2020), §3-4, Algorithm 1;
SPEC-related-defenses Part I, B.3.

The defender holds the trained classifier and a few clean images per class, not the training set. For every
ordered pair (s, t), s ≠ t, gradient descent looks for one small additive perturbation v that sends a fraction π
of the clean class-s images to t (objective: minus the mean posterior of t, Eq. 3; start at v = 0, stop as soon as
the fraction reaches π). A backdoor pair needs a much smaller v than a natural pair, so its statistic
r_st = 1/‖v_st‖ is an outlier in the right tail. A Gamma null is fitted by maximum likelihood to the (K−1)²
smallest statistics *conditioned on lying below the smallest of the K−1 largest* (at most one target, so at most
K−1 statistics can be attacked); the p-value of the largest statistic is that of the maximum of K(K−1) null draws,
``1 − G(r_max)^{K(K−1)}``. The model is called attacked when p < θ; the arg-max pair is the inferred
(source, target) and its perturbation the estimated pattern.

Implementation choices (SPEC B.5): the step is the *normalised* gradient, ``v ← v − η g/‖g‖`` (X-1; the paper's
constant step δ is unspecified and would need a line search), so every step grows ‖v‖ by at most η; ``refine``
bisects the last step for the smallest multiple that still reaches π. The search stops at ‖v‖ ≥ ``bound`` or
after ``max_iter`` steps (X-2); such pairs keep their large norm and count as not reached. All K(K−1) pairs are
optimised in one batch: one forward and backward pass per step over ``K(K−1) · per_class`` images, each pair's
gradient normalised separately, finished pairs frozen — the same iterates as solving the pairs one by one.

What the defender needs: white-box gradients and ``per_class`` clean labelled images of every class; no training
set, no retraining. Not implemented: the class-confusion correction (AD-J-C) and the internal-layer variant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import optimize, stats
from torch import nn
from tqdm import tqdm

from ..data import ImageSet
from ..gradients import frozen_weights
from ..train import autocast, resolve_device, to_float
from .base import Arrays, LabelDetector, Memo, scan_key

OBJECTIVES = ("J", "Jp", "Jc")


@dataclass
class PairSearch(Arrays):
    """What the all-pairs search found, indexed [source, target] (K × K; the diagonal is unused)."""

    norms: np.ndarray  #: (K, K) L2 norm of the perturbation found for (s, t), [0, 1] pixel units; 0 on the diagonal
    l1: np.ndarray  #: (K, K) its L1 norm
    reached: np.ndarray  #: (K, K) bool — the fraction π was reached before the bound or the iteration cap
    iterations: np.ndarray  #: (K, K) gradient steps taken
    rho: np.ndarray  #: (K, K) fraction of the class-s images sent to t by the returned perturbation
    rho0: np.ndarray  #: (K, K) the same fraction at v = 0 (natural confusion)
    patterns: np.ndarray  #: (K, K, 3, H, W) float32 perturbations (zeros on the diagonal)


@dataclass
class GammaNull:
    """A Gamma(shape, scale) null (location 0) fitted to the statistics, and the p-value of their maximum."""

    shape: float
    scale: float
    truncated: bool  #: fitted by the truncated likelihood (False: untruncated — the naive null, or a fallback)
    converged: bool  #: the optimiser succeeded (a truncated fit that failed falls back to the untruncated one)
    r_max: float  #: the largest statistic
    r_min: float  #: the truncation point (smallest of the K−1 largest); nan for the naive null
    n_stats: int  #: K(K−1)
    p_value: float  #: Pr[max of n_stats null draws ≥ r_max]


@dataclass
class ReverseEngineeringResult:
    """The detection: statistics, both nulls, the decision and the inferred pair and pattern."""

    search: PairSearch
    statistics: np.ndarray  #: (K, K) r_st = 1/‖v_st‖ (0 on the diagonal)
    null: GammaNull  #: the robust, truncated null (the method)
    naive: GammaNull  #: the naive null fitted to all K(K−1) statistics (the paper's Table 5 comparison)
    theta: float
    detected: bool  #: null.p_value < theta
    source: int  #: arg-max pair (reported whether or not the model is called attacked)
    target: int
    pattern: np.ndarray  #: (3, H, W) the arg-max pair's perturbation — the estimated backdoor pattern

    @property
    def p_value(self) -> float:
        return self.null.p_value


# ------------------------------------------------------------------------------------------- statistics
def reciprocal_statistics(norms: np.ndarray) -> np.ndarray:
    """(K, K) r_st = 1/norms[s, t] off the diagonal, 0 on it. Norms must be > 0 off the diagonal."""
    norms = np.asarray(norms, dtype=np.float64)
    if norms.ndim != 2 or norms.shape[0] != norms.shape[1] or norms.shape[0] < 3:
        raise ValueError(f"norms must be a K x K array with K >= 3, got shape {norms.shape}")
    off = ~np.eye(len(norms), dtype=bool)
    if np.any(norms[off] <= 0) or not np.all(np.isfinite(norms[off])):
        raise ValueError("norms must be finite and > 0 off the diagonal (a pair confused at v = 0 has norm 0: "
                         "use fewer images per class or a larger pi)")
    r = np.zeros_like(norms)
    r[off] = 1.0 / norms[off]
    return r


def order_statistic_pvalue(r_max: float, shape: float, scale: float, n: int) -> float:
    """Pr[max of ``n`` i.i.d. Gamma(shape, scale) draws ≥ r_max] = 1 − G(r_max)^n, computed as
    ``-expm1(n · log G(r_max))`` so that values near 1e-13 do not round to 0 (SPEC B.3.5)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return float(-np.expm1(n * stats.gamma.logcdf(r_max, shape, scale=scale)))


def truncated_gamma_fit(sample: np.ndarray, r_min: float) -> tuple[float, float, bool]:
    """Maximum-likelihood Gamma(shape, scale), location 0, of ``sample`` conditioned on lying below ``r_min``:
    ``ℓ = Σ log g(r) − |sample| · log G(r_min)`` minimised over (log shape, log scale) by Nelder-Mead from the
    untruncated fit. Returns (shape, scale, converged); on failure the untruncated fit with converged False."""
    sample = np.asarray(sample, dtype=np.float64)
    if sample.ndim != 1 or len(sample) < 3 or np.any(sample <= 0):
        raise ValueError(f"sample must hold at least 3 positive values, got shape {sample.shape}")
    if not r_min >= sample.max():
        raise ValueError(f"r_min ({r_min}) must be at least the sample maximum ({sample.max()})")
    k0, _, s0 = stats.gamma.fit(sample, floc=0)

    def nll(z):
        k, s = np.exp(z)
        return -(np.sum(stats.gamma.logpdf(sample, k, scale=s)) - len(sample) * stats.gamma.logcdf(r_min, k, scale=s))

    res = optimize.minimize(nll, np.log([k0, s0]), method="Nelder-Mead",
                            options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 5000})
    if not res.success or not np.all(np.isfinite(res.x)):
        return float(k0), float(s0), False
    k, s = np.exp(res.x)
    return float(k), float(s), True


def gamma_null(stats_offdiag: np.ndarray, num_classes: int, truncated: bool = True) -> GammaNull:
    """Fit the null to the K(K−1) statistics and compute the p-value of the largest (SPEC B.3.5).

    ``truncated`` True: the (K−1)² smallest, conditioned on lying below the smallest of the K−1 largest
    (the method). False: an untruncated fit to all of them (the naive null of the paper's Table 5)."""
    r = np.sort(np.asarray(stats_offdiag, dtype=np.float64))
    k = num_classes
    if len(r) != k * (k - 1):
        raise ValueError(f"expected K(K-1) = {k * (k - 1)} statistics, got {len(r)}")
    r_max = float(r[-1])
    if truncated:
        n_null = (k - 1) ** 2
        r_min = float(r[n_null])
        shape, scale, ok = truncated_gamma_fit(r[:n_null], r_min)
    else:
        r_min = float("nan")
        shape, _, scale = stats.gamma.fit(r, floc=0)
        ok = True
    p = order_statistic_pvalue(r_max, shape, scale, len(r))
    return GammaNull(float(shape), float(scale), truncated and ok, ok, r_max, r_min, len(r), p)


# ------------------------------------------------------------------------------------------- the search
def _pair_search(k: int, ps: np.ndarray, pt: np.ndarray, v: np.ndarray, reached: np.ndarray, iters: np.ndarray,
                 rho: np.ndarray, rho0: np.ndarray) -> PairSearch:
    """The per-pair results (pairs ``ps[i] -> pt[i]``) laid out as K x K arrays (the diagonal empty)."""

    def square(values, fill=0):
        out = np.full((k, k), fill, dtype=np.asarray(values).dtype)
        out[ps, pt] = values
        return out

    patterns = np.zeros((k, k, *v.shape[1:]), dtype=np.float32)
    patterns[ps, pt] = v
    flat = v.reshape(len(v), -1)
    return PairSearch(square(np.linalg.norm(flat, axis=1)), square(np.abs(flat).sum(1)), square(reached, False),
                      square(iters), square(rho), square(rho0), patterns)


class ReverseEngineeringDetector(LabelDetector):
    """All-pairs minimal-perturbation search and the order-statistic test of Xiang, Miller & Kesidis.

    Parameters
    ----------
    per_class:
        Clean images of every class used for the search (>= 2; 10 at smoke scale, 100 in the paper). They are
        drawn (seeded) from the clean set given to :meth:`search`, which must hold at least this many per class.
    pi:
        Fraction of a class's images that must reach the target, in (0, 1] (0.8, the paper's).
    eta:
        Step length of the normalised gradient step, in [0, 1] pixel units of L2 norm, > 0 (0.05; the spec's
        0.01 with ``refine`` off).
    bound:
        Largest perturbation norm searched (> 0; 5.0). Pairs that hit it count as not reached.
    max_iter:
        Cap on gradient steps per pair (>= 1; 2000).
    refine:
        Bisect the last step (6 forward passes) for the smallest multiple that still reaches π (True).
    objective:
        'J' mean posterior of t over all class-s images (the paper's main one), 'Jp' only over the images not yet
        sent to t, 'Jc' only over the images the model classifies correctly at v = 0 (ρ is then counted over them).
    theta:
        Detection threshold on the p-value, in (0, 1) (0.05).
    num_classes, seed, chunk, device, progress:
        K (>= 3); seed of the image draw; images per forward pass (>= 1; ``None`` = 256 on a CPU, where larger
        batches were slower on two cores (``bench/pair_search.py``), 4096 on a GPU); "auto"/"cpu"/"cuda";
        progress bar. ``chunk`` changes only the batching, not the results (beyond float rounding).
    """

    def __init__(self, per_class: int = 10, pi: float = 0.8, eta: float = 0.05, bound: float = 5.0,
                 max_iter: int = 2000, refine: bool = True, objective: str = "J", theta: float = 0.05,
                 num_classes: int = 10, seed: int = 0, chunk: int | None = None, device: str | torch.device = "auto",
                 progress: bool = True):
        if per_class < 2:
            raise ValueError(f"per_class must be >= 2, got {per_class}")
        if not 0 < pi <= 1:
            raise ValueError(f"pi must lie in (0, 1], got {pi}")
        if not eta > 0:
            raise ValueError(f"eta must be > 0, got {eta}")
        if not bound > eta:
            raise ValueError(f"bound must be larger than eta ({eta}), got {bound}")
        if max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if not 0 < theta < 1:
            raise ValueError(f"theta must lie in (0, 1), got {theta}")
        if num_classes < 3:
            raise ValueError(f"num_classes must be >= 3, got {num_classes}")
        if chunk is not None and chunk < 1:
            raise ValueError(f"chunk must be >= 1 or None, got {chunk}")
        self.per_class, self.pi, self.eta, self.bound = int(per_class), float(pi), float(eta), float(bound)
        self.max_iter, self.refine, self.objective, self.theta = int(max_iter), bool(refine), objective, float(theta)
        self.device = resolve_device(device)
        self.num_classes, self.seed = int(num_classes), int(seed)
        self.chunk = int(chunk) if chunk is not None else (256 if self.device.type == "cpu" else 4096)
        self.progress = progress
        self._memo = Memo()

    def config(self) -> dict:
        """The parameters that determine the results (for cache keys and provenance)."""
        keys = ("per_class", "pi", "eta", "bound", "max_iter", "refine", "objective", "num_classes", "seed")
        return {"method": "xiang_reverse_engineering", **{k: getattr(self, k) for k in keys}}

    def images(self, clean: ImageSet) -> np.ndarray:
        """(K, per_class, H, W, 3) uint8: the seeded draw of ``per_class`` clean images of every class."""
        if clean.x.ndim != 4 or len(clean.x) != len(clean.y):
            raise ValueError(f"clean must hold images (N, H, W, 3) and N labels, got {clean.x.shape}, {clean.y.shape}")
        rng = np.random.default_rng(self.seed)
        out = []
        for c in range(self.num_classes):
            rows = np.flatnonzero(clean.y == c)
            if len(rows) < self.per_class:
                raise ValueError(f"class {c} has {len(rows)} clean images; the search needs per_class = "
                                 f"{self.per_class} (lower per_class or give more clean images)")
            out.append(clean.x[np.sort(rng.choice(rows, size=self.per_class, replace=False))])
        return np.stack(out)

    def _forward(self, model: nn.Module, xs: torch.Tensor, v: torch.Tensor, pairs_s: torch.Tensor,
                 pairs_t: torch.Tensor, base_mask: torch.Tensor, with_grad: bool):
        """ρ (A,) for perturbations v (A, 3, H, W) of the pairs (s, t); with ``with_grad`` also ∇_v of the
        objective (A, 3, H, W). Pairs are processed in chunks of about ``self.chunk`` images."""
        n = xs.shape[1]
        per = max(1, self.chunk // n)
        rho = torch.empty(len(v), device=v.device)
        grads = torch.zeros_like(v) if with_grad else None
        for lo in range(0, len(v), per):
            sl = slice(lo, lo + per)
            vi = v[sl].detach().clone().requires_grad_(with_grad)
            t = pairs_t[sl]
            with torch.set_grad_enabled(with_grad):
                x = (xs[pairs_s[sl]] + vi[:, None]).clamp(0.0, 1.0).flatten(0, 1)
                with autocast(v.device):  # bf16 where the device computes it natively (train.precision)
                    logits = model(x.contiguous(memory_format=torch.channels_last)).float()
                prob = logits.softmax(1).view(len(vi), n, -1)
                p_t = prob.gather(2, t[:, None, None].expand(-1, n, 1)).squeeze(2)  # (a, n)
                hit = (prob.argmax(2) == t[:, None]).float()
                base = base_mask[sl]  # (a, n) images the objective and ρ count
                rho[sl] = (hit * base).sum(1) / base.sum(1).clamp(min=1)
                if with_grad:
                    w = base * (1.0 - hit) if self.objective == "Jp" else base
                    loss = -((p_t * w).sum(1) / w.sum(1).clamp(min=1)).sum()
                    grads[sl] = torch.autograd.grad(loss, vi)[0]
        return rho, grads

    def search(self, model: nn.Module, clean: ImageSet) -> PairSearch:
        """Optimise the K(K−1) pair perturbations together (Algorithm 1, batched): normalised gradient steps of size
        ``eta`` on every pair still active, until its success rate reaches ``pi`` (then refined by bisection), its
        norm reaches ``bound`` or ``max_iter`` steps are done."""
        k, dev = self.num_classes, self.device
        imgs = self.images(clean)
        flat = to_float(torch.from_numpy(imgs).flatten(0, 1)).contiguous().to(dev)  # (K·n, 3, H, W)
        xs = flat.view(k, self.per_class, *flat.shape[1:])
        model.to(dev).eval()
        pairs = [(s, t) for s in range(k) for t in range(k) if s != t]
        ps = torch.tensor([s for s, _ in pairs], device=dev)
        pt = torch.tensor([t for _, t in pairs], device=dev)
        n_pairs = len(pairs)
        v = torch.zeros((n_pairs, *xs.shape[2:]), device=dev)
        with frozen_weights(model):
            base_mask, rho0 = self._start(model, xs, ps, pt)
            active = torch.ones(n_pairs, dtype=torch.bool, device=dev)
            reached = torch.zeros(n_pairs, dtype=torch.bool, device=dev)
            iters = torch.zeros(n_pairs, dtype=torch.long, device=dev)
            rho = rho0.clone()
            v_prev = v.clone()
            bar = tqdm(total=n_pairs, desc="pair search", unit="pair", disable=not self.progress, mininterval=5.0)
            for it in range(self.max_iter + 1):
                idx = torch.nonzero(active).squeeze(1)
                if len(idx) == 0:
                    break
                last = it == self.max_iter
                r, g = self._forward(model, xs, v[idx], ps[idx], pt[idx], base_mask[idx], with_grad=not last)
                rho[idx] = r
                done = r >= self.pi
                if done.any() and self.refine and it > 0:
                    d = idx[done]
                    v[d] = self._bisect(model, xs, v_prev[d], v[d], ps[d], pt[d], base_mask[d])
                    rho[d] = self._forward(model, xs, v[d], ps[d], pt[d], base_mask[d], with_grad=False)[0]
                reached[idx[done]] = True
                stop = done | (v[idx].flatten(1).norm(dim=1) >= self.bound)
                if last:
                    stop[:] = True
                else:
                    gn = g.flatten(1).norm(dim=1)
                    stop |= gn == 0  # a vanishing gradient cannot move the pair: not reached
                    go = idx[~stop]
                    v_prev[go] = v[go]
                    step = g[~stop] / gn[~stop].view(-1, 1, 1, 1)
                    v[go] = v[go] - self.eta * step
                    iters[go] += 1
                active[idx[stop]] = False
                bar.update(int(stop.sum()))
            bar.close()
        return _pair_search(k, ps.cpu().numpy(), pt.cpu().numpy(), v.detach().cpu().numpy().astype(np.float32),
                            reached.cpu().numpy(), iters.cpu().numpy(), rho.cpu().numpy(), rho0.cpu().numpy())

    def _start(self, model: nn.Module, xs: torch.Tensor, ps: torch.Tensor,
               pt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Which images count for each pair (objective 'Jc': the source images the model classifies correctly; else
        all) and each pair's success rate before any perturbation."""
        k = self.num_classes
        with torch.inference_mode():
            pred0 = torch.cat([model(c.contiguous(memory_format=torch.channels_last)).argmax(1)
                               for c in xs.flatten(0, 1).split(self.chunk)]).view(k, self.per_class)
        if self.objective == "Jc":
            base_mask = (pred0 == torch.arange(k, device=xs.device)[:, None]).float()[ps]
        else:
            base_mask = torch.ones((len(ps), self.per_class), device=xs.device)
        rho0 = (pred0[ps] == pt[:, None]).float()
        return base_mask, (rho0 * base_mask).sum(1) / base_mask.sum(1).clamp(min=1)

    def _bisect(self, model, xs, v_lo, v_hi, ps, pt, base_mask, steps: int = 6) -> torch.Tensor:
        """Smallest a in [0, 1] (to 2^-steps) with ρ(v_lo + a (v_hi − v_lo)) ≥ π, per pair; returns that v."""
        lo = torch.zeros(len(v_lo), device=v_lo.device)
        hi = torch.ones(len(v_lo), device=v_lo.device)
        for _ in range(steps):
            mid = (lo + hi) / 2
            v_mid = v_lo + mid.view(-1, 1, 1, 1) * (v_hi - v_lo)
            ok = self._forward(model, xs, v_mid, ps, pt, base_mask, with_grad=False)[0] >= self.pi
            hi = torch.where(ok, mid, hi)
            lo = torch.where(ok, lo, mid)
        return v_lo + hi.view(-1, 1, 1, 1) * (v_hi - v_lo)

    # ---------------------------------------------------------------------------------------- the decision
    def analyse(self, search: PairSearch) -> ReverseEngineeringResult:
        """Statistics, truncated and naive nulls, p-values, decision and the inferred pair (pure numpy).

        A pair already confused at v = 0 (ρ0 ≥ π, norm 0) gets the search's resolution, η/64, as its norm: the
        most extreme statistic possible (the paper's class-confusion correction, AD-J-C, is not implemented)."""
        k = self.num_classes
        if search.norms.shape != (k, k):
            raise ValueError(f"search has {search.norms.shape[0]} classes, the detector {k}")
        off = ~np.eye(k, dtype=bool)
        r = reciprocal_statistics(np.where(off & (search.norms <= 0), self.eta / 64, search.norms))
        null = gamma_null(r[off], k, truncated=True)
        naive = gamma_null(r[off], k, truncated=False)
        s, t = np.unravel_index(int(np.argmax(r)), r.shape)
        return ReverseEngineeringResult(search, r, null, naive, self.theta, bool(null.p_value < self.theta),
                                        int(s), int(t), search.patterns[s, t])

    def run(self, model: nn.Module, clean: ImageSet) -> ReverseEngineeringResult:
        """Search and analyse (computed once for the same model and clean data; the scoring methods reuse it)."""
        return self._memo(scan_key("run", model, clean), lambda: self.analyse(self.search(model, clean)))

    def score_pairs(self, model: nn.Module, clean: ImageSet) -> np.ndarray:
        """(K, K) statistics r_st = 1/‖v_st‖ for source s and target t, higher = more suspicious pair (0 on the
        diagonal)."""
        return self.run(model, clean).statistics

    def score_labels(self, model: nn.Module, clean: ImageSet) -> np.ndarray:
        """(K,) for every label t, the largest statistic of a pair ending at t (its most suspicious source)."""
        return self.run(model, clean).statistics.max(axis=0)

    def detect_labels(self, model: nn.Module, clean: ImageSet) -> np.ndarray:
        """(K,) bool over labels: True at the inferred target when the model is called attacked."""
        res = self.run(model, clean)
        out = np.zeros(self.num_classes, dtype=bool)
        out[res.target] = res.detected
        return out


def pattern_correlation(estimated: np.ndarray, true: np.ndarray) -> float:
    """Pearson correlation of an estimated pattern (3, H, W) with a true one (H, W, 3 or 3, H, W) — both
    mean-removed, so a constant offset does not count (SPEC B.7)."""
    t = np.asarray(true, dtype=np.float64)
    if t.ndim == 3 and t.shape[-1] == 3 and t.shape[0] != 3:
        t = t.transpose(2, 0, 1)
    e = np.asarray(estimated, dtype=np.float64)
    if e.shape != t.shape:
        raise ValueError(f"patterns differ in shape: {e.shape} vs {t.shape}")
    return float(np.corrcoef(e.ravel(), t.ravel())[0, 1])
