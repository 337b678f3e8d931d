"""Valid values of the notebook parameters: every parameter has a rule and a meaning, defaults and profiles pass,
bad values fail before any work with the valid range in the message."""

import pytest

from poisoncure.book import build, parameters
from poisoncure.experiments import profiles

NOTEBOOKS = list(build.notebook_sources())


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_parameter_has_a_rule_and_a_meaning(name):
    src = build.notebook_sources()[name]
    declared = build.declared_parameters(src)
    notes = parameters.comments(build.parameters_cell(src))
    assert set(declared) <= set(parameters.RULES), set(declared) - set(parameters.RULES)
    assert [k for k in declared if not notes.get(k)] == []


@pytest.mark.parametrize("profile", profiles.available())
def test_defaults_and_profiles_are_valid(profile):
    for name, src in build.notebook_sources().items():
        declared = build.declared_parameters(src)
        parameters.check(name, declared)
        parameters.check(name, {**declared, **profiles.notebook_parameters(profile, name, declared)})


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("opacity", 1.5, "float in (0, 1]"), ("opacity", 0, "float in (0, 1]"), ("pair", 10, "int in [1, 9]"),
    ("pair", 1.0, "int in [1, 9]"), ("augment", "crop", "one of 'crop_flip'"), ("epochs", True, "int ≥ 1"),
    ("retrain", ["bogus"], "non-empty list"), ("mc_ns", [], "non-empty list"), ("train_per_class", 0, "None or int"),
    ("device", "gpu", "one of 'auto'"), ("seed", None, "int ≥ 0"),
])
def test_bad_values_fail_with_the_valid_range(name, value, expected):
    with pytest.raises(ValueError, match="invalid parameter") as err:
        parameters.check("02_attack", {name: value})
    assert expected in str(err.value)


@pytest.mark.parametrize(("name", "value"), [
    ("opacity", 1), ("train_per_class", None), ("device", "cuda:1"), ("retrain", None),
    ("lr", 3), ("ss_layer", None), ("ss_layer", "features.9"),
])
def test_good_values_pass(name, value):
    parameters.check("x", {name: value})


def test_unknown_parameter_without_a_rule_is_reported():
    with pytest.raises(ValueError, match="no rule"):
        parameters.check("x", {"brand_new": 1})


def test_choices_mirror_the_library():
    from poisoncure import attacks, experiments, models, train  # noqa: F401

    assert set(parameters.MODELS) == set(models.MODELS)
    assert set(parameters.AUGMENTATIONS) == set(train.AUGMENTATIONS)
    with pytest.raises(ValueError):
        attacks.paper_trigger(1, "blend", blend_source="unknown")
    for source in parameters.BLEND_SOURCES:
        attacks.paper_trigger(1, "blend", blend_source=source)
    assert set(parameters.ADDITIVE_PATTERNS) == set(attacks.ADDITIVE_PATTERNS) == set(experiments.ADDITIVE)
    from poisoncure.experiments.grids import hygiene

    assert set(parameters.POOL_MODELS) == set(models.POOL_MODELS)
    assert set(parameters.FASHION_ATTACKS) == set(hygiene.ATTACKS) - {"clean", "withheld"}


def test_the_build_refuses_bad_values_before_any_work(capsys):
    with pytest.raises(SystemExit, match="opacity=1.5"):
        build.build("smoke", ["04_filtering"], {"opacity": 1.5}, do_render=False)


def test_comments_are_read_per_name():
    src = 'a = 1  # first thing\nb = [1, 2]  # second, with = inside\nc = 3\n'
    assert parameters.comments(src) == {"a": "first thing", "b": "second, with = inside"}


@pytest.fixture
def fake_build(tmp_path, monkeypatch):
    """``book.build`` with a stand-in executor (records each call, writes an empty notebook) and no render or PDF, in a
    scratch build folder. Yields the list of calls; ``on_execute(name, params)`` may be set on it as a hook."""

    class Calls(list):
        on_execute = None

    calls = Calls()
    calls.shared = []  # the recipes each build's shared-models step was given

    def fake_shared(recipes):
        calls.shared.append(recipes)
        return build.Execution(build.SHARED_MODELS, 1.0, True)

    def fake_execute(name, source, params):
        if calls.on_execute is not None:
            calls.on_execute(name, params)
        calls.append((name, params.get("opacity")))
        (tmp_path / "chapters" / f"{name}.ipynb").write_text("{}")
        return build.Execution(name, 1.0, True)

    (tmp_path / "chapters").mkdir()
    monkeypatch.setattr(build, "chapters_dir", lambda: tmp_path / "chapters")
    monkeypatch.setattr(build, "build_dir", lambda: tmp_path / "_build")
    monkeypatch.setattr(build, "execute", fake_execute)
    monkeypatch.setattr(build, "train_shared_models", fake_shared)
    monkeypatch.setattr(build, "render", lambda: 0)
    monkeypatch.setattr(build, "export_pdf", lambda: None)
    return calls


def test_a_rerun_on_a_fresh_clone_executes_the_missing_chapters_first(fake_build):
    """`build --only 04_filtering -p opacity=0.1` with nothing executed: every chapter runs, in book order, and
    only the chapter asked for gets the override."""
    calls = fake_build
    assert build.build("smoke", ["04_filtering"], {"opacity": 0.1}) == 0
    assert [c[0] for c in calls] == list(build.notebook_sources())
    assert dict(calls)["04_filtering"] == 0.1
    assert dict(calls)["02_attack"] == 0.2  # the profile's value, not the override
    calls.clear()
    assert build.build("smoke", ["04_filtering"], {"opacity": 0.1}) == 0  # now all executed: only the one
    assert calls == [("04_filtering", 0.1)]


def test_each_chapter_is_logged_before_the_next_one_runs(fake_build):
    """The run-times page executes last and reads execution.json: earlier chapters of the same build are in it."""
    import json

    seen = []

    def look_at_log(name, params):
        log = build.execution_log()
        seen.append(sorted(json.loads(log.read_text())) if log.is_file() else [])

    fake_build.on_execute = look_at_log
    assert build.build("smoke") == 0
    names = list(build.notebook_sources())
    assert seen[0] == [build.SHARED_MODELS]  # the shared models are trained and logged before any chapter
    assert seen[-1] == sorted([build.SHARED_MODELS, *names[:-1]])


def test_the_shared_models_are_trained_once_before_the_chapters_with_the_values_they_run_with(fake_build):
    """One recipe per poison of the profile and the clean reference, each once although six chapters declare them;
    a rerun with another recipe value trains that recipe; a build of a chapter without the recipe trains none."""
    assert build.build("smoke") == 0
    (recipes,) = fake_build.shared
    assert [(r.poison, r.epochs, d) for r, d in recipes] == [("blend", 8, "auto"), ("pixel", 8, "auto"),
                                                              ("clean", 8, "auto")]
    fake_build.shared.clear()
    assert build.build("smoke", ["05_class_detection"], {"epochs": 3}) == 0
    assert [(r.poison, r.epochs) for r, _ in fake_build.shared[0]] == [("blend", 3), ("pixel", 3), ("clean", 3)]
    fake_build.shared.clear()
    assert build.build("smoke", ["01_theory_toy"]) == 0
    assert fake_build.shared == []
