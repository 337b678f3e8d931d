"""Chapter 5 (finding the target and base classes): the sentence that reads the base search against the target test.

The base search (Algorithm 1b) names the label with the largest mean |PC1| over the flagged samples; how safely it
does so is the lead of that label over the runner-up. The target test's lead is measured the same way (the largest
W_k over the second largest), so the two margins can be set side by side."""

from __future__ import annotations

from typing import Any

import numpy as np


def lead(values: np.ndarray, winner: int, exclude: tuple[int, ...] = ()) -> tuple[int, float]:
    """The runner-up of ``values`` (the largest after ``winner``, ``exclude`` left out too; NaN ignored) and the
    winner's lead over it, ``values[winner] / values[runner-up]`` (inf when the runner-up is 0)."""
    v = np.array(values, dtype=np.float64)
    v[[winner, *exclude]] = -np.inf
    v[np.isnan(v)] = -np.inf
    runner = int(np.argmax(v))
    if not np.isfinite(v[runner]):
        raise ValueError("no runner-up: every other value is excluded or NaN")
    top = float(np.asarray(values, dtype=np.float64)[winner])
    return runner, (top / v[runner] if v[runner] > 0 else float("inf"))


def base_reading(cured: dict[str, Any], classes: list[str]) -> str:
    """The sentences under chapter 5's base figure, from the scans of ``cured`` ({model name: PoisonCureRun}):
    for every model whose scan flagged a class, the base named, whether it is the attack's base, its lead over the
    runner-up, and that lead beside the target test's own lead (largest W_k over the second)."""
    parts, leads = [], []
    for name, c in cured.items():
        res = c.result
        if res.base is None:
            continue
        b, scan = res.base, res.scan
        spec = getattr(c.trained.train_set, "spec", None)
        runner, base_lead = lead(b.m, b.base, exclude=(b.target,))
        _, target_lead = lead(scan.distances, scan.target)
        leads.append((base_lead, target_lead))
        said = (f"m = {b.m[b.base]:.3f} against {b.m[runner]:.3f} for {classes[runner]}, the runner-up: "
                f"{base_lead:.2f} times as large, where the target's W is {target_lead:.2f} times the next class's")
        if spec is None:
            parts.append(f"The clean model was flagged ({classes[scan.target]}), so the search named a base for an "
                         f"attack that is not there: {classes[b.base]} ({said}).")
        elif b.base == spec.base:
            parts.append(f"On the {name} model the search names {classes[b.base]}, the attack's base ({said}).")
        else:
            parts.append(f"On the {name} model the search names {classes[b.base]}, not the attack's base "
                         f"{classes[spec.base]} ({said}).")
    if not parts:
        return "No model was flagged, so no base was searched for."
    if all(bl < tl for bl, tl in leads):
        parts.append("Every base lead is smaller than its target test's: the base search is the least robust step "
                     "of the method, and it matters, because the neutralization (chapter 6) relabels the filtered "
                     "samples to this class.")
    else:
        parts.append("The base leads are not all smaller than the target tests' (see the numbers above); what "
                     "matters either way is that the neutralization (chapter 6) relabels the filtered samples to "
                     "this class.")
    return " ".join(parts)
