"""The comparison of all eight defenses on the same attacked models (chapter 7's last part; chapters 10-12 show
their own defense's row): tables, the heat map and the sentences built from the ``compare`` grid's results
(:func:`poisoncure.experiments.grids.compare.cell_table`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ...experiments import paper, report, verdict
from ...experiments.grids.compare import cell_table
from .. import formatting, plots
from ..formatting import MISSING, NO, YES

if TYPE_CHECKING:
    from ...experiments.report import Report, Result

#: the eight defenses in the book's order, and the short names of the wide tables and the heat map
DEFENSES = (report.POISON_CURE, report.SPECTRAL, report.CLUSTERING, report.CLEANSE, report.PRUNING, report.XIANG,
            report.HYGIENE, report.ENSEMBLE)
SHORT = {report.POISON_CURE: "PaC", report.SPECTRAL: "SS", report.CLUSTERING: "AC", report.CLEANSE: "NC",
         report.PRUNING: "FP", report.XIANG: "Xiang", report.HYGIENE: "PoisHyg.", report.ENSEMBLE: "Ensemble"}
#: attack success after a repair at or below which the backdoor counts as removed (the paper's neutralization bar)
REMOVED = verdict.NEUTRALIZED
#: ... provided at least this share (%) of the triggered images went back to their class (the verdict's rule): a
#: repair can lower the attack success by sending them to yet another class, which moves the backdoor
RECOVERED = verdict.RECOVERED
#: the mark of an "after" cell where the attack success fell but the backdoor moved (:data:`RECOVERED`)
MOVED = "†"

#: what each defense is given besides the model, what it answers and how it repairs (as the compare grid runs it)
NEEDS = pd.DataFrame([
    (report.POISON_CURE, "yes", "no", "nothing", "target label, poisoned samples",
     "one-epoch counter-poison fine-tune"),
    (report.SPECTRAL, "yes", "no", "poison bound ε", "samples (1.5ε of every label)", "retrain without them"),
    (report.CLUSTERING, "yes", "no", "nothing", "labels, their smaller clusters", "retrain without them"),
    (report.CLEANSE, "no", "100 test images per class", "nothing", "labels", "unlearning fine-tune"),
    (report.PRUNING, "no", "100 test images per class", "nothing", "— (repairs every model)", "prune + fine-tune"),
    (report.XIANG, "no", "a few test images per class", "nothing", "a (source, target) pair", "— (detection only)"),
    (report.HYGIENE, "no", "clean training images (reference models, fine-tuning)", "nothing", "labels",
     "fine-tune with crafted triggers"),
    (report.ENSEMBLE, "yes", "no", "nothing", "samples (outside the learners' consensus)", "retrain on what it keeps"),
], columns=["defense", "training set", "clean data", "told", "what it names", "repair"]).set_index("defense")


def _name_of_pair(setting: str) -> str:
    pair, kind = setting[4:].split("-", 1)
    kind = {"pixel": "one pixel", "blend": "blend", "xshape": "X shape (ensembles paper)",
            "lshape": "L shape (ensembles paper)", "mislabel": "Mislabel (PoisHygiene)"}.get(kind, kind)
    if kind.startswith("patch"):
        n = kind[5:] or "3"
        kind = f"{n}×{n} patch"
    return f"pair {pair}, {kind}"


def attack_name(setting: str) -> str:
    """A reader's name for an attack setting of the compare grid (``pair1-pixel`` → 'pair 1, one pixel')."""
    if setting.startswith("pair"):
        return _name_of_pair(setting)
    return {"chessboard": "chessboard (Xiang et al., additive)", "badnets": "BadNets 4×4, all-to-one",
            "clean": "clean model", "sparse": "sparse (Xiang et al., additive)",
            "chen": "Chen et al. blend, all-to-one"}.get(setting, setting)


@dataclass(frozen=True)
class Comparison:
    """A profile's committed ``compare`` results as a chapter reads them: the files (``records``), their long table
    (``cell``, :func:`cells`), the plan's attack settings in order (``order``) and its experiment names
    (``planned``)."""

    records: list
    cell: pd.DataFrame
    order: list[str]
    planned: list[str]


def load(profile: str) -> Comparison:
    """Read ``results/<profile>/compare`` (valid, current files only; see
    :func:`..experiments.result_files.load_results`) against the profile's plan (empty when the profile has no
    ``reproduce.compare`` section; a section the planner refuses raises its ``ValueError``)."""
    from ...experiments import plans, profiles, result_files
    from ...experiments.grids.compare import setting

    planned = "compare" in (profiles.load(profile).get("reproduce") or {})
    exps = plans.plan(profile, ["compare"]) if planned else []
    records = result_files.load_results(profile, "compare")
    return Comparison(records, cells(records), [setting(e.params) for e in exps], [e.name for e in exps])


def _triggered_after(rec: Result) -> list[float]:
    """Per defense of ``rec`` (in its report's order), the share (%) of triggered base images its repaired model
    classifies as their own class; NaN where no repair ran, where it was not measured, and for Mislabel, whose
    source class is not among the training labels (no model can give it back)."""
    return [float("nan") if rec.params["poison"] == "mislabel" or d.after is None or d.after.poisoned_accuracy is None
            else float(d.after.poisoned_accuracy) for d in rec.report.defenses.values()]


def cells(records: list[Result]) -> pd.DataFrame:
    """The long table of every (experiment, defense) (:func:`..grids.compare.cell_table`), defenses in the book's
    order, with ``triggered after`` (:func:`_triggered_after`) and ``moved``: the repair brought the attack success
    to :data:`REMOVED` % or less, but fewer than :data:`RECOVERED` % of the triggered images went back to their
    class."""
    out = cell_table(records)
    out["triggered after"] = [v for rec in records for v in _triggered_after(rec)]
    out["moved"] = verdict.backdoor_moved(out["ASR after"], out["triggered after"])
    order = {d: i for i, d in enumerate(DEFENSES)}
    return out.sort_values(["setting", "seed", "defense"], key=lambda s: s.map(order) if s.name == "defense" else s,
                           kind="stable").reset_index(drop=True)


def settings_in_order(cell: pd.DataFrame, planned: list[str] | None = None) -> list[str]:
    """The attack settings present in ``cell``, in the order of ``planned`` (the plan's settings), clean last."""
    present = list(dict.fromkeys(cell["setting"]))
    rank = {s: i for i, s in enumerate(dict.fromkeys(planned or []))}
    return sorted(present, key=lambda s: (s == "clean", rank.get(s, len(rank)), s))


def _num(values: pd.Series, digits: int = 1) -> str:
    v = values.dropna().to_numpy(dtype=float)
    if len(v) == 0:
        return MISSING
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return formatting.mean_sd(v.mean(), v.std(ddof=1), digits)


def _mark(group: pd.DataFrame) -> str:
    """The label verdict over seeds: ✓ (names the target, '+k': and k other labels), ✗ (does not), '' (no label
    verdict); over several seeds 'k/n ✓'."""
    verdicts = group["names target"].dropna()
    if verdicts.empty:
        return ""
    hits = int(verdicts.astype(bool).sum())
    if len(verdicts) > 1:
        return f"{hits}/{len(verdicts)} {YES}"
    extra = len(group["labels"].iloc[0] or []) - hits
    return (YES + (f"+{extra}" if extra > 0 else "")) if hits else NO


def all_defenses_table(cell: pd.DataFrame, planned: list[str] | None = None) -> pd.DataFrame:
    """Rows: attack settings (with their seed count), then the clean models' false alarms and each defense's cost;
    columns: no defense (attack success | clean accuracy) and the eight defenses. A defense's cell: its label verdict
    (:func:`_mark`) and the attack success | clean accuracy after its repair (mean ± sd over seeds, %; :data:`MOVED`
    after the attack success where, in a seed, the backdoor moved rather than went away); 'no repair' where none
    ran. The cost row is the median over the working attacks (robust to one experiment that shared its machine with
    other work)."""
    attacked = cell[~cell["clean model"]]
    rows = {}
    for s in settings_in_order(attacked, planned):
        g = attacked[attacked["setting"] == s]
        n = g["seed"].nunique()
        label = f"{attack_name(s)} ({n} seeds)" if n > 1 else attack_name(s)
        first = g.drop_duplicates("seed")
        row = {"no defense": f"{_num(first['ASR before'])} | {_num(first['clean before'])}"}
        for d in DEFENSES:
            gd = g[g["defense"] == d]
            if gd.empty:
                row[SHORT[d]] = "not run"
                continue
            after = (f"{_num(gd['ASR after'])}{MOVED if gd['moved'].any() else ''} | {_num(gd['clean after'])}"
                     if gd["ASR after"].notna().any() else "no repair")
            row[SHORT[d]] = f"{_mark(gd)} {after}".strip()
        rows[label] = row
    clean = cell[cell["clean model"]]
    if not clean.empty:
        n_clean = clean["seed"].nunique()
        row = {"no defense": f"{n_clean} model{'s' if n_clean != 1 else ''}"}
        for d in DEFENSES:
            gd = clean[clean["defense"] == d]
            row[SHORT[d]] = (f"{int(gd['false alarm'].astype(bool).sum())}/{len(gd)}" if len(gd) else MISSING)
        rows["clean models: false alarms"] = row
    cost = {"no defense": "1 training"}
    for d in DEFENSES:
        c = cell.loc[(cell["defense"] == d) & cell["attack works"], "cost"].dropna()
        cost[SHORT[d]] = f"×{c.median():.2f}" if len(c) else MISSING
    rows["cost (× one training)"] = cost
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "attack"
    return out


def filtering_table(cell: pd.DataFrame, planned: list[str] | None = None) -> pd.DataFrame:
    """The defenses that flag training samples: sensitivity / specificity over the whole training set (%, mean over
    seeds) and the samples flagged, per attack setting (clean models: samples flagged, all of them clean)."""
    rows = {}
    filters = [d for d in DEFENSES if cell.loc[cell["defense"] == d, "flagged"].notna().any()]
    for s in settings_in_order(cell, planned):
        g = cell[cell["setting"] == s]
        row = {}
        for d in filters:
            gd = g[g["defense"] == d]
            if gd.empty or gd["flagged"].isna().all():
                row[SHORT[d]] = MISSING
            elif s == "clean":
                row[SHORT[d]] = f"{gd['flagged'].mean():,.0f} flagged"
            else:
                row[SHORT[d]] = (f"{_num(gd['sensitivity'], 0)} / {_num(gd['specificity'], 1)} "
                                 f"({gd['flagged'].mean():,.0f})")
        rows[attack_name(s)] = row
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "attack"
    return out


def heatmap_figure(cell: pd.DataFrame, planned: list[str] | None = None):
    """Attack success (%) without a defense and after each defense's repair, attacks × defenses (mean over seeds),
    with each label verdict (✓ names the target, ✗ does not) and :data:`MOVED` where the backdoor moved; grey where no
    repair ran."""
    attacked = cell[~cell["clean model"]]
    order = settings_in_order(attacked, planned)
    if not order:
        return plots.placeholder("no committed compare result yet")
    cols = ["none", *[SHORT[d] for d in DEFENSES]]
    values = np.full((len(order), len(cols)), np.nan)
    text = [["" for _ in cols] for _ in order]
    for i, s in enumerate(order):
        g = attacked[attacked["setting"] == s]
        values[i, 0] = g.drop_duplicates("seed")["ASR before"].mean()
        text[i][0] = f"{values[i, 0]:.0f}"
        for j, d in enumerate(DEFENSES, start=1):
            gd = g[g["defense"] == d]
            if gd.empty:
                continue
            values[i, j] = gd["ASR after"].mean()
            verdicts = gd["names target"].dropna()  # over seeds: the majority's verdict
            mark = "" if verdicts.empty else (YES if verdicts.astype(bool).mean() >= 0.5 else NO)
            num = "" if math.isnan(values[i, j]) else f"{values[i, j]:.0f}" + (MOVED if gd["moved"].any() else "")
            text[i][j] = f"{num}\n{mark}" if num and mark else (num or mark)  # the mark under the number: a
            # cell of the text column's width holds "100" but not "100✗"
    fig, ax = plt.subplots(figsize=(6.1, 1.6 + 0.5 * len(order)))
    cmap = plt.get_cmap("RdYlGn_r").with_extremes(bad="#d9d9d9")
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=90)
    ax.set_yticks(range(len(order)), [attack_name(s) for s in order])
    ax.axvline(0.5, color="black", lw=1.2)
    ax.grid(False)
    for i in range(len(order)):
        for j in range(len(cols)):
            if text[i][j]:
                v = values[i, j]
                dark = not math.isnan(v) and (v > 80 or v < 20)
                ax.text(j, i, text[i][j], ha="center", va="center", fontsize=9, linespacing=1.0,
                        color="white" if dark else "black")
    fig.colorbar(im, ax=ax, label="attack success (%)", fraction=0.05, pad=0.02)
    fig.tight_layout()
    return fig


def backdoorbench_table(cell: pd.DataFrame) -> pd.DataFrame:
    """Our clean accuracy / attack success after each of the four defenses BackdoorBench covers, beside its published
    leaderboard numbers (:data:`..experiments.paper.BACKDOORBENCH`) for the attack of the same kind; 'not run yet'
    where our grid has no result for that setting."""
    rows = []
    for setting, (attack, published) in paper.BACKDOORBENCH_MATCH.items():
        ours = cell[cell["setting"] == setting]
        for d, (acc, asr) in paper.BACKDOORBENCH[attack].items():
            if d == "none":
                first = ours.drop_duplicates("seed")
                mine = (first["clean before"], first["ASR before"])
            else:
                gd = ours[ours["defense"] == d]
                mine = (gd["clean after"], gd["ASR after"])
            rows.append({"attack (ours / BackdoorBench)": f"{attack_name(setting)} / {published}", "defense": d,
                         "clean acc": _num(mine[0]) if len(ours) else "not run yet",
                         "ASR": _num(mine[1]) if len(ours) else "not run yet",
                         "clean acc (BackdoorBench)": f"{acc:.2f}", "ASR (BackdoorBench)": f"{asr:.2f}"})
    return pd.DataFrame(rows).set_index(["attack (ours / BackdoorBench)", "defense"])


def _named(rows: pd.DataFrame, of: pd.DataFrame, planned: list[str] | None) -> str:
    """The attack settings of ``rows`` in words, in plan order, with 'k of n seeds' where ``of`` (the rows they were
    drawn from) has several seeds of the setting: 'one pixel (1 of 3 seeds) / 3×3 patch'."""
    counts, totals = rows.groupby("setting").size(), of.groupby("setting").size()
    return " / ".join(attack_name(s) + (f" ({counts[s]} of {totals[s]} seeds)" if totals[s] > 1 else "")
                      for s in settings_in_order(of, planned) if s in counts.index)


def reading(cell: pd.DataFrame, planned: list[str] | None = None) -> str:
    """One Markdown bullet per defense, from the numbers: in how many attacked models it names the target, in how many
    its repair brings attack success to :data:`REMOVED` % or less (and on which attacks, with how many seeds, it
    does not, and on which the backdoor moved instead: ``moved`` of :func:`cells`), its false alarms on the clean
    models and its median cost."""
    works = cell[cell["attack works"] & ~cell["clean model"]]
    clean = cell[cell["clean model"]]
    n_attacks = works["setting"].nunique()
    out = []
    for d in DEFENSES:
        g = works[works["defense"] == d]
        if g.empty:
            continue
        parts = []
        verdicts = g["names target"].dropna()
        if not verdicts.empty:
            parts.append(f"names the target in {int(verdicts.astype(bool).sum())} of {len(verdicts)} model"
                         f"{'s' if len(verdicts) != 1 else ''}")
        repaired = g.dropna(subset=["ASR after"])
        if len(repaired):
            removed = repaired["ASR after"] <= REMOVED
            failed = _named(repaired[~removed], repaired, planned)
            moved = _named(repaired[repaired["moved"]], repaired, planned)
            parts.append(f"its repair leaves at most {REMOVED:g}\u00a0% attack success in {int(removed.sum())} of "
                         f"{len(repaired)} model{'s' if len(repaired) != 1 else ''}"
                         + (f" (not on: {failed})" if failed else ""))
            if moved:
                parts.append(f"but on {moved} fewer than {RECOVERED:g}\u00a0% of the triggered images went back to "
                             "their class: the trigger still takes them away from it, so the backdoor moved rather "
                             f"than went away ({MOVED} in the table)")
        else:
            parts.append("it repairs nothing (a detector only)")
        gc = clean[clean["defense"] == d]
        if len(gc):
            parts.append(f"{int(gc['false alarm'].astype(bool).sum())} false alarm(s) on {len(gc)} clean model(s)")
        cost = g["cost"].dropna()
        if len(cost):
            parts.append(f"costs {cost.median():.2f} trainings (median)")
        out.append(f"- **{d}**: " + "; ".join(parts) + ".")
    if not out:
        return "No working attack is committed yet: nothing to read."
    n_models = len(works.drop_duplicates(["setting", "seed"]))
    head = (f"Over the {n_attacks} working attack setting{'s' if n_attacks != 1 else ''} committed so far "
            f"({n_models} model{'s' if n_models != 1 else ''}), each defense:")
    return "\n".join([head, "", *out])


#: the live table's defenses: those chapter 7's build runs with the compare grid's settings on the same model
LIVE_DEFENSES = (report.POISON_CURE, report.CLUSTERING, report.CLEANSE, report.PRUNING)
LIVE_COLUMNS = ["names target", "flagged", "sensitivity", "specificity", "clean after", "ASR after"]


#: the chapter parameters a live cell must share with the committed file's defense settings to be the same computation
LIVE_SETTINGS = ("threshold", "eta", "ac_layer", "nc_steps", "fp_max_drop", "clean_per_class")


def matching_result(records: list[Result], recipe, settings: dict) -> Result | None:
    """The committed compare result of the model of ``recipe`` (an :class:`..experiments.Recipe`) whose defense
    settings equal ``settings`` (values of :data:`LIVE_SETTINGS`; a setting the file leaves out has the pipeline's
    default): the file a chapter's live run of the same model is set beside. None when none matches."""
    import dataclasses

    from ...experiments.pipeline import DefenseSettings
    from ...experiments.store import Recipe

    defaults = {f.name: f.default for f in dataclasses.fields(DefenseSettings)}
    for r in records:
        same_model = Recipe(poison=r.params["poison"], **r.params["recipe"]) == recipe
        if same_model and all(r.params["defense"].get(k, defaults.get(k)) == v for k, v in settings.items()):
            return r
    return None


def live_table(live: Report | None, committed: Result | None) -> pd.DataFrame:
    """The defenses of :data:`LIVE_DEFENSES` on one model, as this build computes them (``live``) and as the committed
    compare file holds them: one row per (defense, source). Activation Clustering's repair (a retraining) is left out
    of both rows: the chapter does not retrain unless its ``retrain`` parameter says so."""
    rows = []
    for source, rep in [("this build", live), ("committed file", committed.report if committed else None)]:
        for d in LIVE_DEFENSES:
            if rep is None or d not in rep.defenses:
                rows.append({"defense": d, "source": source, **{c: MISSING for c in LIVE_COLUMNS}})
                continue
            r = rep[d]
            f, after = r.filtering, (None if d == report.CLUSTERING else r.after)
            rows.append({"defense": d, "source": source,
                         "names target": MISSING if r.names_target is None else ("yes" if r.names_target else "no"),
                         "flagged": MISSING if f is None else f"{f.flagged:,}",
                         "sensitivity": MISSING if f is None or f.sensitivity is None else f"{f.sensitivity:.2f}",
                         "specificity": MISSING if f is None or f.specificity is None else f"{f.specificity:.2f}",
                         "clean after": MISSING if after is None else f"{after.clean_accuracy:.2f}",
                         "ASR after": MISSING if after is None or after.attack_success_rate is None
                         else f"{after.attack_success_rate:.2f}"})
    out = pd.DataFrame(rows).set_index(["defense", "source"])
    return out.reindex(pd.MultiIndex.from_product([list(LIVE_DEFENSES), ["this build", "committed file"]]))


def defense_rows(cell: pd.DataFrame, defense: str, planned: list[str] | None = None) -> pd.DataFrame:
    """One defense's row of the comparison, one line per attack setting (chapters 10-12): verdict, filtering, attack
    success and clean accuracy after its repair (mean ± sd over seeds; :data:`MOVED` where the backdoor moved), cost;
    the clean models' false alarms last."""
    g = cell[cell["defense"] == defense]
    rows = {}
    for s in settings_in_order(g, planned):
        gs = g[g["setting"] == s]
        if s == "clean":
            rows[f"clean models ({len(gs)})"] = {"verdict": f"{int(gs['false alarm'].astype(bool).sum())} false "
                                                             f"alarm(s)", "ASR before": MISSING, "ASR after": MISSING,
                                                  "clean after": MISSING,
                                                  "cost (× training)": f"{gs['cost'].mean():.2f}"}
            continue
        first = gs.drop_duplicates("seed")
        rows[attack_name(s) + (f" ({len(gs)} seeds)" if len(gs) > 1 else "")] = {
            "verdict": _mark(gs) or MISSING, "ASR before": _num(first["ASR before"]),
            "ASR after": (_num(gs["ASR after"]) + (MOVED if gs["moved"].any() else "")) if gs["ASR after"].notna().any()
            else "no repair",
            "clean after": _num(gs["clean after"]) if gs["clean after"].notna().any() else MISSING,
            "cost (× training)": f"{gs['cost'].mean():.2f}"}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "attack"
    return out


def coverage_text(records: list[Result], planned: list[str]) -> str:
    """How much of the plan the committed files cover, and where they ran (:func:`..result_files.provenance_text`)."""
    from ...experiments.result_files import provenance_text

    return (f"{len(records)} of the {len(planned)} planned experiments are committed (the runner is resumable; the "
            f"rest follow); they were {provenance_text(records)}")


def live_note(table: pd.DataFrame, committed: Result | None, here: str) -> str:
    """A sentence under :func:`live_table`: how many of its cells this build and the committed file share, and on
    which machines each ran (``here``: this build's :func:`~poisoncure.provenance.device_name`). Equal numbers are
    expected on the same kind of machine only: another CPU model or thread count sums in another order, trains a
    slightly different model, and the defenses' numbers move with it."""
    if committed is None:
        return "No committed file has this model's recipe and settings, so nothing is compared."
    pairs = [(table.loc[(d, "this build"), c], table.loc[(d, "committed file"), c])
             for d in LIVE_DEFENSES for c in LIVE_COLUMNS]
    pairs = [(a, b) for a, b in pairs if not (a == MISSING and b == MISSING)]
    same = sum(a == b for a, b in pairs)
    there = committed.provenance.get("device", "an unrecorded machine")
    where = (f"both on {here}" if there == here else
             f"this build on {here}, the file on {there}: a different machine, so a different model from the "
             "first training step on (floating-point sums in another order), and equality is not expected")
    return (f"This build and the committed file ({report.short_commit(committed.provenance.get('commit', '?'))}) "
            f"agree in {same} of the {len(pairs)} cells that either fills; {where}.")


__all__ = ["Comparison", "DEFENSES", "LIVE_DEFENSES", "LIVE_SETTINGS", "NEEDS", "REMOVED", "SHORT",
           "all_defenses_table", "attack_name", "backdoorbench_table", "cells", "coverage_text", "defense_rows",
           "filtering_table", "heatmap_figure", "live_note", "live_table", "load", "matching_result", "reading",
           "settings_in_order"]
