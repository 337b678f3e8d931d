"""The paper's Tables 1-5 rebuilt from the result files of the ``main`` grid (:mod:`poisoncure.experiments.runner`)
or of the paper's pairs in the ``compare`` grid.

Every table puts, for every cell, the paper's number (:mod:`poisoncure.experiments.paper`), ours and the difference side
by side; where a cell has results for several seeds, ours is their mean and the spread (sample standard deviation) and
the number of seeds are shown. Nothing here trains or reads a model: the inputs are result records as returned by
:func:`poisoncure.experiments.result_files.load_results`.

Quantities (all in %):

* Tables 1-2 (blend / one-pixel poison): clean test accuracy and accuracy on triggered base-class test images
  (their true label), before and after the paper's neutralization.
* Tables 3-4: specificity and sensitivity of poisoned-sample detection inside the target class, for the paper's
  method and Activation Clustering (the smaller cluster of the target label, the paper's protocol).
* Table 5: attack success after the paper's method and after Spectral Signatures' retraining. The paper does not
  say which poison its Table 5 used, so ours is shown for both and no difference is computed.

Besides the tables, :func:`pair_trigger_contrast` and :func:`attack_success` measure why a network learns one
pair's trigger and not another's: how far each trigger moves a 2x2 patch, with and without patch whitening,
beside the attack success each set of results reached. That measurement reads CIFAR-10 images and fits a whitening
layer to them (no training, no model).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..attacks import PAPER_PAIRS, class_index
from . import paper, report

if TYPE_CHECKING:
    from ..data import ImageSet
    from .report import Result

POISONS = ("blend", "pixel")
#: The quantities of Tables 1-2 and 3-4: (column label, paper accessor index)
BEFORE_AFTER = ("before: all", "before: triggered", "after: all", "after: triggered")
DETECTION = ("ours: specificity", "ours: sensitivity", "AC: specificity", "AC: sensitivity")
def pair_label(pair: int) -> str:
    """``'1: automobile→dog'`` (base → target, the paper's pair table)."""
    base, target = PAPER_PAIRS[pair]
    return f"{pair}: {base}→{target}"


def _nan(x: Any) -> float:
    return float("nan") if x is None else float(x)


#: What the coverage grid says for a compare result that predates the target-class details (:func:`readable`)
PREDATES = "refused (rerun it)"
#: What the coverage grid says where the plan has no experiment (:func:`coverage`)
NOT_PLANNED = "—"


def _predates_details(rec: Result) -> bool:
    return rec.grid == "compare" and rec.params["poison"] in POISONS \
        and "target_class" not in rec.report[report.POISON_CURE].details


def readable(records: list[Result]) -> tuple[list[Result], list[str]]:
    """Split result records into those :func:`experiment_rows` reads and the names of those it would refuse: compare
    results of the paper's attacks written before their defenses kept the target-class details (09084b6). A page
    shows the refused ones as such (:func:`coverage`'s ``refused``) rather than failing or reading them as zeros."""
    refused = [rec.name for rec in records if _predates_details(rec)]
    return [rec for rec in records if not _predates_details(rec)], refused


def paper_grid_names(experiments: list[Any]) -> list[str]:
    """Names of the planned experiments (:func:`poisoncure.experiments.plans.plan`) that belong to the paper's grid:
    every ``main`` experiment, and the ``compare`` grid's one-pixel and blend experiments on the paper's pairs (its
    other papers' attacks and its clean models are not in the paper's tables)."""
    return [e.name for e in experiments if e.grid == "main" or e.params.get("poison") in POISONS]


def paper_grid(records: list[Result], experiments: list[Any]) -> tuple[list[Result], list[str], list[str]]:
    """The paper's grid inside one grid's results: (the records :func:`experiment_rows` reads, the names of those it
    would refuse (:func:`readable`), the planned names (:func:`paper_grid_names`)), records outside the plan's paper
    grid left out. ``experiments``: :func:`poisoncure.experiments.plans.plan` of the same profile and grid."""
    planned = paper_grid_names(experiments)
    names = set(planned)
    usable, refused = readable([rec for rec in records if rec.name in names])
    return usable, refused, planned


def experiment_rows(records: list[Result]) -> pd.DataFrame:
    """One tidy row per result of the paper's grid: pair, poison, seed, rate, model, every quantity of Tables 1-5, and
    where it ran. Where the paper's method flagged nothing, no repair ran and the model is left as it was: its "after"
    numbers are the "before" ones and ``repaired`` is False. Measurements not made (e.g. no retraining for Spectral
    Signatures) are NaN.

    ``records`` come from the ``main`` grid or from the ``compare`` grid (every defense on the same models), whose
    one-pixel and blend experiments on the paper's pairs are the paper's grid too; its other attacks and its clean
    models are left out. Column ``grid`` says which: the two differ in protocol where the tables show it — the
    compare grid scores on the held-out test images (the defenders' clean images set aside) and its Spectral
    Signatures scans every label, where the main grid's is told the target. A compare result must hold its defenses'
    target-class details (:func:`poisoncure.experiments.pipeline.target_class_details`; files written before
    09084b6 do not, and are refused with their name)."""
    rows = []
    for rec in records:
        if rec.grid not in ("main", "compare"):
            raise ValueError(f"expected results of the 'main' or 'compare' grid, got {rec.grid!r} ({rec.name})")
        p, r = rec.params, rec.report
        if rec.grid == "compare" and p["poison"] not in POISONS:
            continue  # the other papers' attacks and the clean models: not in the paper's tables
        ours, ss = r[report.POISON_CURE], r[report.SPECTRAL]
        if rec.grid == "compare":
            if _predates_details(rec):
                raise ValueError(f"{rec.name}: this compare result predates the target-class details the paper's "
                                 "tables need (rerun it)")
            inside = ours.details["target_class"]
        else:
            inside = {"specificity": ours.filtering.specificity, "sensitivity": ours.filtering.sensitivity}
        ac = r[report.CLUSTERING].details["smaller_cluster"]  # the paper's protocol: the smaller cluster
        # the compare grid scores every defense's model after, also where the scan flagged no class and the model was
        # left as it was (its "after" is the model before): that is no repair
        repaired = ours.after is not None and bool(ours.details.get("poisoned", True))
        after = ours.after if repaired else r.before  # no repair: the model after is the model before
        rows.append({
            "name": rec.name, "grid": rec.grid, "pair": p["recipe"]["pair"], "poison": p["poison"],
            "seed": p["recipe"]["seed"], "rate": p["recipe"]["poison_rate"], "model": p["recipe"]["model"],
            "before: all": r.before.clean_accuracy, "before: triggered": _nan(r.before.poisoned_accuracy),
            "ASR before": _nan(r.before.attack_success_rate),
            "after: all": _nan(after.clean_accuracy), "after: triggered": _nan(after.poisoned_accuracy),
            "ours: specificity": _nan(inside["specificity"]), "ours: sensitivity": _nan(inside["sensitivity"]),
            "AC: specificity": _nan(ac["specificity"]), "AC: sensitivity": _nan(ac["sensitivity"]),
            "ASR after ours": _nan(after.attack_success_rate),
            "ASR after SS": _nan(None if ss.after is None else ss.after.attack_success_rate),
            "target found": bool(ours.names_target), "base found": bool(ours.details["base_found"]),
            "repaired": repaired, "ratio": float(ours.details["ratio"]),
            "device": rec.provenance["device"], "commit": report.short_commit(rec.provenance["commit"]),
            "profile": rec.profile})
    return pd.DataFrame(rows)


def _paper_value(table: str, poison: str, pair: int, column: str) -> float:
    if table == "before_after":
        vals = paper.before(poison, pair) + paper.after(poison, pair)
        return vals[BEFORE_AFTER.index(column)]
    method = "ours" if column.startswith("ours") else "ac"
    spec, sens = paper.detection(poison, pair, method)
    return spec if column.endswith("specificity") else sens


def select(rows: pd.DataFrame, poison: str | None = None, rate: float = 0.1, model: str | None = None
           ) -> pd.DataFrame:
    """The rows of one table: one poison (all when None), one poison rate, one model. ``model=None`` accepts the
    only model present and raises when there are several (a table mixes seeds, never models or rates)."""
    if not len(rows):
        return rows
    part = rows[np.isclose(rows["rate"], rate)]
    if poison is not None:
        part = part[part["poison"] == poison]
    models = sorted(part["model"].unique())
    if model is None and len(models) > 1:
        raise ValueError(f"results of several models {models}: pass model=")
    return part if model is None else part[part["model"] == model]


#: the second-level column of :func:`_compare` holding a quantity's standard deviation over seeds
SPREAD = "± sd"


def _compare(rows: pd.DataFrame, columns: tuple[str, ...], table: str, poison: str) -> pd.DataFrame:
    """Rows = the 9 pairs; for each quantity the columns (paper, ours, Δ) and, when any cell has more than one
    seed, '± sd'; a last column counts the seeds. ``rows`` holds one poison, rate and model (:func:`select`).
    Pairs without results show NaN for ours."""
    part = rows
    multi = len(part) and part.groupby("pair")["seed"].nunique().max() > 1
    out = {}
    for pair in PAPER_PAIRS:
        cells = part[part["pair"] == pair] if len(part) else part
        row: dict[tuple[str, str], float] = {}
        for col in columns:
            ref = _paper_value(table, poison, pair, col)
            vals = cells[col].dropna().to_numpy(float) if len(cells) else np.array([])
            mean = float(vals.mean()) if len(vals) else float("nan")
            row[(col, "paper")] = ref
            row[(col, "ours")] = mean
            row[(col, "Δ")] = mean - ref
            if multi:
                row[(col, SPREAD)] = float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")
        row[("", "seeds")] = len(cells)
        out[pair_label(pair)] = row
    frame = pd.DataFrame.from_dict(out, orient="index")
    frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    frame.index.name = "pair: base→target"
    return frame


def before_after_table(rows: pd.DataFrame, poison: str, rate: float = 0.1, model: str | None = None
                       ) -> pd.DataFrame:
    """Table 1 (``poison='blend'``) or 2 (``'pixel'``): accuracy before/after neutralization, paper vs ours, for
    one poison rate and model (:func:`select`; the paper's tables are at 10 %)."""
    _check_poison(poison)
    return _compare(select(rows, poison, rate, model), BEFORE_AFTER, "before_after", poison)


def detection_table(rows: pd.DataFrame, poison: str, rate: float = 0.1, model: str | None = None) -> pd.DataFrame:
    """Table 3 (blend) or 4 (pixel): detection specificity/sensitivity of ours and AC, paper vs ours."""
    _check_poison(poison)
    return _compare(select(rows, poison, rate, model), DETECTION, "detection", poison)


def final_asr_table(rows: pd.DataFrame, rate: float = 0.1, model: str | None = None) -> pd.DataFrame:
    """Table 5: attack success after the paper's method and after Spectral Signatures' retraining; the paper's
    single column beside ours for each poison (the paper does not name its poison, so no difference)."""
    rows = select(rows, None, rate, model)
    out = {}
    for pair in PAPER_PAIRS:
        row = {}
        for method, col in (("ours", "ASR after ours"), ("SS", "ASR after SS")):
            row[(method, "paper")] = paper.final_asr(pair, "ours" if method == "ours" else "ss")
            for poison in POISONS:
                cells = rows[(rows["pair"] == pair) & (rows["poison"] == poison)] if len(rows) else rows
                vals = cells[col].dropna().to_numpy(float) if len(cells) else np.array([])
                row[(method, f"ours, {poison}")] = float(vals.mean()) if len(vals) else float("nan")
        out[pair_label(pair)] = row
    frame = pd.DataFrame.from_dict(out, orient="index")
    frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    frame.index.name = "pair: base→target"
    return frame


def large_gaps(tables: dict[str, pd.DataFrame], tolerance: float = 3.0) -> pd.DataFrame:
    """Every cell whose |Δ| exceeds ``tolerance`` points. ``tables`` maps a table's title to a frame from
    :func:`before_after_table` or :func:`detection_table`. (Chapter 8 gives each its cause from the experiments
    behind it: :func:`poisoncure.book.pages.results_page.gap_causes`.)"""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    out = []
    for title, frame in tables.items():
        for col in frame.columns.get_level_values(0).unique():
            if (col, "Δ") not in frame.columns:
                continue
            for pair, delta in frame[(col, "Δ")].items():
                if np.isfinite(delta) and abs(delta) > tolerance:
                    out.append({"table": title, "pair": pair, "quantity": col,
                                "paper": frame.loc[pair, (col, "paper")], "ours": frame.loc[pair, (col, "ours")],
                                "Δ": delta})
    return pd.DataFrame(out, columns=["table", "pair", "quantity", "paper", "ours", "Δ"])


def _name_parts(rest: str) -> tuple[str, str] | None:
    """(label without the seed, seed) of the part of a grid name after the pair, or None for an unknown shape:
    ``blend-resnet18-r0.1-s0`` (main) -> ``('blend · ResNet-18 · 10 %', '0')``, ``pixel-whitened_net16-s0``
    (compare) -> ``('one pixel · whitened fast network 16', '0')``."""
    from ..models import MODEL_NAMES

    parts = rest.split("-")
    if len(parts) not in (3, 4) or not parts[-1].startswith("s") or not parts[-1][1:].isdigit():
        return None
    poison, model, seed = parts[0], parts[1], parts[-1][1:]
    words = [{"pixel": "one pixel"}.get(poison, poison)]
    if model in MODEL_NAMES:
        words.append(MODEL_NAMES[model])
    else:  # compare names carry the width: whitened_net16
        base = model.rstrip("0123456789")
        if base not in MODEL_NAMES or base == model:
            return None
        words.append(f"{MODEL_NAMES[base]} {model[len(base):]}")
    if len(parts) == 4:
        if not parts[2].startswith("r"):
            return None
        try:
            words.append(f"{100 * float(parts[2][1:]):g} %")
        except ValueError:
            return None
    return " · ".join(words), seed


def experiment_label(rest: str) -> str:
    """A reader's label for the part of a grid name after the pair: ``blend-resnet18-r0.1-s0`` ->
    ``'blend · ResNet-18 · 10 % · seed 0'``, ``pixel-whitened_net16-s0`` -> ``'one pixel · whitened fast network 16
    · seed 0'``. Unknown shapes are returned as they are."""
    parts = _name_parts(rest)
    return rest if parts is None else f"{parts[0]} · seed {parts[1]}"


def by_poison(rows: pd.DataFrame, column: str | None = None, fmt: str = "{:.1f} %") -> str:
    """The experiments of ``rows`` in words, grouped by poison: ``'blend on pairs 2 (72.3 %), 4 (80.1 %); one pixel
    on pair 1 (1.3 %)'`` (with each row's ``column`` in brackets; without ``column``, the pairs alone)."""
    parts = []
    for poison in sorted(set(rows["poison"]), key=lambda p: (p not in POISONS, POISONS.index(p) if p in POISONS else 0,
                                                             p)):
        part = rows[rows["poison"] == poison].sort_values("pair")
        items = [str(k) + (f" ({fmt.format(v)})" if column else "")
                 for k, v in zip(part["pair"], part[column] if column else part["pair"], strict=True)]
        name = {"pixel": "one pixel"}.get(poison, poison)
        parts.append(f"{name} on pair{'s' if len(items) > 1 else ''} " + ", ".join(items))
    return "; ".join(parts)


def coverage(rows: pd.DataFrame, planned: list[str], refused: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """Which planned experiments have a valid result, as a grid: one row per pair (per pair and seed when the plan
    has several seeds: ``'1: automobile→dog · seed 1'``), one column per poison, model and rate (labelled as in
    :func:`experiment_label`, without the seed). A cell says 'missing', :data:`PREDATES` for a name in ``refused``
    (:func:`readable`), or what the paper's method found ('target and base', 'target only', 'missed ...');
    :data:`NOT_PLANNED` where the plan has no such experiment (the compare grid runs three seeds of pair 1 only)."""
    have = rows.set_index("name") if len(rows) else None
    refused = set(refused)
    cells: list[tuple[int, str, str, str]] = []  # (pair, seed, column, cell)
    for name in planned:
        head, _, rest = name.partition("-")
        if not head.startswith("pair") or not head[4:].isdigit():
            raise ValueError(f"not a main-grid experiment name: {name!r}")
        column, seed = _name_parts(rest) or (rest, "")
        cell = PREDATES if name in refused else "missing"
        if have is not None and name in have.index:
            r = have.loc[name]
            cell = ("target and base" if r["target found"] and r["base found"] else
                    "target only" if r["target found"] else
                    "missed (a wrong class repaired)" if r["repaired"] else "missed (model left unchanged)")
        cells.append((int(head[4:]), seed, column, cell))
    several = len({seed for _, seed, _, _ in cells}) > 1
    grid: dict[str, dict[str, str]] = {}
    for pair, seed, column, cell in sorted(cells, key=lambda c: (c[0], int(c[1]) if c[1].isdigit() else -1)):
        row = pair_label(pair) + (f" · seed {seed}" if several and seed else "")
        grid.setdefault(row, {})[column] = cell
    frame = pd.DataFrame.from_dict(grid, orient="index").fillna(NOT_PLANNED)
    frame.index.name = "pair"
    return frame


def _check_poison(poison: str) -> None:
    if poison not in POISONS:
        raise ValueError(f"poison must be one of {POISONS}, got {poison!r}")




#: Base-class test images per pair over which :func:`pair_trigger_contrast` takes its medians
CONTRAST_IMAGES = 500
#: The networks whose first layer whitens 2x2 patches (:class:`poisoncure.models.PatchWhitening`); the others learn
#: their first layer from the raw pixels
WHITENED_MODELS = ("whitened_net", "small_cnn_whitened")


def _describe(trigger: Any) -> str:
    if trigger.kind == "pixel":
        return f"colour {trigger.colour} at {(trigger.row, trigger.col)}"
    name = trigger.pattern if isinstance(trigger.pattern, str) else "an image"
    return f"{name.split(':')[-1]} at {trigger.opacity * 100:g} %"


def fitted_whitening(train: ImageSet, seed: int = 0) -> tuple[Any, Any]:
    """(normalisation, patch-whitening layer) fitted exactly as a whitened network fits its own when its training
    starts (:func:`poisoncure.train.prepare_whitening`: :data:`~poisoncure.train.WHITENING_IMAGES` of ``train``
    drawn with ``seed``), on the CPU."""
    from .. import models
    from .. import train as training
    net = models.whitened_net(len(train.classes))
    training.prepare_whitening(net, train, seed=seed, device="cpu")
    return net.normalize, next(m for m in net.modules() if isinstance(m, models.PatchWhitening))


def pair_trigger_contrast(train: ImageSet, test: ImageSet, poison: str = "pixel", per_class: int = CONTRAST_IMAGES,
                          seed: int = 0, opacity: float = 0.2, blend_source: str = "skimage",
                          whitening: tuple[Any, Any] | None = None) -> pd.DataFrame:
    """How loudly the trigger of each of the paper's nine pairs (:func:`poisoncure.attacks.paper_trigger`:
    ``poison`` 'pixel', or 'blend' at ``opacity`` from ``blend_source``) speaks to a network's first layer, on the
    first ``per_class`` test images of the pair's base class.

    One row per pair (index ``pair``): ``base → target``, ``trigger`` (the pixel's colour and position, or the
    blended image and its opacity), ``brightness share`` — the median over the images of the share of the trigger's
    change (its squared length in [0, 1] pixel units, summed over the pixels) that lies along the grey axis, where
    all three channels of a pixel change alike (1: the trigger only darkens or lightens) — and the medians of
    :func:`poisoncure.models.trigger_contrast`: the trigger's largest change to one 2x2 patch in units of a typical
    natural patch, on the normalised pixels (``raw``: what a learned first convolution sees) and after a
    patch-whitening layer (``whitened``) fitted as a whitened network fits its own, here to the clean ``train``
    images (:func:`fitted_whitening` with ``seed``; pass its result as ``whitening`` to fit it once for several
    calls)."""
    import torch  # here, not at the top: the tables themselves need no torch

    from .. import attacks, models
    from .. import train as training
    _check_poison(poison)
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    normalize, stem = fitted_whitening(train, seed) if whitening is None else whitening
    rows = {}
    for pair, (base, target) in PAPER_PAIRS.items():
        trigger = attacks.paper_trigger(pair, poison, opacity=opacity, blend_source=blend_source)
        x = test.x[test.y == class_index(base, test.classes)][:per_class]
        if not len(x):
            raise ValueError(f"no test image of class {base!r} (pair {pair})")
        triggered = trigger.apply(x)
        change = (triggered.astype(np.float64) - x) / 255.0
        length = (change ** 2).sum(axis=(1, 2, 3))
        along = (change.sum(axis=3) ** 2 / 3.0).sum(axis=(1, 2))
        grey = np.divide(along, length, out=np.ones_like(length), where=length > 0)
        with torch.no_grad():
            c = models.trigger_contrast(stem, normalize, training.to_float(torch.from_numpy(x)),
                                        training.to_float(torch.from_numpy(triggered)))
        rows[pair] = {"base → target": f"{base}→{target}", "trigger": _describe(trigger),
                      "brightness share": float(np.median(grey)),
                      "raw": float(c["raw"].median()), "whitened": float(c["whitened"].median())}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "pair"
    return frame


def attack_success(sets: dict[str, list[Result]], poison: str = "pixel", rate: float = 0.1, opacity: float = 0.2,
                   blend_source: str = "skimage") -> pd.DataFrame:
    """The attack success before the defense of every ``poison`` experiment of the paper's grid at poison rate
    ``rate`` (a blend also at ``opacity`` from ``blend_source``: the trigger :func:`pair_trigger_contrast` measured)
    in each set of results (``{label: records}``, records of a ``main`` or ``compare`` grid as
    :func:`experiment_rows` reads them): one row per set and pair with the mean over seeds (``ASR``), the number of
    seeds, the network (``model``) and whether its first layer whitens patches (``whitened``)."""
    _check_poison(poison)
    out = []
    for label, records in sets.items():
        if poison == "blend":
            records = [r for r in records if r.params["poison"] != "blend"
                       or (r.params["recipe"].get("opacity") == opacity
                           and r.params["recipe"].get("blend_source") == blend_source)]
        rows = experiment_rows(records)
        if not len(rows):
            continue
        rows = rows[(rows["poison"] == poison) & np.isclose(rows["rate"], rate)]
        for (pair, model), part in rows.groupby(["pair", "model"]):
            out.append({"set": label, "pair": int(pair), "model": model, "whitened": model in WHITENED_MODELS,
                        "ASR": float(part["ASR before"].mean()), "seeds": len(part)})
    return pd.DataFrame(out, columns=["set", "pair", "model", "whitened", "ASR", "seeds"])


__all__ = ["BEFORE_AFTER", "CONTRAST_IMAGES", "DETECTION", "NOT_PLANNED", "POISONS", "PREDATES",
           "WHITENED_MODELS", "attack_success", "before_after_table", "coverage", "detection_table",
           "experiment_rows", "final_asr_table", "fitted_whitening", "large_gaps", "pair_label",
           "pair_trigger_contrast", "paper_grid", "paper_grid_names", "readable", "select"]
