"""Chapter 11 (PoisHygiene): the tables, figures and sentences built from its scans, repairs and committed runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ... import attacks
from ...experiments import paper, report
from ...experiments.grids import hygiene
from .. import formatting, plots
from ..formatting import MISSING
from .rows import trained_model_row

if TYPE_CHECKING:
    from ...experiments.report import Report, Result

#: Column names of the paper's Table 8 values (acc, ASR; "before → after (clean only)") beside ours.
T8_COLUMNS = ("paper, Table 8: acc %", "paper, Table 8: ASR %")


def trigger_examples(test, suspects: dict[str, Any], attacked: list[str], target: int):
    """Six test images of the non-target classes, clean and with each attack's trigger (attacks without one,
    such as Mislabel and the clean-label attacks, have no row)."""
    rows = np.flatnonzero(test.y != target)[:6]
    examples = test.x[rows]
    grid, labels = [list(examples)], ["clean"]
    for a in attacked:
        if not isinstance(suspects[a].trigger(), attacks.NoTrigger):
            grid.append(list(suspects[a].trigger().apply(examples)))
            labels.append(a)
    return plots.image_grid(grid, labels, [test.classes[c] for c in test.y[rows]], size=1.3)


def models_table(models: dict[str, Any], refs: list[Any]) -> pd.DataFrame:
    """One row per suspect and reference: architecture, training images, poisons, accuracy, attack success, time."""
    rows = [trained_model_row(f"suspect: {name}", tm, architecture="Model I") for name, tm in models.items()]
    for r in refs:
        rows.append({"model": f"reference: Model {r.recipe.model}", "architecture": f"Model {r.recipe.model}",
                     "training images": r.recipe.train_size, "poisoned": 0, "clean accuracy %": r.accuracies[-1],
                     "attack success %": np.nan, "trained in (s)": r.provenance.get("wall_seconds", np.nan)})
    return pd.DataFrame(rows).set_index("model")


def prob_figure(scans: dict[str, Any], labels: tuple[str, ...], tau: float, target: int | None = None):
    """Prob per label, one bar per scanned model, the infected label starred, τ dashed; the legend beside the
    bars, never over them."""
    cols = plots.colours(6)
    fig, ax = plt.subplots(figsize=(9, 3.4))
    x = np.arange(len(labels))
    w = 0.8 / len(scans)
    for i, (name, scan) in enumerate(scans.items()):
        ax.bar(x + (i - (len(scans) - 1) / 2) * w, scan.prob, w, color=cols[i], label=name)
    ax.axhline(tau, color="black", ls="--", lw=1, label=f"τ = {tau:g}")
    ax.set_xticks(x, [f"{c}*" if k == target else c for k, c in enumerate(labels)], rotation=45, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("Prob (fraction of probes)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def probes_figure(scan: Any, target: int, classes: tuple[str, ...], probes: int) -> tuple[Any, dict[str, str]]:
    """The probes that reached the infected label beside the final probes of the healthy label with the lowest
    Prob; and the texts ``corner_ok`` / ``corner_rest``: the mean brightness, where the BadNets stamp sits, of the
    successful target probes and of every other final probe."""
    ok_t = np.flatnonzero(scan.success[target])[:6]
    other = min((scan.prob[k], k) for k in range(len(classes)) if k != target)[1]
    rows = [[scan.probes[target, i] for i in ok_t] or [np.zeros((3, 32, 32), np.float32)],
            [scan.probes[other, i] for i in range(min(6, probes))]]
    fig = plots.image_grid(rows, [f"{classes[target]}:\nsucceeded",
                                  f"{classes[other]}:\nfinal probes\n(Prob {scan.prob[other]:.1f})"], size=1.3)
    t = hygiene.BADNETS_TRIGGER
    corner = scan.probes[..., t.row:t.row + t.size, t.col:t.col + t.size].mean((2, 3, 4))
    rest = np.ones_like(scan.success)
    rest[target] = False
    return fig, {"corner_ok": f"{corner[target][scan.success[target]].mean():.2f}" if scan.success[target].any()
                 else MISSING, "corner_rest": f"{corner[rest.astype(bool)].mean():.2f}"}


def detection_table(scans: dict[str, Any], provenance: dict[str, dict], classes: tuple[str, ...],
                    target: int) -> pd.DataFrame:
    """DETECT per suspect: Prob of the target, the highest Prob, the labels over τ, the paper's Table 6, time."""
    rows = []
    for name, s in scans.items():
        rows.append({"suspect": name, f"Prob({classes[target]})": s.prob[target],
                     "highest Prob (label)": f"{s.prob.max():.1f} ({classes[s.suspect]})",
                     "labels over τ": ", ".join(classes[k] for k in np.flatnonzero(s.infected)) or "none",
                     "paper, Table 6 (Fashion-MNIST)": paper.HYGIENE_FMNIST.get(name, {}).get("detect", MISSING),
                     "scan (s)": provenance[name].get("wall_seconds", np.nan)})
    return pd.DataFrame(rows).set_index("suspect").round(2)


def detection_texts(scans: dict[str, Any], others: dict[str, Any], main: str | None, classes: tuple[str, ...],
                    target: int, threshold: float) -> dict[str, str]:
    """The sentences under the detection results: the paper's method on the main attacked suspect, the healthy
    twin's verdict and the main suspect's."""
    out = {"fm_main": main or "none"}
    pc = others[main]["poison_cure"] if main is not None else None
    if pc is not None:
        out["fm_pc_verdict"] = (
            f"The paper's method names {classes[pc['target']]} (R = {pc['ratio']:.2f})."
            if pc["poisoned"] and pc["target"] == target else
            f"The paper's method does not find the {main} target: its largest ratio is R = {pc['ratio']:.2f} "
            f"({classes[pc['target']]}), against λ = {threshold:g}"
            + (", and it names the wrong class." if pc["poisoned"] else ".")
            + " Its target test was built for the paper's attack, where the poison is a small part of the target "
              "class and comes from one base class; here the poisoned images come from nine classes and make up "
              "about half of the target class. That is a likely reason, which this chapter does not test further.")
    else:
        out["fm_pc_verdict"] = ("The paper's method does not apply to a task without the source class (it scans "
                                "every class's gradients)." if main is not None else "")
    healthy = scans["healthy"]
    out["fm_healthy_max"] = f"{float(healthy.prob.max()):.1f}"
    out["fm_healthy_verdict"] = ("no label passes" if not healthy.model_infected else
                                 f"{int(healthy.infected.sum())} label(s) pass — a false positive")
    if main is not None:
        s = scans[main]
        out["fm_prob_main"] = f"{s.prob[target]:.1f}"
        out["fm_verdict_main"] = (
            f"{classes[target]} has the highest Prob and is the only label over τ"
            if s.suspect == target and s.infected.sum() == 1 and s.infected[target] else
            f"labels over τ: {', '.join(classes[k] for k in np.flatnonzero(s.infected)) or 'none'}"
            f" (highest: {classes[s.suspect]})")
    else:
        out["fm_prob_main"] = MISSING
        out["fm_verdict_main"] = "no attacked suspect in this run (fm_attacks is empty)"
    return out


def mitigation_row(name: str, tm: Any, found: int | None, fix: Any, only: Any, classes: tuple[str, ...]
                   ) -> dict[str, Any]:
    """One suspect's column of the mitigation table: before, after PoisHygiene, after clean images alone."""
    row = {"suspect": name, "label repaired": classes[found] if found is not None else "— (nothing flagged)",
           "before: acc %": tm.metrics.clean_accuracy, "before: ASR %": tm.metrics.attack_success_rate}
    if fix is not None:
        row.update({"PoisHygiene: acc %": fix.metrics.clean_accuracy,
                    "PoisHygiene: ASR %": fix.metrics.attack_success_rate,
                    "clean only: acc %": only.metrics.clean_accuracy,
                    "clean only: ASR %": only.metrics.attack_success_rate,
                    "crafted kept": f"{len(fix.crafted)} ({100 * fix.crafted_success:.0f} %)",
                    "mitigation (s)": fix.provenance.get("wall_seconds", np.nan)})
    return row


def mitigation_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The mitigation rows with the paper's Table 8, one column per suspect."""
    table = pd.DataFrame(rows).set_index("suspect") if rows else pd.DataFrame()
    if len(table):
        for column, key in zip(T8_COLUMNS, ("acc", "asr"), strict=True):
            table[column] = [paper.HYGIENE_FMNIST.get(a, {}).get(key, MISSING) for a in table.index]
    return formatting.rounded(table, 2).T


def mitigation_texts(main: str | None, models: dict[str, Any], mitigated: dict[str, Any],
                     clean_only: dict[str, Any]) -> dict[str, str]:
    """``mit_main`` (before → after on the main suspect) and ``mit_summary`` (whether MITIGATE at least halves the
    attack success, and whether clean images alone do too)."""
    if main not in mitigated:
        return {"mit_main": f"not run (the {main} suspect was not flagged, or its attack was not learned)",
                "mit_summary": "MITIGATE did not run"}
    b, f_, o_ = models[main].metrics, mitigated[main].metrics, clean_only[main].metrics
    halved = f_.attack_success_rate <= b.attack_success_rate / 2
    return {"mit_main": f"attack success {b.attack_success_rate:.1f} % → {f_.attack_success_rate:.1f} % "
                        f"(clean images alone: {o_.attack_success_rate:.1f} %), clean accuracy "
                        f"{b.clean_accuracy:.2f} % → {f_.clean_accuracy:.2f} %",
            "mit_summary": "MITIGATE " + ("at least halves" if halved else "does not halve") + " the attack success, "
                           + ("which fine-tuning on the clean images alone does not"
                              if o_.attack_success_rate > b.attack_success_rate / 2 else
                              "and so does fine-tuning on the clean images alone")}


def crafted_figure(mitigated: dict[str, Any], classes: tuple[str, ...]):
    """Up to eight crafted images of the first repair, one per label they were given."""
    crafted = next(iter(mitigated.values())).crafted if mitigated else None
    if crafted is None or not len(crafted):
        return plots.placeholder("no crafted image (no mitigation ran)")
    picks = [int(np.flatnonzero(crafted.y == c)[0]) for c in np.unique(crafted.y)][:8]
    return plots.image_grid([[crafted.x[i] for i in picks]], ["crafted"], [f"→ {classes[crafted.y[i]]}" for i in picks],
                            size=1.3)


def result_of(records: list[Result], attack: str) -> Report | None:
    """The committed report of an attack (of several, the longest-trained: the blend runs 5 and 15 epochs)."""
    found = [rec for rec in records if rec.report.details["attack"] == attack]
    return max(found, key=lambda rec: rec.params["suspect"]["epochs"]).report if found else None


def _scan(r: Report) -> dict[str, Any]:
    """PoisHygiene's DETECT on a committed report: ``prob``, ``infected``, ``suspect``, ``model_infected``."""
    return r[report.HYGIENE].details["scan"]


def committed_texts(records: list[Result], classes: tuple[str, ...]) -> dict[str, str]:
    """The sentences reading every Fashion-MNIST attack's committed run: each attack's outcome, the withheld
    control's floor, the healthy suspects' false positives, the blend's epochs and the two clean-label attacks."""
    out = {f"all_{a}": outcome(result_of(records, a), classes) if result_of(records, a) else "not run yet"
           for a in ("badnets", "blend", "mislabel", "frog", "stingray")}
    w, h = result_of(records, "withheld"), result_of(records, "clean")
    out["all_floor"] = f"{w.before.attack_success_rate:.1f} %" if w else "— (not run yet)"
    out["all_fp"] = ("no label passes on either" if h and w and not (any(_scan(h)["infected"])
                                                                      or any(_scan(w)["infected"]))
                     else "labels over τ: " + "; ".join(
                         f"{n}: {', '.join(classes[k] for k, v in enumerate(_scan(r)['infected']) if v) or 'none'}"
                         for n, r in (("healthy", h), ("withheld", w)) if r))
    blends = sorted((rec for rec in records if rec.report.details["attack"] == "blend"),
                    key=lambda rec: rec.params["suspect"]["epochs"])
    out["all_blend_epochs"] = " and ".join(
        f"{rec.params['suspect']['epochs']} epochs ({rec.report.before.attack_success_rate:.1f} %)"
        for rec in blends) or MISSING
    f, s = result_of(records, "frog"), result_of(records, "stingray")
    if not (f and s):
        return {**out, **{k: "— (not run yet)" for k in ("all_kept", "all_frog_change", "all_sting_change",
                                                           "all_frog_claim", "all_sting_claim")}}
    fc, sc = f.details["crafting"], s.details["crafting"]
    kf, ks = fc["kept_label"], sc["kept_label"]
    floor = w.before.attack_success_rate if w else 0.0
    fa, sa = f.before.attack_success_rate, s.before.attack_success_rate
    out.update({
        "all_kept": f"The attacker's own clean model calls {kf:.1f} % of the Poison Frog poisons and {ks:.1f} % "
                    f"of the StingRay poisons T-shirt/top, their label",
        "all_frog_change": f"{255 * fc['max_pixel_change']:.0f}/255",
        "all_sting_change": f"{255 * sc['max_pixel_change']:.0f}/255",
        "all_frog_claim": (f"a Mislabel attack by another road, and it works ({fa:.1f} % against the floor's "
                           f"{floor:.1f} %)." if kf < 50 and fa >= 50 else
                           f"its attack success is {fa:.1f} % against the floor's {floor:.1f} %."),
        "all_sting_claim": (f"its attack success, {sa:.1f} %, stays far below Poison Frog's ({fa:.1f} %)"
                            + (f", though above the floor ({floor:.1f} %)." if sa > floor else ".")
                            if sa < fa else f"its attack success is {sa:.1f} % (floor {floor:.1f} %).")})
    return out


def clean_label_figure(records: list[Result]):
    """For each clean-label attack of the committed runs: T-shirt bases, the bags they aim at, the poisons."""
    rows, labels = [], []
    for a, r in (("Poison Frog", result_of(records, "frog")), ("StingRay", result_of(records, "stingray"))):
        if r is None:
            continue
        for part, name in (("base", "base\n(T-shirt)"), ("aim", "aim (bag)"), ("poison", "poison,\nlabel T-shirt")):
            rows.append([np.repeat(np.asarray(im, np.uint8)[..., None], 3, axis=2)
                         for im in r.details["examples"][part]])
            labels.append(f"{a}:\n{name}")
    if not rows:
        return plots.placeholder("no clean-label result committed yet")
    return plots.image_grid(rows, labels, size=1.2)


def cifar_texts(scans: dict[str, Any], refs: list[Any], per_class: list[int]) -> dict[str, str]:
    """The sentences under the CIFAR-10 scans: the references, how many labels pass on each model, the verdict."""
    out = {"cifar_ref_desc": " and ".join(f"{n} images per class ({r.accuracies[-1]:.0f} % accurate)"
                                          for n, r in zip(per_class, refs, strict=True)),
           "c_pass_blend": str(int(scans["blend"].infected.sum())),
           "c_pass_clean": str(int(scans["clean"].infected.sum()))}
    if scans["clean"].model_infected:
        out["c_verdict"] = (
            "Every label that passes on the clean model is a false positive. A reference this weak disagrees with "
            "the suspect in much of input space, so probes that satisfy the suspect also satisfy \"the references "
            "disagree\" on healthy labels. This is the paper's CIFAR-10 false-positive problem (40 % of healthy "
            "models with one reference, its Table 5), and the reason it needs an ensemble of strong references on "
            "this data (exercise 3).")
        out["c_summary"] = (f"false positives on the clean model ({int(scans['clean'].infected.sum())} of 10 "
                            "labels): the references are too weak for the test to separate infected from healthy "
                            "labels.")
    else:
        out["c_verdict"] = ("No label passes on the clean model, so there is no false positive; whether the blend's "
                            "target is the label found is in the table.")
        out["c_summary"] = "no false positive on the clean model; the table says whether the blend's target is found."
    return out


def cifar_committed_texts(records: list[Result], classes: tuple[str, ...]) -> dict[str, str]:
    """The sentences naming the committed CIFAR-10 all-to-one runs' recipe, target, references and outcomes."""
    if records:
        r = records[0].params["recipe"]
        out = {"c_all_recipe": f"{r['model']}, width {r['width']}, {r['epochs']} epochs on "
                               f"{'all 5,000' if r['train_per_class'] is None else r['train_per_class']} images "
                               "per class",
               "c_all_target": classes[records[0].report.target],
               "c_all_refs": " and ".join(
                   f"a clean model of the same recipe on {n} images per class ({a:.0f} % accurate)"
                   for n, a in zip(records[0].params["references"]["per_class"],
                                   records[0].report.details["references"], strict=True))}
    else:
        out = {k: "— (not run yet)" for k in ("c_all_recipe", "c_all_target", "c_all_refs")}
    out["c_all_summary"] = "; ".join(f"{rec.params['label']}: {outcome(rec.report, classes)}"
                                     for rec in records) or "not run yet"
    return out


def table_or_note(table: pd.DataFrame) -> pd.DataFrame:
    """A committed-results table, one column per suspect, or a one-cell note when nothing is committed yet."""
    return formatting.rounded(table, 2).T if len(table) else \
        pd.DataFrame({"note": ["no committed result yet"]})


def results_table(records: list[Result], classes: tuple[str, ...]):
    """One row per ``hygiene`` result file (all of one data set, whose ``classes`` name the labels): the suspect,
    DETECT's verdict, the repair and what the other two detectors name, with the paper's numbers for that data set
    in labelled columns and where each file ran (device, commit, and whether its working tree had uncommitted
    changes: the commit's ``+dirty`` mark)."""
    rows = []
    for rec in records:
        r = rec.report
        attack = r.details["attack"]
        numbers = paper.HYGIENE_CIFAR if "recipe" in rec.params else paper.HYGIENE_FMNIST
        attacked = attack not in hygiene.CONTROLS
        t = r.target if attack != "clean" else None
        hyg, scan = r[report.HYGIENE], _scan(r)
        mit, after = hyg.details.get("mitigation"), hyg.after
        row = {"suspect": rec.params["label"].replace("_", " "),  # "poison rate 0.06" wraps, "poison_rate" did not
               "clean acc %": r.before.clean_accuracy,
               "ASR %": r.before.attack_success_rate if attack != "clean" else np.nan,
               "Prob(target)": scan["prob"][t] if t is not None else np.nan,
               "labels over τ": ("all" if all(scan["infected"]) else
                                 ", ".join(classes[k] for k, v in enumerate(scan["infected"]) if v) or "none"),
               "paper, Table 6": numbers.get(attack, {}).get("detect", MISSING),
               "label repaired": classes[mit["label"]] if mit else MISSING,
               "after: acc %": after.clean_accuracy if mit else np.nan,
               "after: ASR %": after.attack_success_rate if mit else np.nan,
               "clean only: ASR %": mit["clean_only"]["attack_success_rate"] if mit else np.nan,
               T8_COLUMNS[0]: numbers.get(attack, {}).get("acc", MISSING) if attacked else MISSING,
               T8_COLUMNS[1]: numbers.get(attack, {}).get("asr", MISSING) if attacked else MISSING,
               "Neural Cleanse flags": ", ".join(classes[k] for k in r[report.CLEANSE].labels) or "none",
               "ours flags": "not run" if report.POISON_CURE not in r.defenses else
               (", ".join(classes[k] for k in r[report.POISON_CURE].labels) or "none"),
               "device": rec.provenance["device"].split(" (")[0]}
        # the +dirty mark on a row of its own: "3bea766+dirty" cannot wrap, and eight of them made the table, one
        # column per suspect, wider than the page
        sha, dirty = report.commit_parts(rec.provenance["commit"])
        row.update({"commit": sha, "uncommitted changes": "yes" if dirty else "no"})
        rows.append(row)
    return pd.DataFrame(rows).set_index("suspect") if rows else pd.DataFrame()


def comparison_rows(name: str, scan: dict[str, Any], others: dict[str, Any], classes: tuple[str, ...],
                    target: int | None, tau: float = 0.5, threshold: float = 2.0) -> list[dict[str, Any]]:
    """Table rows (PoisHygiene, Neural Cleanse, Poison as a Cure) for one model from the grid's
    :func:`~poisoncure.experiments.grids.hygiene.scan_summary` and
    :func:`~poisoncure.experiments.grids.hygiene.other_detectors`: labels flagged, target named and whether it is
    the attack's ``target`` (None: a healthy model, nothing to be right about)."""
    def right(named: int | None) -> Any:
        return np.nan if target is None or named is None else named == target

    flagged = [k for k, v in enumerate(scan["infected"]) if v]
    named = scan["suspect"] if flagged else None
    rows = [{"model": name, "detector": "PoisHygiene (probes)",
             "labels flagged": ", ".join(classes[k] for k in flagged) or "none",
             "target named": classes[named] if named is not None else MISSING, "right target": right(named),
             "statistic": f"highest Prob {max(scan['prob']):.1f} (τ = {tau:g})"}]
    nc = others["neural_cleanse"]
    nc_named = int(np.argmax(nc["anomaly"])) if nc["flagged"] else None
    rows.append({"model": name, "detector": "Neural Cleanse",
                 "labels flagged": ", ".join(classes[k] for k in nc["flagged"]) or "none",
                 "target named": classes[nc_named] if nc_named is not None else MISSING,
                 "right target": right(nc_named),
                 "statistic": f"largest anomaly index {max(nc['anomaly']):.2f} (flag above 2)"})
    pc = others["poison_cure"]
    if pc is None:
        rows.append({"model": name, "detector": "Poison as a Cure", "labels flagged": MISSING, "target named": MISSING,
                     "right target": np.nan, "statistic": "not run: no training images of "
                     + ", ".join(classes[k] for k in others["missing"])})
    else:
        pc_named = pc["target"] if pc["poisoned"] else None
        rows.append({"model": name, "detector": "Poison as a Cure",
                     "labels flagged": classes[pc_named] if pc_named is not None else "none",
                     "target named": classes[pc_named] if pc_named is not None else MISSING,
                     "right target": right(pc_named),
                     "statistic": f"R = {pc['ratio']:.2f} (λ = {threshold:g}; largest: {classes[pc['target']]})"})
    return rows


def comparison_table(scans: dict[str, Any], others: dict[str, Any], classes: tuple[str, ...],
                     targets: dict[str, int | None], tau: float = 0.5, threshold: float = 2.0) -> pd.DataFrame:
    """:func:`comparison_rows` of every scanned model (``targets``: each model's attacked target, None for a
    healthy one), indexed by (model, detector), "—" where there is nothing to show."""
    rows = [r for name, scan in scans.items()
            for r in comparison_rows(name, hygiene.scan_summary(scan), others[name], classes, targets[name], tau,
                                     threshold)]
    return formatting.dashed(pd.DataFrame(rows).set_index(["model", "detector"]))


def outcome(result: Report, classes: tuple[str, ...]) -> str:
    """One clause of prose on a committed ``hygiene`` report: the attack, DETECT's verdict on the target and which
    label the repair touched, with what it left."""
    t, b = result.target, result.before
    hyg = result[report.HYGIENE]
    m, scan = hyg.details.get("mitigation"), hyg.details["scan"]
    over = [k for k, v in enumerate(scan["infected"]) if v]
    verdict = ("the only label over τ" if over == [t] else "every label over τ" if len(over) == len(classes) else
               f"labels over τ: {', '.join(classes[k] for k in over)}" if over else "no label over τ")
    text = (f"attack success {b.attack_success_rate:.1f} % at {b.clean_accuracy:.1f} % clean accuracy; "
            f"Prob({classes[t]}) {scan['prob'][t]:.1f}, {verdict}")
    if m:
        text += (f"; MITIGATE on {classes[m['label']]} ({'the target' if m['label'] == t else 'not the target'}): "
                 f"attack success {hyg.after.attack_success_rate:.1f} % (clean images alone: "
                 f"{m['clean_only']['attack_success_rate']:.1f} %), clean accuracy "
                 f"{hyg.after.clean_accuracy:.1f} %")
    return text
