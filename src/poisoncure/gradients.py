"""Per-sample input gradients, one backward pass per batch (SPEC §3(a), Algorithm G).

For a classifier ``f`` in eval mode with frozen parameters, the gradient of the summed cross-entropy with
respect to a batch of inputs has, in row ``i``, exactly the gradient of sample ``i``'s own loss: batch-norm
uses its running statistics in eval mode, so samples do not interact. One backward pass therefore yields the
whole batch of per-sample gradients. The network's passes follow the library's precision policy
(:func:`poisoncure.train.precision`: bf16 autocast on CUDA and on CPUs with native bf16, float32 elsewhere); the
softmax and cross-entropy are computed in float32 from the logits, so their small tail probabilities do not
underflow, and the gradients are returned in float32 (bench/README.md measures the agreement with float32 passes
and its effect on the paper's scan). Gradients live in [0, 1] pixel space because normalisation is inside the model.
Representations (:func:`features`) stay float32: the SVDs downstream read them directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import check_images
from .train import autocast, eval_batch, resolve_device, to_float


def _labels(labels: int | np.ndarray, n: int, num_classes: int) -> np.ndarray:
    """Broadcast a label choice (one class for all, or one per sample) to an int64 array (n,), validated."""
    y = np.full(n, labels, dtype=np.int64) if np.ndim(labels) == 0 else np.asarray(labels, dtype=np.int64)
    if y.shape != (n,):
        raise ValueError(f"labels must be one int or an array of shape ({n},), got shape {y.shape}")
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], got range [{y.min()}, {y.max()}]")
    return y


#: Images per backward pass when none is given, per device type: on the CPU, batches of 256 compute the same
#: gradients faster than batches of 500 (bench/eval_layout.py, AMD EPYC build machine: single passes 1.08-1.40x, the
#: paper's whole bf16 scan 1.03x); on CUDA larger batches keep the GPU busy.
DEFAULT_BATCH = {"cpu": 256, "cuda": 500}


def default_batch(device: str | torch.device = "auto") -> int:
    """:data:`DEFAULT_BATCH` for ``device`` (500 for a device type not listed)."""
    return DEFAULT_BATCH.get(resolve_device(device).type, 500)


def input_gradients(model: nn.Module, x_uint8: np.ndarray, labels: int | np.ndarray, batch_size: int | None = None,
                    device: str | torch.device = "auto", num_classes: int = 10) -> np.ndarray:
    """Gradients of the cross-entropy w.r.t. the input pixels, one row per image.

    Parameters
    ----------
    model:
        A classifier taking (N, 3, 32, 32) images in [0, 1].
    x_uint8:
        uint8 images (N, 32, 32, 3).
    labels:
        The cross-entropy target: one class for every image (e.g. the base class), or an array (N,) of per-sample
        labels (e.g. each sample's own label).
    batch_size:
        Images per backward pass (any size gives the same result; None: :func:`default_batch` for the device).

    Returns
    -------
    float32 array (N, 3072): row ``i`` is d CE(f(x_i), y_i) / d x_i flattened in (C, H, W) order.
    """
    check_images(x_uint8)
    if len(x_uint8) == 0:
        raise ValueError("no images given: cannot compute input gradients of an empty set")
    dev = resolve_device(device)
    batch_size = default_batch(dev) if batch_size is None else batch_size
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    y = torch.from_numpy(_labels(labels, len(x_uint8), num_classes))
    was_training = model.training
    model.to(dev).eval()
    out = np.empty((len(x_uint8), int(np.prod(x_uint8.shape[1:]))), dtype=np.float32)
    try:
        with frozen_weights(model):
            for i in range(0, len(x_uint8), batch_size):
                xb = to_float(torch.from_numpy(x_uint8[i:i + batch_size]).to(dev)).requires_grad_(True)
                with autocast(dev):
                    logits = model(xb)
                loss = F.cross_entropy(logits.float(), y[i:i + batch_size].to(dev), reduction="sum")
                (g,) = torch.autograd.grad(loss, xb)
                out[i:i + len(xb)] = g.contiguous().reshape(len(xb), -1).float().cpu().numpy()
    finally:
        model.train(was_training)
    return out


@contextmanager
def frozen_weights(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block the model's parameters take no gradient (only the inputs, or a trigger, are optimised);
    each parameter's ``requires_grad`` is restored after, also when the block raises."""
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, r in zip(model.parameters(), requires, strict=True):
            p.requires_grad_(r)


def features(model: nn.Module, x_uint8: np.ndarray, layer: str | None = None, batch_size: int | None = None,
             device: str | torch.device = "auto", pool: bool = False) -> np.ndarray:
    """Representations of images at one layer of a classifier, flattened: float32 (N, d).

    ``pool`` averages a (N, C, H, W) output over its spatial positions first, giving (N, C). ``batch_size``:
    images per pass (None: :func:`train.eval_batch`).

    ``layer`` None reads the penultimate features (``model.embed``: what the linear head sees); otherwise it names
    a module of ``model.named_modules()`` whose output is captured with a forward hook. Eval mode (batch-norm
    running statistics), ``torch.inference_mode``, float32 (no autocast: the SVDs downstream need the precision).
    """
    check_images(x_uint8)
    dev = resolve_device(device)
    batch_size = eval_batch(dev) if batch_size is None else batch_size
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    modules = dict(model.named_modules())
    if layer is not None and layer not in modules:
        raise ValueError(f"layer {layer!r} is not a module of the model; choose one of {sorted(modules)[:20]} ...")
    was_training = model.training
    model.to(dev).eval()
    captured: list[torch.Tensor] = []
    hook = modules[layer].register_forward_hook(lambda m, i, o: captured.append(o)) if layer is not None else None
    out = []
    try:
        with torch.inference_mode():
            for i in range(0, len(x_uint8), batch_size):
                xb = to_float(torch.from_numpy(x_uint8[i:i + batch_size]).to(dev))
                if hook is None:
                    out.append(model.embed(xb).float().reshape(len(xb), -1).cpu())
                else:
                    captured.clear()
                    model(xb)
                    o = captured[-1].float()
                    out.append((o.mean(dim=(2, 3)) if pool and o.ndim == 4 else o).reshape(len(xb), -1).cpu())
    finally:
        if hook is not None:
            hook.remove()
        model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)
