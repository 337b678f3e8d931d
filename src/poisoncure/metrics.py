"""Evaluation metrics — the only place they are defined (SPEC §2.10).

All functions take integer label arrays (numpy or torch) and return percentages in [0, 100].
"""

from __future__ import annotations

import numpy as np


def _as_np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def accuracy(pred, y) -> float:
    """Top-1 accuracy (%) of predictions ``pred`` against labels ``y``."""
    pred, y = _as_np(pred), _as_np(y)
    if pred.shape != y.shape or pred.ndim != 1:
        raise ValueError(f"pred and y must be 1-D of equal length, got {pred.shape} and {y.shape}")
    if len(y) == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float(100.0 * np.mean(pred == y))


def per_class_accuracy(pred, y, num_classes: int) -> np.ndarray:
    """Accuracy (%) of each class; NaN for a class absent from ``y``."""
    pred, y = _as_np(pred), _as_np(y)
    out = np.full(num_classes, np.nan)
    for c in range(num_classes):
        mask = y == c
        if mask.any():
            out[c] = 100.0 * np.mean(pred[mask] == c)
    return out


def attack_success_rate(pred_triggered, target: int) -> float:
    """% of triggered base-class images classified as the attacker's ``target`` (SPEC §2.10, Table 5)."""
    pred = _as_np(pred_triggered)
    if len(pred) == 0:
        raise ValueError("attack success rate of an empty set is undefined")
    return float(100.0 * np.mean(pred == target))


def sensitivity(flagged, is_poison) -> float:
    """% of the truly poisoned samples that are flagged (true-positive rate)."""
    flagged, is_poison = _as_np(flagged).astype(bool), _as_np(is_poison).astype(bool)
    if not is_poison.any():
        raise ValueError("sensitivity needs at least one poisoned sample")
    return float(100.0 * flagged[is_poison].mean())


def specificity(flagged, is_poison) -> float:
    """% of the truly clean samples that are not flagged (true-negative rate)."""
    flagged, is_poison = _as_np(flagged).astype(bool), _as_np(is_poison).astype(bool)
    if is_poison.all():
        raise ValueError("specificity needs at least one clean sample")
    return float(100.0 * (~flagged[~is_poison]).mean())


def detection_rates(flagged, is_poison) -> dict[str, float | None]:
    """Sensitivity and specificity (%) of a flagging, each ``None`` where it is undefined (no poisoned, or no clean
    sample)."""
    flagged, is_poison = _as_np(flagged).astype(bool), _as_np(is_poison).astype(bool)
    return {"sensitivity": sensitivity(flagged, is_poison) if is_poison.any() else None,
            "specificity": specificity(flagged, is_poison) if not is_poison.all() else None}


def targeted_misclassification(pred_clean, pred_triggered, source: int, target: int) -> float:
    """Equation 7 of the ensembles-of-weak-learners paper, in %: of the source-class test images, the share that
    the model classifies correctly as ``source`` *and* sends to ``target`` once triggered. ``pred_clean`` and
    ``pred_triggered`` are the predictions on the same source-class images without and with the trigger."""
    pc, pt = _as_np(pred_clean), _as_np(pred_triggered)
    if pc.shape != pt.shape or pc.ndim != 1 or len(pc) == 0:
        raise ValueError(f"pred_clean and pred_triggered must be non-empty and of one length, got {pc.shape} "
                         f"and {pt.shape}")
    return 100.0 * float(np.mean((pc == source) & (pt == target)))
