"""Table rows more than one chapter shows."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...experiments import store


def trained_model_row(name: str, tm: store.TrainedModel, **columns: Any) -> dict[str, Any]:
    """A trained model of the book as a table row: its name, then ``columns`` (e.g. its architecture), its training
    images and poisons, clean accuracy, attack success (NaN for a model without an attack) and training time."""
    spec = store.attack_spec_or_none(tm)
    return {"model": name, **columns, "training images": len(tm.train_set),
            "poisoned": int(tm.train_set.is_poison.sum()) if spec else 0,
            "clean accuracy %": tm.metrics.clean_accuracy,
            "attack success %": tm.metrics.attack_success_rate if spec else np.nan,
            "trained in (s)": tm.history.seconds}
