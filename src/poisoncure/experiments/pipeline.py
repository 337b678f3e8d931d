"""One pipeline for every comparison of the book: the defenses run on one attacked model, one call.

:func:`run_defenses` takes a trained model of the book (:class:`experiments.TrainedModel`), the names of the
defenses to run (:data:`DEFENSES`, one naming everywhere) and their settings (:class:`DefenseSettings`), runs each
through the cached getters of :mod:`poisoncure.experiments` (so a scan, a layer's features or a retraining computed
once is never computed again) and returns one :class:`Outcome` per defense: the training samples it removes, the
labels it names, its repaired model and the raw artefact it computed. The grids of the runner
(:func:`.runner.run_main`, :func:`.grids.sweep.run_point`, :func:`.grids.ensembles.run_point`), the PoisHygiene
chapter's other detectors (:func:`.grids.hygiene.other_detectors`) and chapter 7 all call it; what differs between
them (which defenses, which set the repaired models are scored on, whether Spectral Signatures is told the target)
is a parameter here, not a copy of the pipeline.

Scoring the repaired models stays with the caller: the main grid scores on the whole test set, the sweep and
chapter 7 on the test images the defender did not hold (:func:`experiments.defender_split`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from . import report as _report
from .report import CLEANSE, CLUSTERING, ENSEMBLE, HYGIENE, POISON_CURE, PRUNING, SPECTRAL, XIANG

if TYPE_CHECKING:  # the names alone are light to import (the result readers use them); the run loads torch
    from torch import nn

    from ..data import Cifar10, ImageSet
    from .store import TrainedModel

#: the defenses of chapter 7, the main grid and the sweep, by the names the book shows (those of :mod:`.report`)
DEFENSES = (POISON_CURE, SPECTRAL, CLUSTERING, CLEANSE, PRUNING)
#: the defenses of chapters 10-12: Xiang et al.'s pair search (a detector only; built in), PoisHygiene (DETECT
#: against clean reference models, MITIGATE as its repair) and the ensembles of weak learners (a sample filter,
#: repaired by retraining on what it keeps); the last two are steps of their grid modules
#: (:data:`.grids.hygiene.defense_step`, :data:`.grids.ensembles.defense_step`), passed in ``steps=``
OTHER_DEFENSES = (XIANG, HYGIENE, ENSEMBLE)
ALL_DEFENSES = DEFENSES + OTHER_DEFENSES  #: every defense of the book
#: the stage name (in result files' provenance) and ``retrain`` key of each defense
KEYS = {POISON_CURE: "poison_cure", SPECTRAL: "spectral", CLUSTERING: "activation_clustering",
        CLEANSE: "neural_cleanse", PRUNING: "fine_pruning", XIANG: "xiang", HYGIENE: "poishygiene",
        ENSEMBLE: "ensemble"}
NEEDS_CLEAN = (CLEANSE, PRUNING, XIANG)  #: the defenses that need the defender's clean images


@dataclass(frozen=True)
class DefenseSettings:
    """The settings of every defense in :data:`DEFENSES` (the profiles' chapter 6 and 7 parameters).

    ``threshold`` and ``eta``: the paper's λ and counter-poison norm. ``eps``, ``ss_beta``, ``ss_layer``: Spectral
    Signatures' poison budget, removal factor and layer; ``ss_scope`` 'target' scans only the attacked target label
    (the paper's comparison: the defender is told it) and 'all' every label. ``ac_layer``: Activation Clustering's
    layer. ``nc_steps``: Neural Cleanse's optimisation steps. ``fp_max_drop``: Fine-Pruning's allowed clean-accuracy
    drop (points). ``retrain``: the removal defenses ('spectral', 'activation_clustering') whose repair, a retraining
    from scratch without the removed samples, runs (one full training each). ``seed``: of Spectral Signatures,
    Activation Clustering, Neural Cleanse and the defenses of :data:`OTHER_DEFENSES` (the paper's scan keeps its seed
    0, as every committed result has it).

    The defenses of :data:`OTHER_DEFENSES` take their settings from mappings (empty: the defense's own defaults):
    ``xiang`` — the arguments of
    :class:`~poisoncure.defenses.reverse_engineer.ReverseEngineeringDetector` (``per_class``, ``eta``, ``bound``,
    ``pi``, ``theta``, ...); ``hygiene`` — ``references`` (training images per class of each clean reference model
    of the attacked model's recipe, default ``[500]``), ``scan`` (the arguments of
    :class:`~poisoncure.defenses.poishygiene.PoisHygiene`), ``craft`` (``steps``, ``lr``, ``restarts``) and
    ``mitigation`` (``clean_fraction``, ``crafted_fraction``); ``ensemble`` — the fields of
    :class:`~poisoncure.defenses.weak_learners.EnsembleConfig`.
    """

    threshold: float = 2.0
    eta: float = 2.0
    eps: float = 0.1
    ss_beta: float = 1.5
    ss_scope: str = "target"
    ss_layer: str | None = None
    ac_layer: str | None = None
    nc_steps: int = 200
    fp_max_drop: float = 4.0
    retrain: tuple[str, ...] = ()
    seed: int = 0
    xiang: dict[str, Any] = field(default_factory=dict)
    hygiene: dict[str, Any] = field(default_factory=dict)
    ensemble: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ss_scope not in ("target", "all"):
            raise ValueError(f"ss_scope must be 'target' or 'all', got {self.ss_scope!r}")
        unknown = set(self.retrain) - {KEYS[SPECTRAL], KEYS[CLUSTERING]}
        if unknown:
            raise ValueError(f"retrain names {sorted(unknown)}; only 'spectral' and 'activation_clustering' retrain")

    @classmethod
    def from_params(cls, params: dict[str, Any], **overrides: Any) -> DefenseSettings:
        """The settings named in ``params`` (a result file's ``defense`` section, a notebook's globals), the others
        at their defaults; ``overrides`` win."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in params.items() if k in names}
        values.update(overrides)
        if "retrain" in values:
            values["retrain"] = tuple(sorted(values["retrain"] or ()))
        return cls(**values)


@dataclass
class Outcome:
    """What one defense did to one attacked model.

    ``flagged``: (N,) bool over the training set, the samples it removes or relabels (None for a defense that does
    not judge samples). ``labels``: the labels it names as backdoor targets (None for a defense that is told the
    target or judges no label). ``repaired``: its repaired model, a new object (None when no repair ran: not
    requested, or, with ``unchanged``, nothing to repair). ``unchanged``: the repair ran and left the model as it
    was (nothing flagged). ``artefact``: the defense's own result (scan, clustering, reversed triggers, pruning
    curve) for the numbers only one defense has. Its wall time is in :attr:`DefenseRun.stages`."""

    method: str
    flagged: np.ndarray | None = None
    labels: list[int] | None = None
    repaired: nn.Module | None = None
    unchanged: bool = False
    artefact: Any = None

    def names_target(self, target: int) -> bool | None:
        """Whether the defense names ``target`` as a backdoor target (None: it judges no label)."""
        return None if self.labels is None else target in self.labels


@dataclass
class DefenseRun:
    """:func:`run_defenses`'s answer: the target label (None for a clean model given none) and its training rows, one
    :class:`Outcome` per defense in the order asked for, and the wall time of every stage."""

    target: int | None
    target_rows: np.ndarray
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)

    def __getitem__(self, method: str) -> Outcome:
        return self.outcomes[method]

    def __contains__(self, method: str) -> bool:
        return method in self.outcomes


def run_defenses(tm: TrainedModel, data: Cifar10, methods: Iterable[str] = DEFENSES,
                 settings: DefenseSettings | None = None, clean: ImageSet | None = None, repair: bool = True,
                 target: int | None = None, device: str = "auto", progress: bool = False,
                 stages: dict[str, float] | None = None, steps: dict[str, Step] | None = None) -> DefenseRun:
    """Run ``methods`` (names of :data:`DEFENSES`) on the attacked model ``tm``.

    ``clean``: the defender's clean images (needed by Neural Cleanse and Fine-Pruning). ``repair``: run the repairs
    (the paper's neutralization, Neural Cleanse's unlearning, Fine-Pruning's fine-tuning, and the retrainings named
    in ``settings.retrain``); False runs the detections alone (a model whose attack did not take has nothing to
    repair). ``target``: the label Spectral Signatures is told when ``settings.ss_scope`` is 'target' (default: the
    attack's; give one for a clean model). ``stages`` (a dict) receives the wall time of every stage under the names
    the result files use. ``steps``: the functions that run the defenses the pipeline does not hold itself, by name
    (PoisHygiene's and the ensembles' steps live with their grids: ``{HYGIENE: grids.hygiene.defense_step,
    ENSEMBLE: grids.ensembles.defense_step}``); a step has the signature of :data:`Step` and returns an
    :class:`Outcome`.
    """
    from .. import provenance
    from . import store

    settings = settings or DefenseSettings()
    methods = list(methods)
    step = {**BUILT_IN, **(steps or {})}
    unknown = [m for m in methods if m not in ALL_DEFENSES]
    if unknown:
        raise ValueError(f"unknown defenses {unknown}; the pipeline runs {ALL_DEFENSES}")
    missing = [m for m in methods if m not in step]
    if missing:
        raise ValueError(f"{missing} need their step (steps={{name: function}}); the pipeline holds {tuple(BUILT_IN)}")
    if clean is None and any(m in NEEDS_CLEAN for m in methods):
        raise ValueError(f"{', '.join(m for m in methods if m in NEEDS_CLEAN)} need the defender's clean images "
                         "(clean=...)")
    stages = {} if stages is None else stages
    if target is None:
        spec = store.attack_spec_or_none(tm)
        target = None if spec is None else int(spec.target)
    if target is None and SPECTRAL in methods and settings.ss_scope == "target":
        raise ValueError("Spectral Signatures is told the target label (ss_scope='target'), and this model has no "
                         "attack: give target=...")
    rows = np.flatnonzero(tm.train_set.y == target) if target is not None else np.zeros(0, np.int64)
    run = DefenseRun(target, rows, stages=stages)
    for method in methods:
        with provenance.stage(stages, KEYS[method]):
            run.outcomes[method] = step[method](tm, data, settings, clean, target, rows, repair, device, progress)
        if repair and KEYS[method] in settings.retrain and run.outcomes[method].flagged is not None:
            with provenance.stage(stages, f"{KEYS[method]}_retrain"):
                retrained = store.get_retrained(tm, run.outcomes[method].flagged, device=device, progress=progress)
            run.outcomes[method].repaired = retrained.model
    return run


def held_out_scorer(held_out: Any, spec: Any, device: Any) -> Callable[[nn.Module], _report.Scores]:
    """A function scoring a model on the ``held_out`` test images (clean accuracy and, with the attack's ``spec``,
    attack success; :class:`.report.Scores` of test set ``"held-out"``), each model evaluated once: a model scored
    again (a chapter's table, then the grid's report of the same run) returns its first scores. The compare grid
    and chapter 7 both score their repairs with it, so the two agree by construction."""
    from ..train import evaluate

    seen: dict[int, tuple[nn.Module, _report.Scores]] = {}  # keyed by identity; the model kept so its id stays its

    def score(model: nn.Module) -> _report.Scores:
        if id(model) not in seen:
            seen[id(model)] = (model, _report.Scores.of(evaluate(model, held_out, spec, device), "held-out"))
        return seen[id(model)][1]

    return score


def scan_summary(cure) -> dict[str, Any]:
    """What the paper's target scan and base scan found, from a cached run of the paper's method: every class's
    distance W (None for a class the scan left out), the ratio R, the candidate, whether it was flagged, and the base
    class named (None when no class was flagged)."""
    scan, bscan = cure.result.scan, cure.result.base
    return {"distances": [None if np.isnan(w) else float(w) for w in scan.distances], "ratio": float(scan.ratio),
            "candidate": int(scan.target), "poisoned": bool(scan.poisoned),
            "base": None if bscan is None else int(bscan.base)}


def rates(flagged: np.ndarray, is_poison: np.ndarray) -> dict[str, float | int | None]:
    """Sensitivity, specificity (%; None where undefined) and the number flagged."""
    from .. import metrics

    return {**metrics.detection_rates(flagged, is_poison), "flagged": int(np.asarray(flagged).sum())}


def target_class_details(run: DefenseRun, tm: TrainedModel) -> dict[str, dict[str, Any]]:
    """The numbers of the paper's Tables 3–5 that a run of every defense also yields, per defense (for
    :func:`to_report`'s ``defense_details``): the paper's method's scan (:func:`scan_summary`), whether it named the
    true base class, and its detection inside the target class; Activation Clustering's smaller cluster of the
    target class (the paper's protocol for its Tables 3–4). Only what ``run`` holds; no target, no target rates."""
    spec = getattr(tm.train_set, "spec", None)
    is_poison = getattr(tm.train_set, "is_poison", None)
    rows = run.target_rows
    attacked = spec is not None and is_poison is not None and len(rows) > 0
    out: dict[str, dict[str, Any]] = {}
    if POISON_CURE in run:
        ours = scan_summary(run[POISON_CURE].artefact)
        if attacked:
            ours.update(base_found=ours["base"] == int(spec.base),
                        target_class=rates(run[POISON_CURE].flagged[rows], is_poison[rows]))
        out[POISON_CURE] = ours
    if CLUSTERING in run and attacked:
        out[CLUSTERING] = {"smaller_cluster": rates(run[CLUSTERING].artefact.cluster[rows] == 1, is_poison[rows])}
    return out


def to_report(run: DefenseRun, tm: TrainedModel, before: _report.Scores,
              score: Callable[[nn.Module], _report.Scores], details: dict[str, Any] | None = None,
              defense_details: dict[str, dict[str, Any]] | None = None) -> _report.Report:
    """The typed report (:class:`.report.Report`) of a :func:`run_defenses` run: per defense the labels it names
    and whether they hold the target, the samples it flags judged over the whole training set (counts, sensitivity
    and specificity; None where undefined, e.g. sensitivity on a clean model), and its repaired model scored by
    ``score`` (``before``, the undefended model's scores, when the repair changed nothing; None when none ran).
    ``details``: the experiment's own numbers; ``defense_details``: each defense's (e.g.
    :func:`target_class_details`)."""
    from .. import metrics

    is_poison = getattr(tm.train_set, "is_poison", None)
    is_poison = np.zeros(len(tm.train_set), dtype=bool) if is_poison is None else np.asarray(is_poison, dtype=bool)
    spec = getattr(tm.train_set, "spec", None)
    defenses = {}
    for name, o in run.outcomes.items():
        filtering = None
        if o.flagged is not None:
            rates = metrics.detection_rates(o.flagged, is_poison)
            filtering = _report.Filtering(int(o.flagged.sum()), rates["sensitivity"], rates["specificity"],
                                  int((o.flagged & ~is_poison).sum()), int((~o.flagged & is_poison).sum()),
                                  "training set")
        after = before if o.unchanged else (None if o.repaired is None else score(o.repaired))
        defenses[name] = _report.DefenseReport(o.labels, None if run.target is None or spec is None else
                                               o.names_target(run.target), filtering, after,
                                               dict((defense_details or {}).get(name, {})))
    return _report.Report(run.target, None if spec is None else int(spec.base), len(tm.train_set), int(is_poison.sum()),
                          before, defenses, dict(details or {}))


# ------------------------------------------------------------------------------------------ one defense each
def _poison_cure(tm, data, s: DefenseSettings, clean, target, rows, repair, device, progress) -> Outcome:
    from ..defenses.poison_cure import PoisonCure
    from . import store

    # the scan's cache key holds the threshold and seed only: detection alone needs no fine-tuning recipe
    defense = (store.poison_cure_for(tm.recipe, threshold=s.threshold, eta=s.eta, device=device,
                                     progress=progress) if repair else
               PoisonCure(threshold=s.threshold, eta=s.eta, device=device, progress=progress))
    cure = store.get_poison_cure(tm, defense, neutralize=repair, data=data)
    scan = cure.result.scan
    model = cure.result.model
    return Outcome(POISON_CURE, flagged=cure.result.is_poison(len(tm.train_set)),
                   labels=[int(scan.target)] if scan.poisoned else [], repaired=model,
                   unchanged=repair and model is None, artefact=cure)


def _spectral(tm, data, s: DefenseSettings, clean, target, rows, repair, device, progress) -> Outcome:
    from ..defenses.spectral import SpectralSignatures
    from . import store

    told = s.ss_scope == "target"
    ss = SpectralSignatures(eps=s.eps, beta=s.ss_beta, labels=int(target) if told else "all",
                            layer=s.ss_layer, seed=s.seed, device=device, progress=progress)
    if told:
        res = ss.score_features(store.get_features(tm, s.ss_layer, rows, device=device), tm.train_set.y[rows])
        flagged = np.zeros(len(tm.train_set), dtype=bool)
        flagged[rows] = res.removed
    else:
        res = ss.score_features(store.get_features(tm, s.ss_layer, device=device), tm.train_set.y)
        flagged = np.asarray(res.removed, dtype=bool)
    return Outcome(SPECTRAL, flagged=flagged, artefact=res)


def _clustering(tm, data, s: DefenseSettings, clean, target, rows, repair, device, progress) -> Outcome:
    from ..defenses.activation_clustering import ActivationClustering
    from . import store

    ac = ActivationClustering(layer=s.ac_layer, seed=s.seed, device=device, progress=progress)
    res = ac.score_features(store.get_features(tm, s.ac_layer, device=device), tm.train_set.y)
    return Outcome(CLUSTERING, flagged=np.asarray(res.flagged, dtype=bool),
                   labels=np.flatnonzero(res.poisoned).tolist(), artefact=res)


def _cleanse(tm, data, s: DefenseSettings, clean, target, rows, repair, device, progress) -> Outcome:
    from ..defenses.neural_cleanse import NeuralCleanse
    from . import store

    nc = NeuralCleanse(steps=s.nc_steps, seed=s.seed, device=device, progress=progress)
    trig, _ = store.get_reversed_triggers(tm, nc, clean)
    flagged = bool(trig.flagged.any())
    return Outcome(CLEANSE, labels=np.flatnonzero(trig.flagged).tolist(),
                   repaired=nc.repair(tm.model, clean, trig) if repair and flagged else None,
                   unchanged=repair and not flagged, artefact=trig)


def _pruning(tm, data, s: DefenseSettings, clean, target, rows, repair, device, progress) -> Outcome:
    from ..defenses.fine_pruning import FinePruning

    fp = FinePruning(max_accuracy_drop=s.fp_max_drop, device=device, progress=progress)
    pruning = fp.prune_curve(tm.model, clean)
    return Outcome(PRUNING, repaired=fp.repair(tm.model, clean, pruning) if repair else None, artefact=pruning)


def _xiang(tm, data, s: DefenseSettings, clean, target, rows, repair, device, progress) -> Outcome:
    from ..defenses.reverse_engineer import ReverseEngineeringDetector
    from . import store

    detector = ReverseEngineeringDetector(**{"seed": s.seed, **s.xiang}, device=device, progress=progress)
    r, _ = store.get_pair_search(tm, detector, clean)
    return Outcome(XIANG, labels=[int(r.target)] if r.detected else [], artefact=r)


#: a defense's step: (trained model, data, settings, clean images, target, target rows, repair, device, progress)
Step = Callable[..., Outcome]
#: the defenses the pipeline runs itself
BUILT_IN: dict[str, Step] = {POISON_CURE: _poison_cure, SPECTRAL: _spectral, CLUSTERING: _clustering,
                             CLEANSE: _cleanse, PRUNING: _pruning, XIANG: _xiang}


__all__ = ["ALL_DEFENSES", "BUILT_IN", "CLEANSE", "CLUSTERING", "DEFENSES", "ENSEMBLE", "HYGIENE", "OTHER_DEFENSES",
           "POISON_CURE", "PRUNING", "SPECTRAL", "Step", "XIANG", "DefenseRun", "DefenseSettings", "Outcome",
           "rates", "run_defenses", "scan_summary", "target_class_details", "to_report"]
