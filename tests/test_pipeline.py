"""The one pipeline (``poisoncure.experiments.pipeline.run_defenses``) that every grid of the runner and chapter 7 call:
its settings, its refusals, and one real run of all five defenses on a tiny attacked model."""

from __future__ import annotations

import types

import numpy as np
import pytest

from poisoncure import data, experiments
from poisoncure.defenses.base import model_digest
from poisoncure.experiments import pipeline


def test_settings_are_checked_and_read_from_parameters():
    with pytest.raises(ValueError, match="ss_scope"):
        pipeline.DefenseSettings(ss_scope="every")
    with pytest.raises(ValueError, match="retrain"):
        pipeline.DefenseSettings(retrain=("neural_cleanse",))
    s = pipeline.DefenseSettings.from_params({"eps": 0.2, "retrain": None, "min_asr": 50, "profile": "smoke"},
                                             seed=3)
    assert (s.eps, s.retrain, s.seed, s.threshold) == (0.2, (), 3, 2.0)  # unknown names ignored, defaults kept
    assert pipeline.DefenseSettings.from_params({"retrain": ["spectral", "activation_clustering"]}).retrain == \
        ("activation_clustering", "spectral")


def test_the_pipeline_refuses_what_it_cannot_run(tiny_images):
    clean_model = types.SimpleNamespace(train_set=tiny_images)  # no attack: no target to tell Spectral Signatures
    with pytest.raises(ValueError, match="unknown defenses"):
        pipeline.run_defenses(clean_model, None, ["Spectral Signature"])
    with pytest.raises(ValueError, match="clean images"):
        pipeline.run_defenses(clean_model, None, [pipeline.CLEANSE])
    with pytest.raises(ValueError, match="target="):
        pipeline.run_defenses(clean_model, None, [pipeline.SPECTRAL])


@pytest.mark.slow
def test_every_defense_on_one_tiny_attacked_model(cifar: data.Cifar10, tmp_path, monkeypatch):
    monkeypatch.setenv("POISONCURE_CACHE", str(tmp_path / "cache"))
    recipe = experiments.Recipe(poison="pixel", model="whitened_net", width=8, epochs=1, train_per_class=20,
                                batch_size=64)
    tm = experiments.get_model(recipe, device="cpu", data=cifar, progress=False)
    before = model_digest(tm.model)
    clean, _ = experiments.defender_split(cifar.test, 5, seed=0)
    stages: dict[str, float] = {}
    settings = pipeline.DefenseSettings(nc_steps=4, retrain=("spectral",))
    run = pipeline.run_defenses(tm, cifar, pipeline.DEFENSES, settings, clean=clean, device="cpu", stages=stages)

    assert list(run.outcomes) == list(pipeline.DEFENSES)
    target = tm.train_set.spec.target
    assert run.target == target and (tm.train_set.y[run.target_rows] == target).all()
    n = len(tm.train_set)
    ss, ac, ours = run[pipeline.SPECTRAL], run[pipeline.CLUSTERING], run[pipeline.POISON_CURE]
    for o in (ss, ac, ours):
        assert o.flagged.shape == (n,) and o.flagged.dtype == bool
    outside = np.ones(n, dtype=bool)
    outside[run.target_rows] = False
    assert ss.flagged.any() and not ss.flagged[outside].any()  # told the target: it removes only there
    assert ss.labels is None and ss.names_target(target) is None  # ... so it names no label
    assert ac.labels == np.flatnonzero(ac.artefact.poisoned).tolist()
    assert run[pipeline.CLEANSE].labels == np.flatnonzero(run[pipeline.CLEANSE].artefact.flagged).tolist()
    assert ss.repaired is not None and ac.repaired is None  # only what `retrain` names is retrained
    fp = run[pipeline.PRUNING]
    assert fp.repaired is not None and fp.flagged is None and 0 <= fp.artefact.chosen_ratio < 1
    for o in run.outcomes.values():  # every repair is a new model, or says it changed nothing
        assert (o.repaired is None) or (o.repaired is not tm.model)
        assert not (o.unchanged and o.repaired is not None)
    assert model_digest(tm.model) == before  # the attacked model itself is never changed
    assert {"poison_cure", "spectral", "spectral_retrain", "activation_clustering", "neural_cleanse",
            "fine_pruning"} <= set(stages)

    detect_only = pipeline.run_defenses(tm, cifar, [pipeline.POISON_CURE, pipeline.CLEANSE], clean=clean,
                                        repair=False, settings=pipeline.DefenseSettings(nc_steps=4), device="cpu")
    assert all(o.repaired is None and not o.unchanged for o in detect_only.outcomes.values())
    np.testing.assert_array_equal(detect_only[pipeline.POISON_CURE].flagged, ours.flagged)  # the cached scan
