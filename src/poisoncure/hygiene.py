"""The experiments of the PoisHygiene chapter, cached: Fashion-MNIST suspect models, weak references, scans and
mitigations (SPEC-related-defenses Part II B and the "004-mini" configuration of C.4).

A :class:`SuspectRecipe` fixes one Fashion-MNIST suspect model (PoisHygiene's Model I trained on a random subset,
healthy or attacked); a :class:`ReferenceRecipe` fixes one weak reference (a pool model trained on a small clean
set until it reaches a validation-accuracy goal). Both are trained once and cached under a hash of their recipe,
like the CIFAR-10 models of :mod:`poisoncure.experiments`. Scans and mitigations are cached under the suspect's and
the references' keys and the detector's parameters, so a rerun of the chapter only redraws its figures.

The suspect's and the references' training images are disjoint: both come from one seeded permutation of the
training split (:func:`disjoint_subsets`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import provenance
from .attacks import BlendTrigger, NoTrigger, PatchTrigger, PoisonedSet, Trigger, poison_all_to_one, poison_mislabel
from .cache import Cache
from .data import Cifar10, ImageSet, balanced_subset
from .defenses.poishygiene import MITIGATE_FINETUNE, HygieneScan, PoisHygiene, train_reference
from .experiments import TrainedModel, _array_sha, load_weights, read_weights, save_weights
from .models import Classifier, pool_cnn
from .train import AttackMetrics, FitHistory, TrainConfig, evaluate, fit, resolve_device

ATTACKS = ("clean", "badnets", "blend", "mislabel")
#: The BadNets stamp of the 004-mini configuration: a 4x4 white square in the bottom-right corner of the 28x28
#: image, i.e. rows/columns 26-29 of the library's 32x32 padded copy (2 pixels of padding each side).
BADNETS_TRIGGER = PatchTrigger(size=4, row=26, col=26)


def disjoint_subsets(images: ImageSet, sizes: list[int], seed: int = 0) -> list[ImageSet]:
    """Consecutive slices of one seeded permutation of ``images``: disjoint random subsets of the given sizes
    (each kept in the original order). Raises ``ValueError`` when they need more images than there are."""
    if any(int(s) != s or s < 1 for s in sizes):
        raise ValueError(f"sizes must be positive integers, got {sizes}")
    if sum(sizes) > len(images):
        raise ValueError(f"subsets of {sum(sizes)} images requested from a set of {len(images)}")
    perm = np.random.default_rng(seed).permutation(len(images))
    out, start = [], 0
    for s in sizes:
        rows = np.sort(perm[start:start + s])
        out.append(ImageSet(images.x[rows], images.y[rows], images.classes))
        start += s
    return out


@dataclass(frozen=True)
class SuspectRecipe:
    """One Fashion-MNIST suspect model of the chapter (every field enters the cache key).

    ``attack`` 'clean' (a healthy model), 'badnets' (:data:`BADNETS_TRIGGER`) or 'blend' (Chen et al.'s blend of a
    seeded grey noise image at ``opacity``); these poison ``poison_rate`` of the training set, drawn from all
    non-target classes and relabelled ``target`` (all-to-one, :func:`attacks.poison_all_to_one`). 'mislabel'
    drops class ``source`` (8, bag) from the task except ``poison_rate`` x N of its images, labelled ``target``
    (:func:`attacks.poison_mislabel`; the model keeps ten outputs, the source's never gets a label, and its
    clean accuracy is measured without the source class). ``model`` is
    one of PoisHygiene's Models I-VI, trained on the first ``train_size`` images of the seeded permutation
    (:func:`disjoint_subsets`) for ``epochs`` epochs of SGD at ``lr`` (momentum 0.9, batch 128, no augmentation).
    """

    attack: str = "badnets"
    target: int = 0
    poison_rate: float = 0.1
    opacity: float = 0.1
    model: str = "I"
    train_size: int = 20000
    epochs: int = 5
    lr: float = 0.01
    seed: int = 0
    source: int = 8

    def __post_init__(self) -> None:
        if self.attack not in ATTACKS:
            raise ValueError(f"attack must be one of {ATTACKS}, got {self.attack!r}")
        if not 0 <= self.target <= 9:
            raise ValueError(f"target must lie in [0, 9], got {self.target}")
        if not 0 <= self.source <= 9 or (self.attack == "mislabel" and self.source == self.target):
            raise ValueError(f"source must lie in [0, 9] and differ from the target, got {self.source}")
        if not 0 < self.poison_rate < 1:
            raise ValueError(f"poison_rate must lie in (0, 1), got {self.poison_rate}")
        if not 0 < self.opacity <= 1:
            raise ValueError(f"opacity must lie in (0, 1], got {self.opacity}")
        if self.train_size < 100:
            raise ValueError(f"train_size must be >= 100, got {self.train_size}")
        self.train_config()  # validates epochs and lr
        pool_cnn(self.model)  # validates the architecture

    def trigger(self) -> Trigger | None:
        if self.attack == "badnets":
            return BADNETS_TRIGGER
        if self.attack == "blend":
            return BlendTrigger(f"greynoise:{self.seed}", self.opacity)
        if self.attack == "mislabel":
            return NoTrigger()
        return None

    def train_config(self) -> TrainConfig:
        return dataclasses.replace(MITIGATE_FINETUNE, epochs=self.epochs, lr=self.lr, seed=self.seed)

    def cache_config(self) -> dict[str, Any]:
        cfg = {"dataset": "fashion-mnist", **dataclasses.asdict(self)}
        if self.attack == "clean":
            cfg["target"] = cfg["poison_rate"] = cfg["opacity"] = None
        elif self.attack in ("badnets", "mislabel"):
            cfg["opacity"] = None
        if self.attack != "mislabel":
            del cfg["source"]  # keeps the keys of the other suspects as they were
        return cfg

    def task_images(self, images: ImageSet) -> ImageSet:
        """``images`` restricted to the suspect's task: without the source class for Mislabel."""
        return images.subset(np.flatnonzero(images.y != self.source)) if self.attack == "mislabel" else images


@dataclass(frozen=True)
class ReferenceRecipe:
    """One weak reference model (every field enters the cache key): pool ``model`` trained on ``train_size`` clean
    images until its test accuracy reaches ``goal`` % (at most ``max_epochs`` epochs; :func:`train_reference`).

    ``dataset`` 'fashion-mnist' takes the images that follow the suspect's ``suspect_size`` in the seeded
    permutation (disjoint from every suspect's training set); 'cifar10' takes a class-balanced subset of the
    clean CIFAR-10 training set (the defender's small clean set; the CIFAR suspects saw those images, clean).
    """

    dataset: str = "fashion-mnist"
    model: str = "II"
    train_size: int = 10000
    suspect_size: int = 20000
    goal: float = 75.0
    max_epochs: int = 20
    lr: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dataset not in ("fashion-mnist", "cifar10"):
            raise ValueError(f"dataset must be 'fashion-mnist' or 'cifar10', got {self.dataset!r}")
        if self.train_size < 10:
            raise ValueError(f"train_size must be >= 10, got {self.train_size}")
        if not 0 < self.goal <= 100:
            raise ValueError(f"goal must lie in (0, 100], got {self.goal}")
        pool_cnn(self.model)

    def images(self, data: Cifar10) -> ImageSet:
        if self.dataset == "cifar10":
            return balanced_subset(data.train, self.train_size // len(data.train.classes), seed=self.seed)
        return disjoint_subsets(data.train, [self.suspect_size, self.train_size], seed=self.seed)[1]

    def cache_config(self) -> dict[str, Any]:
        cfg = dataclasses.asdict(self)
        if self.dataset == "cifar10":
            cfg["suspect_size"] = None
        return cfg


@dataclass
class Reference:
    recipe: ReferenceRecipe
    model: Classifier
    accuracies: list[float]  #: test accuracy after each epoch
    provenance: dict[str, Any]
    from_cache: bool


def _load_pool(kind: str, folder) -> Classifier:
    return read_weights(pool_cnn(kind), folder)


def suspect_training_set(recipe: SuspectRecipe, data: Cifar10) -> PoisonedSet | ImageSet:
    """The suspect's (poisoned) training set: deterministic and cheap, so never cached."""
    clean = disjoint_subsets(data.train, [recipe.train_size], seed=recipe.seed)[0]
    if recipe.attack == "clean":
        return clean
    if recipe.attack == "mislabel":
        return poison_mislabel(clean, recipe.source, recipe.target, recipe.poison_rate, seed=recipe.seed)
    return poison_all_to_one(clean, recipe.trigger(), recipe.target, recipe.poison_rate, seed=recipe.seed)


def evaluate_suspect(model: torch.nn.Module, recipe: Any, spec, test: ImageSet,
                     device: str | torch.device = "auto") -> AttackMetrics:
    """Test metrics of a suspect: clean accuracy on its task's test images (:meth:`SuspectRecipe.task_images`),
    attack success on the spec's triggered source images (for Mislabel: the held-out source-class images)."""
    task = recipe.task_images(test) if isinstance(recipe, SuspectRecipe) else test
    metrics = evaluate(model, task, spec if task is test else None, device)
    if task is not test and spec is not None:
        attack = evaluate(model, test, spec, device)
        metrics = dataclasses.replace(metrics, attack_success_rate=attack.attack_success_rate,
                                      poisoned_accuracy=attack.poisoned_accuracy)
    return metrics


def get_suspect(recipe: SuspectRecipe, data: Cifar10, device: str | torch.device = "auto",
                cache: Cache | None = None) -> TrainedModel:
    """Train the suspect model of ``recipe`` on Fashion-MNIST ``data``, or load it from the cache."""
    dev = resolve_device(device)
    cache = cache or Cache()
    train = suspect_training_set(recipe, data)
    spec = train.spec if isinstance(train, PoisonedSet) else None
    fit_images = train.as_imageset() if isinstance(train, PoisonedSet) else train

    def build(folder):
        torch.manual_seed(recipe.seed)
        model = pool_cnn(recipe.model)
        hist = fit(model, fit_images, recipe.train_config(), dev, progress=False)
        save_weights(model, folder)
        return {"history": dataclasses.asdict(hist),
                "metrics": evaluate_suspect(model, recipe, spec, data.test, dev).to_dict(),
                "provenance": provenance.collect(dev, seed=recipe.seed, wall_seconds=round(hist.seconds, 1),
                                                 data_source=data.source)}

    res = cache.get_or_build("hygiene_suspect", recipe.cache_config(), build,
                             lambda folder: _load_pool(recipe.model, folder))
    info = res.info
    return TrainedModel(recipe, res.value.to(dev), train, AttackMetrics(**info["metrics"]),  # type: ignore[arg-type]
                        FitHistory(**info["history"]), info["provenance"], res.hit)


def get_reference(recipe: ReferenceRecipe, data: Cifar10, device: str | torch.device = "auto",
                  cache: Cache | None = None) -> Reference:
    """Train the weak reference of ``recipe`` (validated on ``data.test``), or load it from the cache."""
    dev = resolve_device(device)
    cache = cache or Cache()

    def build(folder):
        torch.manual_seed(recipe.seed + 1)
        cfg = dataclasses.replace(MITIGATE_FINETUNE, lr=recipe.lr, seed=recipe.seed + 1)
        with provenance.stopwatch() as t:
            model, acc = train_reference(pool_cnn(recipe.model), recipe.images(data), data.test, recipe.goal,
                                         cfg, recipe.max_epochs, dev)
        save_weights(model, folder)
        return {"accuracies": acc, "provenance": provenance.collect(dev, seed=recipe.seed,
                                                                    wall_seconds=round(t["seconds"], 1),
                                                                    data_source=data.source)}

    res = cache.get_or_build("hygiene_reference", recipe.cache_config(), build,
                             lambda folder: _load_pool(recipe.model, folder))
    return Reference(recipe, res.value.to(dev), list(res.info["accuracies"]), res.info["provenance"], res.hit)


def _refs_config(refs: list[Reference]) -> list[dict[str, Any]]:
    return [r.recipe.cache_config() for r in refs]


def get_gammas(refs: list[Reference], hygiene: PoisHygiene, shape: tuple[int, int, int] = (3, 32, 32),
               num_classes: int = 10, cache: Cache | None = None) -> np.ndarray:
    """γ (k, K) of the references (:meth:`PoisHygiene.gammas`), cached: they serve every suspect scanned."""
    cache = cache or Cache()
    config = {"refs": _refs_config(refs), "hygiene": hygiene.config(), "shape": list(shape),
              "num_classes": num_classes}

    def build(folder):
        np.save(folder / "gammas.npy", hygiene.gammas([r.model for r in refs], shape, num_classes))

    return cache.get_or_build("hygiene_gammas", config, build, lambda f: np.load(f / "gammas.npy")).value


def get_scan(model_key: dict[str, Any], model: torch.nn.Module, refs: list[Reference], hygiene: PoisHygiene,
             shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10,
             cache: Cache | None = None) -> tuple[HygieneScan, dict[str, Any]]:
    """DETECT on ``model`` (identified by ``model_key``, its recipe's cache config) against ``refs``, cached under
    both and the detector's parameters. Returns (scan, provenance)."""
    cache = cache or Cache()
    gammas = get_gammas(refs, hygiene, shape, num_classes, cache)
    config = {"model": model_key, "refs": _refs_config(refs), "hygiene": hygiene.config(), "shape": list(shape),
              "num_classes": num_classes}

    def build(folder):
        with provenance.stopwatch() as t:
            scan = hygiene.scan(model, [r.model for r in refs], shape, num_classes, gammas=gammas)
        scan.save(folder / "scan.npz")
        return {"provenance": provenance.collect(hygiene.device, seed=hygiene.seed,
                                                 wall_seconds=round(t["seconds"], 1))}

    res = cache.get_or_build("hygiene_scan", config, build, lambda f: HygieneScan.load(f / "scan.npz"))
    return res.value, res.info["provenance"]


@dataclass
class Mitigated:
    """MITIGATE's repaired model with its test metrics (and the clean-only fine-tuning it is compared with)."""

    model: Classifier
    metrics: AttackMetrics
    crafted: ImageSet  #: the crafted images kept (uint8), labelled with their non-infected label
    crafted_success: float
    clean_images: int
    provenance: dict[str, Any]
    from_cache: bool


def get_mitigation(tm: TrainedModel, refs: list[Reference], hygiene: PoisHygiene, target: int, clean: ImageSet,
                   test: ImageSet, scan: HygieneScan | None = None, crafted_fraction: float = 0.2,
                   clean_fraction: float = 0.1, finetune: TrainConfig = MITIGATE_FINETUNE, restarts: int = 5,
                   cache: Cache | None = None) -> Mitigated:
    """MITIGATE (:meth:`PoisHygiene.mitigate`) of the suspect ``tm`` for infected label ``target``, its clean
    subset drawn from ``clean``, scored on ``test``; cached under the suspect, the references, the detector, the
    clean images and every mitigation setting. ``crafted_fraction=0`` is the clean-only fine-tuning baseline
    (the same D_10, no crafted image). ``clean`` should hold the suspect's task only (for Mislabel, no source
    images: see :meth:`SuspectRecipe.task_images`)."""
    cache = cache or Cache()
    spec = tm.train_set.spec if isinstance(tm.train_set, PoisonedSet) else None
    config = {"model": tm.recipe.cache_config(), "refs": _refs_config(refs), "hygiene": hygiene.config(),
              "target": int(target), "clean_sha": _array_sha(clean.x), "labels_sha": _array_sha(clean.y),
              "crafted_fraction": crafted_fraction, "clean_fraction": clean_fraction,
              "finetune": dataclasses.asdict(finetune), "restarts": restarts,
              "scan_start": None if scan is None else _array_sha(scan.probes[target][scan.success[target]])}

    def build(folder):
        with provenance.stopwatch() as t:
            mit = hygiene.mitigate(tm.model, [r.model for r in refs], target, clean, clean_fraction,
                                   crafted_fraction, finetune, scan=scan, restarts=restarts)
        model, crafted, ok, n_clean = mit.model, mit.crafted, mit.crafted_success, mit.clean_images
        save_weights(model, folder)
        np.savez(folder / "crafted.npz", x=crafted.x, y=crafted.y)
        return {"metrics": evaluate_suspect(model, tm.recipe, spec, test, hygiene.device).to_dict(),
                "crafted_success": ok,
                "clean_images": n_clean,
                "provenance": provenance.collect(hygiene.device, seed=hygiene.seed,
                                                 wall_seconds=round(t["seconds"], 1))}

    def load(folder):
        with np.load(folder / "crafted.npz") as z:
            crafted = ImageSet(z["x"], z["y"], clean.classes)
        fashion = isinstance(tm.recipe, SuspectRecipe)
        return (_load_pool(tm.recipe.model, folder) if fashion else load_weights(tm.recipe, folder)), crafted

    res = cache.get_or_build("hygiene_mitigation", config, build, load)
    model, crafted = res.value
    info = res.info
    return Mitigated(model.to(hygiene.device), AttackMetrics(**info["metrics"]), crafted,
                     float(info["crafted_success"]), int(info["clean_images"]), info["provenance"], res.hit)


__all__ = ["ATTACKS", "BADNETS_TRIGGER", "Mitigated", "Reference", "ReferenceRecipe", "SuspectRecipe",
           "disjoint_subsets", "evaluate_suspect", "get_gammas", "get_mitigation", "get_reference", "get_scan",
           "get_suspect", "suspect_training_set"]
