"""Ensembles of weak learners that isolate the clean data (SPEC-related-defenses Part II A; ICLR 2022 submission).

The defense never looks for the poison. It assumes that clean and poisoned samples are *incompatible*: a network
trained on a subsample of one kind fits the rest of that kind well and the other kind badly. So it peels the
training set into homogeneous components and lets models trained on them vote:

1. **Inverse self-paced learning (ISPL)** finds one component: train on a thinned (rate ``alpha``) low-loss subset,
   score every remaining sample, smooth the losses with momentum ``eta``, keep the lowest-loss share ``q_t``
   (annealed from 3q down to q, :func:`trim_schedule`) plus the lowest ``q_t/8`` of every class
   (:func:`trim`), repeat. The trimmed set is the component; a **weak learner** is trained on it from scratch.
   Components are peeled off one after another (``components`` per bag, each about ``0.96/components`` of the data)
   and the whole pass is repeated ``bags`` times.
2. **Boosting vote**: every weak learner predicts every training sample; a sample is kept when the modal
   prediction equals its label and at least two learners cast it (:func:`vote_keep`).
3. **Self-paced self-training (SPL)** re-admits samples: a fresh model trains on the kept set for a few epochs,
   each sample's score moves towards 1 when the model predicts its label (momentum ``spl_momentum``), and the kept
   set becomes the samples scored above 1/2; repeated ``spl_rounds`` times.

The final model is then trained on the kept set (by the caller, with the undefended model's recipe, so that the
comparison with the other defenses' retrained models is like for like). :func:`itlm_keep` is the paper's extra
baseline, iterative trimmed loss minimisation (Shen & Sanghavi 2019). :func:`boost_homogeneous` is the paper's
Algorithm 1 on a matrix of weak-learner errors, for the theory section.

Every weak learner is a cache entry keyed by the data, the configuration, its bag and its component, so an
interrupted run resumes at the learner where it stopped.

Deviation: the ISPL iterations of a component continue one network, but each calls :func:`train.fit`, which builds
a fresh SGD optimiser, so the momentum buffer restarts every iteration (the authors keep one optimiser per
component). Weak learners and self-training rounds get a fresh optimiser in both.

A limitation of the authors' vote rule, kept as published: a weak learner does not predict a label it never trained
on, so a label held by one component only can collect at most one vote, and ``cnt > 1`` removes every sample of it;
self-training trains on the kept set only and cannot bring the label back. ISPL's per-class extras (``q/8`` of each
class) come from the *unassigned* samples, so they do not help once a component has taken a class whole. On a toy
whose first component takes two easy classes whole, the defense removes both from a clean training set
(``tests/test_weak_learners.py``). On clean CIFAR-10 at chapter 12's settings every component holds every class, but
unevenly, and the clean samples the vote removes (more than half) are lost to learners too weak on the labels their
component holds few of; at four times the learning rate, self-training loses four classes whole
(``bench/weak_learner_votes.py``, bench/README).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .. import provenance
from ..cache import Cache
from ..data import ImageSet
from ..train import TrainConfig, augment_batch, autocast, fit, prepare_whitening, resolve_device, to_float
from .base import check_train, data_digest

ModelFactory = Callable[[int], nn.Module]  #: seed -> a fresh, untrained model


# ------------------------------------------------------------------------------------------ pure helpers
def n_iterations(q_base: float) -> int:
    """ISPL iterations for a component that should hold ``q_base`` of the remaining set: ``2 + max(1, min(3,
    ⌊1/q_base⌋))`` (the paper's "2 + min(3, 1/p)", read as its authors' code does; A-Q4)."""
    if not 0 < q_base <= 1:
        raise ValueError(f"q_base must lie in (0, 1], got {q_base}")
    return 2 + max(1, min(3, int(np.floor(1.0 / q_base + 1e-9))))


def trim_schedule(q_base: float, n_iter: int) -> list[float]:
    """The share kept after each ISPL iteration: ``min(3, max(1, N - 2 - t)) · q_base`` clipped to [0, 1]
    (3q, 2q, q, q, q for N = 5: starts loose, anneals to the component size; A-Q5)."""
    if n_iter < 1:
        raise ValueError(f"n_iter must be >= 1, got {n_iter}")
    return [float(np.clip(min(3, max(1, n_iter - 2 - t)) * q_base, 0.0, 1.0)) for t in range(n_iter)]


def trim(losses: np.ndarray, y: np.ndarray, q: float, num_classes: int) -> np.ndarray:
    """Boolean mask of the samples at or below the ``q``-quantile of ``losses``, plus, in every class, those at or
    below the class's ``q/8``-quantile (so no class vanishes from a component). Quantiles are numpy's linear ones."""
    losses = np.asarray(losses, dtype=np.float64)
    y = np.asarray(y)
    if losses.shape != y.shape or losses.ndim != 1:
        raise ValueError(f"losses and y must be 1-D of one length, got {losses.shape} and {y.shape}")
    if not 0 <= q <= 1:
        raise ValueError(f"q must lie in [0, 1], got {q}")
    if len(losses) == 0:
        return np.zeros(0, dtype=bool)
    keep = losses <= np.quantile(losses, q)
    for c in range(num_classes):
        rows = y == c
        if rows.any():
            keep |= rows & (losses <= np.quantile(losses[rows], q / 8))
    return keep


def modal_vote(preds: np.ndarray, num_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``preds`` (learners × samples) the most frequent label, ties broken uniformly at random, and
    how many learners cast it."""
    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[0] < 1:
        raise ValueError(f"preds must be (learners, samples) with at least one learner, got {preds.shape}")
    counts = np.zeros((preds.shape[1], num_classes), dtype=np.int64)
    for row in preds:
        np.add.at(counts, (np.arange(preds.shape[1]), row), 1)
    best = counts.max(axis=1)
    # a random key per (sample, class) picks uniformly among the tied maxima
    noise = np.random.default_rng(seed).random(counts.shape)
    vote = np.argmax(np.where(counts == best[:, None], noise, -1.0), axis=1)
    return vote, best


def vote_keep(preds: np.ndarray, y: np.ndarray, num_classes: int, min_count: int = 2,
              seed: int = 0) -> np.ndarray:
    """The boosting vote: keep a sample when the learners' modal prediction is its label and at least
    ``min_count`` learners cast it (``cnt > 1`` of the authors' code; A-Q8)."""
    vote, count = modal_vote(preds, num_classes, seed)
    return (vote == np.asarray(y)) & (count >= min_count)


def boost_homogeneous(errors: np.ndarray, sizes: np.ndarray, rule: str = "below") -> np.ndarray:
    """The paper's Algorithm 1 on precomputed errors: ``errors[i, k]`` is the mean 0-1 error on set ``k`` of the
    learners trained on set ``i`` (binary labels, chance = 1/2); ``sizes[k] = |S_k|``.

    Learner ``i`` vouches for set ``k`` with weight ``|S_i|`` when its error there is below chance (``rule``
    'below', the reading that makes Theorem 4.8's proof work) or above it ('above', the inequality as printed;
    A-Q3). Returns the boolean "primary" flag of every set: vouched for by more than half of all samples.
    """
    errors = np.asarray(errors, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.float64)
    if errors.ndim != 2 or errors.shape[0] != errors.shape[1] or errors.shape[0] != len(sizes):
        raise ValueError(f"errors must be (N, N) and sizes (N,), got {errors.shape} and {sizes.shape}")
    if rule not in ("below", "above"):
        raise ValueError(f"rule must be 'below' or 'above', got {rule!r}")
    vouch = errors < 0.5 if rule == "below" else errors > 0.5
    support = (sizes[:, None] * vouch).sum(axis=0)
    return support > sizes.sum() / 2


def removal_counts(kept: np.ndarray, is_poison: np.ndarray) -> dict[str, int]:
    """False positives (clean samples removed) and false negatives (poisoned samples kept) of a kept-mask."""
    kept = np.asarray(kept, dtype=bool)
    is_poison = np.asarray(is_poison, dtype=bool)
    if kept.shape != is_poison.shape:
        raise ValueError(f"kept and is_poison must have one shape, got {kept.shape} and {is_poison.shape}")
    return {"fp": int(np.sum(~kept & ~is_poison)), "fn": int(np.sum(kept & is_poison)),
            "kept": int(kept.sum()), "removed": int((~kept).sum())}


def _logits_of_views(model: nn.Module, x: np.ndarray, device, augment: str, seed: int, batch_size: int):
    """Yield (start row, float32 logits) per batch of ``x`` in eval mode, optionally on augmented views."""
    dev = resolve_device(device)
    model.to(dev).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            xb = augment_batch(to_float(torch.from_numpy(x[i:i + batch_size]).to(dev)), augment, gen)
            with autocast(dev):
                logits = model(xb)
            yield i, logits.float()


def per_sample_loss(model: nn.Module, images: ImageSet, device: str | torch.device = "auto",
                    augment: str = "none", seed: int = 0, batch_size: int = 1000) -> np.ndarray:
    """Cross-entropy of every image under ``model`` in eval mode, optionally on augmented views (the authors' code
    scores training samples on augmented views; A-Q6). NaN losses become the mean of the finite ones."""
    out = [F.cross_entropy(logits, torch.from_numpy(images.y[i:i + len(logits)]).to(logits.device),
                           reduction="none").cpu()
           for i, logits in _logits_of_views(model, images.x, device, augment, seed, batch_size)]
    loss = torch.cat(out).numpy() if out else np.zeros(0, np.float32)
    bad = ~np.isfinite(loss)
    if bad.any():
        loss[bad] = loss[~bad].mean() if (~bad).any() else 0.0
    return loss


def predict_views(model: nn.Module, x: np.ndarray, device: str | torch.device = "auto", augment: str = "none",
                  seed: int = 0, batch_size: int = 1000) -> np.ndarray:
    """Predicted labels in eval mode, optionally on augmented views (see :func:`per_sample_loss`)."""
    out = [logits.argmax(1).cpu() for _, logits in _logits_of_views(model, x, device, augment, seed, batch_size)]
    return torch.cat(out).numpy() if out else np.zeros(0, np.int64)


# ------------------------------------------------------------------------------------------ the defense
@dataclass(frozen=True)
class EnsembleConfig:
    """Settings of the defense. Defaults are the paper's (Part II A.4); the chapters' CPU profile shrinks them.

    ``components`` K per bag, each about ``0.96/K`` of the data; ``bags`` independent ISPL passes; ``alpha`` the
    thinning rate of the trimmed set between ISPL iterations; ``eta`` the loss momentum; ``warmup_epochs`` for the
    first ISPL iteration, ``iter_epochs`` for later ones; ``learner_epochs`` per weak learner; a bag stops when at
    most ``min_active`` samples are left unassigned; ``spl_rounds`` × ``spl_epochs`` of self-training with score
    momentum ``spl_momentum``; ``min_count`` learners must cast the modal vote. Training inside the defense uses
    SGD at a constant ``lr`` (momentum 0.9, ``weight_decay``, no label smoothing), batch ``batch_size`` and
    ``augment``; ``eval_augment`` scores losses and votes on augmented views (the authors' code) instead of the
    images themselves.
    """

    components: int = 8
    bags: int = 3
    alpha: float = 0.25
    eta: float = 0.9
    warmup_epochs: int = 8
    iter_epochs: int = 4
    learner_epochs: int = 40
    min_active: int = 2000
    spl_rounds: int = 20
    spl_epochs: int = 5
    spl_momentum: float = 0.8
    min_count: int = 2
    lr: float = 0.02
    weight_decay: float = 5e-4
    batch_size: int = 128
    augment: str = "crop_flip"
    eval_augment: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("components", "bags", "warmup_epochs", "iter_epochs", "learner_epochs", "spl_epochs",
                     "min_count", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.spl_rounds < 0 or self.min_active < 0:
            raise ValueError("spl_rounds and min_active must be >= 0")
        for name in ("alpha", "eta", "spl_momentum"):
            v = getattr(self, name)
            if not 0 <= v <= 1 or (name == "alpha" and v == 0):
                raise ValueError(f"{name} must lie in {'(0, 1]' if name == 'alpha' else '[0, 1]'}, got {v}")
        self.train_config(1)  # validates lr, augment ...

    @property
    def component_share(self) -> float:
        """q₀: each component's share of the *full* set (0.96/K, the authors' code)."""
        return 0.96 / self.components

    def train_config(self, epochs: int, seed: int = 0) -> TrainConfig:
        return TrainConfig(epochs=epochs, batch_size=self.batch_size, lr=self.lr, momentum=0.9, nesterov=False,
                           weight_decay=self.weight_decay, label_smoothing=0.0, schedule="constant",
                           augment=self.augment, seed=seed)

    @property
    def eval_mode(self) -> str:
        return self.augment if self.eval_augment else "none"


@dataclass
class Component:
    """One ISPL component and its weak learner."""

    bag: int
    index: int
    rows: np.ndarray  #: training rows of the component (the trimmed set)
    active: int  #: unassigned samples when it was peeled off
    preds: np.ndarray  #: the weak learner's prediction for every training sample
    seconds: float


@dataclass
class EnsembleResult:
    """What the defense decided. Masks are over the training set."""

    components: list[Component]
    vote_kept: np.ndarray  #: kept by the boosting vote
    spl_kept: list[np.ndarray] = field(default_factory=list)  #: kept after each self-training round
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def kept(self) -> np.ndarray:
        """The final kept set (after the last self-training round, or the vote when there is none)."""
        return self.spl_kept[-1] if self.spl_kept else self.vote_kept

    @property
    def preds(self) -> np.ndarray:
        return np.stack([c.preds for c in self.components])

    def per_class(self, y: np.ndarray, num_classes: int, clean: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """(components × classes) the images of each label (as given, ``y``) in each component, and each component's
        weak learner's accuracy (%) on the ``clean`` samples (a mask; default: all) of each class."""
        y = np.asarray(y)
        clean = np.ones(len(y), dtype=bool) if clean is None else np.asarray(clean, dtype=bool)
        held = np.stack([np.bincount(y[c.rows], minlength=num_classes) for c in self.components])
        acc = np.array([[np.mean(c.preds[clean & (y == k)] == k) * 100 for k in range(num_classes)]
                        for c in self.components])
        return held, acc


class WeakLearnerEnsemble:
    """The defense of Part II A: :meth:`run` returns which training samples to keep (:class:`EnsembleResult`).

    ``model_fn(seed)`` builds a fresh model; ``cache`` (default: the project cache) stores every weak learner and
    the self-training result, so a run resumes after the last finished learner.
    """

    def __init__(self, config: EnsembleConfig | None = None, device: str | torch.device = "auto",
                 progress: bool = True, cache: Cache | None = None):
        self.config = config or EnsembleConfig()
        self.device = resolve_device(device)
        self.progress = progress
        self.cache = cache or Cache()

    # ------------------------------------------------------------------ ISPL
    def _component(self, model_fn: ModelFactory, train: ImageSet, active: np.ndarray, q_base: float,
                   first: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """ISPL on the ``active`` rows: returns (component rows, the weak learner's predictions on all rows)."""
        cfg = self.config
        rng = np.random.default_rng(seed)
        n_iter = n_iterations(q_base)
        schedule = trim_schedule(q_base, n_iter)
        theta = model_fn(seed)
        avg = np.zeros(len(active))
        sub = active[rng.random(len(active)) < 0.5] if first else active
        sub_active = train.subset(active)
        kept = np.ones(len(active), dtype=bool)
        for t in range(n_iter):
            if len(sub):
                fit(theta, train.subset(sub), cfg.train_config(cfg.warmup_epochs if t == 0 else cfg.iter_epochs,
                                                               seed + t), self.device, progress=False)
            loss = per_sample_loss(theta, sub_active, self.device, cfg.eval_mode, seed + t)
            avg = cfg.eta * avg + (1 - cfg.eta) * loss
            kept = trim(avg, sub_active.y, schedule[t], len(train.classes))
            sub = active[kept][rng.random(int(kept.sum())) < cfg.alpha]
        rows = active[kept]
        learner = model_fn(seed + 1000)
        fit(learner, train.subset(rows), cfg.train_config(cfg.learner_epochs, seed + 1000), self.device,
            progress=False)
        return rows, predict_views(learner, train.x, self.device, cfg.eval_mode, seed + 2000)

    def _cached_component(self, model_fn: ModelFactory, train: ImageSet, digest: str, model_key: str, bag: int,
                          e: int, active: np.ndarray) -> Component:
        cfg = self.config
        q_base = min(1.0, cfg.component_share * len(train) / len(active))
        seed = cfg.seed + 100 * bag + e
        key = {"data": digest, "model": model_key, "config": dataclasses.asdict(cfg), "bag": bag, "component": e,
               "active": hashlib.sha256(active.astype(np.int64).tobytes()).hexdigest()}

        def build(folder):
            start = time.perf_counter()
            rows, preds = self._component(model_fn, train, active, q_base, first=len(active) == len(train),
                                          seed=seed)
            np.savez(folder / "component.npz", rows=rows, preds=preds)
            return {"seconds": round(time.perf_counter() - start, 1),
                    "provenance": provenance.collect(self.device, seed=seed)}

        def load(folder):
            with np.load(folder / "component.npz") as z:
                return z["rows"], z["preds"]

        res = self.cache.get_or_build("weak_learner", key, build, load)
        rows, preds = res.value
        return Component(bag, e, rows, len(active), preds, float(res.info.get("seconds", 0.0)))

    def components(self, model_fn: ModelFactory, train: ImageSet, model_key: str,
                   digest: str | None = None) -> list[Component]:
        """Every bag's ISPL components and weak learners (cached one by one). ``digest`` is
        :func:`data_digest` of ``train`` when the caller has it already."""
        cfg = self.config
        digest = digest or data_digest(train)
        out = []
        bar = tqdm(total=cfg.bags * cfg.components, desc="weak learners", unit="learner",
                   disable=not self.progress)
        for bag in range(cfg.bags):
            active = np.arange(len(train))
            for e in range(cfg.components):
                if len(active) <= cfg.min_active:
                    break
                comp = self._cached_component(model_fn, train, digest, model_key, bag, e, active)
                out.append(comp)
                active = np.setdiff1d(active, comp.rows, assume_unique=True)
                bar.update(1)
        bar.close()
        return out

    # ------------------------------------------------------------------ vote and self-training
    def self_train(self, model_fn: ModelFactory, train: ImageSet, kept: np.ndarray) -> list[np.ndarray]:
        """SPL: the kept mask after each of ``spl_rounds`` rounds (fresh optimiser per round, one model)."""
        cfg = self.config
        score = np.full(len(train), 0.5)
        theta = model_fn(cfg.seed + 5000)
        history = []
        for r in tqdm(range(cfg.spl_rounds), desc="self-training", unit="round", disable=not self.progress):
            if kept.any():
                fit(theta, train.subset(np.flatnonzero(kept)), cfg.train_config(cfg.spl_epochs, cfg.seed + 5000 + r),
                    self.device, progress=False)
            else:  # nothing kept, nothing to train on: a whitened network still needs its first layer to predict
                prepare_whitening(theta, train, cfg.seed + 5000, self.device)
            pred = predict_views(theta, train.x, self.device, cfg.eval_mode, cfg.seed + 6000 + r)
            score = cfg.spl_momentum * score + (1 - cfg.spl_momentum) * (pred == train.y)
            kept = score > 0.5
            history.append(kept.copy())
        return history

    def detect(self, model_fn: ModelFactory, train: ImageSet, model_key: str = "") -> np.ndarray:
        """(N,) bool: the training samples the ensemble does not keep (the suspected poison), from :meth:`run` (whose
        learners are cached on disk, so a second call trains nothing)."""
        return ~self.run(model_fn, train, model_key).kept

    def run(self, model_fn: ModelFactory, train: ImageSet, model_key: str = "") -> EnsembleResult:
        """Isolate the clean data of ``train``. ``model_key`` names the architecture ``model_fn`` builds (it enters
        the cache keys: two architectures must not share a learner)."""
        check_train(train, len(train.classes))
        cfg = self.config
        if len(train) <= cfg.min_active:
            raise ValueError(f"the training set ({len(train)} images) must be larger than min_active "
                             f"({cfg.min_active})")
        seconds: dict[str, float] = {}
        start = time.perf_counter()
        digest = data_digest(train)
        comps = self.components(model_fn, train, model_key, digest)
        seconds["components"] = round(time.perf_counter() - start, 1)
        preds = np.stack([c.preds for c in comps])
        vote = vote_keep(preds, train.y, len(train.classes), cfg.min_count, cfg.seed)
        key = {"data": digest, "model": model_key, "config": dataclasses.asdict(cfg),
               "vote": hashlib.sha256(vote.tobytes()).hexdigest()}

        def build(folder):
            t0 = time.perf_counter()
            hist = self.self_train(model_fn, train, vote)
            np.save(folder / "spl.npy", np.stack(hist) if hist else np.zeros((0, len(train)), bool))
            return {"seconds": round(time.perf_counter() - t0, 1),
                    "provenance": provenance.collect(self.device, seed=cfg.seed)}

        res = self.cache.get_or_build("weak_learner_spl", key, build, lambda f: np.load(f / "spl.npy"))
        seconds["self_training"] = float(res.info.get("seconds", 0.0))
        return EnsembleResult(comps, vote, list(res.value), seconds)


# ------------------------------------------------------------------------------------------ ITLM baseline
def itlm_keep(model_fn: ModelFactory, train: ImageSet, keep_ratio: float, rounds: int = 4, first_epochs: int = 80,
              epochs: int = 40, config: TrainConfig | None = None, device: str | torch.device = "auto",
              progress: bool = True) -> list[np.ndarray]:
    """Iterative trimmed loss minimisation (Shen & Sanghavi 2019), the paper's extra baseline: train a fresh model
    (``first_epochs`` in round 1, ``epochs`` later) on the kept set, keep the ``keep_ratio`` lowest-loss share of
    the *whole* set, repeat ``rounds`` times. Returns the kept mask after each round (the last is the filter).

    ``config`` gives the optimiser (its ``epochs`` and ``seed`` are replaced per round); the paper keeps 98 / 96 /
    92 % for 5 / 10 / 20 % of the source class poisoned.
    """
    check_train(train, len(train.classes))
    if not 0 < keep_ratio <= 1:
        raise ValueError(f"keep_ratio must lie in (0, 1], got {keep_ratio}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    config = config or TrainConfig()
    kept = np.ones(len(train), dtype=bool)
    history = []
    for r in tqdm(range(rounds), desc="ITLM", unit="round", disable=not progress):
        model = model_fn(config.seed + r)
        fit(model, train.subset(np.flatnonzero(kept)),
            dataclasses.replace(config, epochs=first_epochs if r == 0 else epochs, seed=config.seed + r),
            device, progress=False)
        loss = per_sample_loss(model, train, device)
        kept = loss <= np.quantile(loss, keep_ratio)
        history.append(kept.copy())
    return history
