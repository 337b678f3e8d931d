"""The typed report of one experiment: what every grid of the runner writes and every chapter reads.

One schema for all grids, with one naming (the book's defense names of :mod:`.pipeline`, ``attack_success_rate``
for the share of triggered images sent to the target, ``before`` / ``after`` for a model's scores without and with a
defense). A :class:`Report` says what was attacked (``target``, ``base``, the training set's size and poison count),
how the undefended model scores (``before``, a :class:`Scores`) and, per defense, a :class:`DefenseReport`: the
labels it names, the training samples it flags (:class:`Filtering`) and how its repaired model scores (``after``).
What only one grid measures (the paper's scan distances, Xiang et al.'s null fit, a learning curve) stays in the
``details`` mapping of the report or of a defense, documented where the grid writes it.

Each grid's run function measures into its own mapping (the layout result files had in format 1) and
:func:`from_measurements` turns it into the report, so writing a result and migrating a format-1 file are one code
path and cannot drift apart. A :class:`Result` is one experiment's result file: the experiment, its report and its
provenance; files store ``Report.to_dict()`` under ``report`` with :data:`FORMAT`, the version of this schema
(:mod:`.result_files`). Older result folders are migrated (``python -m poisoncure.experiments --migrate``), never
silently misread.

This module imports nothing heavy: reading the committed results loads no torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

FORMAT = 2  #: the version of the result-file schema this library writes and reads

#: every defense's name in reports (the five of :mod:`.pipeline` and the three of chapters 10-12)
POISON_CURE, SPECTRAL, CLUSTERING, CLEANSE, PRUNING = ("Poison as a Cure", "Spectral Signatures",
                                                      "Activation Clustering", "Neural Cleanse", "Fine-Pruning")
XIANG, HYGIENE, ENSEMBLE, ITLM = "Xiang et al.", "PoisHygiene", "Ensembles of weak learners", "ITLM"
#: where a model was scored: the whole clean test set, or the test images the defender did not hold
TEST_SETS = ("test", "held-out")
#: which training samples a filter was judged on
SCOPES = ("target class", "training set")


def commit_parts(commit: str, n: int = 7) -> tuple[str, bool]:
    """A provenance commit as (its sha shortened to ``n`` hex digits, whether the run's working tree had
    uncommitted changes: the ``+dirty`` mark of :func:`poisoncure.provenance.git_commit`)."""
    sha, plus, _ = str(commit).partition("+")
    return sha[:n], bool(plus)


def short_commit(commit: str, n: int = 7) -> str:
    """A provenance commit shortened to ``n`` hex digits for the reader, keeping its ``+dirty`` mark (a run whose
    working tree differed from the commit must not read as a clean one)."""
    sha, dirty = commit_parts(commit, n)
    return sha + ("+dirty" if dirty else "")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


@dataclass(frozen=True)
class Scores:
    """A model's scores on a test set, all in %.

    ``clean_accuracy``: top-1 on clean images. ``attack_success_rate``: triggered base-class images classified as
    the target (None for a clean model). ``per_class_accuracy`` and ``poisoned_accuracy`` (the triggered images
    classified as their true class): where the grid measured them. ``targeted``: the weak-learner paper's Eq. 7
    (correct without the trigger *and* sent to the target with it; chapter 12 only). ``test_set``: one of
    :data:`TEST_SETS`.
    """

    clean_accuracy: float
    attack_success_rate: float | None = None
    per_class_accuracy: list[float] | None = None
    poisoned_accuracy: float | None = None
    targeted: float | None = None
    test_set: str = "test"

    def __post_init__(self) -> None:
        _check_choice("Scores.test_set", self.test_set, TEST_SETS)

    @classmethod
    def of(cls, metrics: Any, test_set: str = "test") -> Scores:
        """From :class:`poisoncure.train.AttackMetrics` (or its dict)."""
        d = metrics if isinstance(metrics, dict) else metrics.to_dict()
        return cls(d["clean_accuracy"], d.get("attack_success_rate"), d.get("per_class_accuracy"),
                   d.get("poisoned_accuracy"), d.get("targeted"), test_set)


@dataclass(frozen=True)
class Filtering:
    """The training samples a defense flags as poison, judged against the truth on ``scope`` (:data:`SCOPES`).

    ``flagged``: how many; ``sensitivity`` / ``specificity`` in % (poisons flagged, clean samples kept);
    ``false_positives`` (clean samples flagged) and ``false_negatives`` (poisons kept) where the grid counted them.
    A field the grid did not measure is None.
    """

    flagged: int | None = None
    sensitivity: float | None = None
    specificity: float | None = None
    false_positives: int | None = None
    false_negatives: int | None = None
    scope: str = "target class"

    def __post_init__(self) -> None:
        _check_choice("Filtering.scope", self.scope, SCOPES)


@dataclass(frozen=True)
class DefenseReport:
    """What one defense did on one attacked model.

    ``labels``: the labels it names as backdoor targets (None: it judges no label, e.g. Spectral Signatures told the
    target). ``names_target``: whether ``labels`` holds the attacked target (None: no label verdict or no attack).
    ``filtering``: the samples it flags (None: it flags none). ``after``: its repaired model's scores (None: no
    repair ran). ``details``: the defense's own numbers (documented by the grid that writes them).
    """

    labels: list[int] | None = None
    names_target: bool | None = None
    filtering: Filtering | None = None
    after: Scores | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Report:
    """One experiment: the attack (``target``, ``base``: None for a clean model), the training set's size and poison
    count, the undefended model's scores (``before``; None where the grid does not score it), one
    :class:`DefenseReport` per defense under its book name, and the grid's own numbers in ``details``."""

    target: int | None
    base: int | None
    n_train: int | None
    n_poison: int | None
    before: Scores | None
    defenses: dict[str, DefenseReport] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> DefenseReport:
        """The report of defense ``name`` (``KeyError`` naming the defenses run)."""
        try:
            return self.defenses[name]
        except KeyError:
            raise KeyError(f"no defense {name!r} in this report; it ran {sorted(self.defenses)}") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON values (the result file's ``report``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Report:
        """The inverse of :meth:`to_dict` (``ValueError`` / ``TypeError`` on a malformed mapping)."""
        def scores(x):
            return None if x is None else Scores(**x)

        defenses = {name: DefenseReport(labels=v["labels"], names_target=v["names_target"],
                                        filtering=None if v["filtering"] is None else Filtering(**v["filtering"]),
                                        after=scores(v["after"]), details=v["details"])
                    for name, v in d["defenses"].items()}
        return cls(d["target"], d["base"], d["n_train"], d["n_poison"], scores(d["before"]), defenses, d["details"])


@dataclass(frozen=True)
class Result:
    """One experiment's result file: what ran (``grid``, ``name``, ``key``, ``profile``, ``params``), what it measured
    (``report``), where and how (``provenance``: commit, device, versions, seed, ``stages`` and ``wall_seconds``, the
    cached ``artifacts`` it used). ``sha256`` is the checksum of the rest as written (empty before writing)."""

    grid: str
    name: str
    key: str
    profile: str
    params: dict[str, Any]
    report: Report
    provenance: dict[str, Any]
    sha256: str = ""

    def to_json(self) -> dict[str, Any]:
        """The file's JSON content (without recomputing the checksum)."""
        return {"format": FORMAT, "grid": self.grid, "name": self.name, "key": self.key, "profile": self.profile,
                "params": self.params, "report": self.report.to_dict(), "provenance": self.provenance,
                "sha256": self.sha256}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Result:
        return cls(d["grid"], d["name"], d["key"], d["profile"], d["params"], Report.from_dict(d["report"]),
                   d["provenance"], d["sha256"])


# ------------------------------------------------------------------------------------------ the grids' measurements
def _scores(d: dict[str, Any] | None, test_set: str = "test") -> Scores | None:
    """A format-1 score mapping (``attack_success_rate`` or, in the sweep and ensembles grids, ``attack_success``)."""
    if d is None:
        return None
    asr = d["attack_success_rate"] if "attack_success_rate" in d else d.get("attack_success")
    return Scores(d["clean_accuracy"], asr, d.get("per_class_accuracy"), d.get("poisoned_accuracy"),
                  d.get("targeted"), test_set)


def _rates(d: dict[str, Any]) -> Filtering:
    return Filtering(d.get("flagged"), d.get("sensitivity"), d.get("specificity"))


def _scan(scan: dict[str, Any], target: int | None) -> DefenseReport:
    """The paper's target scan alone (the reverse and hygiene grids): it names its candidate when it flags one."""
    label = scan.get("candidate", scan.get("target"))
    labels = [label] if scan["poisoned"] else []
    return DefenseReport(labels, None if target is None else target in labels, details=dict(scan))


def _main(r: dict[str, Any]) -> Report:
    ours = r["ours"]
    ac, ss = r["activation_clustering"], r["spectral"]
    keep = ("distances", "ratio", "candidate", "poisoned", "base", "base_found", "seconds")
    defenses = {
        POISON_CURE: DefenseReport([ours["candidate"]] if ours["poisoned"] else [], ours["target_found"],
                                   _rates(ours), _scores(ours.get("after")), {k: ours[k] for k in keep}),
        CLUSTERING: DefenseReport(ac["flagged_labels"], r["target"] in ac["flagged_labels"], _rates(ac["own_rule"]),
                                  details={"smaller_cluster": dataclasses.asdict(_rates(ac["smaller_cluster"]))}),
        SPECTRAL: DefenseReport(None, None, _rates(ss), _scores(ss.get("after")))}
    return Report(r["target"], r["base"], r["n_train"], r["n_poison"], _scores(r["before"]), defenses,
                  {"train_seconds": r["train_seconds"], "images_per_second": r["images_per_second"]})


def _sweep(r: dict[str, Any]) -> Report:
    defenses = {}
    for name, d in r["defenses"].items():
        after = d["after"]
        extra = {k: v for k, v in d.items()
                 if k not in ("flags_target", "flagged_labels", "sensitivity", "specificity", "after")}
        if after is not None:
            extra.update({k: after[k] for k in ("removed", "pruned") if k in after})
        filtering = None if d["sensitivity"] is None else Filtering(None, d["sensitivity"], d["specificity"])
        defenses[name] = DefenseReport(d["flagged_labels"], d["flags_target"], filtering,
                                       _scores(after, "held-out"), extra)
    details = {k: r[k] for k in ("n_target", "attack_works", "train_seconds", "signal_norm", "signal_sigma",
                                 "target_filter")}
    details["test_before"] = dataclasses.asdict(_scores(r["test_before"]))
    return Report(r["target"], r["base"], r["n_train"], r["n_poison"], _scores(r["before"], "held-out"), defenses,
                  details)


def _counts(m: dict[str, Any]) -> Filtering:
    return Filtering(m["removed"], None, None, m["fp"], m["fn"], "training set")


def _ensembles(r: dict[str, Any]) -> Report:
    methods = r["methods"]
    defenses = {}
    for name, m in methods.items():
        if name == "none":
            continue
        details = {"kept": m["kept"]}
        if name == POISON_CURE:
            details.update(scan_label=m["scan_label"], scan_ratio=m["scan_ratio"])
        elif name == ENSEMBLE and r.get("ensemble") is not None:
            details.update(r["ensemble"])
        elif name == ITLM and r.get("itlm_rounds") is not None:
            details["rounds"] = r["itlm_rounds"]
        labels = None  # format 1 kept the scan's label verdict only as flags_target and scan_label
        if name == POISON_CURE and (m["flags_target"] or m["scan_label"] == r["target"]):
            labels = [m["scan_label"]] if m["flags_target"] else []
        defenses[name] = DefenseReport(labels, m.get("flags_target"), _counts(m), _scores(m), details)
    reference = r.get("clean_reference")
    return Report(r["target"], r["source"], r["n_train"], r["n_poison"], _scores(methods["none"]), defenses,
                  {"trigger": r["trigger"],
                   "clean_reference": None if reference is None else dataclasses.asdict(_scores(reference))})


def _reverse(r: dict[str, Any]) -> Report:
    x, nc = r["xiang"], r["neural_cleanse"]
    defenses = {XIANG: DefenseReport([x["target"]] if x["detected"] else [],
                                     None if r["target"] is None else x["detected"] and x["target"] == r["target"],
                                     details=dict(x)),
                CLEANSE: DefenseReport(nc["flagged"], None if r["target"] is None else r["target"] in nc["flagged"],
                                       details={"anomaly": nc["anomaly"]}),
                POISON_CURE: _scan(r["ours"], r["target"])}
    return Report(r["target"], r["base"], r["n_train"], None, _scores(r["before"]), defenses,
                  {"train_seconds": r["train_seconds"]})


def _hygiene(r: dict[str, Any]) -> Report:
    scan, mit, others = r["scan"], r["mitigation"], r["others"]
    infected = [i for i, v in enumerate(scan["infected"]) if v]
    target = r["target"] if r["attack"] != "clean" else None  # the label a verdict is judged against
    hyg_details = {"scan": scan}
    if mit is not None:
        hyg_details["mitigation"] = {"label": mit["label"], "crafted_kept": mit["crafted_kept"],
                                     "crafted_success": mit["crafted_success"],
                                     "clean_only": dataclasses.asdict(_scores(mit["clean_only"]))}
    defenses = {HYGIENE: DefenseReport(infected, None if target is None else target in infected,
                                       after=None if mit is None else _scores(mit["after"]), details=hyg_details)}
    if others.get("neural_cleanse") is not None:
        flagged = others["neural_cleanse"]["flagged"]
        defenses[CLEANSE] = DefenseReport(flagged, None if target is None else target in flagged,
                                          details={"anomaly": others["neural_cleanse"]["anomaly"]})
    if others.get("poison_cure") is not None:
        defenses[POISON_CURE] = _scan(others["poison_cure"], target)
    details = {k: r[k] for k in ("attack", "crafting", "references", "train_seconds", "examples") if k in r}
    details["missing"] = others["missing"]
    return Report(r["target"], None, r["n_train"], r["n_poison"], _scores(r["before"]), defenses, details)


def _learning(r: dict[str, Any]) -> Report:
    return Report(None, None, None, None, None, {}, dict(r))


_BUILDERS = {"main": _main, "sweep": _sweep, "ensembles": _ensembles, "reverse": _reverse, "hygiene": _hygiene,
            "learning": _learning}


def from_measurements(grid: str, measured: dict[str, Any]) -> Report:
    """The report of one experiment of ``grid`` from what its run function measured (the mapping a format-1 result
    file held as ``results``): the same numbers under this schema's names; nothing is recomputed, and a number the
    grid does not measure stays None."""
    if grid not in _BUILDERS:
        raise ValueError(f"unknown grid {grid!r}; grids are {tuple(_BUILDERS)}")
    return _BUILDERS[grid](measured)


__all__ = ["CLEANSE", "CLUSTERING", "DefenseReport", "ENSEMBLE", "FORMAT", "Filtering", "HYGIENE", "ITLM",
           "POISON_CURE", "PRUNING", "Report", "Result", "SCOPES", "SPECTRAL", "Scores", "TEST_SETS", "XIANG",
           "from_measurements"]
