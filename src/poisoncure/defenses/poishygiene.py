"""PoisHygiene: Chen et al., *PoisHygiene: Detecting and Mitigating Poisoning Attacks in Neural Networks*
(paper 004), §3-6 and Algorithm 1; SPEC-related-defenses Part II B.3 (DETECT, MITIGATE) with the choices of B.5.

The defender holds the suspect model T and one or more weak *reference* models R_1..R_k that stand for healthy
decision regions (a model of T's architecture trained on a little clean data, or models of other architectures).
A poisoned label y owns an extra region of input space — where the trigger lives — that T maps to y and a healthy
model does not. PoisHygiene looks for it with random probe images: for every label y, probes are first pushed out
of y's region under T (cross-entropy L_T(x, y) > 3), then optimised to make T say y while the references keep
disagreeing,

    minimise  L_T(x, y) − Σ_j λ_j · L_{R_j}(x, y)        (paper Eqs. 2-3),

until L_T(x, y) ≤ β and L_{R_j}(x, y) ≥ γ_j for every j. ``Prob(y)``, the fraction of probes that get there, is
high for an infected label (probes find the poisoned region) and low for a healthy one (where T says y, so do the
references). A label is infected when Prob(y) > τ = 0.5. γ_j is half of the largest loss an ascent on L_{R_j}
reaches; λ_j is calibrated so that the two terms grow at the same rate (B-Q5, B-Q6).

Mitigation (§6): for every other label y_o craft images that T still maps to the infected label y_t but the
reference maps to y_o (paper Eq. 5), label them y_o, and fine-tune T on them plus 10 % of the clean training data.

Everything is batched: the probes of all labels form one tensor, every loss is per sample, and one backward pass
per step gives every probe its own gradient (the models run in eval mode, so the probes do not interact).
Probes live in [0, 1] pixel space and are projected back after each step (B-Q2); ``grey=True`` optimises one
channel and repeats it, for grey data sets stored as three equal channels (the library's Fashion-MNIST).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..data import ImageSet, balanced_subset
from ..train import FitHistory, TrainConfig, autocast, evaluate, fit, resolve_device
from .base import Arrays, LabelDetector, Memo, model_digest

#: MITIGATE's fine-tuning (B.3 step 5, the paper's Table-19 optimiser): five epochs, SGD 0.01, momentum 0.9,
#: batch 128, no augmentation or label smoothing.
MITIGATE_FINETUNE = TrainConfig(epochs=5, batch_size=128, lr=0.01, momentum=0.9, nesterov=False,
                                weight_decay=0.0, label_smoothing=0.0, schedule="constant", warmup=0.0,
                                augment="none", seed=0)
OPTIMIZERS = ("adam", "gd")
#: Adam's epsilon on the probes. A confident model's cross-entropy has gradients of e^-30 and below; with the
#: usual 1e-8 Adam would stop moving exactly where the ascent has to start (the references' γ, phase 1).
ADAM_EPS = 1e-20


@dataclass
class HygieneScan(Arrays):
    """DETECT's outcome on one suspect model (K labels, M probes per label, k reference models)."""

    prob: np.ndarray  #: (K,) fraction of probes that reached the poisoned-region criterion
    infected: np.ndarray  #: (K,) bool — prob > tau
    lambdas: np.ndarray  #: (k, K) calibrated weights of the reference losses
    gammas: np.ndarray  #: (k, K) reference-loss thresholds (rho_gamma x the attainable maximum)
    success: np.ndarray  #: (K, M) bool — which probes succeeded
    loss_model: np.ndarray  #: (K, M) L_T(x, y) of each final probe
    loss_refs: np.ndarray  #: (k, K, M) L_{R_j}(x, y) of each final probe
    probes: np.ndarray  #: (K, M, 3, H, W) float32 final probes in [0, 1]

    @property
    def model_infected(self) -> bool:
        return bool(self.infected.any())

    @property
    def suspect(self) -> int:
        """The label with the highest Prob (ties: the lowest index)."""
        return int(np.argmax(self.prob))


@dataclass
class Mitigation:
    """MITIGATE's outcome: the fine-tuned model and what it was fine-tuned on."""

    model: nn.Module
    crafted: ImageSet  #: the crafted images (uint8) labelled with their non-infected label y_o
    crafted_success: float  #: fraction of crafted candidates that met both loss conditions (the others dropped)
    clean_images: int  #: size of the clean subset (D_10)
    history: FitHistory


def train_reference(model: nn.Module, clean: ImageSet, validation: ImageSet, goal: float,
                    config: TrainConfig = MITIGATE_FINETUNE, max_epochs: int = 20,
                    device: str | torch.device = "auto") -> tuple[nn.Module, list[float]]:
    """A weak healthy reference (B.2, [rec]): train ``model`` in place on ``clean`` one epoch at a time and stop as
    soon as its accuracy on ``validation`` reaches ``goal`` % (the paper's references are only 60-76 % accurate:
    a reference that fits too well shares the suspect's quirks, one that is too weak disagrees everywhere).

    ``config`` gives the optimiser (its ``epochs`` is ignored; epoch ``e`` uses seed ``config.seed + e``).
    Returns the model and the validation accuracy after each epoch; stops after ``max_epochs`` even when the
    goal is not reached (check the last accuracy)."""
    if not 0 < goal <= 100:
        raise ValueError(f"goal must lie in (0, 100], got {goal}")
    if max_epochs < 1:
        raise ValueError(f"max_epochs must be >= 1, got {max_epochs}")
    accuracies: list[float] = []
    for e in range(max_epochs):
        fit(model, clean, dataclasses.replace(config, epochs=1, seed=config.seed + e), device, progress=False)
        accuracies.append(evaluate(model, validation, device=device).clean_accuracy)
        if accuracies[-1] >= goal:
            break
    return model, accuracies


def clean_subset(clean: ImageSet, fraction: float, seed: int = 0) -> ImageSet:
    """MITIGATE's clean set D_10: ``fraction`` x |clean| images, balanced over the labels ``clean`` holds."""
    present = [int(c) for c in np.unique(clean.y)]
    per_class = max(1, int(round(fraction * len(clean) / len(present))))
    return balanced_subset(clean, per_class, seed=seed, classes=present)


Losses = list[torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], Losses]  #: (images, rows) -> per-sample losses of those rows
CombineFn = Callable[[Losses, torch.Tensor], torch.Tensor]  #: (losses, rows) -> per-sample objective
StopFn = Callable[[Losses, torch.Tensor], torch.Tensor]  #: (losses, rows) -> bool per row (or None for watch)


def _per_sample_ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy; the network's pass in the library's precision (bf16 where native), the loss in
    float32. The probes go in channels_last, as every other batch of the library does: on the CPU an NCHW batch
    takes oneDNN's slow paths (max-pooling about ten times slower), and a scan 1.2-1.4 times longer
    (bench/README.md)."""
    x = x.contiguous(memory_format=torch.channels_last)
    with autocast(x.device):
        logits = model(x)
    return F.cross_entropy(logits.float(), y, reduction="none")


class PoisHygiene(LabelDetector):
    """PoisHygiene's DETECT and MITIGATE with validated parameters (defaults: the book's CPU settings).

    Parameters
    ----------
    probes:
        Probes per label, M (>= 1; the paper uses 100, 10 suffice in most cases — its Fig. 11).
    steps:
        MaxIters of phase 2, the probe optimisation (>= 1; the spec's 1000, 300 for CPU runs).
    warm_steps:
        Limit W of phase 1, the ascent that pushes probes out of the label's region (>= 0).
    calibration_steps:
        Ascent steps of each γ and λ calibration run (>= 1; the paper's 1000).
    calibration_rounds:
        Fixed-point rounds of the λ calibration (>= 1; 3).
    lr:
        Step size on the probes (> 0; 0.01, in [0, 1] pixel units).
    optimizer:
        ``"adam"`` (default: robust to the loss scale) or ``"gd"`` (the paper's plain gradient steps).
    beta:
        A probe must bring L_T(x, y) to at most this (> 0; 0.2).
    rho_gamma:
        γ_j = rho_gamma x the largest L_{R_j}(x, y) an ascent reaches, in (0, 1] (0.5).
    tau:
        A label is infected when Prob > tau, in [0, 1) (0.5).
    warm_loss:
        Phase 1 pushes probes until L_T(x, y) exceeds this (> 0; 3, a confidence below e^-3).
    init_mean, init_std:
        Gaussian probe initialisation per pixel, clipped to [0, 1] (defaults 0.5 and 0.25).
    grey:
        Optimise one channel and repeat it over three (grey data sets stored as RGB).
    clip:
        Project probes to [0, 1] after every step (``False`` lets them leave the image domain).
    chunk:
        Probes per forward pass (None: all K·M at once).
    seed, device, progress:
        Seed of the probe initialisation; "auto"/"cpu"/"cuda"; progress bars.
    """

    def __init__(self, probes: int = 10, steps: int = 300, warm_steps: int = 300, calibration_steps: int = 300,
                 calibration_rounds: int = 3, lr: float = 0.01, optimizer: str = "adam", beta: float = 0.2,
                 rho_gamma: float = 0.5, tau: float = 0.5, warm_loss: float = 3.0, init_mean: float = 0.5,
                 init_std: float = 0.25, grey: bool = False, clip: bool = True, chunk: int | None = None,
                 seed: int = 0, device: str | torch.device = "auto", progress: bool = True):
        for name, value, low in (("probes", probes, 1), ("steps", steps, 1), ("warm_steps", warm_steps, 0),
                                 ("calibration_steps", calibration_steps, 1),
                                 ("calibration_rounds", calibration_rounds, 1)):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value}")
        for name, value in (("lr", lr), ("beta", beta), ("warm_loss", warm_loss), ("init_std", init_std)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if not 0 < rho_gamma <= 1:
            raise ValueError(f"rho_gamma must lie in (0, 1], got {rho_gamma}")
        if not 0 <= tau < 1:
            raise ValueError(f"tau must lie in [0, 1), got {tau}")
        if not 0 <= init_mean <= 1:
            raise ValueError(f"init_mean must lie in [0, 1], got {init_mean}")
        if chunk is not None and chunk < 1:
            raise ValueError(f"chunk must be >= 1 or None, got {chunk}")
        self.probes, self.steps, self.warm_steps = int(probes), int(steps), int(warm_steps)
        self.calibration_steps, self.calibration_rounds = int(calibration_steps), int(calibration_rounds)
        self.lr, self.optimizer, self.beta, self.rho_gamma, self.tau = lr, optimizer, beta, rho_gamma, tau
        self.warm_loss, self.init_mean, self.init_std = warm_loss, init_mean, init_std
        self.grey, self.clip, self.chunk, self.seed = grey, clip, chunk, seed
        self.device = resolve_device(device)
        self.progress = progress
        self._memo = Memo()

    def config(self) -> dict:
        """Every parameter that changes the result (for cache keys and result files)."""
        keys = ("probes", "steps", "warm_steps", "calibration_steps", "calibration_rounds", "lr", "optimizer",
                "beta", "rho_gamma", "tau", "warm_loss", "init_mean", "init_std", "grey", "clip", "seed")
        return {k: getattr(self, k) for k in keys}

    # ----------------------------------------------------------------------------------- optimisation core
    def _init(self, n: int, shape: tuple[int, int, int], generator: torch.Generator) -> torch.Tensor:
        c = 1 if self.grey else shape[0]
        z = torch.randn((n, c, *shape[1:]), generator=generator) * self.init_std + self.init_mean
        return z.clamp_(0.0, 1.0).to(self.device)

    def _image(self, z: torch.Tensor, channels: int) -> torch.Tensor:
        return z.expand(-1, channels, -1, -1) if self.grey else z

    def _optimise(self, z0: torch.Tensor, channels: int, losses: LossFn, combine: CombineFn, steps: int,
                  stop: StopFn | None = None, watch: StopFn | None = None, desc: str = "") -> torch.Tensor:
        """Minimise the per-sample objective ``combine(losses(x, rows), rows)`` over the probes ``z`` for ``steps``
        steps.

        ``losses(x, rows)`` returns the per-sample losses (a list of (n,) tensors) of the probes ``rows`` (indices
        into ``z0``; ``x`` holds their images), which the objective, ``stop`` and ``watch`` read, so each step
        costs one forward and one backward pass. ``stop(losses, rows)`` (n,) bool, evaluated before each step,
        freezes the probes it marks (they keep their value: the "break" of Algorithm 1) and drops them from the
        later passes, so a step costs only what is still moving; the loop ends early when every probe is frozen.
        ``watch`` sees the losses of every iterate (used to record the largest loss reached). Returns the final
        probes (N, c, H, W), detached."""
        z = z0.clone().requires_grad_(True)
        opt = (torch.optim.Adam([z], lr=self.lr, eps=ADAM_EPS) if self.optimizer == "adam"
               else torch.optim.SGD([z], lr=self.lr))
        rows = torch.arange(len(z), device=z.device)  # the probes still moving
        frozen = torch.zeros(len(z), dtype=torch.bool, device=z.device)
        for _ in tqdm(range(steps), desc=desc, unit="step", disable=not self.progress, mininterval=5.0,
                      leave=False):
            values = losses(self._image(z[rows], channels), rows)
            detached = [v.detach() for v in values]
            if watch is not None:
                watch(detached, rows)
            if stop is not None:
                done = stop(detached, rows)
                if bool(done.any()):
                    frozen[rows[done]] = True
                    rows, values = rows[~done], [v[~done] for v in values]
            if len(rows) == 0:
                break
            keep = z.detach().clone()
            opt.zero_grad(set_to_none=True)
            combine(values, rows).sum().backward(inputs=[z])  # gradients for the moving probes only
            opt.step()
            with torch.no_grad():
                z[frozen] = keep[frozen]  # Adam's momentum would otherwise move frozen probes
                if self.clip:
                    z.clamp_(0.0, 1.0)
        return z.detach()

    def _losses(self, models: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor) -> Losses:
        """Per-sample cross-entropy of every model on (x, y), in chunks of ``chunk`` probes; list of (N,)."""
        size = self.chunk or len(x)
        outs: list[list[torch.Tensor]] = [[] for _ in models]
        for i in range(0, len(x), size):
            for out, m in zip(outs, models, strict=True):
                out.append(_per_sample_ce(m, x[i:i + size], y[i:i + size]))
        return [torch.cat(o) for o in outs]

    # ----------------------------------------------------------------------------------- DETECT, steps 2-3
    def gammas(self, refs: Sequence[nn.Module] | nn.Module, shape: tuple[int, int, int] = (3, 32, 32),
               num_classes: int = 10) -> np.ndarray:
        """γ (k, K): ``rho_gamma`` x the largest L_{R_j}(x, y) reached by ``calibration_steps`` ascent steps
        from M Gaussian starts per label (B-Q5). They depend on the references only."""
        refs = self._prepare(refs)
        gen = torch.Generator().manual_seed(self.seed + 1)
        y = self._labels(num_classes)
        out = np.zeros((len(refs), num_classes))
        for j, ref in enumerate(refs):
            best = torch.full((len(y),), -np.inf, device=self.device)

            def watch(v, rows, best=best):
                best[rows] = torch.maximum(best[rows], v[0])

            z = self._optimise(self._init(len(y), shape, gen), shape[0],
                               lambda x, rows, ref=ref: [_per_sample_ce(ref, x, y[rows])], lambda v, rows: -v[0],
                               self.calibration_steps, watch=watch, desc=f"gamma of reference {j + 1}")
            with torch.no_grad():  # the last iterate is not seen by watch inside the loop
                watch([_per_sample_ce(ref, self._image(z, shape[0]), y)], torch.arange(len(y), device=self.device))
            out[j] = self.rho_gamma * best.view(num_classes, self.probes).amax(1).cpu().numpy()
        return out

    def calibrate(self, model: nn.Module, refs: Sequence[nn.Module] | nn.Module,
                  shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10) -> np.ndarray:
        """λ (k, K) per label: start at 1/k, then ``calibration_rounds`` times ascend L_T + Σ_j λ_j L_{R_j} for
        ``calibration_steps`` steps from fresh Gaussian probes and set λ_j = mean L_T / (k · mean L_{R_j})
        (B-Q6), so that the model's and the references' losses grow at the same rate.

        A label on which the ascent cannot raise the suspect's loss at all (it stays exactly 0 on every probe: the
        suspect is saturated there, as a noise-blend backdoor makes it on noise-like probes) keeps its previous λ,
        1/k at first: a ratio of 0 would drop the references from its objective. With Adam on the probes only the
        direction of that objective matters, so the exact positive value is immaterial."""
        model, refs = self._prepare(model)[0], self._prepare(refs)
        k = len(refs)
        gen = torch.Generator().manual_seed(self.seed + 2)
        y = self._labels(num_classes)
        lam = torch.full((k, num_classes), 1.0 / k, device=self.device)
        for r in range(self.calibration_rounds):
            w = lam[:, y]  # (k, N)
            z = self._optimise(self._init(len(y), shape, gen), shape[0],
                               lambda x, rows: self._losses([model, *refs], x, y[rows]),
                               lambda v, rows, w=w: -(v[0] + sum(w[j, rows] * v[1 + j] for j in range(k))),
                               self.calibration_steps, desc=f"lambda, round {r + 1}")
            with torch.no_grad():
                lt, *lr = self._losses([model, *refs], self._image(z, shape[0]), y)
                mt = lt.view(num_classes, self.probes).mean(1)
                raised = mt > 0  # False: the suspect's loss stayed exactly 0 on every probe of the label
                for j in range(k):
                    ratio = mt / (k * lr[j].view(num_classes, self.probes).mean(1).clamp_min(1e-6))
                    lam[j] = torch.where(raised, ratio, lam[j])
        lam = lam.cpu().numpy().astype(np.float64)
        if not (np.isfinite(lam).all() and (lam > 0).all()):
            raise FloatingPointError(f"the λ calibration produced a weight that is not positive and finite: {lam}")
        return lam

    # ----------------------------------------------------------------------------------- DETECT, steps 4-8
    def scan(self, model: nn.Module, refs: Sequence[nn.Module] | nn.Module, shape: tuple[int, int, int] = (3, 32, 32),
             num_classes: int = 10, gammas: np.ndarray | None = None) -> HygieneScan:
        """DETECT on ``model`` with reference model(s) ``refs`` for inputs of ``shape`` (C, H, W).

        ``gammas`` (k, K) may be passed when already known (:meth:`gammas` depends on the references only, so
        one computation serves every suspect model scanned against the same references)."""
        refs = self._prepare(refs)
        model = self._prepare(model)[0]
        k = len(refs)
        gam = self.gammas(refs, shape, num_classes) if gammas is None else np.asarray(gammas, dtype=np.float64)
        if gam.shape != (k, num_classes):
            raise ValueError(f"gammas must have shape ({k}, {num_classes}), got {gam.shape}")
        lam = self.calibrate(model, refs, shape, num_classes)
        gen = torch.Generator().manual_seed(self.seed)
        y = self._labels(num_classes)
        lam_rows = torch.as_tensor(lam, dtype=torch.float32, device=self.device)[:, y]
        gam_rows = torch.as_tensor(gam, dtype=torch.float32, device=self.device)[:, y]

        def losses(x, rows):
            return self._losses([model, *refs], x, y[rows])

        def success(v, rows):
            ok = v[0] <= self.beta
            for j in range(k):
                ok &= v[1 + j] >= gam_rows[j, rows]
            return ok

        # phase 1: out of the label's region under T (probes already out are frozen)
        z = self._optimise(self._init(len(y), shape, gen), shape[0],
                           lambda x, rows: [_per_sample_ce(model, x, y[rows])],
                           lambda v, rows: -v[0], self.warm_steps, stop=lambda v, rows: v[0] > self.warm_loss,
                           desc="phase 1")
        # phase 2: into T's region of the label, away from the references' (successful probes are frozen)
        z = self._optimise(z, shape[0], losses,
                           lambda v, rows: v[0] - sum(lam_rows[j, rows] * v[1 + j] for j in range(k)),
                           self.steps, stop=success, desc="phase 2")
        with torch.no_grad():
            x = self._image(z, shape[0])
            everyone = torch.arange(len(y), device=self.device)
            values = losses(x, everyone)
            ok = success(values, everyone)
        ok_np = ok.view(num_classes, self.probes).cpu().numpy()
        prob = ok_np.mean(1)
        return HygieneScan(prob=prob, infected=prob > self.tau, lambdas=lam, gammas=gam, success=ok_np,
                           loss_model=values[0].view(num_classes, self.probes).cpu().numpy(),
                           loss_refs=torch.stack(values[1:]).view(k, num_classes, self.probes).cpu().numpy(),
                           probes=x.reshape(num_classes, self.probes, *shape).float().cpu().numpy())

    def cached_scan(self, model: nn.Module, refs: Sequence[nn.Module] | nn.Module,
                    shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10,
                    gammas: np.ndarray | None = None) -> HygieneScan:
        """:meth:`scan`, computed once for the same suspect, references and arguments and reused by
        :meth:`score_labels` and :meth:`detect_labels`."""
        ref_list = [refs] if isinstance(refs, nn.Module) else list(refs)
        key = ("scan", model_digest(model), tuple(model_digest(r) for r in ref_list), tuple(shape), num_classes,
               None if gammas is None else np.asarray(gammas, dtype=np.float64).tobytes())
        return self._memo(key, lambda: self.scan(model, refs, shape, num_classes, gammas))

    def score_labels(self, model: nn.Module, refs: Sequence[nn.Module] | nn.Module, **kwargs) -> np.ndarray:
        """Prob per label (K,): the share of probes that reached the label; higher = more suspicious."""
        return self.cached_scan(model, refs, **kwargs).prob

    def detect_labels(self, model: nn.Module, refs: Sequence[nn.Module] | nn.Module, **kwargs) -> np.ndarray:
        """Infected labels as a boolean mask (K,): Prob above ``tau``."""
        return self.cached_scan(model, refs, **kwargs).infected

    # ----------------------------------------------------------------------------------- MITIGATE
    def craft(self, model: nn.Module, refs: Sequence[nn.Module] | nn.Module, target: int, others: np.ndarray,
              shape: tuple[int, int, int] = (3, 32, 32), c: float = 1.0, d: float = 0.1, restarts: int = 5,
              threshold: float = 0.01, start: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Images that the suspect model sends to ``target`` while the references see ``others[i]`` (paper Eq. 5):

            minimise  L_T(x, target) + c · mean_j L_{R_j}(x, y_o) − d · mean_j L_{R_j}(x, target)

        (the references' losses averaged), ``steps`` optimiser steps per try. A try succeeds when
        L_T(x, target) < ``threshold`` and the references' mean L(x, y_o) < ``threshold``; failed images are
        retried (up to ``restarts`` tries) with c doubled when the references disagree, or c and d halved when
        the model does (B.3's schedule).

        ``others`` (N,) holds y_o for each image; ``start`` (N, C, H, W) optional starting images (e.g.
        successful detection probes), else Gaussian. Returns (images (N, C, H, W) float32 in [0, 1],
        succeeded (N,) bool)."""
        refs = self._prepare(refs)
        model = self._prepare(model)[0]
        yo = torch.as_tensor(np.asarray(others), dtype=torch.long, device=self.device)
        if yo.ndim != 1 or len(yo) == 0:
            raise ValueError("others must be a non-empty 1-D array of labels")
        if (yo == target).any():
            raise ValueError("others must not contain the target label")
        n = len(yo)
        yt = torch.full((n,), int(target), dtype=torch.long, device=self.device)
        gen = torch.Generator().manual_seed(self.seed + 3)
        if start is None:
            z = self._init(n, shape, gen)
        else:
            z = torch.as_tensor(np.asarray(start, dtype=np.float32), device=self.device)
            if z.shape != (n, *shape):
                raise ValueError(f"start must have shape ({n}, {', '.join(map(str, shape))}), got {tuple(z.shape)}")
            z = z[:, :1].clone() if self.grey else z.clone()
        cs = torch.full((n,), float(c), device=self.device)
        ds = torch.full((n,), float(d), device=self.device)
        done = torch.zeros(n, dtype=torch.bool, device=self.device)

        def losses_for(sub):  # L_T(x, target), the references' mean loss at y_o, and at the target
            def losses(x, rows):  # rows index into sub
                lt = _per_sample_ce(model, x, yt[sub][rows])
                at_other = sum(_per_sample_ce(r, x, yo[sub][rows]) for r in refs) / len(refs)
                at_target = sum(_per_sample_ce(r, x, yt[sub][rows]) for r in refs) / len(refs)
                return [lt, at_other, at_target]
            return losses

        def succeeded(v, rows=None):
            return (v[0] < threshold) & (v[1] < threshold)

        for t in range(restarts):
            sub = torch.nonzero(~done).squeeze(1)  # a retry optimises only the images that failed so far
            c_r, d_r = cs[sub], ds[sub]
            objective = lambda v, rows, c=c_r, d=d_r: v[0] + c[rows] * v[1] - d[rows] * v[2]  # noqa: E731
            z[sub] = self._optimise(z[sub], shape[0], losses_for(sub), objective, self.steps, stop=succeeded,
                                    desc=f"craft, try {t + 1}")
            with torch.no_grad():
                v = losses_for(sub)(self._image(z[sub], shape[0]), torch.arange(len(sub), device=self.device))
            model_ok, refs_ok = v[0] < threshold, v[1] < threshold
            done[sub] = succeeded(v)
            if bool(done.all()):
                break
            failed = ~done[sub]
            c_r = torch.where(failed & ~refs_ok, c_r * 2, c_r)
            shrink = failed & ~model_ok
            cs[sub], ds[sub] = torch.where(shrink, c_r / 2, c_r), torch.where(shrink, d_r / 2, d_r)
        x = self._image(z, shape[0]).float().cpu().numpy()
        return x, done.cpu().numpy()

    def mitigate(self, model: nn.Module, refs: Sequence[nn.Module] | nn.Module, target: int, clean: ImageSet,
                 clean_fraction: float = 0.1, crafted_fraction: float = 0.2,
                 finetune: TrainConfig = MITIGATE_FINETUNE, scan: HygieneScan | None = None,
                 **craft_kwargs) -> Mitigation:
        """MITIGATE (B.3): a class-balanced ``clean_fraction`` of ``clean`` (D_10) plus
        ``crafted_fraction`` x |D_10| crafted images (:meth:`craft`, spread evenly over the labels other than
        ``target`` and labelled with them), then ``finetune`` of a copy of ``model``. Labels absent from ``clean``
        (a class the task dropped, as in the Mislabel attack) get neither clean nor crafted images. Crafting
        starts from the successful probes of ``scan`` for the target when given. ``crafted_fraction=0`` crafts
        nothing: the clean-only fine-tuning the paper compares with. Returns a new model; ``model`` is
        unchanged."""
        if not 0 < clean_fraction <= 1:
            raise ValueError(f"clean_fraction must lie in (0, 1], got {clean_fraction}")
        if not 0 <= crafted_fraction <= 1:
            raise ValueError(f"crafted_fraction must lie in [0, 1], got {crafted_fraction}")
        num_classes = len(clean.classes)
        if not 0 <= target < num_classes:
            raise ValueError(f"target must lie in [0, {num_classes - 1}], got {target}")
        d10 = clean_subset(clean, clean_fraction, self.seed)
        others = [int(c) for c in np.unique(d10.y) if c != target]
        n_o = max(1, int(round(crafted_fraction * len(d10) / len(others)))) if crafted_fraction > 0 else 0
        yo = np.repeat(others, n_o)
        shape = (clean.x.shape[3], *clean.x.shape[1:3])
        start = None
        if scan is not None and scan.success[target].any():
            pool = scan.probes[target][scan.success[target]]
            start = pool[np.arange(len(yo)) % len(pool)]
        x, ok = (self.craft(model, refs, target, yo, shape=shape, start=start, **craft_kwargs) if len(yo) else
                 (np.zeros((0, *shape), np.float32), np.zeros(0, bool)))
        crafted = np.clip(np.rint(x[ok].transpose(0, 2, 3, 1) * 255.0), 0, 255).astype(np.uint8)
        crafted_set = ImageSet(crafted, yo[ok].astype(np.int64), clean.classes)
        mixed = ImageSet(np.concatenate([d10.x, crafted_set.x]), np.concatenate([d10.y, crafted_set.y]),
                         clean.classes)
        repaired = copy.deepcopy(model)
        hist = fit(repaired, mixed, finetune, self.device, progress=self.progress)
        return Mitigation(repaired, crafted_set, float(ok.mean()) if len(ok) else 0.0, len(d10), hist)

    # ----------------------------------------------------------------------------------- helpers
    def _labels(self, num_classes: int) -> torch.Tensor:
        """The label of every probe: M probes of label 0, then M of label 1, ... (K·M,)."""
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        return torch.arange(num_classes, device=self.device).repeat_interleave(self.probes)

    def _prepare(self, models: Sequence[nn.Module] | nn.Module) -> list[nn.Module]:
        """One model or a list of them, on the device and in eval mode (dropout off, batch-norm statistics
        fixed, so probes do not interact). Parameters are left as they are: only the probes get gradients."""
        models = [models] if isinstance(models, nn.Module) else list(models)
        if not models:
            raise ValueError("expected at least one model")
        for m in models:
            if not isinstance(m, nn.Module):
                raise ValueError(f"expected a torch model, got {type(m).__name__}")
            m.to(self.device).eval()
        return models


__all__ = ["MITIGATE_FINETUNE", "HygieneScan", "Mitigation", "PoisHygiene", "clean_subset", "train_reference"]
