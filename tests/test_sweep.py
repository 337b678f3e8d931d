"""The variable-size sweep: triggers, grid, signal-to-noise measurement and the tables the chapter reads."""

import numpy as np
import pytest

from poisoncure import attacks, experiments
from poisoncure.experiments import report
from poisoncure.experiments.grids import sweep
from poisoncure.experiments.plans import plan
from poisoncure.experiments.report import DefenseReport, Filtering, Report, Scores

from .test_paper_tables import result


def test_grown_patch_starts_at_the_pixel_and_size_one_is_the_pixel():
    pix = attacks.paper_trigger(1, "pixel")
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    one = attacks.paper_trigger(1, "patch", patch_size=1)
    assert np.array_equal(one.apply(x), pix.apply(x))
    big = attacks.paper_trigger(1, "patch", patch_size=8)
    out = big.apply(x)
    changed = np.any(out != x, axis=(0, 3))
    assert changed.sum() == 64 and changed[min(pix.row, 24):min(pix.row, 24) + 8, min(pix.col, 24):].any()
    assert np.all(out[:, big.row:big.row + 8, big.col:big.col + 8] == np.asarray(pix.colour, dtype=np.uint8))
    for bad in (0, 33, 2.5, True):
        with pytest.raises(ValueError, match="patch size"):
            attacks.grown_patch(pix, bad)
    with pytest.raises(ValueError, match="patch size"):
        experiments.Recipe(poison="patch", patch_size=40)


def test_patch_recipes_have_their_own_cache_keys():
    a, b = (experiments.Recipe(poison="patch", patch_size=k) for k in (2, 3))
    assert a.cache_config() != b.cache_config()
    assert "patch_size" not in experiments.Recipe(poison="blend").cache_config()
    assert "patch_size" not in experiments.Recipe.param_names()
    assert a.replace(opacity=0.3).cache_config() == a.cache_config()  # opacity means nothing to a patch


def test_trigger_names_order_and_validation():
    trig = [{"poison": "blend", "opacity": 0.3}, {"poison": "patch", "patch_size": 5}, {"poison": "pixel"},
            {"poison": "blend", "opacity": 0.05}, {"poison": "patch", "patch_size": 2}]
    assert [sweep.trigger_name(t) for t in trig] == ["blend 0.3", "5×5", "1 px", "blend 0.05", "2×2"]
    assert [sweep.trigger_slug(t) for t in trig] == ["blend0.3", "patch5", "pixel", "blend0.05", "patch2"]
    assert [sweep.trigger_pixels(t) for t in trig] == [1024, 25, 1, 1024, 4]
    for bad in ({"poison": "patch"}, {"poison": "pixel", "opacity": 0.1}, {"poison": "square", "size": 3},
                {"poison": "blend", "opacity": 1.5}, "pixel"):
        with pytest.raises(ValueError):
            sweep.check_trigger(bad)


def test_sweep_plans():
    full = plan("full", ["sweep"])
    assert len(full) == 27  # 9 triggers x 3 poison rates: the "8 trigger settings x 3 rates" and more
    assert {e.params["recipe"]["poison_rate"] for e in full} == {0.1, 0.05, 0.01}
    assert {e.params["recipe"]["model"] for e in full} == {"resnet18"}
    assert full[0].params["defense"]["retrain"] == ["activation_clustering", "spectral"]
    smoke = plan("smoke", ["sweep"])
    assert len(smoke) == 27 and len({e.key for e in smoke}) == 27
    assert {e.params["recipe"]["train_per_class"] for e in smoke} == {1000}
    assert smoke[2].name == "pair1-patch3-whitened_net-r0.1-s0"
    assert smoke[2].params["recipe"]["patch_size"] == 3


def test_bad_sweep_sections_raise(monkeypatch):
    from poisoncure.experiments import profiles

    real = profiles.load

    def fake(name, section):
        prof = real("smoke")
        prof["reproduce"] = {"sweep": section}
        return prof

    for section, match in (({"triggers": []}, "non-empty"), ({"triggers": [{"poison": "patch"}]}, "needs exactly"),
                           ({"triggers": [{"poison": "pixel"}], "rates": [0.1]}, "unknown keys")):
        monkeypatch.setattr(profiles, "load", lambda name, s=section: fake(name, s))
        with pytest.raises(ValueError, match=match):
            plan("smoke", ["sweep"])


def test_signal_to_noise_recovers_a_planted_signal():
    rng = np.random.default_rng(0)
    n, d, norm, sigma = 4000, 64, 0.5, 0.05
    v = rng.normal(size=d)
    v /= np.linalg.norm(v)
    base = np.zeros(d)
    base[0] = 1.0  # a common direction so rows stay near unit length
    is_poison = rng.random(n) < 0.1
    g = base + sigma * rng.normal(size=(n, d)) + norm * is_poison[:, None] * v
    got_norm, got_sigma = sweep.signal_to_noise(g * rng.uniform(0.5, 2.0, size=(n, 1)), is_poison)  # any row scale
    assert got_norm == pytest.approx(norm, rel=0.15)
    assert got_sigma == pytest.approx(sigma, rel=0.25)
    with pytest.raises(ValueError, match="poisoned"):
        sweep.signal_to_noise(g, np.zeros(n, dtype=bool))
    with pytest.raises(ValueError, match="shape|mask"):
        sweep.signal_to_noise(g, is_poison[:-1])


def _record(trigger, rate, asr_before, ours_after, nc_flags, commit="abc1234"):
    recipe = {"poison": trigger["poison"], "poison_rate": rate, "seed": 0, "patch_size": trigger.get("patch_size", 3),
              "opacity": trigger.get("opacity", 0.2)}
    after = None if ours_after is None else Scores(60.0, ours_after, test_set="held-out")
    works = asr_before >= 50
    rep = Report(5, 1, 10000, 100, Scores(62.0, asr_before, test_set="held-out"), {
        report.POISON_CURE: DefenseReport([5] if ours_after is not None else [], ours_after is not None,
                                          Filtering(None, 90.0, 99.0), after if works else None,
                                          {"filter_error": 1.0}),
        report.CLEANSE: DefenseReport([5] if nc_flags else [], nc_flags)},
        {"attack_works": works, "signal_norm": 0.5, "signal_sigma": 0.05, "n_target": 1100,
         "target_filter": {"error": 1.0, "sensitivity": 95.0, "specificity": 99.5}})
    return result("sweep", "x", {"recipe": recipe}, rep, device="cpu", commit=commit)


def test_point_table_and_breaking_points():
    recs = [_record({"poison": "blend", "opacity": 0.2}, 0.1, 99.0, 30.0, False),
            _record({"poison": "pixel"}, 0.1, 10.0, None, False),
            _record({"poison": "patch", "patch_size": 3}, 0.1, 98.0, 1.0, True)]
    df = sweep.point_table(recs)
    assert len(df) == 3 * 3  # 'none' + two defenses per record
    assert sweep.trigger_order(df) == ["1 px", "3×3", "blend 0.2"]
    none = df[df.defense == "none"].set_index("trigger")
    assert none.loc["3×3", "ASR after"] == 98.0
    br = sweep.breaking_points(df).set_index("defense")
    assert br.loc["Poison as a Cure", "working attacks"] == 2  # the pixel attack did not work: not counted
    assert br.loc["Poison as a Cure", "repair fails on"] == "blend 0.2"
    assert br.loc["Poison as a Cure", "repair works on"] == "3×3"
    assert br.loc["Neural Cleanse", "target missed on"] == "blend 0.2"
    with pytest.raises(ValueError):
        sweep.trigger_name({"poison": "wave"})
