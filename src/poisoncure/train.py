"""Training and evaluation on uint8 image arrays (SPEC §2.9, §2.10).

Images stay uint8 (N, 32, 32, 3) until a batch is drawn; each batch is converted to float in [0, 1],
NCHW, channels_last, optionally shifted by a per-sample additive perturbation (counter-poison copies, kept
in float and never re-quantised), augmented on tensors (random crop with 4-pixel padding and/or horizontal flip), and
fed to the model. On CUDA the whole set lives on the GPU. Training and prediction run under bf16 autocast on
CUDA and on CPUs that compute bf16 natively (Intel AMX or AVX512-BF16: measured 3.3x faster training of the
whitened network on a 2-core Intel Xeon), float32 elsewhere (:func:`precision`; ``POISONCURE_PRECISION``
overrides it). Input gradients and representations stay float32 (:mod:`poisoncure.gradients`).
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import metrics
from .attacks import AttackSpec, triggered_test_set
from .data import ImageSet
from .models import fit_whitening, unfitted_whitening

AUGMENTATIONS = ("crop_flip", "flip", "none")
SCHEDULES = ("onecycle", "cosine", "constant")
WHITENING_IMAGES = 5000  #: training images a whitened network's first layer is fitted to
LOOKAHEAD_EVERY = 5  #: steps between two updates of the lookahead's slow weights (airbench's value)


PRECISIONS = ("auto", "fp32", "bf16")
PRECISION_ENV = "POISONCURE_PRECISION"  #: overrides the precision policy: auto, fp32 or bf16


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products natively (the ``amx_bf16`` or ``avx512_bf16`` flag of
    ``/proc/cpuinfo``). Where it does not (AMD EPYC Milan, older Intel, Apple silicon), bf16 autocast on the CPU is
    emulated and slower than float32."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


def precision(device: str | torch.device = "auto") -> str:
    """The arithmetic of training and prediction on ``device``: ``"bf16"`` (autocast) on CUDA and on a CPU with
    native bf16 (:func:`cpu_has_native_bf16`), else ``"fp32"``. The environment variable ``POISONCURE_PRECISION``
    (``auto``, ``fp32``, ``bf16``) overrides it; its value is recorded in every trained model's history and
    provenance, since it changes the numerics (like the CPU model does)."""
    wanted = os.environ.get(PRECISION_ENV, "auto").strip().lower() or "auto"
    if wanted not in PRECISIONS:
        raise ValueError(f"{PRECISION_ENV} must be one of {PRECISIONS}, got {wanted!r}")
    if wanted != "auto":
        return wanted
    dev = resolve_device(device)
    return "bf16" if dev.type == "cuda" or (dev.type == "cpu" and cpu_has_native_bf16()) else "fp32"


def autocast(device: torch.device, prec: str | None = None):
    """``torch.autocast`` for ``device`` in the given (or the policy's) precision; a no-op context for fp32."""
    prec = prec or precision(device)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=prec == "bf16")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained. Every field enters the cache key of the trained model.

    ``lr`` is the peak learning rate; ``schedule`` 'onecycle' warms up linearly over ``warmup`` (a fraction of
    all steps) then decays linearly to 0, 'cosine' decays from the peak with the same warm-up, 'constant'
    keeps ``lr`` throughout (fine-tuning; ``warmup`` is ignored).

    Two parts of K. Jordan's airbench recipe (arXiv:2404.00498, §3), off by default: ``bias_lr_scale``
    multiplies the learning rate of the one-dimensional parameters (batch-norm shifts and biases, which carry no
    weight decay); ``lookahead`` > 0 keeps a slow copy of the weights (parameters and batch-norm statistics) that
    every :data:`LOOKAHEAD_EVERY` steps moves towards the trained ones and replaces them, with a decay that rises
    from 0 to ``lookahead ** LOOKAHEAD_EVERY`` as ``(step / total) ** 3``; the model ends with the slow weights.
    """

    epochs: int = 4
    batch_size: int = 256
    lr: float = 0.2
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    schedule: str = "onecycle"
    warmup: float = 0.2
    augment: str = "flip"
    seed: int = 0
    bias_lr_scale: float = 1.0
    lookahead: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup must lie in [0, 1), got {self.warmup}")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {self.augment!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not self.bias_lr_scale > 0:
            raise ValueError(f"bias_lr_scale must be > 0, got {self.bias_lr_scale}")
        if not 0 <= self.lookahead < 1:
            raise ValueError(f"lookahead must lie in [0, 1) (0 = off), got {self.lookahead}")


@dataclass
class FitHistory:
    """Per-epoch training loss and accuracy (on the augmented, possibly poisoned, training batches)."""

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0
    images_per_second: float = 0.0
    precision: str = "fp32"  #: arithmetic of the forward and backward passes (:func:`precision`)
    epoch_metrics: list[dict] = field(default_factory=list)  #: what ``fit(on_epoch=...)`` returned after each epoch


def to_float(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [0, 1], channels_last memory format."""
    return x_uint8.permute(0, 3, 1, 2).float().div_(255.0).contiguous(memory_format=torch.channels_last)


def augment_batch(x: torch.Tensor, mode: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop (4-pixel zero padding) and/or horizontal flip on a float batch (N, C, H, W).

    Batched: one random offset per image, gathered with advanced indexing; no Python loop over images.
    """
    if mode == "none":
        return x
    n, _, h, w = x.shape
    dev = x.device
    if mode == "crop_flip":
        pad = 4
        xp = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device="cpu").to(dev)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device="cpu").to(dev)
        rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :]
        batch_idx = torch.arange(n, device=dev)[:, None, None, None]
        chan_idx = torch.arange(x.shape[1], device=dev)[None, :, None, None]
        x = xp[batch_idx, chan_idx, rows, cols]
    flip = (torch.rand(n, generator=generator, device="cpu") < 0.5).to(dev)
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x.contiguous(memory_format=torch.channels_last)


def _lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    if cfg.schedule == "constant":
        return 1.0
    warm = max(1, int(cfg.warmup * total))
    if step < warm:
        return (step + 1) / warm
    frac = (step - warm) / max(1, total - warm)
    if cfg.schedule == "onecycle":
        return max(0.0, 1.0 - frac)
    return 0.5 * (1.0 + math.cos(math.pi * frac))


class Lookahead:
    """The slow weights of :attr:`TrainConfig.lookahead`: every floating-point tensor of the model's state
    (parameters and batch-norm running statistics)."""

    def __init__(self, model: nn.Module, rate: float):
        self.rate = rate
        self.fast = [t for t in model.state_dict().values() if t.is_floating_point()]
        self.slow = [t.detach().clone() for t in self.fast]

    def decay(self, step: int, total: int) -> float:
        return self.rate ** LOOKAHEAD_EVERY * (step / total) ** 3

    @torch.no_grad()
    def update(self, decay: float) -> None:
        """Move the slow weights towards the trained ones by ``1 - decay`` and put them back into the model
        (``decay`` 1: the model takes the slow weights as they are)."""
        for slow, fast in zip(self.slow, self.fast, strict=True):
            slow.lerp_(fast, 1.0 - decay)
            fast.copy_(slow)


def _check_offsets(offsets: np.ndarray | None, offset_index: np.ndarray | None, images: ImageSet):
    if (offsets is None) != (offset_index is None):
        raise ValueError("offsets and offset_index must be given together")
    if offsets is None:
        return None, None
    h, w = images.x.shape[1:3]
    offsets = np.asarray(offsets, dtype=np.float32)
    if offsets.ndim != 4 or offsets.shape[1:] != (3, h, w):
        raise ValueError(f"offsets must have shape (M, 3, {h}, {w}), got {offsets.shape}")
    if not np.isfinite(offsets).all():
        raise ValueError("offsets contain NaN or infinity")
    offset_index = np.asarray(offset_index, dtype=np.int64)
    if offset_index.shape != (len(images),):
        raise ValueError(f"offset_index must have shape ({len(images)},), got {offset_index.shape}")
    if len(offset_index) and (offset_index.min() < -1 or offset_index.max() >= len(offsets)):
        raise ValueError(f"offset_index must lie in [-1, {len(offsets) - 1}] (-1 = no offset)")
    # one extra all-zero row, addressed by -1, so a batch is shifted with one gather
    table = np.concatenate([offsets, np.zeros((1, 3, h, w), np.float32)])
    return torch.from_numpy(table), torch.from_numpy(np.where(offset_index < 0, len(offsets), offset_index))


def prepare_whitening(model: nn.Module, images: ImageSet, seed: int = 0, device: str | torch.device = "auto") -> int:
    """Fit every unfitted :class:`models.PatchWhitening` layer of ``model`` to ``WHITENING_IMAGES`` of ``images``
    drawn with ``seed`` (what :func:`fit` does before training a new whitened network; a fitted layer is kept).
    Returns how many layers were fitted."""
    if not unfitted_whitening(model) or len(images) == 0:
        return 0
    dev = resolve_device(device)
    sample = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:WHITENING_IMAGES]
    return fit_whitening(model.to(dev), to_float(torch.from_numpy(images.x)[sample].to(dev)))


def fit(model: nn.Module, images: ImageSet, cfg: TrainConfig, device: str | torch.device = "auto",
        progress: bool = True, offsets: np.ndarray | None = None,
        offset_index: np.ndarray | None = None,
        on_epoch: Callable[[int, nn.Module], dict] | None = None) -> FitHistory:
    """Train ``model`` in place on ``images`` (uint8, labels ``images.y``) with SGD and the configured schedule.

    ``offsets`` (M, 3, H, W) float and ``offset_index`` (N,) int optionally add ``offsets[offset_index[i]]`` to
    image ``i`` (in [0, 1] units, then clipped to [0, 1]) each time it is drawn; ``-1`` means no offset. This
    is how the counter-poison copies of the neutralization step are trained on without storing them.

    ``on_epoch(epoch, model)`` is called after every epoch (1, 2, ...) with the model in eval mode (it returns to
    training mode afterwards); the dicts it returns are kept in :attr:`FitHistory.epoch_metrics` (e.g. test accuracy
    and attack success per epoch, chapter 2). Its time is not counted in :attr:`FitHistory.seconds`; it draws no
    random numbers, so the trained weights are the same with or without it.

    A model with an unfitted :class:`models.PatchWhitening` layer (a new :func:`models.whitened_net`) first has it
    fitted to ``WHITENING_IMAGES`` training images drawn with ``cfg.seed``; a fitted one (fine-tuning) keeps it.
    """
    dev = resolve_device(device)
    table, which = _check_offsets(offsets, offset_index, images)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.to(dev).to(memory_format=torch.channels_last).train()
    x_all = torch.from_numpy(images.x)
    y_all = torch.from_numpy(images.y)
    prepare_whitening(model, images, cfg.seed, dev)
    if dev.type == "cuda":
        x_all, y_all = x_all.to(dev), y_all.to(dev)
        if table is not None:
            table, which = table.to(dev), which.to(dev)
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
                           {"params": no_decay, "weight_decay": 0.0, "lr_scale": cfg.bias_lr_scale}],
                          lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    n = len(images)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    hist = FitHistory(precision=precision(dev))
    slow = Lookahead(model, cfg.lookahead) if cfg.lookahead > 0 else None
    step = 0
    start = time.perf_counter()
    bar = tqdm(total=total, desc="training", unit="batch", disable=not progress, mininterval=5.0)
    paused = 0.0  # seconds spent in on_epoch, left out of the training time
    for epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=gen)
        # running sums stay on the device: a float() per step would wait for the GPU after every batch
        run_loss = torch.zeros((), device=dev)
        run_correct = torch.zeros((), device=dev)
        for i in range(steps_per_epoch):
            idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            if dev.type == "cuda":
                idx = idx.to(dev)
            xb = to_float(x_all[idx].to(dev, non_blocking=True))
            if table is not None:
                xb = (xb + table[which[idx]].to(dev)).clamp_(0.0, 1.0).contiguous(memory_format=torch.channels_last)
            xb = augment_batch(xb, cfg.augment, gen)
            yb = y_all[idx].to(dev, non_blocking=True)
            for group in opt.param_groups:
                group["lr"] = cfg.lr * _lr_factor(step, total, cfg) * group["lr_scale"]
            with autocast(dev, hist.precision):
                logits = model(xb)
                loss = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if slow is not None and step % LOOKAHEAD_EVERY == 0:
                slow.update(slow.decay(step, total))
            run_loss += loss.detach().float() * len(idx)
            run_correct += (logits.detach().argmax(1) == yb).sum()
            bar.update(1)
        hist.loss.append(float(run_loss) / n)
        hist.accuracy.append(100.0 * float(run_correct) / n)
        bar.set_postfix(loss=f"{hist.loss[-1]:.3f}", acc=f"{hist.accuracy[-1]:.1f}")
        if on_epoch is not None:
            t0 = time.perf_counter()
            model.eval()
            hist.epoch_metrics.append(dict(on_epoch(epoch + 1, model)))
            model.train()
            paused += time.perf_counter() - t0
    bar.close()
    if slow is not None:
        slow.update(1.0)  # the trained model is the slow one
    hist.seconds = time.perf_counter() - start - paused
    hist.images_per_second = cfg.epochs * n / hist.seconds
    model.eval()
    return hist


#: images per forward-only pass (predictions, representations, pruning curves) by device type: 256 on the CPU,
#: where smaller batches stay in the caches (``bench/eval_batch.py``: 1.4-2.2x faster than 1,000 on a 2-core AMD
#: EPYC in float32, with identical outputs), 1,000 on CUDA
EVAL_BATCH = {"cpu": 256, "cuda": 1000}


def eval_batch(device: str | torch.device = "auto") -> int:
    """:data:`EVAL_BATCH` for ``device`` (1,000 for a device type not listed)."""
    return EVAL_BATCH.get(resolve_device(device).type, 1000)


def predict(model: nn.Module, x_uint8: np.ndarray, batch_size: int | None = None,
            device: str | torch.device = "auto", tta: bool | None = None) -> np.ndarray:
    """Predicted labels (N,) for uint8 images (N, 32, 32, 3), in eval mode under ``inference_mode``, in batches of
    ``batch_size`` images (None: :func:`eval_batch`).

    ``tta``: flip test-time augmentation — the logits of each image and of its mirror image are summed (a
    trigger off the image's vertical axis is seen at both places; airbench's evaluation does the same). ``None``
    (the default) takes the model's own ``tta`` attribute (:class:`models.Classifier`; a recipe sets it).
    Arithmetic: :func:`precision`."""
    if tta is None:
        tta = bool(getattr(model, "tta", False))
    dev = resolve_device(device)
    batch_size = eval_batch(dev) if batch_size is None else batch_size
    model.to(dev).eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(x_uint8), batch_size):
            xb = to_float(torch.from_numpy(x_uint8[i:i + batch_size]).to(dev))
            with autocast(dev):
                logits = model(xb)
                if tta:
                    logits = logits + model(xb.flip(3))
                out.append(logits.argmax(1).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)


@dataclass
class AttackMetrics:
    """Clean and triggered-test metrics of a model (SPEC §2.10), all in %."""

    clean_accuracy: float  #: top-1 on all clean test images ("Acc All")
    per_class_accuracy: list[float]  #: clean accuracy of each class
    attack_success_rate: float | None  #: triggered base-class test images classified as the target
    poisoned_accuracy: float | None  #: the same images classified as their true base class ("Acc Poisoned")

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(model: nn.Module, test: ImageSet, spec: AttackSpec | None = None,
             device: str | torch.device = "auto", tta: bool | None = None) -> AttackMetrics:
    """Clean accuracy on ``test``; with an attack ``spec`` also attack success and accuracy on triggered
    base-class test images. ``tta``: flip test-time augmentation (:func:`predict`; ``None``: the model's own)."""
    trig = triggered_test_set(test, spec) if spec is not None else None
    return attack_metrics(test, predict(model, test.x, device=device, tta=tta), spec, trig,
                          None if trig is None else predict(model, trig.x, device=device, tta=tta))


def attack_metrics(test: ImageSet, pred: np.ndarray, spec: AttackSpec | None = None,
                   triggered: ImageSet | None = None, pred_triggered: np.ndarray | None = None) -> AttackMetrics:
    """:class:`AttackMetrics` from predictions: ``pred`` on ``test``'s images and, with an attack ``spec``,
    ``pred_triggered`` on ``triggered`` (``triggered_test_set(test, spec)``, made once by the caller): what
    :func:`evaluate` computes from its two predictions."""
    per_class = metrics.per_class_accuracy(pred, test.y, len(test.classes))
    asr = pacc = None
    if spec is not None:
        if triggered is None or pred_triggered is None:
            raise ValueError("an attack spec needs the triggered test set and the predictions on it "
                             "(triggered, pred_triggered)")
        asr = metrics.attack_success_rate(pred_triggered, spec.target)
        pacc = metrics.accuracy(pred_triggered, triggered.y)
    return AttackMetrics(metrics.accuracy(pred, test.y), [float(v) for v in per_class], asr, pacc)


def reinitialise(model: nn.Module, seed: int) -> nn.Module:
    """Reset every parameter and batch-norm statistic of ``model`` in place to a fresh random draw from ``seed``
    (each layer's own ``reset_parameters``): the "retrain from random initialisation" of the baselines."""
    torch.manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "reset_running_stats"):
            m.reset_running_stats()
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return model
