"""Clean-label "feature collision" poisons: Poison Frog and StingRay as PoisHygiene's experiments run them
(SPEC-related-defenses Part II B.2, B-Q11; PoisHygiene calls both "AP", availability/integrity poisoning).

Both attacks keep every label honest. The attacker takes images of the target class (the *bases*) and nudges
each one until a clean model's penultimate features match those of an image of an *adversarial* class that the
victim's task does not contain (the spec's Fashion-MNIST configuration: bags, removed from the label set, as in
:func:`attacks.poison_mislabel`). The victim trains on the nudged images with their true target label; if it learns
their features the way the clean model does, images of the adversarial class land in the target's region, and
held-out adversarial-class images are classified as the target. Attack success is measured on them.

``frog`` (Shafahi et al. 2018, "Poison Frogs"): the base is first watermarked with its adversarial image at
30 % opacity, then forward-backward splitting minimises

    ‖f(x) − f(t)‖²  +  β · ‖x − b‖²,      β = β₀ · (D_f / D_b)²,  β₀ = 0.25,

with a gradient step on the feature term (step ``lr``) and the closed-form proximal step of the penalty, for at most
``steps`` iterations or until the largest relative change of a poison is below ``tol``.

``stingray`` (Suciu et al. 2018): no watermark and no penalty; projected sign-gradient steps on the feature term
inside an L∞ ball of ``eps`` around the base (step ``step_size``), and each adversarial image gets the not yet used
base nearest to it in feature space.

The papers attack one test image; PoisHygiene's class-level versions (one adversarial image per poison, every
held-out image of the class as the test) are the spec's recommendation, since the paper only says it "exactly
follows" them. Everything runs in batches: one forward and backward pass per step for a whole batch of poisons.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .attacks import AttackSpec, NoTrigger, PoisonedSet, source_target
from .data import ImageSet
from .gradients import features
from .train import predict, resolve_device, to_float

METHODS = ("frog", "stingray")


@dataclass(frozen=True)
class CollisionConfig:
    """Settings of a feature-collision attack (every field enters the cache key of the poisons).

    ``method`` 'frog' or 'stingray'. ``steps`` None means the spec's budget: 1000 iterations for 'frog', 200 for
    'stingray'. 'frog' uses ``lr`` (gradient step on the squared feature distance, [0, 1] pixel units), ``beta0``
    (the penalty's weight before scaling by (D_f / D_b)²), ``watermark`` (opacity of the adversarial image blended
    into the base before optimising) and ``tol`` (stop once no poison changes by more than this fraction of its
    norm in a step). 'stingray' uses ``eps`` (L∞ radius around the base) and ``step_size``. ``batch_size`` poisons
    are optimised at once."""

    method: str = "frog"
    steps: int | None = None
    lr: float = 0.01
    beta0: float = 0.25
    watermark: float = 0.3
    tol: float = 1e-5
    eps: float = 8 / 255
    step_size: float = 1 / 255
    batch_size: int = 600

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.steps is not None and (int(self.steps) != self.steps or self.steps < 1):
            raise ValueError(f"steps must be a positive integer or None, got {self.steps!r}")
        for name in ("lr", "eps", "step_size", "tol"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.beta0 < 0:
            raise ValueError(f"beta0 must be >= 0, got {self.beta0}")
        if not 0 <= self.watermark < 1:
            raise ValueError(f"watermark must lie in [0, 1), got {self.watermark}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def budget(self) -> int:
        return int(self.steps) if self.steps is not None else (1000 if self.method == "frog" else 200)

    def cache_config(self) -> dict[str, Any]:
        """The fields that matter for ``method`` (the other method's settings are left out)."""
        cfg = {**asdict(self), "steps": self.budget}
        unused = ("eps", "step_size") if self.method == "frog" else ("lr", "beta0", "watermark", "tol")
        for k in unused + ("batch_size",):
            del cfg[k]
        return cfg


def _is_grey(x: np.ndarray) -> bool:
    return bool((x[..., :1] == x).all())


def collide(model: nn.Module, bases: np.ndarray, targets: np.ndarray, config: CollisionConfig,
            device: str | torch.device = "auto", progress: bool = False) -> tuple[np.ndarray, dict[str, float]]:
    """Poisons (uint8, like ``bases``) whose penultimate features under ``model`` approach those of ``targets``
    (uint8 (N, 32, 32, 3), one per base), by ``config``'s method. Grey images (three equal channels) stay grey.

    Returns (poisons, stats): ``stats`` holds the mean feature distance ‖f(x) − f(t)‖ before (from the base, or
    the watermarked base for 'frog') and after, the mean distance between the targets and their bases, the
    largest pixel change from the base (L∞, in [0, 1] units) and the iterations run."""
    if bases.shape != targets.shape or bases.ndim != 4 or bases.shape[-1] != 3 or bases.dtype != np.uint8:
        raise ValueError(f"bases and targets must be uint8 arrays of the same shape (N, H, W, 3), got "
                         f"{bases.shape} {bases.dtype} and {targets.shape} {targets.dtype}")
    dev = resolve_device(device)
    was_training = model.training
    model.to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    grey = _is_grey(bases) and _is_grey(targets)
    f_t = torch.from_numpy(features(model, targets, device=dev)).to(dev)
    d_f = f_t.shape[1]
    d_b = int(np.prod(bases.shape[1:]))
    beta = config.beta0 * (d_f / d_b) ** 2
    steps = config.budget
    out = np.empty_like(bases)
    before, after, iters = [], [], 0
    try:
        bar = tqdm(total=len(bases), desc=f"{config.method} poisons", unit="poison", disable=not progress)
        for i in range(0, len(bases), config.batch_size):
            b = to_float(torch.from_numpy(bases[i:i + config.batch_size]).to(dev)).contiguous()
            t = to_float(torch.from_numpy(targets[i:i + config.batch_size]).to(dev)).contiguous()
            ft = f_t[i:i + config.batch_size]
            if grey:
                b, t = b[:, :1], t[:, :1]
            start = (1 - config.watermark) * b + config.watermark * t if config.method == "frog" else b.clone()
            x = start.clone()

            def distance(z: torch.Tensor, ft: torch.Tensor = ft) -> torch.Tensor:
                img = z.expand(-1, 3, -1, -1) if grey else z
                return ((model.embed(img.contiguous(memory_format=torch.channels_last)) - ft) ** 2).sum(1)

            with torch.inference_mode():
                before.append(distance(x).sqrt().cpu())
            for it in range(steps):
                x.requires_grad_(True)
                (g,) = torch.autograd.grad(distance(x).sum(), x)
                with torch.no_grad():
                    prev = x.detach()
                    if config.method == "frog":
                        x = prev - config.lr * g  # forward: a gradient step on the feature term
                        x = (x + config.lr * beta * start) / (1 + config.lr * beta)  # backward: the prox of β‖x−b‖²
                        x = x.clamp(0, 1)
                        change = ((x - prev).flatten(1).norm(dim=1) / prev.flatten(1).norm(dim=1).clamp_min(1e-12))
                        if it > 0 and float(change.max()) < config.tol:
                            break
                    else:
                        x = prev - config.step_size * g.sign()
                        x = torch.minimum(torch.maximum(x, b - config.eps), b + config.eps).clamp(0, 1)
            iters = max(iters, it + 1)
            with torch.inference_mode():
                after.append(distance(x.detach()).sqrt().cpu())
            img = x.detach().expand(-1, 3, -1, -1) if grey else x.detach()
            out[i:i + len(img)] = (img.permute(0, 2, 3, 1) * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
            bar.update(len(img))
        bar.close()
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
        model.train(was_training)
    f_b = features(model, bases, device=dev)
    f_p = features(model, out, device=dev)
    change = np.abs(out.astype(np.int16) - bases.astype(np.int16)).max() / 255.0
    return out, {"distance_before": float(torch.cat(before).mean()), "distance_after": float(torch.cat(after).mean()),
                 "distance_after_uint8": float(np.linalg.norm(f_p - f_t.cpu().numpy(), axis=1).mean()),
                 "base_target_distance": float(np.linalg.norm(f_b - f_t.cpu().numpy(), axis=1).mean()),
                 "max_pixel_change": float(change), "iterations": int(iters)}


def nearest_bases(model: nn.Module, candidates: np.ndarray, targets: np.ndarray,
                  device: str | torch.device = "auto") -> np.ndarray:
    """For each target in turn, the index of the not yet taken candidate nearest to it in ``model``'s penultimate
    feature space (StingRay's base choice). Needs at least as many candidates as targets."""
    if len(candidates) < len(targets):
        raise ValueError(f"{len(targets)} targets need at least as many candidates, got {len(candidates)}")
    fc = torch.from_numpy(features(model, candidates, device=device))
    ft = torch.from_numpy(features(model, targets, device=device))
    dist = torch.cdist(ft, fc)
    chosen = np.empty(len(targets), dtype=np.int64)
    for j in range(len(targets)):
        k = int(dist[j].argmin())
        chosen[j] = k
        dist[:, k] = float("inf")
    return chosen


def plan_clean_label(clean: ImageSet, source: str | int, target: str | int, rate: float, model: nn.Module,
                     method: str, seed: int = 0, device: str | torch.device = "auto"
                     ) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Who is aimed at whom: (source, target, aims, bases), where ``aims`` are the rows of ``clean``'s source images
    the poisons collide with (random, without repetition) and ``bases`` the rows of the target images they replace
    (random for 'frog', nearest to each aim in ``model``'s feature space for 'stingray'). Raises ``ValueError`` for
    an unknown class or method, ``target == source``, ``rate`` outside (0, 1), or more poisons than the source or
    the target class has images."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    s, t = source_target(clean, source, target, rate)
    src_rows, tgt_rows = np.flatnonzero(clean.y == s), np.flatnonzero(clean.y == t)
    n = int(round(rate * len(clean)))
    if not 1 <= n <= min(len(src_rows), len(tgt_rows)):
        raise ValueError(f"rate={rate} of {len(clean)} images asks for {n} poisons; between 1 and "
                         f"{min(len(src_rows), len(tgt_rows))} (the images of the smaller of source and target "
                         f"class) are possible")
    rng = np.random.default_rng(seed)
    aims = rng.choice(src_rows, size=n, replace=False)
    if method == "frog":
        bases = rng.choice(tgt_rows, size=n, replace=False)
    else:
        bases = tgt_rows[nearest_bases(model, clean.x[tgt_rows], clean.x[aims], device)]
    return s, t, aims, bases


def assemble_clean_label(clean: ImageSet, source: int, target: int, rate: float, seed: int, bases: np.ndarray,
                         poisons: np.ndarray) -> PoisonedSet:
    """The poisoned training set: ``clean`` without its source images, with the rows ``bases`` replaced by
    ``poisons`` and their labels untouched (``is_poison`` marks them; the spec's trigger is :class:`NoTrigger`)."""
    if len(bases) != len(poisons) or not np.all(clean.y[bases] == target):
        raise ValueError("every base must be a target-class row of clean, one per poison")
    x = clean.x.copy()
    x[bases] = poisons
    is_poison = np.zeros(len(clean), dtype=bool)
    is_poison[bases] = True
    keep = np.flatnonzero(clean.y != source)
    return PoisonedSet(x[keep], clean.y[keep].copy(), clean.y[keep].copy(), is_poison[keep],
                       AttackSpec(NoTrigger(), int(source), int(target), float(rate), seed))


def poison_clean_label(clean: ImageSet, source: str | int, target: str | int, rate: float, model: nn.Module,
                       config: CollisionConfig, seed: int = 0, device: str | torch.device = "auto",
                       progress: bool = False) -> tuple[PoisonedSet, dict[str, float]]:
    """PoisHygiene's clean-label attack on ``clean``: the ``source`` (adversarial) class leaves the task, and
    ``round(rate * N)`` images of the ``target`` class are replaced by feature-collision poisons (:func:`collide`
    under ``model``, the attacker's clean model), each aimed at a different source image of ``clean``
    (:func:`plan_clean_label`). Labels are untouched: the poisons keep their true label, the target.

    Returns the poisoned set (:func:`assemble_clean_label`: attack success is the share of held-out source images
    classified as the target) and the crafting statistics, with ``kept_label``: the share of poisons ``model``
    itself still classifies as the target (how "clean" the clean label still is)."""
    s, t, aims, bases = plan_clean_label(clean, source, target, rate, model, config.method, seed, device)
    poisons, stats = collide(model, clean.x[bases], clean.x[aims], config, device, progress)
    stats["kept_label"] = kept_label(model, poisons, t, device)
    return assemble_clean_label(clean, s, t, rate, seed, bases, poisons), stats


def kept_label(model: nn.Module, poisons: np.ndarray, target: int, device: str | torch.device = "auto") -> float:
    """Percentage of ``poisons`` that ``model`` classifies as ``target``, their label."""
    return float(100 * np.mean(predict(model, poisons, device=device) == target))


__all__ = ["METHODS", "CollisionConfig", "assemble_clean_label", "collide", "kept_label", "nearest_bases",
           "plan_clean_label", "poison_clean_label"]
