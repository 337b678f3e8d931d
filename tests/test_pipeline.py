"""The one pipeline (``poisoncure.experiments.pipeline.run_defenses``) that every grid of the runner and chapter 7 call:
its settings, its refusals, and real runs of all eight defenses on a tiny attacked model."""

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


@pytest.fixture(scope="module")
def tiny_attacked(cifar: data.Cifar10, tmp_path_factory):
    """A tiny pixel-attacked model (trained once for this module, in a cache of its own that stays set while the
    module's tests run) and the defender's clean images."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POISONCURE_CACHE", str(tmp_path_factory.mktemp("pipeline") / "cache"))
        recipe = experiments.Recipe(poison="pixel", model="whitened_net", width=8, epochs=1, train_per_class=20,
                                    batch_size=64)
        tm = experiments.get_model(recipe, device="cpu", data=cifar, progress=False)
        clean, _ = experiments.defender_split(cifar.test, 5, seed=0)
        yield tm, clean


@pytest.mark.slow
def test_every_defense_on_one_tiny_attacked_model(cifar: data.Cifar10, tiny_attacked):
    tm, clean = tiny_attacked
    before = model_digest(tm.model)
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


def test_the_other_defenses_settings_are_checked(tiny_images):
    attacked = types.SimpleNamespace(train_set=tiny_images)
    with pytest.raises(ValueError, match="clean images"):
        pipeline.run_defenses(attacked, None, [pipeline.XIANG], target=0)
    assert set(pipeline.ALL_DEFENSES) == set(pipeline.DEFENSES) | set(pipeline.OTHER_DEFENSES)
    assert len(set(pipeline.KEYS[m] for m in pipeline.ALL_DEFENSES)) == len(pipeline.ALL_DEFENSES)


@pytest.mark.slow
def test_the_other_three_defenses_run_through_the_same_call(cifar: data.Cifar10, tiny_attacked):
    """Xiang et al.'s search, PoisHygiene and the weak-learner ensemble on a tiny attacked model: one call, one
    Outcome each, in the same protocol as the five of chapter 7 (labels named, samples flagged, repairs new)."""
    tm, clean = tiny_attacked
    before = model_digest(tm.model)
    settings = pipeline.DefenseSettings(
        xiang={"per_class": 2, "max_iter": 20},
        hygiene={"references": [10], "scan": {"probes": 2, "steps": 3, "warm_steps": 3, "calibration_steps": 3,
                                              "calibration_rounds": 1},
                 "craft": {"steps": 2, "restarts": 1}},
        ensemble={"components": 2, "bags": 1, "warmup_epochs": 1, "iter_epochs": 1, "learner_epochs": 1,
                  "min_active": 20, "spl_rounds": 1, "spl_epochs": 1, "batch_size": 64})
    stages: dict[str, float] = {}
    from poisoncure.experiments.grids import ensembles, hygiene

    steps = {pipeline.HYGIENE: hygiene.defense_step, pipeline.ENSEMBLE: ensembles.defense_step}
    with pytest.raises(ValueError, match="need their step"):
        pipeline.run_defenses(tm, cifar, pipeline.OTHER_DEFENSES, settings, clean=clean, device="cpu")
    run = pipeline.run_defenses(tm, cifar, pipeline.OTHER_DEFENSES, settings, clean=clean, device="cpu",
                                stages=stages, steps=steps)
    assert list(run.outcomes) == list(pipeline.OTHER_DEFENSES) and {"xiang", "poishygiene", "ensemble"} <= set(stages)
    xiang, hyg, ens = run[pipeline.XIANG], run[pipeline.HYGIENE], run[pipeline.ENSEMBLE]
    assert xiang.flagged is None and xiang.repaired is None and len(xiang.labels) <= 1
    assert xiang.labels == ([int(xiang.artefact.target)] if xiang.artefact.detected else [])
    scan = hyg.artefact["scan"]
    assert hyg.labels == np.flatnonzero(scan.infected).tolist() and len(scan.prob) == 10
    # MITIGATE runs, beside its clean-only baseline, exactly when DETECT flags a label
    assert (hyg.repaired is not None) == scan.model_infected == (hyg.artefact["clean_only"] is not None)
    assert hyg.unchanged == (not scan.model_infected)
    assert ens.flagged.shape == (len(tm.train_set),) and ens.labels is None and ens.repaired is not None
    np.testing.assert_array_equal(~ens.flagged, ens.artefact.kept)
    for o in run.outcomes.values():
        assert o.repaired is not tm.model
    assert model_digest(tm.model) == before

    from poisoncure.experiments import report
    from poisoncure.train import evaluate

    scored = []

    def score(model):
        scored.append(model)
        return report.Scores.of(evaluate(model, cifar.test, tm.train_set.spec, "cpu"))

    rep = pipeline.to_report(run, tm, report.Scores.of(tm.metrics), score)
    assert set(rep.defenses) == set(pipeline.OTHER_DEFENSES) and rep.n_poison == int(tm.train_set.is_poison.sum())
    e = rep[pipeline.ENSEMBLE]
    assert e.filtering.flagged == int(ens.flagged.sum()) and e.filtering.scope == "training set"
    poison = tm.train_set.is_poison
    assert e.filtering.false_negatives == int((~ens.flagged & poison).sum())
    assert e.filtering.false_positives == int((ens.flagged & ~poison).sum())
    assert e.filtering.sensitivity == pytest.approx(100 * (1 - e.filtering.false_negatives / poison.sum()))
    assert e.after is not None and rep[pipeline.XIANG].after is None and rep[pipeline.XIANG].filtering is None
    assert rep[pipeline.XIANG].names_target == (tm.train_set.spec.target in xiang.labels)
    assert len(scored) == sum(o.repaired is not None for o in run.outcomes.values())  # each repair scored once
    assert report.Report.from_dict(rep.to_dict()) == rep


def test_the_held_out_scorer_evaluates_each_model_once(monkeypatch, tiny_images):
    """Chapter 7's table and the grid's report score the same repaired models: one evaluation each, same numbers."""
    import torch

    from poisoncure import train

    calls = []

    def fake_evaluate(model, images, spec, device):
        calls.append(model)
        return types.SimpleNamespace(to_dict=lambda: {"clean_accuracy": 50.0 + len(calls),
                                                      "attack_success_rate": None})

    monkeypatch.setattr(train, "evaluate", fake_evaluate)
    score = pipeline.held_out_scorer(tiny_images, None, "cpu")
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    first = score(a)
    assert first.test_set == "held-out" and first.clean_accuracy == 51.0
    assert score(a) is first and score(b).clean_accuracy == 52.0 and score(a) is first
    assert calls == [a, b]
