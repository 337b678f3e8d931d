"""The reproduction verdict: claim by claim, whether the paper's claims held in the committed runs.

Nothing here is typed by hand: every cell is counted from the runner's result files
(:mod:`poisoncure.experiments.result_files`) by the rule below, and the paper's column is counted by the same rule
from the paper's own numbers (:mod:`poisoncure.experiments.paper`) where the paper reports the quantity.

**Evidence sets.** Each profile's ``main`` grid (the paper's 9 pairs x 2 trigger sizes) and each profile's ``sweep``
grid (trigger sizes from one pixel to a full-image blend, at several poison rates) is one column, the paper-scale
profile first. Its header names the network, the profile and how many of the planned experiments have a result.

**Rule.** Each claim applies to some of a column's experiments (for most, the attacks the network learned) and is
true or false in each of them by a stated test. The cell reads

* *held* when it is true in every experiment it applies to,
* *held partly* when it is true in at least half of them,
* *did not hold* when it is true in fewer than half,
* *not tested at this scale* when it applies to none (no attack learned, or the measurement not run there),

followed by the count. An attack counts as *learned* when at least :data:`LEARNED` % of the triggered base-class
test images go to the target before any defense (the runner's rule for a working attack, ``min_asr``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..attacks import PAPER_PAIRS
from ..models import MODEL_NAMES
from . import paper, paper_tables, plans, profiles, report, result_files

if TYPE_CHECKING:
    from .report import Result

LEARNED = 50.0  #: attack success (%) before the defense from which an attack counts as learned
MIN_SENSITIVITY = 80.0  #: filtering: share of the poison caught (%), at least
MIN_SPECIFICITY = 90.0  #: filtering: share of the clean target-class images kept (%), at least
NEUTRALIZED = 10.0  #: attack success (%) after the repair, at most
#: triggered base-class images classified as their own class after the repair (%), at least, where measured: a repair
#: that relabels the filtered images to a wrong base class can send the triggered images there instead of to the
#: target, so the attack success falls while the trigger still decides the prediction (the backdoor is moved, not
#: removed; bench/README.md, "A repair that moves the backdoor")
RECOVERED = 50.0
MAX_DROP = 3.0  #: clean accuracy lost by the repair (points), at most
TOLERANCE = 3.0  #: comparisons with another defense: ours may be worse by at most this many points

#: the verdict words, from most to least favourable
HELD, PARTLY, NOT_HELD, NOT_TESTED = "held", "held partly", "did not hold", "not tested at this scale"
#: order of the columns: the paper's setup first, then from the strongest network down
PROFILE_ORDER = ("full", "gpu", "cpu-full", "cpu-cnn", "smoke")

#: the normalised per-experiment quantities every claim is tested on (NaN where a grid does not measure one)
COLUMNS = ("name", "asr_before", "clean_before", "target_found", "base_found", "sensitivity", "specificity",
           "asr_after", "clean_after", "triggered_after", "ac_sensitivity", "ss_asr_after")


def main_rows(records: list[Result]) -> pd.DataFrame:
    """The :data:`COLUMNS` of ``main``-grid records (Activation Clustering: the paper's smaller-cluster protocol)."""
    r = paper_tables.experiment_rows(records)
    if not len(r):
        return pd.DataFrame(columns=COLUMNS)
    return pd.DataFrame({
        "name": r["name"], "asr_before": r["ASR before"], "clean_before": r["before: all"],
        "target_found": r["target found"].astype(float), "base_found": r["base found"].astype(float),
        "sensitivity": r["ours: sensitivity"], "specificity": r["ours: specificity"],
        "asr_after": r["ASR after ours"], "clean_after": r["after: all"], "triggered_after": r["after: triggered"],
        "ac_sensitivity": r["AC: sensitivity"],
        "ss_asr_after": r["ASR after SS"]})[list(COLUMNS)]


def sweep_rows(records: list[Result]) -> pd.DataFrame:
    """The :data:`COLUMNS` of ``sweep``-grid records (the sweep does not look for the base class, nor measure the
    accuracy on triggered images)."""
    rows = []
    for rec in records:
        if rec.grid != "sweep":
            raise ValueError(f"expected results of the 'sweep' grid, got {rec.grid!r} ({rec.name})")
        r = rec.report
        ours, ac, ss = r[report.POISON_CURE], r[report.CLUSTERING], r[report.SPECTRAL]
        rows.append({"name": rec.name, "asr_before": r.before.attack_success_rate,
                     "clean_before": r.before.clean_accuracy, "target_found": float(bool(ours.names_target)),
                     "base_found": np.nan, "sensitivity": ours.filtering.sensitivity,
                     "specificity": ours.filtering.specificity,
                     "asr_after": None if ours.after is None else ours.after.attack_success_rate,
                     "clean_after": None if ours.after is None else ours.after.clean_accuracy,
                     "triggered_after": None if ours.after is None else ours.after.poisoned_accuracy,
                     "ac_sensitivity": ac.filtering.sensitivity,
                     "ss_asr_after": None if ss.after is None else ss.after.attack_success_rate})
    return pd.DataFrame(rows, columns=COLUMNS).astype({c: float for c in COLUMNS[1:]})


def _learned(r: pd.DataFrame) -> pd.Series:
    return r["asr_before"] >= LEARNED


def _found(r: pd.DataFrame) -> pd.Series:
    return _learned(r) & (r["target_found"] == 1)


@dataclass(frozen=True)
class Claim:
    """One claim of the paper: where it is made, which experiments it applies to, and the test in each."""

    label: str  #: the claim in a few words, with where the paper makes it
    test: str  #: the test, in words (shown under the table)
    applies: Callable[[pd.DataFrame], pd.Series]
    holds: Callable[[pd.DataFrame], pd.Series]
    paper: Callable[[], tuple[int, int, str] | None]  #: (true, of, where) counted from the paper's numbers


def _paper_filtering() -> tuple[int, int, str]:
    vals = [paper.detection(p, k) for p in ("blend", "pixel") for k in PAPER_PAIRS]
    return sum(spec >= MIN_SPECIFICITY and sens >= MIN_SENSITIVITY for spec, sens in vals), len(vals), "Tables 3–4"


def _paper_vs_ac() -> tuple[int, int, str]:
    vals = [(paper.detection(p, k)[1], paper.detection(p, k, "ac")[1]) for p in ("blend", "pixel") for k in PAPER_PAIRS]
    return sum(ours >= ac - TOLERANCE for ours, ac in vals), len(vals), "Tables 3–4"


def backdoor_moved(asr_after: pd.Series | float, triggered_after: pd.Series | float) -> pd.Series | bool:
    """Per repair: the attack success fell to :data:`NEUTRALIZED` % or less, but fewer than :data:`RECOVERED` % of
    the triggered base images went back to their class (False where the latter was not measured)."""
    return (asr_after <= NEUTRALIZED) & (triggered_after < RECOVERED)


def _repaired(r: pd.DataFrame) -> pd.Series:
    """The repair test of §7 on every row: the target's attack success down to :data:`NEUTRALIZED`, the clean
    accuracy down by at most :data:`MAX_DROP`, and, where the grid measures it, at least :data:`RECOVERED` % of the
    triggered base images classified as their own class again."""
    recovered = ~(r["triggered_after"] < RECOVERED)  # NaN (not measured) passes
    return (r["asr_after"] <= NEUTRALIZED) & (r["clean_before"] - r["clean_after"] <= MAX_DROP) & recovered


def _paper_neutralized() -> tuple[int, int, str]:
    ok = [paper.final_asr(k, "ours") <= NEUTRALIZED
          and all(paper.before(p, k)[0] - paper.after(p, k)[0] <= MAX_DROP and paper.after(p, k)[1] >= RECOVERED
                  for p in ("blend", "pixel"))
          for k in PAPER_PAIRS]
    return sum(ok), len(ok), "Tables 1, 2, 5"


def _paper_vs_ss() -> tuple[int, int, str]:
    ok = [paper.final_asr(k, "ours") <= paper.final_asr(k, "ss") + TOLERANCE for k in PAPER_PAIRS]
    return sum(ok), len(ok), "Table 5"


CLAIMS: tuple[Claim, ...] = (
    Claim("The attacks are learned (the setting of Tables 1–2)",
          f"attack success before the defense ≥ {LEARNED:g} %, over every experiment",
          lambda r: pd.Series(True, index=r.index), _learned, lambda: None),
    Claim("Theorem 4.1, §6.1: the target class is found",
          "the paper's scan (the class whose two gradient-mixture components lie furthest apart) names the attacked "
          "target, over the learned attacks",
          _learned, lambda r: r["target_found"] == 1,
          lambda: (paper.TARGETS_FOUND, paper.EXPERIMENTS, "§6.1")),
    Claim("§6.2: the base class is found",
          "the base named is the attacked one, over the learned attacks whose target was found (the sweep does not "
          "look for it)", lambda r: _found(r) & r["base_found"].notna(), lambda r: r["base_found"] == 1,
          lambda: (paper.BASES_FOUND, paper.EXPERIMENTS, "§6.2")),
    Claim("Theorem 5.1, Tables 3–4: the mixture filters the poison",
          f"sensitivity ≥ {MIN_SENSITIVITY:g} % and specificity ≥ {MIN_SPECIFICITY:g} % in the target class, over "
          "the learned attacks whose target was found", _found,
          lambda r: (r["sensitivity"] >= MIN_SENSITIVITY) & (r["specificity"] >= MIN_SPECIFICITY), _paper_filtering),
    Claim("§7, Tables 1–2: one epoch of counter-poison removes the backdoor",
          f"attack success after ≤ {NEUTRALIZED:g} %, clean accuracy down by ≤ {MAX_DROP:g} points and at least "
          f"{RECOVERED:g} % of the triggered base images classified as their class again (so that the trigger was "
          "not merely sent to another class; the sweep does not measure this part), over the learned attacks whose "
          "target was found (the paper's: Table 5 and Tables 1–2, per pair)",
          lambda r: _found(r) & r["asr_after"].notna(), _repaired, _paper_neutralized),
    Claim("Tables 3–4: filters at least as well as Activation Clustering",
          f"sensitivity no more than {TOLERANCE:g} points below Activation Clustering's, over the learned attacks",
          lambda r: _learned(r) & r["ac_sensitivity"].notna(),
          lambda r: r["sensitivity"] >= r["ac_sensitivity"] - TOLERANCE, _paper_vs_ac),
    Claim("Table 5: repairs at least as well as Spectral Signatures",
          f"attack success after ours no more than {TOLERANCE:g} points above Spectral Signatures' after "
          "retraining, over the learned attacks where both repairs ran",
          lambda r: _learned(r) & r["asr_after"].notna() & r["ss_asr_after"].notna(),
          lambda r: r["asr_after"] <= r["ss_asr_after"] + TOLERANCE, _paper_vs_ss),
)


def judge(n_true: int, n: int) -> str:
    """The verdict word for a claim true in ``n_true`` of the ``n`` experiments it applies to."""
    if not 0 <= n_true <= n:
        raise ValueError(f"need 0 <= n_true <= n, got {n_true} of {n}")
    if n == 0:
        return NOT_TESTED
    return HELD if n_true == n else PARTLY if 2 * n_true >= n else NOT_HELD


def cell(claim: Claim, rows: pd.DataFrame) -> tuple[str, int, int]:
    """(verdict, true, of) of one claim on one evidence set's rows (:func:`main_rows` / :func:`sweep_rows`)."""
    if not len(rows):
        return NOT_TESTED, 0, 0
    applies = claim.applies(rows).fillna(False).astype(bool)
    n = int(applies.sum())
    n_true = int(claim.holds(rows[applies]).fillna(False).astype(bool).sum()) if n else 0
    return judge(n_true, n), n_true, n


@dataclass
class Evidence:
    """One column of the verdict: one profile's results of one grid."""

    profile: str
    grid: str
    label: str  #: the column header, short: network, profile, grid and coverage
    description: str  #: the same in words, for the list under the table
    records: list[Result]
    rows: pd.DataFrame
    planned: int


def network_name(records: list[Result], short: bool = False) -> str:
    """The networks of a set of records: 'whitened fast network 64/256/256' (``short``: 'whitened 64')."""
    nets = []
    for rec in (r.params["recipe"] for r in records):
        model, w = rec["model"], rec.get("width", 32)
        if short:
            name = {"whitened_net": f"whitened {w}", "small_cnn": "small CNN"}.get(model, MODEL_NAMES.get(model, model))
        else:
            name = MODEL_NAMES.get(model, model) + (f" {w}/{4 * w}/{4 * w}" if model == "whitened_net" else
                                                    f" (width {w})" if model == "small_cnn" else "")
        nets.append(name)
    return ", ".join(dict.fromkeys(nets))


def evidence(root=None, order: tuple[str, ...] = PROFILE_ORDER) -> list[Evidence]:
    """Every profile's committed results of the paper's grid — its ``main`` grid, and the paper's 18 inside its
    ``compare`` grid (every defense on the same models; files that predate the details the tables need are left out,
    :func:`poisoncure.experiments.paper_tables.readable`) — then its ``sweep`` (``results/``, or ``root``), in
    :data:`PROFILE_ORDER` (the paper-scale profile first) with profiles not named there after them; sets without
    results left out."""
    names = sorted(profiles.available(), key=lambda p: (order.index(p) if p in order else len(order), p))
    what = {"main": "the paper's grid of 9 pairs × 2 triggers",
            "compare": "the paper's grid of 9 pairs × 2 triggers inside the all-defenses comparison (chapter 7)",
            "sweep": "the trigger-size sweep (one pixel to a full-image blend, 3 poison rates)"}
    out = []
    for grid, to_rows in (("main", main_rows), ("compare", main_rows), ("sweep", sweep_rows)):
        for prof in names:
            if grid not in (profiles.load(prof).get("reproduce") or {}):
                continue
            records = result_files.load_results(prof, grid, root)
            plan = plans.plan(prof, [grid])
            planned = len(plan)
            if grid == "compare":
                records, _, paper_names = paper_tables.paper_grid(records, plan)
                planned = len(paper_names)
            if not records:
                continue
            per_class = records[0].params["recipe"].get("train_per_class")
            data = f"{per_class:,} images per class" if per_class else "all of CIFAR-10"
            label = f"{grid + ' · ' if grid != 'main' else ''}{network_name(records, short=True)} ({prof}) · " \
                    f"{len(records)}/{planned}"
            description = f"{label}: {network_name(records)} trained on {data}, {what[grid]}; {len(records)} of the " \
                          f"{planned} planned experiments have a result"
            out.append(Evidence(prof, grid, label, description, records, to_rows(records), planned))
    return out


def _cell_text(word: str, k: int, n: int, counts: bool = True) -> str:
    return f"{word} ({k} of {n})" if counts and n else word


def _paper_text(claim: Claim) -> str:
    p = claim.paper()
    return f"{p[0]} of {p[1]} ({p[2]})" if p else "not reported"


def table(sets: list[Evidence] | None = None, counts: bool = True) -> pd.DataFrame:
    """The verdict table: one row per claim (:data:`CLAIMS`), the paper's count, then one column per evidence set
    (:func:`evidence`). Cells read 'held (3 of 3)'; ``counts=False`` gives the bare verdict words."""
    sets = evidence() if sets is None else sets
    out = {}
    for claim in CLAIMS:
        row = {"paper": _paper_text(claim)}
        for ev in sets:
            row[ev.label] = _cell_text(*cell(claim, ev.rows), counts=counts)
        out[claim.label] = row
    frame = pd.DataFrame.from_dict(out, orient="index")
    frame.index.name = "claim"
    return frame


def profile_summary(sets: list[Evidence] | None = None) -> pd.DataFrame:
    """One column per profile with results of the paper's grid (``main``, or the paper's 18 inside ``compare``; the
    paper-scale one first): how much of the grid has run and what it measured, beside the paper's numbers for the
    same experiments. Counted from the result files like :func:`table`; an attack counts as learned by
    :data:`LEARNED`."""
    sets = [ev for ev in (evidence() if sets is None else sets) if ev.grid in ("main", "compare")]
    out = {}
    for ev in sets:
        r = ev.rows
        paper_acc = [paper.before(rec.params["poison"], rec.params["recipe"]["pair"])[0] for rec in ev.records]
        learned = r[_learned(r)]
        found = learned[(learned["target_found"] == 1) & (learned["base_found"] == 1)]
        repaired = r[_found(r) & r["asr_after"].notna()]
        drop = repaired["clean_before"] - repaired["clean_after"]
        out[ev.label] = {
            "network": network_name(ev.records),
            "experiments with a result": f"{len(r)} of {ev.planned}",
            "clean accuracy before, mean (range) %": f"{r['clean_before'].mean():.1f} ({r['clean_before'].min():.1f}"
                                                    f"–{r['clean_before'].max():.1f})",
            "paper: clean accuracy, same experiments %": f"{np.mean(paper_acc):.1f}",
            f"attacks learned (≥ {LEARNED:g} % success)": f"{len(learned)} of {len(r)}",
            "target and base found": f"{len(found)} of {len(learned)} learned",
            "attack success after the repair, median %": f"{repaired['asr_after'].median():.1f}" if len(repaired)
            else "no repair ran",
            f"repairs with < {RECOVERED:g} % of triggered images back in their class":
                f"{int((repaired['triggered_after'] < RECOVERED).sum())} of {len(repaired)}" if len(repaired) else "—",
            "clean accuracy lost by the repair, mean (points)": f"{drop.mean():.1f}" if len(repaired) else "—",
        }
    frame = pd.DataFrame(out)
    frame.index.name = "profile"
    return frame


def rule_text() -> str:
    """The rule of the verdict, in words, for the page that shows it."""
    return ("Each cell counts, from the committed result files, the experiments a claim applies to and those in which "
            "it is true: held when true in all of them, held partly when in at least half, did not hold when in fewer, "
            "not tested at this scale when it applies to none. An attack is learned when at least "
            f"{LEARNED:g} % of the triggered base-class test images go to the target before any defense. The paper's "
            "column applies the same tests to the paper's own numbers where it reports them.")


def tests_text() -> list[str]:
    """One line per claim: the test applied in each experiment."""
    return [f"{c.label}: {c.test}." for c in CLAIMS]


#: cell shading per verdict (light, so that the text keeps its contrast), and the mark shown before the word
SHADES = {HELD: "#d8f0d8", PARTLY: "#fbeccb", NOT_HELD: "#f6d5d3", NOT_TESTED: "#ececec"}
MARKS = {HELD: "✓", PARTLY: "◐", NOT_HELD: "✗", NOT_TESTED: "–"}


def html(sets: list[Evidence] | None = None) -> str:
    """The verdict table as HTML sized for the text column (scrolling sideways when wider): cells shaded and marked
    by verdict (✓ held, ◐ held partly, ✗ did not hold, – not tested at this scale), the claim column wider than the
    others."""
    from html import escape

    sets = evidence() if sets is None else sets
    th = 'style="text-align:left; vertical-align:bottom; padding:0.3em 0.3em"'
    head = "".join(f"<th {th}>{escape(h)}</th>" for h in ("claim", "paper", *(ev.label for ev in sets)))
    body = []
    for claim in CLAIMS:
        cells = [f'<td style="min-width:8em; text-align:left; padding:0.3em 0.3em">{escape(claim.label)}</td>',
                 f'<td style="text-align:left; padding:0.3em 0.4em">{escape(_paper_text(claim))}</td>']
        for ev in sets:
            word, k, n = cell(claim, ev.rows)
            cells.append(f'<td class="verdict-{word.split()[0]}" style="background:{SHADES[word]}; '
                         f'text-align:left; padding:0.3em 0.3em">{MARKS[word]} {escape(_cell_text(word, k, n))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    # in a box that scrolls sideways: with many committed result sets the table may be wider than the text column,
    # and it must then not run under the page's table of contents
    return ('<div class="verdict-box" style="overflow-x:auto; max-width:100%">'
            '<table class="verdict-table" style="font-size:0.8em; border-collapse:collapse; width:100%">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def markdown(sets: list[Evidence] | None = None) -> str:
    """The verdict as a MyST page fragment (a table, its rule and the evidence's provenance), for pages that are not
    notebooks (the introduction); written by the book build before rendering."""
    sets = evidence() if sets is None else sets
    tests = "\n".join(f"- {_md_escape(t)}" for t in tests_text())
    prov = "\n".join(f"- {_md_escape(ev.description)}; {_md_escape(result_files.provenance_text(ev.records))}."
                      for ev in sets) or "- no result files yet."
    return "\n".join(["(tab-verdict)=", "", html(sets), "",
                      f"**How to read it.** {rule_text()} The tests, per claim:", "", tests, "",
                      "The columns, and where their results come from:", "", prov, ""])
