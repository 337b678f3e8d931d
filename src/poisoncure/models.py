"""Models: a small fast CNN and a whitened fast network for CPU profiles, and the CIFAR ResNet-18 / VGG-19 of the
paper (SPEC §2.4).

Every model starts with a :class:`Normalize` layer, so models take images in [0, 1] pixel space and input
gradients, triggers and counter-poison perturbations all live in that same space (SPEC §2.4, choice).
The whitened network (:func:`whitened_net`) follows the layer plan K. Jordan describes for airbench ("94% on
CIFAR-10 in 3.29 seconds on a single GPU", arXiv:2404.00498): a frozen 2x2 patch-whitening convolution fitted to the
training images, then three conv-pool-BN groups; the code is our own. The ResNet-18 and VGG-19 follow the layer
plan of the public ``kuangliu/pytorch-cifar`` models the paper
used (3x3 stem, no max-pool; VGG config 'E' with batch norm); the code here is our own.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` as the first layer (inputs in [0, 1])."""

    def __init__(self, mean: tuple[float, ...] = CIFAR_MEAN, std: tuple[float, ...] = CIFAR_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class Classifier(nn.Module):
    """``normalize -> features -> head``. ``features`` ends in a flat vector: the penultimate representation
    that Spectral Signatures and Activation Clustering read (:meth:`embed`).

    ``tta`` (a plain attribute, kept by copies) asks :func:`train.predict` and :func:`train.evaluate` to classify
    each image by the summed logits of the image and its mirror image (flip test-time augmentation, as airbench
    evaluates). It changes predictions only: ``forward``, input gradients and representations see one view."""

    def __init__(self, features: nn.Module, dim: int, num_classes: int, tta: bool = False):
        super().__init__()
        self.normalize = Normalize()
        self.features = features
        self.head = nn.Linear(dim, num_classes)
        self.tta = tta

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features, shape (N, dim), for inputs (N, 3, 32, 32) in [0, 1]."""
        return self.features(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


class GELU(nn.GELU):
    """:class:`torch.nn.GELU` that passes a channels_last batch to the kernel as the contiguous NHWC tensor it is
    in memory, and returns it in channels_last again.

    PyTorch's CPU GELU kernels, forward and backward, take a slow path on a 4-d channels_last tensor: twice the
    time of the same elements in NCHW on the 2-core Intel Xeon (bench/gelu_layout.py, bench/README.md), and every
    batch of the library is channels_last. A permuted view makes the same elements contiguous, so the vectorised
    kernel runs; values and gradients equal ``nn.GELU``'s within rounding (its slow path computes erf and tanh
    another way, so the last bits may differ; tested). No parameters: state dicts are those of ``nn.GELU``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            return F.gelu(x.permute(0, 2, 3, 1), approximate=self.approximate).permute(0, 3, 1, 2)
        return super().forward(x)


def small_cnn(num_classes: int = 10, width: int = 32, whiten: bool = False) -> Classifier:
    """A fast CPU network: four conv-bn-relu stages at widths w, 2w, 4w, 8w, each followed by 2x2
    max-pooling (32 -> 16 -> 8 -> 4 -> 2), then global max-pooling. 0.39 M parameters at ``width=32``,
    0.22 M at 24 (the earlier smoke profile).

    Max-pooling keeps the strongest local response, so a one-pixel trigger survives down-sampling.

    ``whiten`` puts the whitened network's frozen 2x2 :class:`PatchWhitening` stem (24 channels) and a GELU in
    front of the first stage (model name ``small_cnn_whitened``): the same network with the one change that decides
    whether a one-pixel trigger is learned (chapter 2 measures it)."""
    w = width
    stem: list[nn.Module] = [PatchWhitening(3, 2), GELU()] if whiten else []
    features = nn.Sequential(
        *stem,
        conv_bn(24 if whiten else 3, w), nn.MaxPool2d(2),
        conv_bn(w, 2 * w), nn.MaxPool2d(2),
        conv_bn(2 * w, 4 * w), nn.MaxPool2d(2),
        conv_bn(4 * w, 8 * w), nn.MaxPool2d(2),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(),
    )
    return Classifier(features, 8 * w, num_classes)


def small_cnn_whitened(num_classes: int = 10, width: int = 32) -> Classifier:
    """:func:`small_cnn` with the patch-whitening stem (``whiten=True``)."""
    return small_cnn(num_classes, width, whiten=True)


class PatchWhitening(nn.Module):
    """A frozen convolution whose filters whiten the ``patch`` x ``patch`` patches of its input (ZCA-like, in the
    eigenbasis of their covariance): ``2 · C · patch²`` output channels, each eigenvector with both signs, scaled
    by ``1 / sqrt(eigenvalue + eps)``, and a bias that centres the outputs. No padding (32 -> 31 pixels).

    Its filters are buffers, not parameters: the optimiser never changes them and :func:`train.reinitialise` keeps
    them. They are fitted once, before training, by :meth:`fit` (``train.fit`` calls it on an unfitted model with up
    to 5,000 of its training images). A pixel of a colour that natural images rarely have — the one-pixel trigger —
    lies along the low-variance directions, which whitening scales *up*: the network sees it loudly from its first
    layer on (README: the one-pixel trigger learned at 98 % where the small CNN reaches 4.5 %)."""

    def __init__(self, channels: int = 3, patch: int = 2, eps: float = 5e-4):
        super().__init__()
        self.patch, self.eps = patch, eps
        dim = channels * patch * patch
        self.register_buffer("weight", torch.zeros(2 * dim, channels, patch, patch))
        self.register_buffer("bias", torch.zeros(2 * dim))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self._fitted = False  # a Python copy of ``fitted``: no device synchronisation in forward

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> PatchWhitening:
        """Fit the filters to a batch ``x`` (N, C, H, W) of inputs to this layer (already normalised)."""
        p = self.patch
        c = self.weight.shape[1]
        patches = x.float().unfold(2, p, 1).unfold(3, p, 1)  # N, C, H', W', p, p
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * p * p).double()
        mean = patches.mean(0)
        centred = patches - mean
        cov = centred.T @ centred / len(centred)
        eigval, eigvec = torch.linalg.eigh(cov)
        filters = (eigvec.T / torch.sqrt(eigval.clamp_min(0) + self.eps)[:, None])  # rows: scaled eigenvectors
        filters = torch.cat([filters, -filters])
        self.weight.copy_(filters.reshape(-1, c, p, p).to(self.weight))
        self.bias.copy_((-(filters @ mean)).to(self.bias))
        self.fitted.fill_(True)
        self._fitted = True
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._fitted = bool(self.fitted)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._fitted:
            raise RuntimeError("PatchWhitening is not fitted: call fit() on training images first (train.fit "
                               "does this for an untrained model)")
        return F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype))


def _frozen_scale_bn(channels: int) -> nn.BatchNorm2d:
    """Batch norm with its scale fixed at 1 (only the shift is learned), as in airbench."""
    bn = nn.BatchNorm2d(channels, momentum=0.2)
    bn.weight.requires_grad_(False)
    return bn


def _whitened_group(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.MaxPool2d(2), _frozen_scale_bn(cout),
                         GELU(), nn.Conv2d(cout, cout, 3, 1, 1, bias=False), _frozen_scale_bn(cout), GELU())


def whitened_net(num_classes: int = 10, width: int = 32, widths: tuple[int, int, int] | None = None) -> Classifier:
    """The whitened fast network: :class:`PatchWhitening` (2x2, 24 channels) and GELU, then three groups of
    conv3x3 -> max-pool -> BN -> GELU -> conv3x3 -> BN -> GELU (31 -> 15 -> 7 -> 3 pixels, BN scales frozen),
    global max-pooling and the linear head. ``widths`` default to ``(width, 4·width, 4·width)``: 16/64/64 at
    ``width=16`` (0.13 M parameters), 32/128/128 (0.50 M), 64/256/256 (1.97 M, about airbench's size).

    Its whitening filters are fitted to the training images when training starts (:func:`train.fit`)."""
    w1, w2, w3 = widths if widths is not None else (width, 4 * width, 4 * width)
    if min(w1, w2, w3) < 1:
        raise ValueError(f"widths must be positive, got {(w1, w2, w3)}")
    whiten = PatchWhitening(3, 2)
    features = nn.Sequential(
        whiten, GELU(),
        _whitened_group(whiten.weight.shape[0], w1), _whitened_group(w1, w2), _whitened_group(w2, w3),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(),
    )
    return Classifier(features, w3, num_classes)


def unfitted_whitening(model: nn.Module) -> list[PatchWhitening]:
    """The :class:`PatchWhitening` layers of ``model`` that still need :meth:`PatchWhitening.fit`."""
    return [m for m in model.modules() if isinstance(m, PatchWhitening) and not m._fitted]


@torch.no_grad()
def fit_whitening(model: nn.Module, x: torch.Tensor) -> int:
    """Fit every unfitted :class:`PatchWhitening` layer of ``model`` to what reaches it when ``x`` (N, C, H, W),
    images in [0, 1], passes through the model once in eval mode. Returns how many layers were fitted."""
    layers = unfitted_whitening(model)
    if not layers:
        return 0

    def fit_on_input(layer, args):
        layer.fit(args[0])

    handles = [layer.register_forward_pre_hook(fit_on_input) for layer in layers]
    was_training = model.training
    try:
        model.eval()(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return len(layers)


@torch.no_grad()
def trigger_contrast(whitening: PatchWhitening, normalize: nn.Module, clean: torch.Tensor, triggered: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
    """How loudly a trigger speaks to a network's first layer, with and without patch whitening.

    ``clean`` and ``triggered`` are the same images (N, 3, H, W) in [0, 1] without and with the trigger. For each
    image, the trigger's largest change to one 2x2 patch (over all positions) is measured in units of the
    root-mean-square size of the clean images' centred patches: on the normalised pixels (``"raw"``: what a plain
    first convolution sees) and after ``whitening`` (``"whitened"``: what the whitened network's first convolution
    sees; whitened clean patches have identity covariance). A value of 1 means the trigger moves its patch as far
    as a typical natural patch lies from the mean; a trigger along directions natural patches seldom vary in is
    scaled up by whitening. Returns ``{"raw": (N,), "whitened": (N,)}``."""
    p = whitening.patch
    a, b = normalize(clean.float()), normalize(triggered.float())

    def patches(x: torch.Tensor) -> torch.Tensor:  # N, positions, C*p*p
        u = x.unfold(2, p, 1).unfold(3, p, 1)
        return u.permute(0, 2, 3, 1, 4, 5).reshape(len(x), -1, x.shape[1] * p * p).double()

    pa, pb = patches(a), patches(b)
    w = whitening.weight.reshape(len(whitening.weight), -1).double()
    centred = pa.reshape(-1, pa.shape[-1]) - pa.reshape(-1, pa.shape[-1]).mean(0)
    out = {}
    for name, f in (("raw", lambda v: v), ("whitened", lambda v: v @ w.T)):
        rms = f(centred).pow(2).sum(1).mean().sqrt()
        out[name] = (f(pb - pa).norm(dim=2).amax(dim=1) / rms).float()
    return out


def trigger_as_seen(model: Classifier, delta: np.ndarray) -> np.ndarray:
    """A pixel change ``delta`` (3, H, W) as a network with a fixed linear first layer passes it to input gradients.

    For ``z = W · normalize(x)`` every input gradient is ``Wᵀ`` times a gradient at ``z`` (divided by the
    normalisation's std), and a neuron tuned to the trigger's image ``W δ/std`` there leaves ``Wᵀ W (δ/std) / std`` in
    the input gradients: the direction Theorem 4.1 predicts for such a network. For the whitened networks ``W`` is
    the :class:`PatchWhitening` (bias left out), and ``WᵀW`` is close to the inverse patch covariance: smooth,
    large-scale changes shrink and sharp local ones grow (chapter 3). A model without a whitening layer learns its
    first layer, so ``delta`` is returned unchanged."""
    layer = next((m for m in model.modules() if isinstance(m, PatchWhitening)), None)
    if layer is None:
        return np.asarray(delta, dtype=np.float32)
    std = model.normalize.std[0].detach().cpu().float()
    w = layer.weight.detach().cpu().float()
    with torch.no_grad():
        d = torch.as_tensor(np.asarray(delta, dtype=np.float32))[None] / std
        seen = F.conv_transpose2d(F.conv2d(d, w), w) / std
    return seen[0].numpy()


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def resnet18(num_classes: int = 10, width: int = 64) -> Classifier:
    """CIFAR ResNet-18 (11,173,962 parameters at ``width=64``): 3x3 stem, four stages of two basic
    blocks at widths w, 2w, 4w, 8w with strides 1, 2, 2, 2, 4x4 average pool."""
    layers: list[nn.Module] = [nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    cin = width
    for i, stride in enumerate((1, 2, 2, 2)):
        cout = width * 2**i
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return Classifier(nn.Sequential(*layers), cin, num_classes)


VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
             512, 512, 512, 512, "M")


def vgg19(num_classes: int = 10) -> Classifier:
    """CIFAR VGG-19 with batch norm (config 'E'), 512-d features into one linear layer."""
    layers: list[nn.Module] = []
    cin = 3
    for v in VGG19_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers.append(conv_bn(cin, int(v)))
            cin = int(v)
    layers.append(nn.Flatten())
    return Classifier(nn.Sequential(*layers), 512, num_classes)


#: The plain CNNs of PoisHygiene's MNIST-type model pool (SPEC-related-defenses Part II B.2, Models I-VI):
#: (channels of the two conv blocks, kernel size, hidden fully connected widths).
POOL_MODELS: dict[str, tuple[tuple[int, int], int, tuple[int, ...]]] = {
    "I": ((16, 32), 3, (256, 256)), "II": ((32, 64), 3, (200, 200)), "III": ((16, 32), 5, (512,)),
    "IV": ((64, 128), 3, (512, 256)), "V": ((32, 64), 3, (512, 256, 256)), "VI": ((64, 128), 3, (512,)),
}


def pool_cnn(kind: str = "I", num_classes: int = 10, image_size: int = 32, dropout: float = 0.5) -> Classifier:
    """One of PoisHygiene's Models I-VI (Keras-style, no batch norm): two blocks of conv-conv-maxpool with
    "valid" padding and ReLU, then the hidden fully connected layers with ReLU and ``dropout`` after each.

    The paper feeds 28x28 grey images (a 4x4 map after the convolutions); the library's Fashion-MNIST is
    padded to 32x32 with the grey value in three channels (:func:`poisoncure.data.to_cifar_layout`), which
    gives a 5x5 map (2x2 with the 5x5 kernels of Model III). The penultimate representation is the last
    hidden layer."""
    if kind not in POOL_MODELS:
        raise ValueError(f"kind must be one of {sorted(POOL_MODELS)}, got {kind!r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
    (c1, c2), k, hidden = POOL_MODELS[kind]
    layers: list[nn.Module] = []
    cin, size = 3, image_size
    for c in (c1, c2):
        layers += [nn.Conv2d(cin, c, k), nn.ReLU(inplace=True), nn.Conv2d(c, c, k), nn.ReLU(inplace=True),
                   nn.MaxPool2d(2)]
        cin, size = c, (size - 2 * (k - 1)) // 2
    if size < 1:
        raise ValueError(f"image_size={image_size} is too small for Model {kind}")
    layers.append(nn.Flatten())
    dim = cin * size * size
    for h in hidden:
        layers += [nn.Linear(dim, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        dim = h
    return Classifier(nn.Sequential(*layers), dim, num_classes)


#: The CIFAR-10 recipes' models (``experiments.Recipe.model``); the pool CNNs are built with :func:`pool_cnn`.
MODELS: dict[str, Callable[..., Classifier]] = {"small_cnn": small_cnn, "small_cnn_whitened": small_cnn_whitened,
                                               "whitened_net": whitened_net, "resnet18": resnet18, "vgg19": vgg19}


#: How the book names each model of :data:`MODELS` in prose, tables and legends.
MODEL_NAMES: dict[str, str] = {"small_cnn": "small CNN", "small_cnn_whitened": "small CNN with a whitening stem",
                               "whitened_net": "whitened fast network", "resnet18": "ResNet-18", "vgg19": "VGG-19"}


def build_model(name: str, num_classes: int = 10, **kwargs) -> Classifier:
    """Build a model by name (one of :data:`MODELS`); ``kwargs`` go to the constructor (e.g. ``width``)."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](num_classes=num_classes, **kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
