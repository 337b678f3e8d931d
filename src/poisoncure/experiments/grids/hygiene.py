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

from ... import provenance
from ...attacks import (
    AttackSpec,
    BlendTrigger,
    NoTrigger,
    PatchTrigger,
    PoisonedSet,
    Trigger,
    poison_all_to_one,
    poison_mislabel,
)
from ...cache import Cache
from ...clean_label import CollisionConfig, assemble_clean_label, collide, kept_label, plan_clean_label
from ...data import Cifar10, ImageSet, balanced_subset
from ...defenses.poishygiene import MITIGATE_FINETUNE, HygieneScan, PoisHygiene, train_reference
from ...models import Classifier, pool_cnn
from ...train import AttackMetrics, FitHistory, TrainConfig, evaluate, fit, resolve_device
from ..store import TrainedModel, _array_sha, load_weights, read_weights, save_weights

ATTACKS = ("clean", "badnets", "blend", "mislabel", "frog", "stingray", "withheld")
#: Attacks whose task leaves the source class out (PoisHygiene's adversarial class), with the control "withheld".
SOURCE_FREE = ("mislabel", "frog", "stingray", "withheld")
#: The suspects without an attack: the healthy model and the source-free task's control.
CONTROLS = ("clean", "withheld")
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
    clean accuracy is measured without the source class). 'frog' and 'stingray' are the clean-label versions on the
    same task: ``poison_rate`` x N target-class images are replaced by feature-collision poisons aimed at source
    images (:mod:`poisoncure.clean_label`, crafted on the healthy suspect of the same recipe, :meth:`surrogate`,
    for ``craft_steps`` iterations, None meaning the spec's budget). 'withheld' is their control: the same task
    with no poison, whose share of source images called the target is the floor every attack on it starts from
    (its "attack success"). ``model`` is
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
    craft_steps: int | None = None

    def __post_init__(self) -> None:
        if self.attack not in ATTACKS:
            raise ValueError(f"attack must be one of {ATTACKS}, got {self.attack!r}")
        if not 0 <= self.target <= 9:
            raise ValueError(f"target must lie in [0, 9], got {self.target}")
        if not 0 <= self.source <= 9 or (self.attack in SOURCE_FREE and self.source == self.target):
            raise ValueError(f"source must lie in [0, 9] and differ from the target, got {self.source}")
        if not 0 < self.poison_rate < 1:
            raise ValueError(f"poison_rate must lie in (0, 1), got {self.poison_rate}")
        if not 0 < self.opacity <= 1:
            raise ValueError(f"opacity must lie in (0, 1], got {self.opacity}")
        if self.train_size < 100:
            raise ValueError(f"train_size must be >= 100, got {self.train_size}")
        self.train_config()  # validates epochs and lr
        pool_cnn(self.model)  # validates the architecture
        self.collision()  # validates craft_steps

    def trigger(self) -> Trigger | None:
        """The test-time trigger (:class:`NoTrigger` for the attacks that change no test image; None: healthy)."""
        if self.attack == "badnets":
            return BADNETS_TRIGGER
        if self.attack == "blend":
            return BlendTrigger(f"greynoise:{self.seed}", self.opacity)
        if self.attack in SOURCE_FREE:
            return NoTrigger()
        return None

    def collision(self) -> CollisionConfig | None:
        """The feature-collision settings of 'frog' and 'stingray' (None for the other attacks)."""
        if self.attack not in ("frog", "stingray"):
            return None
        return CollisionConfig(self.attack, steps=self.craft_steps)

    def surrogate(self) -> SuspectRecipe:
        """The attacker's clean model for the feature-collision attacks: the healthy suspect of the same recipe."""
        return SuspectRecipe("clean", model=self.model, train_size=self.train_size, epochs=self.epochs, lr=self.lr,
                             seed=self.seed)

    def floor_spec(self) -> AttackSpec | None:
        """For 'withheld', the attack whose floor it measures (source images -> target); else None."""
        if self.attack != "withheld":
            return None
        return AttackSpec(NoTrigger(), self.source, self.target, 0.0, self.seed)

    def train_config(self) -> TrainConfig:
        return dataclasses.replace(MITIGATE_FINETUNE, epochs=self.epochs, lr=self.lr, seed=self.seed)

    def cache_config(self) -> dict[str, Any]:
        cfg = {"dataset": "fashion-mnist", **dataclasses.asdict(self)}
        if self.attack == "clean":
            cfg["target"] = cfg["poison_rate"] = cfg["opacity"] = None
        elif self.attack == "withheld":
            cfg["poison_rate"] = cfg["opacity"] = None
        elif self.attack != "blend":
            cfg["opacity"] = None
        if self.attack not in SOURCE_FREE:
            del cfg["source"]  # keeps the keys of the other suspects as they were
        if self.attack in ("frog", "stingray"):
            cfg["craft_steps"] = self.collision().budget  # type: ignore[union-attr]
        else:
            del cfg["craft_steps"]
        return cfg

    def task_images(self, images: ImageSet) -> ImageSet:
        """``images`` restricted to the suspect's task: without the source class for :data:`SOURCE_FREE`."""
        return images.subset(np.flatnonzero(images.y != self.source)) if self.attack in SOURCE_FREE else images


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


def suspect_training_set(recipe: SuspectRecipe, data: Cifar10, device: str | torch.device = "auto",
                         cache: Cache | None = None) -> PoisonedSet | ImageSet:
    """The suspect's (poisoned) training set. Deterministic; only the feature-collision poisons cost anything,
    and they come from the cache (:func:`get_poisons`)."""
    clean = disjoint_subsets(data.train, [recipe.train_size], seed=recipe.seed)[0]
    if recipe.attack == "clean":
        return clean
    if recipe.attack == "withheld":
        return recipe.task_images(clean)
    if recipe.attack in ("frog", "stingray"):
        return get_poisons(recipe, data, device, cache)[0]
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


def get_poisons(recipe: SuspectRecipe, data: Cifar10, device: str | torch.device = "auto",
                cache: Cache | None = None) -> tuple[PoisonedSet, dict[str, Any]]:
    """The training set of a 'frog' or 'stingray' suspect and the crafting's record: ``stats`` (of
    :func:`clean_label.collide`, with ``kept_label``), ``provenance``, and the arrays ``bases`` / ``aims`` (the rows
    of the suspect's clean subset, :func:`disjoint_subsets`, that the poisons replace and aim at) and ``poisons``,
    in that order. The poisons are crafted on the attacker's clean model
    (:meth:`SuspectRecipe.surrogate`, trained or loaded with :func:`get_suspect`) and cached under both recipes."""
    config = recipe.collision()
    if config is None:
        raise ValueError(f"attack {recipe.attack!r} has no crafted poisons; only 'frog' and 'stingray' do")
    dev = resolve_device(device)
    cache = cache or Cache()
    clean = disjoint_subsets(data.train, [recipe.train_size], seed=recipe.seed)[0]
    key = {"suspect": recipe.cache_config(), "surrogate": recipe.surrogate().cache_config()}

    def build(folder):
        surrogate = get_suspect(recipe.surrogate(), data, dev, cache).model
        s, t, aims, bases = plan_clean_label(clean, recipe.source, recipe.target, recipe.poison_rate, surrogate,
                                             config.method, recipe.seed, dev)
        with provenance.stopwatch() as sw:
            poisons, stats = collide(surrogate, clean.x[bases], clean.x[aims], config, dev)
        np.savez(folder / "poisons.npz", bases=bases, aims=aims, poisons=poisons)
        return {"stats": {**stats, "kept_label": kept_label(surrogate, poisons, t, dev)},
                "provenance": provenance.collect(dev, seed=recipe.seed, wall_seconds=round(sw["seconds"], 1),
                                                 data_source=data.source)}

    def load(folder):
        with np.load(folder / "poisons.npz") as z:
            return {"bases": z["bases"], "aims": z["aims"], "poisons": z["poisons"]}

    res = cache.get_or_build("hygiene_poisons", key, build, load)
    train = assemble_clean_label(clean, recipe.source, recipe.target, recipe.poison_rate, recipe.seed,
                                 res.value["bases"], res.value["poisons"])
    return train, {"stats": res.info["stats"], "provenance": res.info["provenance"], **res.value}


def get_suspect(recipe: SuspectRecipe, data: Cifar10, device: str | torch.device = "auto",
                cache: Cache | None = None) -> TrainedModel:
    """Train the suspect model of ``recipe`` on Fashion-MNIST ``data``, or load it from the cache."""
    dev = resolve_device(device)
    cache = cache or Cache()
    train = suspect_training_set(recipe, data, dev, cache)
    spec = train.spec if isinstance(train, PoisonedSet) else recipe.floor_spec()
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



# ------------------------------------------------------------------------------------------ detectors side by side
def cifar_references(recipe: Any, per_class: list[int], data: Cifar10, device: str | torch.device = "auto"
                     ) -> list[Reference]:
    """CIFAR-10 references: clean models of ``recipe`` (an :class:`experiments.Recipe`) trained on ``per_class``
    images per class (the small clean models of chapter 10, shared through the cache)."""
    from ..store import get_model

    out = []
    for n in per_class:
        tm = get_model(recipe.replace(poison="clean", train_per_class=n), device=device, data=data, progress=False)
        out.append(Reference(tm.recipe, tm.model, [tm.metrics.clean_accuracy], tm.provenance, tm.from_cache))
    return out


def scan_summary(scan: HygieneScan) -> dict[str, Any]:
    """The JSON form of a scan's verdict: Prob and infection per label, the label it names."""
    return {"prob": [float(v) for v in scan.prob], "infected": [bool(v) for v in scan.infected],
            "suspect": int(scan.suspect), "model_infected": bool(scan.model_infected)}


def other_detectors(tm: TrainedModel, clean: ImageSet, data: Cifar10, nc_steps: int = 200, threshold: float = 2.0,
                    seed: int = 0, device: str | torch.device = "auto") -> dict[str, Any]:
    """Neural Cleanse (``clean``: the defender's clean images) and the paper's target scan (the suspect's training
    set) on one suspect, both cached, as JSON: Neural Cleanse's anomaly index per label and the labels it flags;
    the paper's ratio R, the class with the largest R and whether R exceeds ``threshold``. The paper's scan needs
    every class's gradients, so on a task without some class it is not run (``poison_cure`` None, ``missing``
    naming the classes)."""
    from .. import pipeline

    k = len(clean.classes)
    missing = [int(c) for c in range(k) if not (tm.train_set.y == c).any()]
    methods = [pipeline.CLEANSE] + ([] if missing else [pipeline.POISON_CURE])
    run = pipeline.run_defenses(tm, data, methods, pipeline.DefenseSettings(nc_steps=nc_steps, threshold=threshold,
                                                                            seed=seed),
                                clean=clean, repair=False, device=device)
    trig = run[pipeline.CLEANSE].artefact
    out: dict[str, Any] = {"neural_cleanse": {"anomaly": [float(v) for v in trig.anomaly],
                                              "flagged": run[pipeline.CLEANSE].labels}}
    out["missing"] = missing
    out["poison_cure"] = None
    if not missing:
        sc = run[pipeline.POISON_CURE].artefact.result.scan
        out["poison_cure"] = {"ratio": float(sc.ratio), "target": int(sc.target), "poisoned": bool(sc.poisoned)}
    return out


# ------------------------------------------------------------------------------------------ the runner's grid
EXAMPLES = 4  #: (base, aim, poison) image triples a clean-label result file keeps for the chapter's figure


def get_scans(models: dict[str, Any], refs: list[Any], ph: PoisHygiene) -> tuple[dict[str, Any], dict[str, dict]]:
    """DETECT on every model of ``models`` (name -> trained suspect) against ``refs``: (scans, their provenance),
    each by name, cached (:func:`get_scan`)."""
    scans, prov = {}, {}
    for name, tm in models.items():
        scans[name], prov[name] = get_scan(tm.recipe.cache_config(), tm.model, refs, ph)
    return scans, prov


def repair_and_baseline(tm, refs: list[Any], ph_craft: PoisHygiene, label: int, clean, test, scan,
                        crafted_fraction: float, clean_fraction: float, restarts: int) -> tuple[Any, Any]:
    """MITIGATE on ``label`` (the scan's infected label) and its baseline, the same retraining on the clean images
    alone (no crafted image): both cached (:func:`get_mitigation`)."""
    fix = get_mitigation(tm, refs, ph_craft, label, clean, test, scan=scan, crafted_fraction=crafted_fraction,
                         clean_fraction=clean_fraction, restarts=restarts)
    only = get_mitigation(tm, refs, ph_craft, label, clean, test, crafted_fraction=0.0, clean_fraction=clean_fraction)
    return fix, only


def defense_step(tm, data, s, clean, target, rows, repair, device, progress) -> Any:
    """PoisHygiene in the one pipeline (:func:`..pipeline.run_defenses`, ``steps={HYGIENE: defense_step}``;
    settings in ``DefenseSettings.hygiene``): DETECT against clean reference models of the recipe; MITIGATE (with
    its clean-only baseline, kept in the artefact) when the scan flags a label. The clean images it fine-tunes on
    are the recipe's own training images, unpoisoned, as in the PoisHygiene grid."""
    from ..pipeline import HYGIENE, Outcome

    h = s.hygiene
    unknown = set(h) - {"references", "scan", "craft", "mitigation"}
    if unknown:
        raise ValueError(f"unknown hygiene settings {sorted(unknown)}: give references, scan, craft, mitigation")
    refs = cifar_references(tm.recipe, list(h.get("references", [500])), data, device)
    scan_settings = {"seed": s.seed, **h.get("scan", {})}
    ph = PoisHygiene(**scan_settings, device=device, progress=progress)
    scan, _ = get_scan(tm.recipe.cache_config(), tm.model, refs, ph)
    artefact = {"scan": scan, "references": refs, "mitigated": None, "clean_only": None}
    repaired = None
    if repair and scan.model_infected:
        craft, mit = {"steps": 50, "lr": 0.05, "restarts": 2, **h.get("craft", {})}, h.get("mitigation", {})
        ph_craft = PoisHygiene(probes=ph.probes, steps=craft["steps"], lr=craft["lr"], tau=ph.tau, seed=s.seed,
                               device=device, progress=progress)
        own = balanced_subset(data.train, tm.recipe.train_per_class, seed=tm.recipe.seed)
        fix, only = repair_and_baseline(tm, refs, ph_craft, int(scan.suspect), own, data.test, scan,
                                        mit.get("crafted_fraction", 0.2), mit.get("clean_fraction", 0.1),
                                        craft["restarts"])
        artefact.update(mitigated=fix, clean_only=only)
        repaired = fix.model
    return Outcome(HYGIENE, labels=np.flatnonzero(scan.infected).tolist(), repaired=repaired,
                   unchanged=repair and not scan.model_infected, artefact=artefact)


def run_point(params: dict[str, Any], device: str = "auto", data=None, progress: bool = False
              ) -> tuple[dict[str, Any], dict[str, float]]:
    """One suspect of the PoisHygiene chapter, measured end to end (a ``hygiene`` experiment of
    :mod:`poisoncure.experiments.runner`). Returns (results, stage wall times in s).

    ``params``: either ``suspect`` (a Fashion-MNIST :class:`SuspectRecipe`'s fields) with ``references`` (pool
    models, ``train_size``, ``goal``), or ``recipe`` (a CIFAR-10 :class:`experiments.Recipe`'s fields, e.g. an
    all-to-one backdoor) with ``references`` (``per_class``: clean small models, :func:`cifar_references`); and
    ``detector`` (:class:`PoisHygiene`'s scan settings), ``craft`` (the repair's crafting settings),
    ``mitigation`` (``clean_fraction``, ``crafted_fraction``) and ``others`` (``nc_steps``, ``clean_per_class``,
    ``threshold``). The repair runs when the scan flags a label and the attack is learned (attack success ≥ 50 %),
    as in the chapter; so does its clean-only baseline."""
    from ...attacks import class_index
    from ...data import load_cifar10, load_fashion_mnist
    from ...provenance import stage
    from ..store import Recipe, defender_split, get_model

    stages: dict[str, float] = {}
    ref = params["references"]
    cifar = "recipe" in params
    with stage(stages, "train"):
        if cifar:
            if data is None or data.train.classes[0] != "airplane":
                data = load_cifar10()
            recipe: Any = Recipe(**params["recipe"])
            tm = get_model(recipe, device=device, data=data, progress=False)
            refs = cifar_references(recipe, ref["per_class"], data, device)
            attack, target, seed = recipe.poison, class_index(recipe.target), recipe.seed
            clean = balanced_subset(data.train, recipe.train_per_class, seed=seed)  # its images, unpoisoned
        else:
            if data is None or data.train.classes[0] != "T-shirt/top":
                data = load_fashion_mnist()
            recipe = SuspectRecipe(**params["suspect"])
            tm = get_suspect(recipe, data, device)
            refs = [get_reference(ReferenceRecipe("fashion-mnist", k, ref["train_size"], recipe.train_size,
                                                  ref["goal"], seed=recipe.seed), data, device)
                    for k in ref["models"]]
            attack, target, seed = recipe.attack, recipe.target, recipe.seed
            clean = recipe.task_images(disjoint_subsets(data.train, [recipe.train_size], seed=seed)[0])
    out: dict[str, Any] = {"attack": attack, "target": int(target), "n_train": len(tm.train_set),
                           "n_poison": int(tm.train_set.is_poison.sum()) if isinstance(tm.train_set, PoisonedSet)
                           else 0, "before": tm.metrics.to_dict(), "train_seconds": round(tm.history.seconds, 1),
                           "references": [r.accuracies[-1] for r in refs], "crafting": None, "mitigation": None}
    if not cifar and recipe.collision() is not None:
        crafted = get_poisons(recipe, data, device)[1]
        out["crafting"] = {**crafted["stats"], "seconds": crafted["provenance"].get("wall_seconds")}
        # a few (base, aim, poison) triples for the chapter's figure: grey 32x32 uint8 images as lists
        full = disjoint_subsets(data.train, [recipe.train_size], seed=seed)[0]
        out["examples"] = {"base": full.x[crafted["bases"][:EXAMPLES], :, :, 0].tolist(),
                           "aim": full.x[crafted["aims"][:EXAMPLES], :, :, 0].tolist(),
                           "poison": crafted["poisons"][:EXAMPLES, :, :, 0].tolist()}
    det = params["detector"]
    ph = PoisHygiene(**det, grey=not cifar, seed=seed, device=device, progress=False)
    with stage(stages, "scan"):
        scan, _ = get_scan(recipe.cache_config(), tm.model, refs, ph)
    out["scan"] = scan_summary(scan)
    learned = attack not in CONTROLS and (tm.metrics.attack_success_rate or 0) >= 50.0
    if scan.model_infected and learned:
        craft, mit = params["craft"], params["mitigation"]
        ph_craft = PoisHygiene(probes=det["probes"], steps=craft["steps"], lr=craft["lr"], tau=det["tau"],
                               grey=not cifar, seed=seed, device=device, progress=False)
        with stage(stages, "mitigation"):
            fix, only = repair_and_baseline(tm, refs, ph_craft, scan.suspect, clean, data.test, scan,
                                            mit["crafted_fraction"], mit["clean_fraction"], craft["restarts"])
        out["mitigation"] = {"label": int(scan.suspect), "after": fix.metrics.to_dict(),
                             "clean_only": only.metrics.to_dict(), "crafted_kept": len(fix.crafted),
                             "crafted_success": fix.crafted_success}
    o = params["others"]
    defender, _ = defender_split(data.test, o["clean_per_class"], seed=seed)
    with stage(stages, "other_detectors"):
        out["others"] = other_detectors(tm, defender, data, o["nc_steps"], o["threshold"], seed, device)
    return out, stages


def grid(prof: dict[str, Any], spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The ``hygiene`` grid of a profile: (name, params) per Fashion-MNIST suspect of ``spec['suspects']`` (each a
    dict of :class:`SuspectRecipe` fields that override the chapter's settings in the profile's ``11_poishygiene``
    section) and per CIFAR-10 suspect of ``spec['cifar_suspects']`` (each a dict of :class:`experiments.Recipe`
    fields over the profile's shared ``experiment`` recipe, e.g. ``{poison: badnets}``), with that section's
    references, detector, crafting and comparison settings."""
    from ..store import Recipe, recipe_fields

    known = {"suspects", "cifar_suspects"}
    if set(spec) - known:
        raise ValueError(f"unknown keys in reproduce.hygiene: {sorted(set(spec) - known)}; known: {sorted(known)}")
    nb = prof["notebooks"]["11_poishygiene"]
    seed = prof["experiment"].get("seed", 0)
    base = {"target": nb["fm_target"], "poison_rate": nb["fm_poison_rate"], "opacity": nb["fm_opacity"],
            "model": "I", "train_size": nb["fm_train_size"], "epochs": nb["fm_epochs"], "lr": nb["fm_lr"],
            "seed": seed}
    shared = {"references": {"models": list(nb["ref_models"]), "train_size": nb["ref_train_size"],
                             "goal": nb["ref_goal"]},
              "detector": {k: nb[k] for k in ("probes", "warm_steps", "calibration_steps", "calibration_rounds",
                                               "tau")} | {"steps": nb["hygiene_steps"]},
              "craft": {"steps": nb["craft_steps"], "lr": nb["craft_lr"], "restarts": nb["craft_restarts"]},
              "mitigation": {"clean_fraction": nb["clean_fraction"], "crafted_fraction": nb["crafted_fraction"]},
              "others": {k: nb[k] for k in ("nc_steps", "clean_per_class", "threshold")}}
    if not spec.get("suspects"):
        raise ValueError("reproduce.hygiene needs a non-empty 'suspects' list")

    def named(kind: str, change: dict[str, Any]) -> tuple[str, str]:
        """(label, file-name part) of a suspect: its attack and the settings it changes, e.g. 'blend (epochs 15)'
        and 'blend-epochs15'."""
        extra = sorted((k, v) for k, v in change.items() if k not in ("attack", "poison"))
        return (kind + (f" ({', '.join(f'{k} {v:g}' for k, v in extra)})" if extra else ""),
                kind + "".join(f"-{k}{v:g}" for k, v in extra))

    recipe0 = recipe_fields(prof["experiment"])
    out = []
    for change in spec.get("cifar_suspects") or []:
        r = Recipe(**{"poison": "blend", **recipe0, **change})  # validates
        label, slug = named(r.poison, change)
        refs = {"per_class": list(nb["cifar_ref_per_class"])}
        out.append((f"cifar-{slug}-{r.model}-s{r.seed}",
                    {"label": label, "recipe": {**recipe0, **change}, **shared, "references": refs}))
    for change in spec["suspects"]:
        fields = {**base, **change}
        label, slug = named(SuspectRecipe(**fields).attack, change)  # validates
        out.append((f"fmnist-{slug}-s{fields['seed']}", {"label": label, "suspect": fields, **shared}))
    return out


__all__ = ["ATTACKS", "BADNETS_TRIGGER", "CONTROLS", "EXAMPLES",
           "SOURCE_FREE", "Mitigated", "Reference", "ReferenceRecipe", "SuspectRecipe", "cifar_references",
           "disjoint_subsets", "evaluate_suspect", "get_gammas", "get_mitigation", "get_poisons", "get_reference",
           "get_scan", "get_suspect", "grid", "other_detectors", "run_point",
           "scan_summary",
           "suspect_training_set"]
