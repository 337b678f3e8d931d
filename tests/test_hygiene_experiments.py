"""The PoisHygiene chapter's cached experiments (:mod:`poisoncure.experiments.grids.hygiene`) and the optimiser's
frozen probes.

The data here are a tiny synthetic Fashion-MNIST-shaped set (grey 32x32 images whose label is set by which
band of rows is bright), so suspects and references train in a second and the caching can be checked
end to end with a temporary cache.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch

from poisoncure.book.pages import hygiene_page
from poisoncure.cache import Cache
from poisoncure.data import FASHION_CLASSES, Cifar10, ImageSet
from poisoncure.defenses.poishygiene import PoisHygiene
from poisoncure.experiments import paper
from poisoncure.experiments.grids import hygiene


def band_images(n: int, seed: int) -> ImageSet:
    """Label k in 0..9: rows 3k..3k+2 of the image are bright, the rest dim noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.integers(0, 40, (n, 32, 32, 1))
    for k in range(10):
        x[y == k, 3 * k:3 * k + 3] += 200
    x = np.repeat(np.clip(x, 0, 255).astype(np.uint8), 3, axis=3)
    return ImageSet(x, y.astype(np.int64), FASHION_CLASSES)


@pytest.fixture(scope="module")
def toy() -> Cifar10:
    return Cifar10(band_images(1200, 0), band_images(400, 1), {"kind": "synthetic"})


def test_disjoint_subsets_are_disjoint_and_deterministic(toy):
    a, b = hygiene.disjoint_subsets(toy.train, [500, 300], seed=3)
    assert (len(a), len(b)) == (500, 300)
    rows = {x.tobytes() for x in a.x}
    # images are random noise, so equal bytes mean the same image: none is shared
    assert not any(x.tobytes() in rows for x in b.x)
    again = hygiene.disjoint_subsets(toy.train, [500, 300], seed=3)
    assert np.array_equal(again[0].x, a.x) and np.array_equal(again[1].y, b.y)
    with pytest.raises(ValueError, match="requested"):
        hygiene.disjoint_subsets(toy.train, [1000, 300])
    with pytest.raises(ValueError, match="positive"):
        hygiene.disjoint_subsets(toy.train, [0])


@pytest.mark.parametrize(("field", "value", "match"), [("attack", "trojan", "attack"), ("target", 10, "target"),
                                                      ("poison_rate", 1.0, "poison_rate"),
                                                      ("train_size", 10, "train_size"), ("model", "VII", "VII")])
def test_suspect_recipe_rejects_bad_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        hygiene.SuspectRecipe(**{field: value})


def test_recipes_normalise_irrelevant_fields_in_their_keys():
    clean = [hygiene.SuspectRecipe("clean", target=t, opacity=o).cache_config() for t, o in ((0, 0.1), (3, 0.5))]
    assert clean[0] == clean[1]
    bad = [hygiene.SuspectRecipe("badnets", opacity=o).cache_config() for o in (0.1, 0.5)]
    assert bad[0] == bad[1]
    assert hygiene.SuspectRecipe("blend", opacity=0.1).cache_config() != \
        hygiene.SuspectRecipe("blend", opacity=0.2).cache_config()
    with pytest.raises(ValueError, match="dataset"):
        hygiene.ReferenceRecipe("mnist")
    with pytest.raises(ValueError, match="goal"):
        hygiene.ReferenceRecipe(goal=0.0)


def test_suspect_reference_scan_and_mitigation_are_cached(toy, tmp_path):
    cache = Cache(tmp_path)
    recipe = hygiene.SuspectRecipe("badnets", target=0, poison_rate=0.2, train_size=800, epochs=2, lr=0.05)
    first = hygiene.get_suspect(recipe, toy, device="cpu", cache=cache)
    assert not first.from_cache and first.train_set.is_poison.sum() == 160
    assert (first.train_set.y[first.train_set.is_poison] == 0).all()
    second = hygiene.get_suspect(recipe, toy, device="cpu", cache=cache)
    assert second.from_cache and second.metrics.to_dict()["clean_accuracy"] == first.metrics.clean_accuracy
    assert second.metrics.attack_success_rate == first.metrics.attack_success_rate
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(first.model.eval()(x), second.model(x))

    ref_recipe = hygiene.ReferenceRecipe("fashion-mnist", "III", train_size=300, suspect_size=800, goal=60.0,
                                         max_epochs=3, lr=0.05)
    ref = hygiene.get_reference(ref_recipe, toy, device="cpu", cache=cache)
    assert 1 <= len(ref.accuracies) <= 3 and not ref.from_cache
    assert hygiene.get_reference(ref_recipe, toy, device="cpu", cache=cache).from_cache

    ph = PoisHygiene(probes=2, steps=3, warm_steps=3, calibration_steps=3, calibration_rounds=1, grey=True,
                     device="cpu", progress=False)
    scan, prov = hygiene.get_scan(recipe.cache_config(), first.model, [ref], ph, cache=cache)
    again, _ = hygiene.get_scan(recipe.cache_config(), first.model, [ref], ph, cache=cache)
    assert scan.prob.shape == (10,) and np.array_equal(scan.prob, again.prob) and "wall_seconds" in prov
    assert len(list((tmp_path / "hygiene_scan").iterdir())) == 1  # the second call was a hit

    clean = hygiene.disjoint_subsets(toy.train, [800])[0]
    only = hygiene.get_mitigation(first, [ref], ph, 0, clean, toy.test, crafted_fraction=0.0, cache=cache)
    assert only.clean_images == 80 and len(only.crafted) == 0 and only.metrics.attack_success_rate is not None
    assert hygiene.get_mitigation(first, [ref], ph, 0, clean, toy.test, crafted_fraction=0.0, cache=cache).from_cache


def test_frozen_probes_keep_their_value_and_leave_the_batch():
    """_optimise drops frozen probes from later passes (the loss sees fewer rows) and never moves them again."""
    ph = PoisHygiene(probes=1, lr=0.1, device="cpu", progress=False)
    z0 = torch.full((6, 1, 2, 2), 0.5)
    target = torch.tensor([0.0, 0.1, 0.2, 0.8, 0.9, 1.0]).view(6, 1, 1, 1)
    seen = []

    def losses(x, rows):
        seen.append(len(rows))
        return [((x - target[rows]) ** 2).mean((1, 2, 3))]

    frozen_at = {}

    def stop(v, rows):
        done = v[0] < 0.01
        for r in rows[done].tolist():
            frozen_at.setdefault(r, None)
        return done

    z = ph._optimise(z0, 1, losses, lambda v, rows: v[0], 200, stop=stop)
    assert seen[0] == 6 and seen[-1] < 6 and sorted(seen, reverse=True) == seen
    # every probe stopped as soon as it was within 0.1 of its target, and stayed there
    err = (z - target).abs().amax((1, 2, 3))
    assert (err < 0.1).all() and len(frozen_at) == 6


def test_mislabel_drops_the_source_class_but_its_poisons(toy):
    from poisoncure import attacks

    clean = toy.train
    ps = attacks.poison_mislabel(clean, source=8, target=0, rate=0.05, seed=2)
    n_src = int((clean.y == 8).sum())
    assert ps.is_poison.sum() == round(0.05 * len(clean))
    assert len(ps) == len(clean) - n_src + ps.is_poison.sum()
    assert (ps.y != 8).all()  # the source label is gone from the task
    assert (ps.y[ps.is_poison] == 0).all() and (ps.y_true[ps.is_poison] == 8).all()
    assert (ps.y[~ps.is_poison] == ps.y_true[~ps.is_poison]).all()
    assert np.array_equal(ps.spec.trigger.apply(clean.x[:3]), clean.x[:3])  # no trigger: images unchanged
    for bad, match in (({"rate": 0.0}, "rate"), ({"rate": 0.9}, "poisons"), ({"target": 8}, "differ")):
        with pytest.raises(ValueError, match=match):
            attacks.poison_mislabel(clean, **{"source": 8, "target": 0, "rate": 0.05, **bad})
    assert attacks.trigger_from_dict({"kind": "none"}) == attacks.NoTrigger()


def test_mislabel_suspect_is_scored_without_its_source_and_repaired_without_it(toy, tmp_path):
    cache = Cache(tmp_path)
    recipe = hygiene.SuspectRecipe("mislabel", target=0, poison_rate=0.05, train_size=800, epochs=3, lr=0.05)
    assert hygiene.SuspectRecipe("mislabel", source=3).cache_config()["source"] == 3
    assert "source" not in hygiene.SuspectRecipe("badnets").cache_config()
    with pytest.raises(ValueError, match="source"):
        hygiene.SuspectRecipe("mislabel", target=8, source=8)
    tm = hygiene.get_suspect(recipe, toy, device="cpu", cache=cache)
    assert np.isnan(tm.metrics.per_class_accuracy[8])  # clean accuracy leaves the dropped class out
    assert tm.metrics.attack_success_rate is not None
    task_clean = recipe.task_images(hygiene.disjoint_subsets(toy.train, [800])[0])
    ph = PoisHygiene(probes=2, steps=3, warm_steps=3, calibration_steps=3, calibration_rounds=1, grey=True,
                     device="cpu", progress=False)
    ref = hygiene.get_reference(hygiene.ReferenceRecipe("fashion-mnist", "III", 300, 800, goal=50.0, max_epochs=1),
                                toy, device="cpu", cache=cache)

    def craft_all(model, refs, target, others, shape, **kw):  # every candidate succeeds: labels are visible
        return np.full((len(others), *shape), 0.5, np.float32), np.ones(len(others), bool)

    ph.craft = craft_all
    fix = hygiene.get_mitigation(tm, [ref], ph, 0, task_clean, toy.test, crafted_fraction=0.5, cache=cache)
    # crafted images go to every other label the task has: never to the target, never to the dropped class
    assert set(fix.crafted.y.tolist()) == {1, 2, 3, 4, 5, 6, 7, 9}
    per_class = round(0.1 * len(task_clean) / 9)
    assert fix.clean_images == 9 * per_class
    assert len(fix.crafted) == 8 * round(0.5 * 9 * per_class / 8)


def test_clean_label_suspects_are_crafted_once_and_keep_honest_labels(toy, tmp_path):
    cache = Cache(tmp_path)
    recipe = hygiene.SuspectRecipe("stingray", target=0, poison_rate=0.05, train_size=800, epochs=2, lr=0.05,
                                   craft_steps=2)
    assert recipe.cache_config()["craft_steps"] == 2 and recipe.cache_config()["source"] == 8
    assert hygiene.SuspectRecipe("frog").cache_config()["craft_steps"] == 1000
    assert "craft_steps" not in hygiene.SuspectRecipe("mislabel").cache_config()
    tm = hygiene.get_suspect(recipe, toy, device="cpu", cache=cache)
    ps = tm.train_set
    assert ps.is_poison.sum() == 40 and (ps.y != 8).all() and np.array_equal(ps.y, ps.y_true)
    assert np.isnan(tm.metrics.per_class_accuracy[8]) and tm.metrics.attack_success_rate is not None
    # the surrogate (the healthy suspect of the same recipe) was trained on the way, and the poisons are cached
    assert len(list((tmp_path / "hygiene_suspect").iterdir())) == 2
    again, record = hygiene.get_poisons(recipe, toy, device="cpu", cache=cache)
    assert np.array_equal(again.x, ps.x) and record["stats"]["iterations"] == 2 and "provenance" in record
    assert len(list((tmp_path / "hygiene_poisons").iterdir())) == 1
    with pytest.raises(ValueError, match="crafted"):
        hygiene.get_poisons(hygiene.SuspectRecipe("badnets"), toy, cache=cache)


def test_withheld_control_measures_the_floor(toy, tmp_path):
    recipe = hygiene.SuspectRecipe("withheld", target=0, train_size=800, epochs=2, lr=0.05)
    assert recipe.cache_config()["poison_rate"] is None and recipe.trigger() == hygiene.NoTrigger()
    tm = hygiene.get_suspect(recipe, toy, device="cpu", cache=Cache(tmp_path))
    assert not (tm.train_set.y == 8).any() and len(tm.train_set) == 800 - int((hygiene.disjoint_subsets(
        toy.train, [800])[0].y == 8).sum())
    spec = recipe.floor_spec()
    assert (spec.base, spec.target) == (8, 0) and tm.metrics.attack_success_rate is not None
    assert hygiene.SuspectRecipe("badnets").floor_spec() is None


def test_comparison_rows_read_the_verdicts():
    classes = tuple("abcdefghij")
    scan = {"prob": [0.9, 0.1] + [0.0] * 8, "infected": [True] + [False] * 9, "suspect": 0}
    others = {"neural_cleanse": {"anomaly": [0.5, 3.0] + [0.0] * 8, "flagged": [1]}, "missing": [],
              "poison_cure": {"ratio": 1.5, "target": 0, "poisoned": False}}
    rows = {r["detector"]: r for r in hygiene_page.comparison_rows("m", scan, others, classes, target=0)}
    assert rows["PoisHygiene (probes)"]["right target"] is True
    assert rows["Neural Cleanse"]["target named"] == "b" and rows["Neural Cleanse"]["right target"] is False
    assert rows["Poison as a Cure"]["labels flagged"] == "none" and np.isnan(rows["Poison as a Cure"]["right target"])
    healthy = hygiene_page.comparison_rows("h", scan, {**others, "poison_cure": None, "missing": [8]}, classes, None)
    assert np.isnan(healthy[0]["right target"]) and "no training images of i" in healthy[2]["statistic"]


def test_grid_follows_the_profile_and_rejects_unknown_keys():
    from poisoncure.experiments import profiles

    prof = profiles.load("cpu-cnn")
    exps = hygiene.grid(prof, prof["reproduce"]["hygiene"])
    names = [n for n, _ in exps]
    assert len(set(names)) == len(names) and "fmnist-frog-poison_rate0.06-s0" in names
    nb = prof["notebooks"]["11_poishygiene"]
    for _, params in (e for e in exps if "suspect" in e[1]):
        r = hygiene.SuspectRecipe(**params["suspect"])
        assert r.train_size == nb["fm_train_size"] and params["detector"]["steps"] == nb["hygiene_steps"]
    with pytest.raises(ValueError, match="unknown keys"):
        hygiene.grid(prof, {"suspects": [{"attack": "clean"}], "models": []})
    with pytest.raises(ValueError, match="attack"):
        hygiene.grid(prof, {"suspects": [{"attack": "trojan"}]})


#: detector, repair and comparison settings of the runner's tests: a few steps of everything
TINY_SETTINGS = {"detector": {"probes": 2, "steps": 3, "warm_steps": 3, "calibration_steps": 3,
                              "calibration_rounds": 1, "tau": 0.5},
                 "craft": {"steps": 2, "lr": 0.05, "restarts": 1},
                 "mitigation": {"clean_fraction": 0.1, "crafted_fraction": 0.2},
                 "others": {"nc_steps": 3, "clean_per_class": 5, "threshold": 2.0}}


def test_run_point_measures_one_suspect_end_to_end(toy, tmp_path, monkeypatch):
    from poisoncure.experiments import runner

    monkeypatch.setenv("POISONCURE_CACHE", str(tmp_path / "cache"))
    params = {"label": "badnets", "suspect": {"attack": "badnets", "target": 0, "poison_rate": 0.2,
                                              "train_size": 800, "epochs": 3, "lr": 0.05},
              "references": {"models": ["III"], "train_size": 300, "goal": 50.0},
              **TINY_SETTINGS}
    res, stages = hygiene.run_point(params, device="cpu", data=toy)
    assert set(stages) >= {"train", "scan", "other_detectors"}
    assert len(res["scan"]["prob"]) == 10 and res["n_poison"] == 160
    assert res["others"]["poison_cure"] is not None and len(res["others"]["neural_cleanse"]["anomaly"]) == 10
    flagged, learned = res["scan"]["model_infected"], res["before"]["attack_success_rate"] >= 50
    assert (res["mitigation"] is not None) == (flagged and learned)
    from poisoncure.experiments import report

    rep = report.from_measurements("hygiene", res)
    assert rep[report.HYGIENE].labels == [k for k, v in enumerate(res["scan"]["infected"]) if v]
    record = report.Result("hygiene", "fmnist-badnets-s0", "k", "test", params, rep,
                                 {"device": "CPU (test)", "commit": "0123456789"})
    table = hygiene_page.results_table([record], toy.train.classes)
    assert table.loc["badnets", "ASR %"] == res["before"]["attack_success_rate"]
    assert table.loc["badnets", hygiene_page.T8_COLUMNS[0]] == paper.HYGIENE_FMNIST["badnets"]["acc"]
    assert table.loc["badnets", hygiene_page.T8_COLUMNS[1]] == paper.HYGIENE_FMNIST["badnets"]["asr"]
    assert runner.RUNNERS["hygiene"] is runner.run_hygiene


def test_cifar_all_to_one_recipes():
    from poisoncure import experiments
    from poisoncure.data import CLASSES

    rng = np.random.default_rng(0)
    train = ImageSet(rng.integers(0, 256, (500, 32, 32, 3), dtype=np.uint8), np.repeat(np.arange(10), 50), CLASSES)
    data = Cifar10(train, train, {"kind": "synthetic"})
    bad = experiments.Recipe(poison="badnets", pair=1, poison_rate=0.1)
    ps = experiments.training_set(bad, data)
    t = CLASSES.index(bad.target)
    assert ps.is_poison.sum() == 50 and (ps.y_true[ps.is_poison] != t).all() and (ps.y[ps.is_poison] == t).all()
    assert (ps.x[ps.is_poison][:, 28:, 28:] == 255).all()  # the white 4x4 square, bottom right
    assert len(ps.spec.source_classes) == 9
    # irrelevant fields leave the keys alone; the blend opacity matters for Chen's attack only
    assert bad.cache_config() == bad.replace(opacity=0.5, blend_source="skimage").cache_config()
    chen = experiments.Recipe(poison="chen", opacity=0.1)
    assert chen.cache_config() == chen.replace(blend_source="skimage").cache_config()
    assert chen.cache_config() != chen.replace(opacity=0.2).cache_config()
    x = experiments.training_set(chen, data)
    diff = np.abs(x.x[x.is_poison].astype(int) - train.x[x.is_poison].astype(int))
    assert 0 < diff.max() <= 26  # 10 % of a noise image: at most a tenth of the range, plus rounding


def test_grid_builds_the_cifar_suspects_over_the_shared_recipe():
    from poisoncure import experiments
    from poisoncure.experiments import profiles

    prof = profiles.load("cpu-cnn")
    cif = [(n, p) for n, p in hygiene.grid(prof, prof["reproduce"]["hygiene"]) if "recipe" in p]
    assert [n for n, _ in cif] == ["cifar-badnets-small_cnn-s0", "cifar-chen-opacity0.1-small_cnn-s0"]
    r = experiments.Recipe(**cif[1][1]["recipe"])
    assert r.poison == "chen" and r.opacity == 0.1 and r.width == prof["experiment"]["width"]
    assert cif[0][1]["references"] == {"per_class": prof["notebooks"]["11_poishygiene"]["cifar_ref_per_class"]}


def test_run_point_on_a_cifar_recipe(tmp_path, monkeypatch):
    from poisoncure.data import CLASSES

    monkeypatch.setenv("POISONCURE_CACHE", str(tmp_path / "cache"))
    band = band_images(600, 3)
    test = band_images(200, 4)
    data = Cifar10(ImageSet(band.x, band.y, CLASSES), ImageSet(test.x, test.y, CLASSES), {"kind": "synthetic"})
    params = {"label": "badnets", "recipe": {"poison": "badnets", "pair": 1, "poison_rate": 0.2, "width": 8,
                                             "epochs": 2, "train_per_class": None, "lr": 0.05},
              "references": {"per_class": [20]},
              **TINY_SETTINGS}
    res, _ = hygiene.run_point(params, device="cpu", data=data)
    assert res["attack"] == "badnets" and res["target"] == CLASSES.index("dog") and res["n_poison"] == 120
    assert len(res["scan"]["prob"]) == 10 and len(res["references"]) == 1 and res["crafting"] is None
    from poisoncure.experiments import report

    record = report.Result("hygiene", "cifar-badnets-small_cnn-s0", "k", "test", params,
                                 report.from_measurements("hygiene", res),
                                 {"device": "CPU (test)", "commit": "0123456789+dirty"})
    table = hygiene_page.results_table([record], CLASSES)
    # provenance in short cells (one column per suspect must fit the page): the dirty mark on its own row
    assert table.loc["badnets", ["device", "commit", "uncommitted changes"]].tolist() == ["CPU", "0123456", "yes"]
    # the page shows it transposed, eight suspects wide: no word in a header or cell may be long, since a browser
    # cannot wrap it (CI stop 39: '3bea766+dirty' and 'frog (poison_rate 0.06)' made it wider than the column)
    longer = dataclasses.replace(record, params={**params, "label": "badnets (poison_rate 0.06)"})
    shown = hygiene_page.table_or_note(hygiene_page.results_table([longer], CLASSES))
    # a suspect's column is as wide as its longest word (browsers wrap at spaces and after hyphens)
    words = re.split(r"[\s-]+", " ".join(map(str, [*shown.columns, *shown.to_numpy().ravel()])))
    assert max(map(len, words)) <= 10, max(words, key=len)
    assert table.loc["badnets", "paper, Table 6"] == paper.HYGIENE_CIFAR["badnets"]["detect"]
