"""The all-defenses comparison (the runner's ``compare`` grid): its plan, its refusals, and one tiny experiment end
to end with all eight defenses (marker ``slow``)."""

from __future__ import annotations

import copy

import pytest

from poisoncure import data
from poisoncure.experiments import pipeline, plans, profiles, report
from poisoncure.experiments.grids import compare


def test_the_smoke_plan_covers_the_papers_grid_other_attacks_and_clean_models():
    exps = plans.plan("smoke", ["compare"])
    names = [e.name for e in exps]
    assert len(names) == len(set(names)) == 18 + 4 + 6 + 3  # 18 of the paper, 2 more seeds x 2, 6 others, 3 clean
    assert {e.params["poison"] for e in exps} == {"pixel", "blend", "patch", "chessboard", "badnets", "xshape",
                                                  "lshape", "mislabel", "clean"}
    assert {"pair1-xshape-whitened_net16-s0", "pair1-mislabel-whitened_net16-s0"} <= set(names)
    assert sorted(e.params["recipe"]["seed"] for e in exps if e.name.startswith("pair1-pixel")) == [0, 1, 2]
    assert sorted(e.params["recipe"]["seed"] for e in exps if e.params["poison"] == "clean") == [0, 1, 2]
    assert {e.params["recipe"]["pair"] for e in exps if e.params["poison"] in ("pixel", "blend")} == set(range(1, 10))
    d = exps[0].params["defense"]
    prof = profiles.load("smoke")["notebooks"]
    assert d["xiang"]["per_class"] == prof["10_reverse_engineering"]["search_per_class"]
    assert d["hygiene"]["scan"]["probes"] == prof["11_poishygiene"]["probes"]
    assert d["ensemble"]["components"] == prof["12_weak_learners"]["wl_components"]
    assert d["retrain"] == ["activation_clustering", "spectral"]
    pipeline.DefenseSettings.from_params({k: v for k, v in d.items() if k not in ("clean_per_class", "min_asr")})


def test_the_other_papers_shapes_and_mislabel_as_cifar_recipes():
    """X and L: the pair's pixel colour at the pair's place, moved in where the shape would leave the image; Mislabel:
    the base class gone but for poison_rate of it, labelled as the target, no trigger."""
    import numpy as np

    from poisoncure import attacks, experiments
    from poisoncure.data import CLASSES, Cifar10, ImageSet

    rng = np.random.default_rng(0)
    train = ImageSet(rng.integers(0, 256, (1000, 32, 32, 3), dtype=np.uint8), np.repeat(np.arange(10), 100), CLASSES)
    cifar = Cifar10(train, train, {"kind": "synthetic"})
    pixel = attacks.paper_trigger(1, "pixel")
    x = experiments.training_set(experiments.Recipe(poison="xshape", pair=1), cifar)
    assert x.is_poison.sum() == 10 and x.spec.trigger.colour == pixel.colour
    rows, cols = zip(*x.spec.trigger.pixels(), strict=True)
    assert (x.x[x.is_poison][:, list(rows), list(cols)] == np.asarray(pixel.colour)).all() and len(rows) == 5
    edge = attacks.shape_at(attacks.PixelTrigger(31, 0, (1, 2, 3)), "pattern")
    assert (edge.row, edge.col) == (30, 1)  # moved in by one: the X reaches one pixel around its anchor
    assert (attacks.shape_at(attacks.PixelTrigger(0, 5, (1, 2, 3)), "pattern").row, edge.col) == (1, 1)
    assert attacks.shape_at(attacks.PixelTrigger(31, 31, (1, 2, 3)), "ell").pixels() == [(30, 30), (31, 30), (30, 31)]
    with pytest.raises(ValueError, match="shape"):
        attacks.shape_at(pixel, "star")
    m = experiments.Recipe(poison="mislabel", pair=1, poison_rate=0.2)
    ps = experiments.training_set(m, cifar)
    base, target = CLASSES.index(m.base), CLASSES.index(m.target)
    assert len(ps) == 1000 - 100 + 20 and ps.is_poison.sum() == 20
    assert (ps.y[ps.is_poison] == target).all() and (ps.y_true[ps.is_poison] == base).all()
    assert not (ps.y_true[~ps.is_poison] == base).any() and isinstance(ps.spec.trigger, attacks.NoTrigger)
    assert m.cache_config() == m.replace(opacity=0.5).cache_config()
    assert compare.slug({"poison": "mislabel", "pair": 3}) == "pair3-mislabel"


@pytest.mark.parametrize("spec, match", [
    ({"attacks": []}, "non-empty"), ({"attacks": [{"poison": "pixel"}], "pairs": [1]}, "unknown keys"),
    ({"attacks": [{"poison": "lightning"}]}, "poison"),
    ({"attacks": [{"poison": "pixel"}], "defense": {"tau": 0.5}}, "unknown defense settings"),
    ({"attacks": [{"poison": "pixel"}, {"poison": "pixel"}]}, "share a name")])
def test_bad_sections_are_refused(spec, match):
    with pytest.raises(ValueError, match=match):
        compare.grid(profiles.load("smoke"), spec)


def tiny(exp: plans.Experiment) -> plans.Experiment:
    params = copy.deepcopy(exp.params)
    params["recipe"].update(train_per_class=20, epochs=1, width=8, batch_size=64)
    d = params["defense"]
    d.update(nc_steps=5, clean_per_class=5, retrain=["spectral"], min_asr=0.0)
    d["xiang"].update(per_class=2, max_iter=20)
    d["hygiene"].update(references=[10])
    d["hygiene"]["scan"].update(probes=2, steps=3, warm_steps=3, calibration_steps=3)
    d["hygiene"]["craft"].update(steps=2, restarts=1)
    d["ensemble"].update(components=2, warmup_epochs=1, iter_epochs=1, learner_epochs=1, min_active=20,
                         spl_rounds=1, spl_epochs=1, batch_size=64)
    return plans.Experiment(exp.grid, exp.name, params)


@pytest.mark.slow
def test_one_tiny_experiment_runs_all_eight_defenses_and_its_file_reads_back(cifar_small_test: data.Cifar10,
                                                                            tmp_path, monkeypatch):
    from poisoncure.experiments import result_files, runner

    monkeypatch.setenv("POISONCURE_CACHE", str(tmp_path / "cache"))
    (planned,) = [e for e in plans.plan("smoke", ["compare"]) if e.name == "pair1-pixel-whitened_net16-s0"]
    exp = tiny(planned)
    rec = runner.execute("smoke", exp, device="cpu", data=cifar_small_test)
    result_files.write_result(exp.path("smoke", tmp_path), rec)
    back = result_files.read_result(exp.path("smoke", tmp_path), exp)
    assert back is not None and back.report == rec.report
    rep = back.report
    assert set(rep.defenses) == set(pipeline.ALL_DEFENSES)  # min_asr 0: the attack counts as working
    assert rep.target is not None and rep.before.test_set == "held-out"
    for name in (report.POISON_CURE, report.SPECTRAL, report.CLUSTERING, report.ENSEMBLE):
        f = rep[name].filtering
        assert f.scope == "training set"
        assert f.flagged == f.false_positives + (rep.n_poison - f.false_negatives)  # flagged = clean + poisons caught
    assert rep[report.SPECTRAL].labels is None  # it scans every label and names none
    assert rep[report.SPECTRAL].after is not None and rep[report.CLUSTERING].after is None  # retrain names SS only
    assert rep[report.PRUNING].after is not None and rep[report.XIANG].after is None
    assert set(rep.details["defense_seconds"]) == set(pipeline.ALL_DEFENSES)
    assert rep.details["train_seconds"] > 0 and rep.details["attack_works"]
    # what chapter 8's tables need from the same run: the scan, the base class, detection inside the target class
    ours = rep[report.POISON_CURE].details
    assert len(ours["distances"]) == 10 and ours["ratio"] > 0 and isinstance(ours["base_found"], bool)
    assert ours["target_class"]["flagged"] == rep[report.POISON_CURE].filtering.flagged  # it flags only there
    assert ours["poisoned"] == bool(rep[report.POISON_CURE].labels)
    assert 0 <= rep[report.CLUSTERING].details["smaller_cluster"]["flagged"] <= back.report.n_train
    from poisoncure.experiments import paper_tables

    (row,) = paper_tables.experiment_rows([back]).to_dict("records")  # the paper's tables read the file as it is
    assert row["grid"] == "compare" and row["ratio"] == ours["ratio"] and row["base found"] == ours["base_found"]


@pytest.mark.slow
def test_a_tiny_clean_model_gets_every_detection_and_no_repair(cifar_small_test: data.Cifar10, tmp_path,
                                                              monkeypatch):
    """The clean models' experiments (the false-alarm row): every defense but Fine-Pruning (a repair only) runs on a
    training set without poison, none repairs, none is credited with a target, and the comparison reads a false
    alarm exactly where a label is named or a filter flags samples."""
    from poisoncure.book.pages import compare_page
    from poisoncure.experiments import runner

    monkeypatch.setenv("POISONCURE_CACHE", str(tmp_path / "cache"))
    (planned,) = [e for e in plans.plan("smoke", ["compare"]) if e.name == "clean-whitened_net16-s0"]
    rec = runner.execute("smoke", tiny(planned), device="cpu", data=cifar_small_test)
    rep = rec.report
    assert set(rep.defenses) == set(pipeline.ALL_DEFENSES) - {report.PRUNING}
    assert rep.target is None and rep.n_poison == 0 and not rep.details["attack_works"]
    assert all(d.after is None and d.names_target is None for d in rep.defenses.values())
    assert "target_class" not in rep[report.POISON_CURE].details and not rep[report.CLUSTERING].details
    assert len(rep[report.POISON_CURE].details["distances"]) == 10
    cells = compare_page.cells([rec]).set_index("defense")
    for name, d in rep.defenses.items():
        flagged = d.filtering.flagged if d.filtering else 0
        assert cells.loc[name, "false alarm"] == (bool(d.labels) if d.labels is not None else bool(flagged))


@pytest.mark.slow
def test_a_tiny_mislabel_experiment_runs_every_defense_on_a_training_set_without_its_base_class(
        cifar_small_test: data.Cifar10, tmp_path, monkeypatch):
    """Mislabel leaves the base class with no training sample of its own (all that is kept of it carries the
    target's label). Every defense must still run: the paper's method leaves the empty class out of its scan (W NaN)
    and tests the target over the other nine."""
    from poisoncure.experiments import runner

    monkeypatch.setenv("POISONCURE_CACHE", str(tmp_path / "cache"))
    (planned,) = [e for e in plans.plan("smoke", ["compare"]) if e.name == "pair1-mislabel-whitened_net16-s0"]
    rec = runner.execute("smoke", tiny(planned), device="cpu", data=cifar_small_test)
    rep = rec.report
    assert set(rep.defenses) == set(pipeline.ALL_DEFENSES)
    assert rep.n_poison > 0 and rep.target is not None and rep.base is not None
    for name in (report.POISON_CURE, report.CLUSTERING):  # the training-set scans never name the empty class
        assert rep[name].labels is not None and rep.base not in rep[name].labels
    assert rep[report.POISON_CURE].filtering.scope == "training set"
    w = rep[report.POISON_CURE].details["distances"]  # the empty class left out of the scan, written as null
    assert w[rep.base] is None and all(v is not None for k, v in enumerate(w) if k != rep.base)
