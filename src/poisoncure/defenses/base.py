"""What the defenses share: input checks, the array artefacts they return, and the two repairs the baselines use
(retraining from scratch without the removed samples; fine-tuning on the defender's clean data).

The project's defense interface (STYLE), the same for every defense of the book:

* parameters are validated at construction (``ValueError`` naming the parameter and its range);
* a **sample detector** (the paper's method, Spectral Signatures, Activation Clustering) judges training samples:
  ``score`` returns one float per sample, higher = more suspicious, and ``detect`` a boolean mask over the samples;
* a **label detector** (Neural Cleanse, Xiang et al.'s reverse engineering, PoisHygiene; the paper's method and
  Activation Clustering also judge labels) gives its verdict per label: ``score_labels`` (one float per label) and
  ``detect_labels`` (a boolean mask over the labels, True = named a backdoor target). A label detector has no
  ``detect``: calling it says which method to use instead;
* ``repair`` returns a **new** model and never changes, or returns, the one it was given;
* ``score``, ``detect``, ``score_labels``, ``detect_labels`` and ``repair`` called one after another on the same
  model and data compute the defense's scan once (:class:`Memo`): the second call reuses it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from ..data import ImageSet
from ..gradients import features
from ..train import FitHistory, TrainConfig, fit, reinitialise

#: Fine-tuning on the defender's small clean set (Neural Cleanse's unlearning, Fine-Pruning's fine-tuning):
#: ten epochs at a constant learning rate of 0.01 (our choice; both papers leave the schedule to the reader).
CLEAN_FINETUNE = TrainConfig(epochs=10, batch_size=64, lr=0.01, momentum=0.9, nesterov=False, weight_decay=5e-4,
                             label_smoothing=0.0, schedule="constant", warmup=0.0, augment="flip", seed=0)


class Arrays:
    """Dataclasses made only of arrays and scalars, saved to / loaded from one ``.npz`` file."""

    def save(self, path: Path) -> None:
        np.savez(path, **{f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self)})

    @classmethod
    def load(cls, path: Path):
        with np.load(path) as z:
            values = {k: (z[k].item() if z[k].ndim == 0 else z[k]) for k in z.files}
        return cls(**values)


T = TypeVar("T")


def data_digest(images: ImageSet) -> str:
    """SHA-256 of a set's pixels and labels (what a scan of it depends on; also the weak learners' cache keys)."""
    if not isinstance(images, ImageSet):
        raise TypeError(f"expected an ImageSet (see pc.image_set), got {type(images).__name__}")
    h = hashlib.sha256(np.ascontiguousarray(images.x).tobytes())
    h.update(np.ascontiguousarray(images.y, dtype=np.int64).tobytes())
    return h.hexdigest()


def model_digest(model: nn.Module) -> str:
    """SHA-256 of a model's parameters and buffers (names, dtypes, shapes, values): it changes whenever any weight or
    batch-norm statistic does, so a scan is never reused for a model trained further in place."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class Memo:
    """The last scan a defense computed and what it was computed from, so that ``score``, ``detect`` and ``repair``
    on the same model and data run the scan once.

    The key holds digests of the model's weights and of the data (:func:`model_digest`, :func:`data_digest`), never
    object identities: a model fine-tuned in place, or an array edited in place, is a different key and is scanned
    again. One entry only (the last), so a defense object does not keep old models alive."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value: Any = None
        self.computed = 0  #: how many times a value was computed rather than reused (for tests)

    def __call__(self, key: tuple, compute: Callable[[], T]) -> T:
        if key != self.key:
            self.value, self.key = compute(), key
            self.computed += 1
        return self.value


def scan_key(method: str, model: nn.Module, data: ImageSet, *extra: Any) -> tuple:
    """The :class:`Memo` key of one scan: the method's name, the model's and the data's digests, and any further
    argument the scan depends on (a layer name, the reference models' digests)."""
    return (method, model_digest(model), data_digest(data), *extra)


class LabelDetector:
    """A defense whose verdict is per label (see the module's interface): ``detect`` is not defined, and calling it
    names the methods to use."""

    def detect(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise TypeError(f"{type(self).__name__} judges labels, not training samples: use detect_labels() for the "
                        f"(K,) mask of labels it names as backdoor targets, score_labels() for their scores")


def check_train(train: ImageSet, num_classes: int, name: str = "train") -> None:
    """``train`` is a non-empty :class:`ImageSet` whose labels lie in [0, num_classes)."""
    if not isinstance(train, ImageSet):
        raise TypeError(f"{name} must be an ImageSet (use PoisonedSet.as_imageset()), got {type(train).__name__}")
    if len(train) == 0:
        raise ValueError(f"{name} is empty")
    if train.y.min() < 0 or train.y.max() >= num_classes:
        raise ValueError(f"{name}: labels must lie in [0, {num_classes - 1}], "
                         f"got range [{train.y.min()}, {train.y.max()}]")


def check_features(reps: np.ndarray, y: np.ndarray, num_classes: int,
                   dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """Representations (N, d) finite, with labels (N,) in [0, num_classes); returned as ``dtype`` / int64."""
    reps = np.asarray(reps)
    y = np.asarray(y)
    if reps.ndim != 2:
        raise ValueError(f"representations must be a 2-D array (N, d), got shape {reps.shape}")
    if y.shape != (len(reps),):
        raise ValueError(f"labels must have shape ({len(reps)},), got {y.shape}")
    if len(reps) == 0:
        raise ValueError("no representations given")
    if not np.isfinite(reps).all():
        raise ValueError("representations contain NaN or infinity")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], got range [{y.min()}, {y.max()}]")
    return reps.astype(dtype, copy=False), y.astype(np.int64)


def retrain_without(model: nn.Module, train: ImageSet, removed: np.ndarray, config: TrainConfig,
                    device="auto", progress: bool = True) -> tuple[nn.Module, FitHistory]:
    """A copy of ``model`` re-initialised (seed ``config.seed + 1``, SPEC-related A-7) and trained from scratch with
    ``config`` on ``train`` minus the samples where ``removed`` (N,) is True."""
    removed = np.asarray(removed, dtype=bool)
    if removed.shape != (len(train),):
        raise ValueError(f"removed must be a boolean mask of shape ({len(train)},), got {removed.shape}")
    if removed.all():
        raise ValueError("every training sample is removed: nothing to retrain on")
    new = reinitialise(copy.deepcopy(model), config.seed + 1)
    hist = fit(new, train.subset(np.flatnonzero(~removed)), config, device, progress=progress)
    return new, hist


class RepresentationDefense:
    """What Spectral Signatures and Activation Clustering share: they read one layer's representation of every
    training image, analyse it per label (``score_features``, defined by each method), flag samples, and repair by
    retraining from scratch without them. Subclasses set ``layer``, ``num_classes``, ``device``, ``progress`` and
    name the result fields holding the score and the flags (``score_field``, ``flag_field``)."""

    layer: str | None
    num_classes: int
    _memo: Memo
    progress: bool
    score_field: str
    flag_field: str

    def representations(self, model: nn.Module, train: ImageSet) -> np.ndarray:
        """(N, d) representations of the training images at ``layer`` (None: the penultimate features)."""
        check_train(train, self.num_classes)
        return features(model, train.x, self.layer, device=self.device)

    def scan(self, model: nn.Module, train: ImageSet):
        """``score_features`` on the model's representations of ``train`` (computed once for the same model, data and
        layer, then reused by :meth:`score`, :meth:`detect` and :meth:`repair`)."""
        return self._memo(scan_key("scan", model, train, self.layer),
                          lambda: self.score_features(self.representations(model, train), train.y))

    def score(self, model: nn.Module, train: ImageSet) -> np.ndarray:
        """(N,) suspicion of every training sample, higher = more suspicious."""
        return getattr(self.scan(model, train), self.score_field)

    def detect(self, model: nn.Module, train: ImageSet) -> np.ndarray:
        """(N,) bool: the samples the method flags (and its repair removes)."""
        return getattr(self.scan(model, train), self.flag_field)

    def repair(self, model: nn.Module, train: ImageSet, config: TrainConfig) -> nn.Module:
        """A fresh copy of the architecture trained with ``config`` on the samples not flagged (the scan reused)."""
        return retrain_without(model, train, self.detect(model, train), config, self.device, self.progress)[0]
