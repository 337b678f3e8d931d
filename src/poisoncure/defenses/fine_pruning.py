"""Fine-Pruning: Liu, Dolan-Gavitt & Garg, *Fine-Pruning: Defending Against Backdooring Attacks on Deep Neural
Networks* (RAID 2018), §4; SPEC-related-defenses B.3.10. Discussed, not run, by Chan & Ong (2019).

A backdoor often lives in channels that clean images leave dormant. Fine-Pruning ranks the channels of the last
convolutional layer by their mean activation on the defender's clean data and removes the least active ones, in
that order, for as long as the clean accuracy stays within ``max_accuracy_drop`` points of the unpruned model's; the
pruned model is then fine-tuned on the same clean data, which also erases backdoor behaviour that pruning left.

Pruning is a per-channel 0/1 mask after the layer (:class:`ChannelMask`), so pruned channels stay at zero during
fine-tuning and the weights of the architecture are untouched.

What the defender must know: a small clean data set (for the ranking, the stopping rule and the fine-tuning).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import metrics
from ..attacks import AttackSpec, triggered_test_set
from ..data import ImageSet
from ..gradients import features
from ..models import Classifier
from ..train import (
    AttackMetrics,
    TrainConfig,
    attack_metrics,
    autocast,
    eval_batch,
    fit,
    predict,
    resolve_device,
    to_float,
)
from .base import CLEAN_FINETUNE, Arrays, Memo, check_train, scan_key

#: Default candidate pruning ratios: 0, 5, ..., 95 % of the channels.
RATIOS = tuple(round(0.05 * i, 2) for i in range(20))


class ChannelMask(nn.Module):
    """Wraps a layer and multiplies its (N, C, H, W) output by a per-channel 0/1 buffer ``keep`` (C,)."""

    def __init__(self, layer: nn.Module, channels: int):
        super().__init__()
        self.layer = layer
        self.register_buffer("keep", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x) * self.keep.view(1, -1, 1, 1).to(x.dtype)


def last_conv_layer(model: nn.Module) -> str:
    """Name of the last child of ``model.features`` that contains a convolution (the layer Fine-Pruning prunes)."""
    feats = getattr(model, "features", None)
    if feats is None:
        raise ValueError("the model has no `features` module; pass `layer` explicitly")
    names = [n for n, m in feats.named_children() if any(isinstance(s, nn.Conv2d) for s in m.modules())]
    if not names:
        raise ValueError("no convolutional layer found in model.features; pass `layer` explicitly")
    return f"features.{names[-1]}"


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def add_channel_mask(model: nn.Module, layer: str, channels: int) -> ChannelMask:
    """Wrap ``model``'s module ``layer`` in place with an all-ones :class:`ChannelMask`; returns the mask module."""
    mask = ChannelMask(model.get_submodule(layer), channels)
    _set_module(model, layer, mask)
    return mask


@dataclass
class Pruning(Arrays):
    """The ranking and the pruning curve on the defender's clean data (C channels, R candidate ratios)."""

    activation: np.ndarray  #: (C,) mean activation of each channel on the clean data
    order: np.ndarray  #: (C,) channels, least active first (the pruning order)
    ratios: np.ndarray  #: (R,) fractions of channels pruned
    clean_accuracy: np.ndarray  #: (R,) accuracy (%) on the defender's clean data at each ratio
    chosen_ratio: float  #: the largest ratio whose accuracy stays within ``max_accuracy_drop`` of ratio 0


class FinePruning:
    """Fine-Pruning with validated parameters.

    Parameters
    ----------
    layer:
        Module name of the layer to prune; None = the last convolutional block (:func:`last_conv_layer`).
    ratios:
        Candidate fractions of channels to prune, each in [0, 1), increasing (default 0, 0.05, ..., 0.95).
    max_accuracy_drop:
        Prune as far as the clean accuracy stays within this many points of the unpruned model's (>= 0; 4,
        our choice: the paper stops "before accuracy degrades" without one number for all tasks).
    finetune:
        How the pruned model is fine-tuned on the clean data (default :data:`CLEAN_FINETUNE`).
    num_classes, device, progress:
        K; "auto" (CUDA when present), "cpu" or "cuda"; progress bars.
    """

    def __init__(self, layer: str | None = None, ratios=RATIOS,
                 max_accuracy_drop: float = 4.0, finetune: TrainConfig = CLEAN_FINETUNE, num_classes: int = 10,
                 device: str | torch.device = "auto", progress: bool = True):
        ratios = np.asarray(ratios, dtype=np.float64)
        if (ratios.ndim != 1 or len(ratios) == 0 or ratios.min() < 0 or ratios.max() >= 1
                or (np.diff(ratios) <= 0).any()):
            raise ValueError(f"ratios must be a non-empty increasing list in [0, 1), got {ratios.tolist()}")
        if not max_accuracy_drop >= 0:
            raise ValueError(f"max_accuracy_drop must be >= 0, got {max_accuracy_drop}")
        if not isinstance(finetune, TrainConfig):
            raise ValueError(f"finetune must be a TrainConfig, got {type(finetune).__name__}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.layer, self.ratios, self.max_accuracy_drop = layer, ratios, float(max_accuracy_drop)
        self.finetune, self.num_classes = finetune, num_classes
        self.device = resolve_device(device)
        self.progress = progress
        self._memo = Memo()

    def config(self) -> dict:
        """The parameters that determine the results (for cache keys and provenance)."""
        return {"method": "fine_pruning", "layer": self.layer, "ratios": self.ratios.tolist(),
                "max_accuracy_drop": self.max_accuracy_drop, "finetune": dataclasses.asdict(self.finetune)}

    def layer_name(self, model: nn.Module) -> str:
        return self.layer if self.layer is not None else last_conv_layer(model)

    def masked_copy(self, model: nn.Module) -> tuple[nn.Module, ChannelMask]:
        """A copy of ``model`` with an all-ones :class:`ChannelMask` on the pruned layer (set ``mask.keep``)."""
        name = self.layer_name(model)
        new = copy.deepcopy(model).to(self.device).eval()
        if isinstance(new.get_submodule(name), ChannelMask):
            return new, new.get_submodule(name)
        channels = self.activations(new, None, name)[1]
        return new, add_channel_mask(new, name, channels)

    def activations(self, model: nn.Module, clean: ImageSet | None, name: str | None = None) -> tuple[np.ndarray, int]:
        """Mean activation (C,) of each channel of the layer over ``clean``, and C (None: one blank image, to count
        the channels)."""
        x = clean.x if clean is not None else np.zeros((1, 32, 32, 3), np.uint8)
        act = features(model, x, name or self.layer_name(model), device=self.device, pool=True).mean(axis=0)
        return act, len(act)

    def prune_curve(self, model: nn.Module, clean: ImageSet) -> Pruning:
        """Rank the channels on ``clean`` and measure the clean accuracy at every candidate ratio."""
        check_train(clean, self.num_classes, "clean")
        act, channels = self.activations(model, clean)
        order = np.argsort(act, kind="stable")
        acc = np.array([metrics.accuracy(p, clean.y) for p in self.predictions(model, order, self.ratios, clean.x)])
        ok = np.flatnonzero(acc >= acc[0] - self.max_accuracy_drop)
        return Pruning(act, order, self.ratios, acc, float(self.ratios[ok.max()]))

    def predictions(self, model: nn.Module, order: np.ndarray, ratios, x_uint8: np.ndarray,
                    batch_size: int | None = None, tta: bool | None = None) -> np.ndarray:
        """Predicted labels (R, N) of ``model`` with the first ``floor(ratio · C)`` channels of ``order`` pruned, for
        each of ``ratios``, on uint8 images (N, 32, 32, 3): what :func:`train.predict` gives for each pruned model
        (eval mode, ``inference_mode``, the same arithmetic and batches; ``tta`` None takes the model's own).

        A mask changes nothing before the pruned layer, so on a :class:`~poisoncure.models.Classifier` whose pruned
        layer is a child of its sequential ``features`` the layers up to it run once per image and only the layers
        after it (pooling and the head) once per ratio; any other model is evaluated whole at each ratio."""
        tta = bool(getattr(model, "tta", False)) if tta is None else tta
        batch_size = eval_batch(self.device) if batch_size is None else batch_size
        masks = [torch.from_numpy(keep_mask(order, r)).to(self.device) for r in ratios]
        split = _split(model, self.layer_name(model))
        if split is None:
            pruned, mask = self.masked_copy(model)
            out = []
            for m in masks:
                mask.keep.copy_(m)
                out.append(predict(pruned, x_uint8, batch_size, self.device, tta))
            return np.stack(out) if out else np.zeros((0, len(x_uint8)), np.int64)
        before, after = split
        model.to(self.device).eval()
        preds = [[] for _ in masks]
        with torch.inference_mode():
            for i in range(0, len(x_uint8), batch_size):
                xb = to_float(torch.from_numpy(x_uint8[i:i + batch_size]).to(self.device))
                with autocast(self.device):
                    views = [before(xb), *([before(xb.flip(3))] if tta else [])]
                    for out, m in zip(preds, masks, strict=True):
                        keep = m.view(1, -1, 1, 1)
                        logits = after(views[0] * keep.to(views[0].dtype))
                        if tta:
                            logits = logits + after(views[1] * keep.to(views[1].dtype))
                        out.append(logits.argmax(1).cpu())
        return torch.stack([torch.cat(p) for p in preds]).numpy() if len(x_uint8) else np.zeros((len(masks), 0),
                                                                                                     np.int64)

    def evaluate_curve(self, model: nn.Module, pruning: Pruning, test: ImageSet,
                       spec: AttackSpec | None = None) -> list[AttackMetrics]:
        """:func:`train.evaluate` of ``model`` pruned at each ratio of ``pruning`` (clean accuracy on ``test`` and,
        with an attack ``spec``, attack success on its triggered base-class images), computed by
        :meth:`predictions`."""
        pred = self.predictions(model, pruning.order, pruning.ratios, test.x)
        trig = triggered_test_set(test, spec) if spec is not None else None
        pred_t = (self.predictions(model, pruning.order, pruning.ratios, trig.x) if trig is not None
                  else [None] * len(pred))
        return [attack_metrics(test, p, spec, trig, pt) for p, pt in zip(pred, pred_t, strict=True)]

    def prune(self, model: nn.Module, pruning: Pruning, ratio: float | None = None) -> nn.Module:
        """A copy of ``model`` with the ``ratio`` (default: the chosen one) least active channels masked."""
        ratio = pruning.chosen_ratio if ratio is None else ratio
        if not 0 <= ratio < 1:
            raise ValueError(f"ratio must lie in [0, 1), got {ratio}")
        pruned, mask = self.masked_copy(model)
        mask.keep.copy_(torch.from_numpy(keep_mask(pruning.order, ratio)))
        return pruned

    def pruning(self, model: nn.Module, clean: ImageSet) -> Pruning:
        """:meth:`prune_curve`, computed once for the same model and clean data and reused by
        :meth:`score_channels`, :meth:`pruned_channels` and :meth:`repair`."""
        return self._memo(scan_key("pruning", model, clean, self.layer), lambda: self.prune_curve(model, clean))

    def score_channels(self, model: nn.Module, clean: ImageSet) -> np.ndarray:
        """(C,) suspicion of each channel of the pruned layer: minus its mean clean activation (dormant first).
        Fine-Pruning judges channels, neither samples nor labels."""
        return -self.pruning(model, clean).activation

    def pruned_channels(self, model: nn.Module, clean: ImageSet) -> np.ndarray:
        """(C,) bool: the channels pruned at the chosen ratio."""
        p = self.pruning(model, clean)
        return keep_mask(p.order, p.chosen_ratio) == 0

    def repair(self, model: nn.Module, clean: ImageSet, pruning: Pruning | None = None) -> nn.Module:
        """Prune at the chosen ratio, then fine-tune on ``clean`` (a new model; the input is unchanged).
        ``pruning`` defaults to :meth:`pruning` (the scan reused)."""
        pruning = pruning if pruning is not None else self.pruning(model, clean)
        pruned = self.prune(model, pruning)
        fit(pruned, clean, self.finetune, self.device, progress=self.progress)
        return pruned


def _split(model: nn.Module, name: str):
    """(before, after) for a :class:`~poisoncure.models.Classifier` whose layer ``name`` is ``features.<i>``, a child
    of a sequential ``features``: ``before(x)`` is that layer's output for inputs in [0, 1], ``after(a)`` the logits
    from it (``after(before(x)) == model(x)``); None for any other model or layer."""
    feats = getattr(model, "features", None)
    prefix, _, index = name.partition(".")
    if (type(model).forward is not Classifier.forward or not isinstance(feats, nn.Sequential) or prefix != "features"
            or not index.isdigit() or int(index) >= len(feats)):
        return None
    i = int(index)
    head, tail = feats[:i + 1], feats[i + 1:]
    return (lambda x: head(model.normalize(x))), (lambda a: model.head(tail(a)))


def keep_mask(order: np.ndarray, ratio: float) -> np.ndarray:
    """float32 (C,) 1 for kept channels, 0 for the ``floor(ratio * C)`` first channels of ``order``."""
    keep = np.ones(len(order), dtype=np.float32)
    keep[order[: int(np.floor(ratio * len(order) + 1e-9))]] = 0.0
    return keep
