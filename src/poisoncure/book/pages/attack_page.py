"""Chapter 2 (the attack): the tables, figures and sentences built from the shared models and the committed
learning curves."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ... import attacks, train
from ...experiments import paper, store

if TYPE_CHECKING:
    from ...experiments.report import Result
from ...models import MODEL_NAMES
from .. import formatting, plots

#: an attack "works" from this attack success (%) on
WORKS = 80


def attack_table(trained: dict[str, Any], poisons: list[str], pair: int, test, device: Any) -> pd.DataFrame:
    """One column per model: clean accuracy, its lowest class, attack success, accuracy on triggered images, the
    clean model's attack success on the same triggered images, the paper's Tables 1–2 and the training time."""
    clean_tm = trained["clean"]
    rows = []
    for p in poisons:
        tm = trained[p]
        spec = store.attack_spec_or_none(tm)
        clean_on_trigger = train.evaluate(clean_tm.model, test, spec, device=device)
        paper_all, paper_trig = paper.before(p, pair)
        rows.append({"poison": p, "clean accuracy (%)": tm.metrics.clean_accuracy,
                     "lowest class accuracy (%)": min(tm.metrics.per_class_accuracy),
                     "attack success (%)": tm.metrics.attack_success_rate,
                     "accuracy on triggered (%)": tm.metrics.poisoned_accuracy,
                     "clean model: attack success (%)": clean_on_trigger.attack_success_rate,
                     "paper, Tables 1–2: clean accuracy (%)": paper_all,
                     "paper, Tables 1–2: accuracy on triggered (%)": paper_trig,
                     "training time (s)": tm.provenance["wall_seconds"]})
    rows.append({"poison": "none (clean model)", "clean accuracy (%)": clean_tm.metrics.clean_accuracy,
                 "lowest class accuracy (%)": min(clean_tm.metrics.per_class_accuracy),
                 "training time (s)": clean_tm.provenance["wall_seconds"]})
    return formatting.rounded(pd.DataFrame(rows).set_index("poison")).T


def attack_verdict(trained: dict[str, Any], poisons: list[str]) -> str:
    """The other poisoned models' numbers, and which backdoors work (at least :data:`WORKS` % attack success)."""
    works = {p: trained[p].metrics.attack_success_rate >= WORKS for p in poisons}
    others = [f"the {p}-poisoned model reaches {trained[p].metrics.clean_accuracy:.1f}% clean accuracy with "
              f"{trained[p].metrics.attack_success_rate:.1f}% attack success" for p in poisons if p != "blend"]
    learned = [p for p in poisons if works[p]]
    missed = [p for p in poisons if not works[p]]
    verdict = [". ".join(o[0].upper() + o[1:] for o in others) + "."] if others else []
    if learned:
        verdict.append(("Both backdoors work" if len(learned) == 2 else f"The {learned[0]} backdoor works")
                       + f" in this build (at least {WORKS}% attack success).")
    if missed:
        verdict.append(f"The {' and '.join(missed)} backdoor{'s are' if len(missed) > 1 else ' is'} not learned "
                       f"(below {WORKS}% attack success); the section on why one pixel is learned shows which networks "
                       "learn which trigger, and later chapters report these models' numbers as they are.")
    return " ".join(verdict)


def attack_effect_figure(trained: dict[str, Any], poisons: list[str], test, base: str, device: Any):
    """(a) Per-class clean accuracy of every model; (b) what each poisoned model predicts for the triggered
    base-class test images."""
    classes = list(test.classes)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.5, 1]})
    pcs = pd.DataFrame({p: trained[p].metrics.per_class_accuracy for p in ("clean", *poisons)}, index=classes)
    pcs.plot.bar(ax=axes[0], width=0.8, color=plots.colours(3))
    axes[0].set_ylabel("clean test accuracy (%)")
    axes[0].set_xlabel("class")
    axes[0].set_ylim(0, 115)
    axes[0].legend(title="model", fontsize=8, title_fontsize=8, ncols=3, loc="upper center")
    axes[0].set_xticks(range(10), classes, rotation=45, ha="right")
    ax = axes[1]
    width_bar = 0.4
    for k, p in enumerate(poisons):
        spec = store.attack_spec_or_none(trained[p])
        trig = attacks.triggered_test_set(test, spec)
        pred = train.predict(trained[p].model, trig.x, device=device)
        counts = np.bincount(pred, minlength=10) / len(pred) * 100
        ax.bar(np.arange(10) + (k - 0.5) * width_bar, counts, width_bar, label=f"{p}-poisoned model",
               color=plots.colours(3)[k + 1])
    ax.set_xticks(range(10), classes, rotation=45, ha="right")
    ax.set_ylim(0, 115)
    ax.set_ylabel(f"triggered {base} test images (%)")
    ax.set_xlabel("predicted class")
    ax.legend(fontsize=8, loc="upper center", ncols=2)
    plots.label_panels(axes)
    fig.tight_layout()
    return fig


def learning_outputs(learn: pd.DataFrame, results_profile: str) -> tuple[Any, pd.DataFrame]:
    """The learning grid's curves (attack success and clean accuracy per epoch, per network and trigger) and the
    table of each network's last epoch; a placeholder and a note when nothing is committed."""
    if learn.empty:
        return (plots.placeholder(f"no learning curves committed for profile {results_profile!r}"),
                pd.DataFrame({"note": ["no learning curves committed"]}))
    nets = list(dict.fromkeys(learn["network"]))  # in the order of the result files
    net_colour = dict(zip(nets, plots.colours(len(nets)), strict=True))
    fig, axes = plt.subplots(2, 2, figsize=(10, 8.5), sharex=True, layout="constrained")
    for j, trig_name in enumerate(("pixel", "blend")):
        for net in nets:
            d = learn[(learn.trigger == trig_name) & (learn.network == net)].sort_values("epoch")
            axes[0, j].plot(d["epoch"], d["attack_success_rate"], "o-", color=net_colour[net], label=net)
            axes[1, j].plot(d["epoch"], d["clean_accuracy"], "o-", color=net_colour[net], label=net)
        axes[0, j].set_title({"pixel": "one-pixel trigger", "blend": "blend trigger (photo, 20 %)"}[trig_name])
        axes[0, j].set_ylim(-3, 103)
        axes[1, j].set_xlabel("epoch")
    axes[0, 0].set_ylabel("attack success (%)")
    axes[1, 0].set_ylabel("clean test accuracy (%)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=9, frameon=False)  # below the panels
    last = learn.sort_values("epoch").groupby(["network", "trigger"]).last().reset_index()
    final = last.pivot(index="network", columns="trigger", values="attack_success_rate").add_prefix(
        "attack success, ").join(last.groupby("network")[["clean_accuracy"]].mean().rename(
            columns={"clean_accuracy": "clean accuracy (mean of the two)"}))
    final = final.join(last.groupby("network")[["parameters"]].first()).reindex(nets).round(1)
    final.columns = [c.replace("_", " ") + (" (%)" if "success" in c or "accuracy" in c else "")
                     for c in final.columns]
    return fig, final


def contrast_figure(contrast: dict[str, dict[str, Any]]) -> tuple[Any, dict[str, float]]:
    """Box plots of each trigger's change to a 2×2 patch, in raw pixels and after whitening (typical natural
    patch = 1); and the medians as ``pixel_raw``, ``pixel_white``, ``blend_raw``, ``blend_white``."""
    fig, ax = plt.subplots(figsize=(9, 3.2))
    pos, labels = [], []
    for k, (name, res) in enumerate(contrast.items()):
        for j, (space, vals) in enumerate(res.items()):
            pos.append(3 * k + j)
            labels.append(f"{name}\n{'raw pixels' if space == 'raw' else 'after whitening'}")
            ax.boxplot(vals.numpy(), positions=[pos[-1]], widths=0.6, showfliers=False,
                       patch_artist=True, boxprops={"facecolor": plots.colours(2)[j], "alpha": 0.6})
    ax.axhline(1.0, color="grey", lw=1, ls="--")
    ax.set_yscale("log")
    ax.set_xticks(pos, labels)
    ax.set_ylabel("trigger's change to a 2×2 patch\n(typical natural patch = 1)")
    fig.tight_layout()
    med = {name: {space: float(v.median()) for space, v in res.items()} for name, res in contrast.items()}
    return fig, {"pixel_raw": med["one pixel"]["raw"], "pixel_white": med["one pixel"]["whitened"],
                 "blend_raw": med["blend"]["raw"], "blend_white": med["blend"]["whitened"]}


def provenance_table(trained: dict[str, Any]) -> pd.DataFrame:
    """Where each model was trained: commit, device, torch, seed, wall time and date."""
    return pd.DataFrame({p: {"commit": tm.provenance["commit"], "device": tm.provenance["device"],
                             "torch": tm.provenance["torch"], "seed": tm.provenance["seed"],
                             "training wall time (s)": tm.provenance["wall_seconds"],
                             "created": tm.provenance["created"]} for p, tm in trained.items()})


def learning_table(records: list[Result]):
    """One row per (``learning`` result, epoch): trigger, network (the book's name; the whitened network with its
    widths), width, epoch, clean accuracy, worst class and attack success after that epoch, and the run's training
    time and parameter count."""
    def network(recipe: dict[str, Any]) -> str:
        w = recipe["width"]
        return MODEL_NAMES.get(recipe["model"], recipe["model"]) + (
            f" {w}/{4 * w}/{4 * w}" if recipe["model"] == "whitened_net" else "")

    rows = [{"trigger": r.params["poison"], "network": network(r.params["recipe"]),
             "width": r.params["recipe"]["width"], **e, "seconds": r.report.details["train_seconds"],
             "parameters": r.report.details["parameters"]} for r in records for e in r.report.details["epochs"]]
    return pd.DataFrame(rows)
