"""Neural Cleanse: Wang et al., *Neural Cleanse: Identifying and Mitigating Backdoor Attacks in Neural Networks*
(IEEE S&P 2019), §4-6; SPEC-related-defenses B.3.9 (mode "original"). Discussed, not run, by Chan & Ong (2019).

For every label t, search for the smallest patch that sends clean images of the other classes to t: a mask
m ∈ [0, 1]^{H×W} (shared by the channels) and a pattern p ∈ [0, 1]^{3×H×W} stamp an image as x·(1 − m) + p·m, and
Adam minimises cross-entropy towards t plus λ_t·‖m‖₁. λ_t adapts per label (the authors' schedule): it starts at
``init_cost`` and is multiplied by ``cost_multiplier`` after ``patience`` checks in a row at which the stamp reached
``attack_threshold`` success, divided by ``cost_multiplier ** 1.5`` after ``patience`` checks without. A backdoor
is a shortcut, so its label needs a much smaller mask than the others: labels whose smallest successful ‖m‖₁ lies
far below the median (anomaly index — median absolute deviation with the 1.4826 consistency constant, lower side
only — above 2) are flagged. The repair ("unlearning") fine-tunes the model on clean data in which a fraction of the
images carry the reversed trigger with their correct label.

All labels are optimised together: one forward pass per step evaluates the K stamped copies of a batch.

What the defender must know: a small clean data set. A trigger that is not a small patch (a full-image blend) has no
small mask, which is why Chan & Ong argue that Neural Cleanse does not cover large poisons.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..data import ImageSet
from ..gradients import frozen_weights
from ..train import TrainConfig, autocast, fit, resolve_device, to_float
from .base import CLEAN_FINETUNE, Arrays, LabelDetector, Memo, check_train, scan_key

MAD_CONSTANT = 1.4826


@dataclass
class ReversedTriggers(Arrays):
    """The smallest successful trigger found for every label (K labels)."""

    masks: np.ndarray  #: (K, H, W) in [0, 1]
    patterns: np.ndarray  #: (K, 3, H, W) in [0, 1]
    l1: np.ndarray  #: (K,) ‖m‖₁ of the kept mask
    success: np.ndarray  #: (K,) attack success of the kept trigger on the clean images of the other labels (%)
    reached: np.ndarray  #: (K,) bool — the trigger reached ``attack_threshold`` (else the last one is kept)
    anomaly: np.ndarray  #: (K,) anomaly index (0 on the upper side and for labels that never reached)
    flagged: np.ndarray  #: (K,) bool — anomaly index above the detection threshold


def anomaly_index(l1: np.ndarray, reached: np.ndarray | None = None) -> np.ndarray:
    """Neural Cleanse's anomaly index (K,): (median − ℓ) / (1.4826 · MAD) for ℓ below the median, 0 otherwise.

    Only labels with ``reached`` True enter the median and MAD and get an index (the others get 0)."""
    l1 = np.asarray(l1, dtype=np.float64)
    reached = np.ones(len(l1), dtype=bool) if reached is None else np.asarray(reached, dtype=bool)
    if reached.shape != l1.shape or l1.ndim != 1:
        raise ValueError(f"l1 and reached must be 1-D of equal shape, got {l1.shape} and {reached.shape}")
    out = np.zeros(len(l1))
    if reached.sum() < 3:
        return out
    vals = l1[reached]
    med = np.median(vals)
    mad = MAD_CONSTANT * np.median(np.abs(vals - med))
    if mad <= 0:
        return out
    out[reached] = np.maximum(med - vals, 0.0) / mad
    return out


def stamp(x: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """x·(1 − m) + p·m for images (..., 3, H, W), a mask (..., 1, H, W) and a pattern (..., 3, H, W)."""
    return x * (1 - mask) + pattern * mask


@dataclass
class _Search:
    """The state of the joint search over the K labels: the unconstrained mask and pattern parameters (mask =
    sigmoid(a), pattern = sigmoid(b); the authors use tanh/2 + 1/2), each label's cost, the best successful trigger
    so far and the counters of the cost schedule."""

    a: torch.Tensor
    b: torch.Tensor
    cost: torch.Tensor
    best_l1: torch.Tensor
    best_m: torch.Tensor
    best_p: torch.Tensor
    best_succ: torch.Tensor
    up: torch.Tensor
    down: torch.Tensor
    hits: torch.Tensor
    count: torch.Tensor
    last_succ: torch.Tensor

    @classmethod
    def start(cls, k: int, hw: tuple[int, int], init_cost: float, gen: torch.Generator, dev) -> _Search:
        h, w = hw
        a = torch.full((k, 1, h, w), -3.0, device=dev, requires_grad=True)
        b = (torch.rand((k, 3, h, w), generator=gen) * 2 - 1).to(dev).requires_grad_(True)

        def zeros(dtype=torch.float32) -> torch.Tensor:
            return torch.zeros(k, dtype=dtype, device=dev)

        return cls(a, b, cost=torch.full((k,), init_cost, device=dev),
                   best_l1=torch.full((k,), float("inf"), device=dev),
                   best_m=torch.sigmoid(a.detach()).clone(), best_p=torch.sigmoid(b.detach()).clone(),
                   best_succ=zeros(), up=zeros(torch.long), down=zeros(torch.long), hits=zeros(), count=zeros(),
                   last_succ=zeros())


class NeuralCleanse(LabelDetector):
    """Neural Cleanse with validated parameters (the authors' defaults except the number of steps).

    Parameters
    ----------
    steps:
        Optimisation steps (each one batch of clean images, stamped for all K labels at once; >= 1).
    batch_size:
        Clean images per step (>= 1).
    lr:
        Adam learning rate (> 0; 0.1, betas (0.5, 0.9)).
    init_cost:
        Starting λ of the L1 mask penalty (> 0; 1e-3).
    cost_multiplier:
        λ is multiplied by this after ``patience`` successful checks and divided by its 1.5th power after
        ``patience`` unsuccessful ones (> 1; 1.5).
    patience:
        Consecutive checks before λ changes (>= 1).
    check_every:
        Steps between checks of the attack success (>= 1; an "epoch" of the original schedule).
    attack_threshold:
        Success rate, in (0, 1], a trigger must reach to count (0.99).
    anomaly_threshold:
        A label is flagged when its anomaly index exceeds this (> 0; 2).
    unlearn_fraction:
        Fraction of the clean images stamped with the reversed trigger in the unlearning repair, in (0, 1) (0.2).
    finetune:
        How the unlearning fine-tunes (default :data:`CLEAN_FINETUNE`).
    num_classes, seed, device, progress:
        K; seed of the pattern initialisation and batch order; "auto"/"cpu"/"cuda"; progress bars.
    """

    def __init__(self, steps: int = 300, batch_size: int = 32, lr: float = 0.1, init_cost: float = 1e-3,
                 cost_multiplier: float = 1.5, patience: int = 3, check_every: int = 10,
                 attack_threshold: float = 0.99, anomaly_threshold: float = 2.0, unlearn_fraction: float = 0.2,
                 finetune: TrainConfig = CLEAN_FINETUNE, num_classes: int = 10, seed: int = 0,
                 device: str | torch.device = "auto", progress: bool = True):
        for name, value in (("steps", steps), ("batch_size", batch_size), ("patience", patience),
                            ("check_every", check_every)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not init_cost > 0:
            raise ValueError(f"init_cost must be > 0, got {init_cost}")
        if not cost_multiplier > 1:
            raise ValueError(f"cost_multiplier must be > 1, got {cost_multiplier}")
        if not 0 < attack_threshold <= 1:
            raise ValueError(f"attack_threshold must lie in (0, 1], got {attack_threshold}")
        if not anomaly_threshold > 0:
            raise ValueError(f"anomaly_threshold must be > 0, got {anomaly_threshold}")
        if not 0 < unlearn_fraction < 1:
            raise ValueError(f"unlearn_fraction must lie in (0, 1), got {unlearn_fraction}")
        if not isinstance(finetune, TrainConfig):
            raise ValueError(f"finetune must be a TrainConfig, got {type(finetune).__name__}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.steps, self.batch_size, self.lr, self.init_cost = steps, batch_size, float(lr), float(init_cost)
        self.cost_multiplier, self.patience, self.check_every = float(cost_multiplier), patience, check_every
        self.attack_threshold, self.anomaly_threshold = float(attack_threshold), float(anomaly_threshold)
        self.unlearn_fraction, self.finetune, self.num_classes, self.seed = float(unlearn_fraction), finetune, \
            num_classes, seed
        self.device = resolve_device(device)
        self.progress = progress
        self._memo = Memo()

    def config(self) -> dict:
        """The parameters that determine the results (for cache keys and provenance)."""
        keys = ("steps", "batch_size", "lr", "init_cost", "cost_multiplier", "patience", "check_every",
                "attack_threshold", "anomaly_threshold", "unlearn_fraction", "num_classes", "seed")
        return {"method": "neural_cleanse", **{k: getattr(self, k) for k in keys},
                "finetune": dataclasses.asdict(self.finetune)}

    def reverse_engineer(self, model: nn.Module, clean: ImageSet) -> ReversedTriggers:
        """The smallest successful mask and pattern for every label, optimised jointly (one pass per step): each step
        stamps a batch with every label's trigger (:meth:`_step`); every ``check_every`` steps the labels' costs
        adapt and the smallest successful masks are kept (:meth:`_check`); :meth:`_result` reads them out."""
        check_train(clean, self.num_classes, "clean")
        dev = self.device
        model.to(dev).eval()
        x_all = to_float(torch.from_numpy(clean.x)).to(dev)
        y_all = torch.from_numpy(clean.y).to(dev)
        gen = torch.Generator().manual_seed(self.seed)
        st = _Search.start(self.num_classes, tuple(x_all.shape[2:]), self.init_cost, gen, dev)
        opt = torch.optim.Adam([st.a, st.b], lr=self.lr, betas=(0.5, 0.9))
        with frozen_weights(model):
            for step in tqdm(range(self.steps), desc="reverse-engineering triggers", disable=not self.progress):
                idx = torch.randint(0, len(x_all), (min(self.batch_size, len(x_all)),), generator=gen).to(dev)
                m, p, l1 = self._step(model, opt, st, x_all[idx], y_all[idx])
                if (step + 1) % self.check_every == 0:
                    with torch.no_grad():
                        self._check(st, m, p, l1)
        return self._result(st)

    def _step(self, model: nn.Module, opt: torch.optim.Optimizer, st: _Search, xb: torch.Tensor,
              yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One Adam step on every label's mask and pattern; counts the stamped images sent to each label. Returns the
        masks, patterns and mask norms the step was taken from."""
        k_all = self.num_classes
        h, w = xb.shape[2:]
        labels = torch.arange(k_all, device=xb.device)
        m, p = torch.sigmoid(st.a), torch.sigmoid(st.b)
        xs = stamp(xb[None], m[:, None], p[:, None]).reshape(-1, 3, h, w)
        with autocast(self.device):  # bf16 where the device computes it natively (train.precision)
            logits = model(xs.contiguous(memory_format=torch.channels_last))
        logits = logits.float().reshape(k_all, len(xb), -1)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.repeat_interleave(len(xb)),
                             reduction="none").reshape(k_all, len(xb))
        valid = (yb[None, :] != labels[:, None]).float()  # images of label t do not count for t
        n_valid = valid.sum(1).clamp(min=1)
        l1 = m.sum(dim=(1, 2, 3))
        loss = ((ce * valid).sum(1) / n_valid + st.cost * l1).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            st.hits += ((logits.argmax(-1) == labels[:, None]).float() * valid).sum(1)
            st.count += valid.sum(1)
        return m, p, l1

    def _check(self, st: _Search, m: torch.Tensor, p: torch.Tensor, l1: torch.Tensor) -> None:
        """The authors' cost schedule, per label: keep the trigger when it succeeds with a smaller mask than the best
        so far; raise the cost after ``patience`` successful checks in a row, lower it after as many failures."""
        succ = st.hits / st.count.clamp(min=1)
        ok = succ >= self.attack_threshold
        better = ok & (l1 < st.best_l1)
        st.best_l1 = torch.where(better, l1, st.best_l1)
        st.best_m[better], st.best_p[better], st.best_succ[better] = m[better], p[better], succ[better]
        st.up, st.down = torch.where(ok, st.up + 1, 0), torch.where(ok, 0, st.down + 1)
        st.cost = torch.where(st.up >= self.patience, st.cost * self.cost_multiplier, st.cost)
        st.cost = torch.where(st.down >= self.patience, st.cost / self.cost_multiplier**1.5, st.cost)
        st.up = torch.where(st.up >= self.patience, 0, st.up)
        st.down = torch.where(st.down >= self.patience, 0, st.down)
        st.last_succ = succ
        st.hits.zero_()
        st.count.zero_()

    def _result(self, st: _Search) -> ReversedTriggers:
        """The best trigger of every label (the last one where no trigger ever succeeded), its anomaly index and
        the labels flagged."""
        reached = torch.isfinite(st.best_l1)
        with torch.no_grad():
            m_last, p_last = torch.sigmoid(st.a), torch.sigmoid(st.b)
            st.best_m[~reached], st.best_p[~reached] = m_last[~reached], p_last[~reached]
            l1_out = torch.where(reached, st.best_l1, m_last.sum(dim=(1, 2, 3)))
            succ_out = torch.where(reached, st.best_succ, st.last_succ)
        l1_np, reached_np = l1_out.cpu().numpy(), reached.cpu().numpy()
        anomaly = anomaly_index(l1_np, reached_np)
        return ReversedTriggers(st.best_m[:, 0].cpu().numpy(), st.best_p.cpu().numpy(), l1_np,
                                100.0 * succ_out.cpu().numpy(), reached_np, anomaly,
                                anomaly > self.anomaly_threshold)

    def triggers(self, model: nn.Module, clean: ImageSet) -> ReversedTriggers:
        """:meth:`reverse_engineer`, computed once for the same model and clean data and reused by
        :meth:`score_labels`, :meth:`detect_labels` and :meth:`repair`."""
        return self._memo(scan_key("triggers", model, clean), lambda: self.reverse_engineer(model, clean))

    def score_labels(self, model: nn.Module, clean: ImageSet) -> np.ndarray:
        """(K,) anomaly index of every label, higher = more suspicious."""
        return self.triggers(model, clean).anomaly

    def detect_labels(self, model: nn.Module, clean: ImageSet) -> np.ndarray:
        """(K,) bool: the labels flagged as backdoor targets (anomaly index above ``anomaly_threshold``)."""
        return self.triggers(model, clean).flagged

    def unlearning_offsets(self, clean: ImageSet, triggers: ReversedTriggers) -> tuple[np.ndarray, np.ndarray]:
        """(offsets (M, 3, H, W), offset_index (N,)) that stamp a seeded ``unlearn_fraction`` of ``clean`` with the
        reversed trigger of a flagged label (labels unchanged): m·(p − x) added to image x, exactly."""
        flagged = np.flatnonzero(triggers.flagged)
        if len(flagged) == 0:
            raise ValueError("no label is flagged: there is no reversed trigger to unlearn")
        rng = np.random.default_rng(self.seed)
        chosen = np.sort(rng.choice(len(clean), size=max(1, int(round(self.unlearn_fraction * len(clean)))),
                                    replace=False))
        which = flagged[np.arange(len(chosen)) % len(flagged)]
        x = clean.x[chosen].astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        m, p = triggers.masks[which][:, None], triggers.patterns[which]
        offsets = (m * (p - x)).astype(np.float32)
        offset_index = np.full(len(clean), -1, dtype=np.int64)
        offset_index[chosen] = np.arange(len(chosen))
        return offsets, offset_index

    def repair(self, model: nn.Module, clean: ImageSet, triggers: ReversedTriggers | None = None) -> nn.Module:
        """Unlearning: fine-tune a copy of ``model`` on ``clean`` with the flagged labels' reversed triggers stamped on
        ``unlearn_fraction`` of the images, correct labels kept. ``triggers`` defaults to :meth:`triggers` (the scan
        reused). When no label is flagged there is nothing to unlearn: an unchanged copy of ``model`` is returned."""
        triggers = triggers if triggers is not None else self.triggers(model, clean)
        if not triggers.flagged.any():
            return copy.deepcopy(model)
        offsets, offset_index = self.unlearning_offsets(clean, triggers)
        new = copy.deepcopy(model)
        fit(new, clean, self.finetune, self.device, progress=self.progress, offsets=offsets,
            offset_index=offset_index)
        return new
