"""The shared objects of the book: poisoned (and clean) models trained once per recipe and cached.

A :class:`Recipe` holds everything that determines a trained model — pair, poison type and strength, data
subset, architecture and training schedule. Its fields are the experiment parameters of the profiles
(``src/poisoncure/experiments/profiles/*.yml``); every chapter that declares them in its ``parameters`` cell gets the
same values from the profile, so all chapters talk about the same models, trained once and loaded from
the cache afterwards.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import provenance
from ..attacks import (
    ADDITIVE_PATTERNS,
    PAPER_PAIRS,
    AdditiveTrigger,
    BlendTrigger,
    NoTrigger,
    PatchTrigger,
    PoisonedSet,
    Trigger,
    paper_trigger,
    poison,
    poison_add,
    poison_all_to_one,
    poison_mislabel,
    shape_at,
)
from ..cache import Cache
from ..data import Cifar10, ImageSet, balanced_subset, load_cifar10
from ..models import Classifier, build_model
from ..train import AttackMetrics, FitHistory, TrainConfig, evaluate, fit, resolve_device

ADDITIVE = ADDITIVE_PATTERNS  #: Xiang et al.'s additive patterns, added as copies (chapter 10)
#: All-to-one backdoors of PoisHygiene's experiments: every class but the target poisoned (a fraction of the whole set)
ALL_TO_ONE = ("badnets", "chen")
#: the ensembles-of-weak-learners paper's X and L shapes, placed and coloured as the pair's one-pixel trigger
SHAPES = {"xshape": "pattern", "lshape": "ell"}
POISONS = ("blend", "pixel", "patch", "clean", *ADDITIVE, *ALL_TO_ONE, *SHAPES, "mislabel")
XIANG_PAIR = ("automobile", "truck")  #: (source, target) of Xiang et al.'s single-source attacks, used for ADDITIVE
_NOT_PARAMS = ("poison", "additive_l2", "patch_size")  #: recipe fields that are not shared notebook parameters


@dataclass(frozen=True)
class Recipe:
    """Everything that defines one trained model of the book (all fields enter the cache key).

    ``poison`` is 'blend', 'pixel', 'patch' (the pair's pixel grown to a ``patch_size`` square, see
    :func:`attacks.grown_patch`; the variable-size sweep), 'clean' (no attack; the clean reference model), or one of
    Xiang et al.'s
    additive patterns 'chessboard' and 'sparse' (L2 norm ``additive_l2``; ``round(poison_rate · n_base)``
    triggered base-class copies are *added*, see :func:`attacks.poison_add`; their pair is Xiang et al.'s
    automobile -> truck, :data:`XIANG_PAIR`, whatever ``pair`` says). 'badnets' and 'chen' are PoisHygiene's
    all-to-one backdoors (:data:`ALL_TO_ONE`, :func:`attacks.poison_all_to_one`): ``poison_rate`` of the *whole*
    training set, drawn from every class but the pair's target, gets a 4x4 white square in the bottom-right corner
    ('badnets') or a seeded uniform-noise image blended at ``opacity`` (Chen et al., 'chen'), and the target label.
    'xshape' and 'lshape' are the ensembles-of-weak-learners paper's X (5 pixels) and L (3 pixels) in the colour and
    at the place of the pair's one-pixel trigger (:data:`SHAPES`, :func:`attacks.shape_at`). 'mislabel' is
    PoisHygiene's Mislabel attack (:func:`attacks.poison_mislabel`): the base class leaves the training set but for
    ``round(poison_rate · n_base)`` of its images, labelled as the target; no trigger (attack success is the share of
    clean base-class test images sent to the target).
    ``pair`` is a row of
    the paper's pair table (:data:`attacks.PAPER_PAIRS`). ``blend_source`` 'skimage' uses the pair's
    out-of-distribution image, 'noise' a seeded noise image. ``train_per_class`` limits the training set to a
    class-balanced subset (``None`` = all 5,000 per class). ``tta`` evaluates the model with flip test-time
    augmentation (:class:`models.Classifier`): every accuracy and attack success of the model and of its repaired
    copies is measured that way.
    """

    poison: str = "blend"
    pair: int = 1
    poison_rate: float = 0.1
    opacity: float = 0.2
    blend_source: str = "noise"
    train_per_class: int | None = None
    model: str = "small_cnn"
    width: int = 32
    epochs: int = 4
    batch_size: int = 256
    lr: float = 0.2
    augment: str = "flip"
    label_smoothing: float = 0.1
    seed: int = 0
    tta: bool = False
    additive_l2: float = 2.0
    patch_size: int = 3

    def __post_init__(self) -> None:
        if self.poison not in POISONS:
            raise ValueError(f"poison must be one of {POISONS}, got {self.poison!r}")
        if self.pair not in PAPER_PAIRS:
            raise ValueError(f"pair must be one of {sorted(PAPER_PAIRS)}, got {self.pair!r}")
        if not 0 < self.poison_rate <= 1:
            raise ValueError(f"poison_rate must lie in (0, 1], got {self.poison_rate}")
        if not 0 < self.opacity <= 1:
            raise ValueError(f"opacity must lie in (0, 1], got {self.opacity}")
        self.train_config()  # validates the training fields
        self.trigger()  # validates blend_source and patch_size

    # parameter names shared with the notebooks' `parameters` cells (all fields but `poison`, `additive_l2`)
    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.name not in _NOT_PARAMS)

    @classmethod
    def from_params(cls, params: dict[str, Any], poison: str) -> Recipe:
        """Build a recipe from a namespace holding the parameter names (e.g. a notebook's ``globals()``)."""
        missing = [n for n in cls.param_names() if n not in params]
        if missing:
            raise ValueError(f"parameters missing for the recipe: {missing}")
        return cls(poison=poison, **{n: params[n] for n in cls.param_names()})

    def replace(self, **changes: Any) -> Recipe:
        return dataclasses.replace(self, **changes)

    @property
    def base(self) -> str:
        return XIANG_PAIR[0] if self.poison in ADDITIVE else PAPER_PAIRS[self.pair][0]

    @property
    def target(self) -> str:
        return XIANG_PAIR[1] if self.poison in ADDITIVE else PAPER_PAIRS[self.pair][1]

    def trigger(self) -> Trigger:
        if self.poison in ADDITIVE:
            return AdditiveTrigger(self.poison, self.additive_l2, seed=2000 + self.seed)
        if self.poison == "badnets":
            return PatchTrigger(size=4, row=28, col=28)
        if self.poison == "chen":
            return BlendTrigger(f"noise:{3000 + self.seed}", self.opacity)
        if self.poison in SHAPES:
            return shape_at(paper_trigger(self.pair, "pixel"), SHAPES[self.poison])
        if self.poison == "mislabel":
            return NoTrigger()
        size = self.poison if self.poison in ("pixel", "patch") else "blend"
        return paper_trigger(self.pair, size, self.opacity, self.blend_source, patch_size=self.patch_size)

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, augment=self.augment,
                           label_smoothing=self.label_smoothing, seed=self.seed)

    def cache_config(self) -> dict[str, Any]:
        """What the model's cache key hashes: the recipe, with irrelevant fields normalised for clean models."""
        cfg = dataclasses.asdict(self)
        if self.poison == "clean":
            for name in ("pair", "poison_rate", "opacity", "blend_source"):
                cfg[name] = None
        elif self.poison in ("pixel", "patch", "badnets", "mislabel", *SHAPES):
            cfg["opacity"] = cfg["blend_source"] = None
        elif self.poison == "chen":
            cfg["blend_source"] = None
        elif self.poison in ADDITIVE:
            cfg["opacity"] = cfg["blend_source"] = cfg["pair"] = None
        if self.poison not in ADDITIVE:
            del cfg["additive_l2"]  # keeps the keys of the other models as they were
        if self.poison != "patch":
            del cfg["patch_size"]
        if not self.tta:
            del cfg["tta"]  # keeps the keys of models evaluated without test-time augmentation as they were
        return cfg


def recipe_fields(values: dict[str, Any]) -> dict[str, Any]:
    """The shared recipe's fields among ``values`` (a profile's ``experiment`` section, a notebook's parameters),
    with ``tta: false`` left out: it is the default, and leaving it out keeps the keys of the result files written
    before test-time augmentation was a recipe field."""
    return {k: v for k, v in values.items() if k in Recipe.param_names() and not (k == "tta" and not v)}


@dataclass
class TrainedModel:
    """A trained model with its training data, metrics and provenance."""

    recipe: Recipe
    model: Classifier
    train_set: PoisonedSet | ImageSet  #: what it was trained on (a PoisonedSet unless recipe.poison == 'clean')
    metrics: AttackMetrics  #: clean accuracy, attack success (None for a clean model without an attack)
    history: FitHistory
    provenance: dict[str, Any]
    from_cache: bool


def training_set(recipe: Recipe, data: Cifar10) -> PoisonedSet | ImageSet:
    """The (poisoned) training set of a recipe — deterministic, cheap, so never cached."""
    train = balanced_subset(data.train, recipe.train_per_class, seed=recipe.seed)
    if recipe.poison == "clean":
        return train
    if recipe.poison in ADDITIVE:
        n_add = max(1, round(recipe.poison_rate * int(np.sum(train.y == train.classes.index(recipe.base)))))
        return poison_add(train, recipe.trigger(), recipe.base, recipe.target, n_add, seed=recipe.seed)
    if recipe.poison in ALL_TO_ONE:
        return poison_all_to_one(train, recipe.trigger(), recipe.target, recipe.poison_rate, seed=recipe.seed)
    if recipe.poison == "mislabel":  # poison_rate of the base class, as for the pair's other attacks
        n_base = int(np.sum(train.y == train.classes.index(recipe.base)))
        return poison_mislabel(train, recipe.base, recipe.target, recipe.poison_rate * n_base / len(train),
                               seed=recipe.seed)
    return poison(train, recipe.trigger(), recipe.base, recipe.target, recipe.poison_rate, seed=recipe.seed)


def get_model(recipe: Recipe, device: str | torch.device = "auto", data: Cifar10 | None = None,
              cache: Cache | None = None, progress: bool = True) -> TrainedModel:
    """Train the recipe's model, or load it from the cache when an identical recipe was trained before."""
    dev = resolve_device(device)
    data = data or load_cifar10()
    cache = cache or Cache()
    train = training_set(recipe, data)
    spec = train.spec if isinstance(train, PoisonedSet) else None
    fit_images = train.as_imageset() if isinstance(train, PoisonedSet) else train

    def build(folder):
        torch.manual_seed(recipe.seed)
        model = build_model_arch(recipe)
        hist = fit(model, fit_images, recipe.train_config(), dev, progress=progress)
        result = evaluate(model, data.test, spec, dev)
        save_weights(model, folder)
        return {"history": dataclasses.asdict(hist), "metrics": result.to_dict(),
                "provenance": provenance.collect(dev, seed=recipe.seed, wall_seconds=round(hist.seconds, 1),
                                                 precision=hist.precision, data_source=data.source)}

    def load(folder):
        return load_weights(recipe, folder)

    res = cache.get_or_build("model", recipe.cache_config(), build, load)
    info = res.info
    return TrainedModel(recipe, res.value.to(dev), train, AttackMetrics(**info["metrics"]),
                        FitHistory(**info["history"]), info["provenance"], res.hit)


def learning_curve(recipe: Recipe, device: str | torch.device = "auto", data: Cifar10 | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """Train the recipe's model once (not cached) and measure it on the test set after every epoch: clean accuracy,
    its worst class and attack success (chapter 2: when, and whether, each network learns each trigger).

    Returns ``{"epochs": [{"epoch", "clean_accuracy", "worst_class", "attack_success_rate"}, ...], "train_loss"
    (per epoch), "train_seconds" (without the measurements), "precision", "parameters"}``."""
    if recipe.poison not in ("pixel", "patch", "blend"):
        raise ValueError(f"learning_curve measures a backdoor: poison must be pixel, patch or blend, "
                         f"got {recipe.poison!r}")
    dev = resolve_device(device)
    data = data or load_cifar10()
    train = training_set(recipe, data)

    def probe(epoch: int, model: torch.nn.Module) -> dict[str, Any]:
        m = evaluate(model, data.test, train.spec, dev)
        return {"epoch": epoch, "clean_accuracy": round(m.clean_accuracy, 2),
                "worst_class": round(min(m.per_class_accuracy), 2),
                "attack_success_rate": round(m.attack_success_rate, 2)}

    torch.manual_seed(recipe.seed)
    model = build_model_arch(recipe)
    hist = fit(model, train.as_imageset(), recipe.train_config(), dev, progress=progress, on_epoch=probe)
    return {"epochs": hist.epoch_metrics, "train_loss": [round(v, 4) for v in hist.loss],
            "train_seconds": round(hist.seconds, 1), "precision": hist.precision,
            "parameters": int(sum(p.numel() for p in model.parameters()))}


def attack_spec_or_none(tm: TrainedModel):
    return tm.train_set.spec if isinstance(tm.train_set, PoisonedSet) else None


def get_gradients(tm: TrainedModel, index: np.ndarray, labels: int | np.ndarray, images: np.ndarray | None = None,
                  device: str | torch.device = "auto", cache: Cache | None = None) -> np.ndarray:
    """Input gradients (len(index), 3072) of a trained model's training images ``index`` with CE target ``labels``,
    cached under the model's recipe, the indices and the labels (SPEC 3(a); BOOK: shared objects).

    ``images`` defaults to the model's training images (poisoned where the recipe poisons).
    """
    from ..gradients import input_gradients

    cache = cache or Cache()
    dev = resolve_device(device)
    index = np.asarray(index, dtype=np.int64)
    lab = np.asarray(labels, dtype=np.int64)
    x = tm.train_set.x if images is None else images
    config = {"model": tm.recipe.cache_config(), "index_sha": _array_sha(index),
              "labels_sha": _array_sha(np.broadcast_to(lab, index.shape)),
              "images_sha": _array_sha(x[index]) if images is not None else "train"}

    def build(folder):
        with provenance.stopwatch() as t:
            grads = input_gradients(tm.model, x[index], labels, device=dev)
        np.save(folder / "gradients.npy", grads)
        return {"provenance": provenance.collect(dev, n=len(index), wall_seconds=round(t["seconds"], 2))}

    return cache.get_or_build("gradients", config, build, lambda folder: np.load(folder / "gradients.npy")).value


def _array_sha(a: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


# ------------------------------------------------------------------------- the paper's defense, cached
@dataclass
class CuredModel:
    """The paper's defense run on a trained model of the book: all artefacts, and the model before/after."""

    trained: TrainedModel
    result: Any  #: :class:`poisoncure.defenses.poison_cure.PoisonCureResult`
    after: AttackMetrics | None  #: None when no class was flagged (nothing to neutralize) or not requested
    provenance: dict[str, Any]  #: of the detection artefacts
    neutralize_provenance: dict[str, Any] | None

    @property
    def before(self) -> AttackMetrics:
        """The poisoned model's test metrics (those of the trained model)."""
        return self.trained.metrics


def poison_cure_for(recipe: Recipe, **overrides: Any):
    """:class:`PoisonCure` with the SPEC's defaults, fine-tuning with the loss and augmentation of the recipe.

    Deviation from SPEC 3.0 (crop + flip, plain cross-entropy): the one-epoch fine-tuning uses the augmentation and
    label smoothing the model was trained with. For the ``full`` profile (crop + flip, no smoothing) this is the
    SPEC's setting; the smoke CNN never saw crops and was trained with smoothing 0.1, and switching both at
    fine-tuning costs it clean accuracy (chapter 6 shows the measurements). ``overrides`` go to
    :class:`PoisonCure` (e.g. ``eta``, ``threshold``, ``finetune``).
    """
    from ..defenses.poison_cure import FINETUNE, PoisonCure

    overrides.setdefault("finetune", dataclasses.replace(FINETUNE, augment=recipe.augment, seed=recipe.seed,
                                                         label_smoothing=recipe.label_smoothing))
    return PoisonCure(**overrides)


def get_poison_cure(tm: TrainedModel, defense=None, neutralize: bool = True, data: Cifar10 | None = None,
                    cache: Cache | None = None) -> CuredModel:
    """Run the paper's defense (SPEC 3(h)) on a trained model, caching the detection artefacts (scan, base scan,
    filtering, counter-poison signals) and, separately, the neutralized model with its test metrics.

    The detection cache is keyed by the model's recipe and the detection parameters (threshold, seed), so chapters
    that sweep ``eta`` or the fine-tuning reuse one scan.
    """
    from ..defenses.poison_cure import BaseScan, ClassScan, CounterPoison, Filtering, PoisonCureResult

    defense = defense or poison_cure_for(tm.recipe)
    cache = cache or Cache()
    data = data or load_cifar10()
    train = tm.train_set.as_imageset() if isinstance(tm.train_set, PoisonedSet) else tm.train_set
    parts = {"scan": ClassScan, "base": BaseScan, "filtering": Filtering, "counter": CounterPoison}
    det_config = {"model": tm.recipe.cache_config(), "threshold": defense.threshold, "seed": defense.seed,
                  "num_classes": defense.num_classes}

    def build(folder):
        res = defense.run(tm.model, train, neutralize=False)
        for name in parts:
            part = getattr(res, name)
            if part is not None:
                part.save(folder / f"{name}.npz")
        return {"seconds": {k: round(v, 1) for k, v in res.seconds.items()},
                "provenance": provenance.collect(defense.device, seed=defense.seed,
                                                 wall_seconds=round(sum(res.seconds.values()), 1))}

    def load(folder):
        loaded = {n: (cls.load(folder / f"{n}.npz") if (folder / f"{n}.npz").exists() else None)
                  for n, cls in parts.items()}
        return PoisonCureResult(**loaded)

    det = cache.get_or_build("poison_cure", det_config, build, load)
    res = det.value
    res.seconds = dict(det.info["seconds"])
    if res.counter is not None:
        res.counter = dataclasses.replace(res.counter, eta=defense.eta)
    spec = attack_spec_or_none(tm)
    after = neut_prov = None
    if neutralize and res.counter is not None:
        def build_neutralized(folder):
            model, hist = defense.neutralize(tm.model, train, res.filtering.flagged_index, res.base.base,
                                             res.counter)
            metrics = evaluate(model, data.test, spec, defense.device)
            save_weights(model, folder)
            return {"history": dataclasses.asdict(hist), "metrics": metrics.to_dict(),
                    "provenance": provenance.collect(defense.device, seed=defense.seed,
                                                     wall_seconds=round(hist.seconds, 1))}

        neut = cache.get_or_build("neutralized", {**det_config, **defense.config()}, build_neutralized,
                                   lambda folder: load_weights(tm.recipe, folder))
        res.model = neut.value.to(defense.device)
        res.history = FitHistory(**neut.info["history"])
        res.seconds["neutralize"] = res.history.seconds
        after = AttackMetrics(**neut.info["metrics"])
        neut_prov = neut.info["provenance"]
    return CuredModel(tm, res, after, det.info["provenance"], neut_prov)


def build_model_arch(recipe: Recipe) -> Classifier:
    """An untrained model of the recipe's architecture (evaluated with flip test-time augmentation when the recipe
    says ``tta``)."""
    model = build_model(recipe.model, width=recipe.width)
    model.tta = recipe.tta
    return model


def save_weights(model: torch.nn.Module, folder) -> None:
    """Write the model's weights (on the CPU) to ``folder/model.pt``."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    (folder / "model.pt").write_bytes(buf.getvalue())


def read_weights(model: torch.nn.Module, folder):
    """``model`` with the weights of ``folder/model.pt`` (written by :func:`save_weights`), in eval mode."""
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    return model.eval()


def load_weights(recipe: Recipe, folder) -> Classifier:
    """The recipe's architecture with the weights of ``folder/model.pt``, in eval mode on the CPU."""
    return read_weights(build_model_arch(recipe), folder)


# ------------------------------------------------------------------------- the baselines (chapter 7), cached
def defender_split(test: ImageSet, per_class: int, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """Split the test set into the small clean set a defender holds (``per_class`` images of every class, seeded)
    and the rest, on which repaired models are evaluated (so no defense is scored on images it trained on)."""
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(len(test.classes)):
        rows = np.flatnonzero(test.y == c)
        if len(rows) <= per_class:
            raise ValueError(f"class {c} has {len(rows)} test images; per_class must be smaller, got {per_class}")
        chosen.append(rng.choice(rows, size=per_class, replace=False))
    held = np.sort(np.concatenate(chosen))
    return test.subset(held), test.subset(np.setdiff1d(np.arange(len(test)), held))


def get_features(tm: TrainedModel, layer: str | None = None, rows: np.ndarray | None = None,
                 device: str | torch.device = "auto", cache: Cache | None = None) -> np.ndarray:
    """Representations (len(rows), d) of a trained model's training images at ``layer`` (None: the penultimate
    features), cached under the model's recipe, the layer and the rows (default: all training images)."""
    from ..gradients import features

    cache = cache or Cache()
    dev = resolve_device(device)
    rows = np.arange(len(tm.train_set)) if rows is None else np.asarray(rows, dtype=np.int64)
    config = {"model": tm.recipe.cache_config(), "layer": layer, "rows_sha": _array_sha(rows)}

    def build(folder):
        with provenance.stopwatch() as t:
            reps = features(tm.model, tm.train_set.x[rows], layer, device=dev)
        np.save(folder / "features.npy", reps)
        return {"provenance": provenance.collect(dev, n=len(rows), wall_seconds=round(t["seconds"], 2))}

    return cache.get_or_build("features", config, build, lambda folder: np.load(folder / "features.npy")).value


@dataclass
class Retrained:
    """A model retrained from scratch on its recipe's training set minus the samples a defense removed."""

    model: Classifier
    removed: int  #: how many samples were removed
    history: FitHistory
    provenance: dict[str, Any]
    from_cache: bool


def get_retrained(tm: TrainedModel, removed: np.ndarray, device: str | torch.device = "auto",
                  cache: Cache | None = None, progress: bool = True) -> Retrained:
    """Retrain the recipe's architecture from a fresh initialisation (seed + 1) with the recipe's schedule on the
    training set without ``removed`` (N,) bool — the repair of Spectral Signatures and Activation Clustering —
    cached under the recipe and the removed set."""
    from ..defenses.base import retrain_without

    cache = cache or Cache()
    dev = resolve_device(device)
    removed = np.asarray(removed, dtype=bool)
    train = tm.train_set.as_imageset() if isinstance(tm.train_set, PoisonedSet) else tm.train_set

    def build(folder):
        model, hist = retrain_without(build_model_arch(tm.recipe), train, removed, tm.recipe.train_config(), dev,
                                      progress)
        save_weights(model, folder)
        return {"history": dataclasses.asdict(hist), "removed": int(removed.sum()),
                "provenance": provenance.collect(dev, seed=tm.recipe.seed + 1, wall_seconds=round(hist.seconds, 1))}

    res = cache.get_or_build("retrained", {"model": tm.recipe.cache_config(), "removed_sha": _array_sha(removed)},
                             build, lambda folder: load_weights(tm.recipe, folder))
    info = res.info
    return Retrained(res.value.to(dev), info["removed"], FitHistory(**info["history"]), info["provenance"], res.hit)


def _model_defense_artefact(kind: str, tm: TrainedModel, defense, clean: ImageSet, run, artefact_cls, filename: str,
                            cache: Cache | None = None):
    """Cache what a model-inspecting defense computes from a trained model and a clean set, keyed by the recipe,
    the defense's parameters and the clean images. ``run(model, clean)`` returns an ``Arrays`` artefact saved to
    ``filename``. Returns (artefact, provenance)."""
    cache = cache or Cache()
    config = {"model": tm.recipe.cache_config(), "defense": defense.config(),
              "clean_sha": _array_sha(clean.x), "labels_sha": _array_sha(clean.y)}

    def build(folder):
        with provenance.stopwatch() as t:
            artefact = run(tm.model, clean)
        artefact.save(folder / filename)
        return {"provenance": provenance.collect(defense.device, seed=defense.seed,
                                                 wall_seconds=round(t["seconds"], 1))}

    res = cache.get_or_build(kind, config, build, lambda f: artefact_cls.load(f / filename))
    return res.value, res.info["provenance"]


def get_reversed_triggers(tm: TrainedModel, defense, clean: ImageSet, cache: Cache | None = None):
    """Neural Cleanse's reverse-engineered triggers for a trained model and a clean set, cached under the recipe,
    the defense's parameters and the clean images. Returns (:class:`ReversedTriggers`, provenance)."""
    from ..defenses.neural_cleanse import ReversedTriggers

    return _model_defense_artefact("neural_cleanse", tm, defense, clean, defense.reverse_engineer, ReversedTriggers,
                                   "triggers.npz", cache)


def get_pair_search(tm: TrainedModel, detector, clean: ImageSet, cache: Cache | None = None):
    """Xiang et al.'s all-pairs perturbation search for a trained model and a clean set (chapter 10), cached under the
    recipe, the detector's parameters and the clean images. Returns (:class:`ReverseEngineeringResult`, provenance);
    the statistics, nulls and decision are recomputed from the cached search (cheap, and θ may change)."""
    from ..defenses.reverse_engineer import PairSearch

    search, prov = _model_defense_artefact("pair_search", tm, detector, clean, detector.search, PairSearch,
                                           "search.npz", cache)
    return detector.analyse(search), prov
