"""What the defenses share: input checks, the array artefacts they return, and the two repairs the baselines use
(retraining from scratch without the removed samples; fine-tuning on the defender's clean data).

The project's defense interface (STYLE): parameters validated at construction (``ValueError`` naming the parameter
and its range); ``score`` returns floats, higher = more suspicious; ``detect`` returns a boolean mask; ``repair``
returns a new model and never changes the one it was given.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
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
    progress: bool
    score_field: str
    flag_field: str

    def representations(self, model: nn.Module, train: ImageSet) -> np.ndarray:
        """(N, d) representations of the training images at ``layer`` (None: the penultimate features)."""
        check_train(train, self.num_classes)
        return features(model, train.x, self.layer, device=self.device)

    def scan(self, model: nn.Module, train: ImageSet):
        """``score_features`` on the model's representations of ``train``."""
        return self.score_features(self.representations(model, train), train.y)

    def score(self, model: nn.Module, train: ImageSet) -> np.ndarray:
        """(N,) suspicion of every training sample, higher = more suspicious."""
        return getattr(self.scan(model, train), self.score_field)

    def detect(self, model: nn.Module, train: ImageSet) -> np.ndarray:
        """(N,) bool: the samples the method flags (and its repair removes)."""
        return getattr(self.scan(model, train), self.flag_field)

    def repair(self, model: nn.Module, train: ImageSet, config: TrainConfig) -> nn.Module:
        """A fresh copy of the architecture trained with ``config`` on the samples not flagged."""
        return retrain_without(model, train, self.detect(model, train), config, self.device, self.progress)[0]
