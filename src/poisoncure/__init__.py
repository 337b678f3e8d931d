"""poisoncure — the library under the companion book to *Poison as a Cure* (Chan & Ong, 2019).

``import poisoncure as pc`` gives the library's public names at the top level (loaded on first use, so the import
itself is quick): the data (:class:`pc.ImageSet`, :func:`pc.load_cifar10`, :func:`pc.image_set` for your own images and
torch data sets), the attacks (``pc.PixelTrigger``,
``pc.PatchTrigger``, ``pc.BlendTrigger``, :func:`pc.poison`, :func:`pc.paper_trigger`), the models
(:func:`pc.build_model`, :func:`pc.whitened_net`, ...), training (:class:`pc.TrainConfig`, :func:`pc.fit`,
:func:`pc.evaluate`, :func:`pc.predict`) and every defense of the book (:class:`pc.PoisonCure`,
:class:`pc.SpectralSignatures`, :class:`pc.ActivationClustering`, :class:`pc.NeuralCleanse`,
:class:`pc.FinePruning`, :class:`pc.ReverseEngineeringDetector`, :class:`pc.PoisHygiene`,
:class:`pc.WeakLearnerEnsemble`). The modules, one concept each:

=================  ==========================================================================
``data``           CIFAR-10 from an explicit path, the standard batches, the offline archive or
                   torchvision's downloader; cached uint8 arrays; class-balanced subsets
``attacks``        triggers (pixel, patch, blend, additive, shapes) and :func:`attacks.poison`
``models``         the whitened fast network, small CNNs, CIFAR ResNet-18 and VGG-19; normalisation inside
``train``          :func:`train.fit`, :func:`train.evaluate` (clean accuracy, attack success), precision policy
``gradients``      per-sample input gradients, one backward pass per batch
``signal``         the paper's maths: signal extraction, PC1 scores, GMM filter, target and base class
``metrics``        accuracy, attack success, sensitivity, specificity
``defenses``       one module per defense, each opening with its paper and section
``cache``          artifact store keyed by a hash of the full config and code; atomic, verified
``provenance``     commit, device, versions, wall time for every number
``toy``            the Gaussian toy model of the paper's Appendix A (chapter 1)
=================  ==========================================================================

The book's own layers sit above this core, each a package, and are never imported by it (``tests/test_layers.py``):
``poisoncure.experiments`` (the cached models of the book, the pipeline that runs every defense on one model, the
runner and its grids, the profiles, the paper's numbers, the tables and verdict built from result files) and
``poisoncure.book`` (building, checking and drawing the book, and what each chapter shows).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> the module (relative to this package) that defines it
_PUBLIC: dict[str, str] = {
    "ImageSet": "data", "load_cifar10": "data", "image_set": "data",
    "PixelTrigger": "attacks", "PatchTrigger": "attacks", "BlendTrigger": "attacks", "AdditiveTrigger": "attacks",
    "poison": "attacks", "paper_trigger": "attacks", "triggered_test_set": "attacks",
    "build_model": "models", "Normalize": "models", "whitened_net": "models", "small_cnn": "models",
    "resnet18": "models", "vgg19": "models",
    "TrainConfig": "train", "fit": "train", "evaluate": "train", "predict": "train",
    "input_gradients": "gradients",
    "PoisonCure": "defenses.poison_cure", "SpectralSignatures": "defenses.spectral",
    "ActivationClustering": "defenses.activation_clustering", "NeuralCleanse": "defenses.neural_cleanse",
    "FinePruning": "defenses.fine_pruning", "ReverseEngineeringDetector": "defenses.reverse_engineer",
    "PoisHygiene": "defenses.poishygiene", "WeakLearnerEnsemble": "defenses.weak_learners",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first use (PEP 562)."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'poisoncure' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
