"""The project frame: profiles consistent with the notebooks, every notebook in the TOC."""

import re
from pathlib import Path

import pytest

from poisoncure import experiments
from poisoncure.book import build
from poisoncure.experiments import profiles

ROOT = Path(__file__).resolve().parents[1]


def test_every_notebook_is_in_the_toc_in_order():
    toc = (ROOT / "_toc.yml").read_text()
    listed = re.findall(r"book/chapters/(\d\d_[a-z0-9_]+)", toc)
    assert listed == list(build.notebook_sources())


@pytest.mark.parametrize("name", list(build.notebook_sources()))
def test_notebook_defaults_equal_the_smoke_profile(name):
    declared = build.declared_parameters(build.notebook_sources()[name])
    resolved = profiles.notebook_parameters("smoke", name, declared)
    assert {k: declared[k] for k in resolved} == resolved


@pytest.mark.parametrize("name", list(build.notebook_sources()))
def test_parameter_comments_have_no_equals_sign(name):
    """papermill cannot parse a parameter line whose comment contains '=' and then warns of unknown names."""
    import jupytext

    nb = jupytext.read(build.notebook_sources()[name])
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    bad = [line for line in cell.source.splitlines() if "#" in line and "=" in line.split("#", 1)[1]]
    assert not bad, bad


@pytest.mark.parametrize("profile", profiles.available())
def test_profiles_resolve_for_every_notebook(profile):
    for name, src in build.notebook_sources().items():
        params = profiles.notebook_parameters(profile, name, build.declared_parameters(src))
        if "pair" in params:  # the shared recipe is valid
            ns = {**build.declared_parameters(src), **params}
            experiments.Recipe.from_params(ns, poison="blend")


def test_bad_parameter_names_and_profiles_fail_early():
    src = build.notebook_sources()["02_attack"]
    with pytest.raises(ValueError, match="no parameter.*its parameters are"):
        profiles.notebook_parameters("smoke", "02_attack", build.declared_parameters(src), {"opacityy": 0.3})
    with pytest.raises(ValueError, match="unknown profile"):
        profiles.load("huge")


@pytest.mark.parametrize("field, value", [("poison", "square"), ("pair", 10), ("poison_rate", 0),
                                          ("opacity", 1.2), ("blend_source", "cifar100"), ("epochs", 0)])
def test_recipe_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        experiments.Recipe(**{field: value})


def test_recipe_cache_key_ignores_fields_a_model_does_not_use():
    clean = experiments.Recipe(poison="clean")
    assert clean.cache_config() == clean.replace(pair=5, opacity=0.3).cache_config()
    pix = experiments.Recipe(poison="pixel")
    assert pix.cache_config() == pix.replace(opacity=0.5).cache_config()
    assert pix.cache_config() != pix.replace(pair=2).cache_config()


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 tasks.py test" in readme and "python3 tasks.py book" in readme
    assert ci.strip().splitlines()[-1] == "python3 tasks.py test"


@pytest.mark.parametrize("name", [n for n in build.notebook_sources() if n in build.chapter_numbers()])
def test_every_chapter_ends_with_exercises_and_folded_solutions(name):
    text = build.notebook_sources()[name].read_text()
    exercises = text.index("# ## Exercises")
    items = re.findall(r"^# \d\. ", text[exercises:text.index(":::{admonition} Solutions", exercises)], re.M)
    assert 2 <= len(items) <= 4, items
    solutions = text[text.index(":::{admonition} Solutions", exercises):]
    assert "# :class: dropdown" in solutions
    assert len(re.findall(r"^# \d\. ", solutions, re.M)) == len(items)


def test_a_traceback_on_stderr_is_a_problem_of_the_chapter():
    """The pages drop stderr (nb_output_stderr: remove): the check reads it from the executed notebook."""
    ok = {"cells": [{"outputs": [{"output_type": "stream", "name": "stderr", "text": "training: 100%|###|\n"}]}]}
    bad = {"cells": [{"outputs": []}, {"outputs": [{"output_type": "stream", "name": "stderr", "text": [
        "Traceback (most recent call last):\n", "  File \"x.py\", line 1\n", "ValueError: boom\n"]}]}]}
    assert build.stderr_problems(ok) == []
    assert build.stderr_problems(bad) == ["cell 1: stderr traceback (ValueError: boom)"]
    warned = {"cells": [{"outputs": [{"output_type": "stream", "name": "stderr", "text": (
        "/x/gmm.py:12: ConvergenceWarning: did not converge\n"
        "/x/y.py:3: RuntimeWarning: invalid value encountered in divide\n  c /= s\n")}]}]}
    assert build.stderr_problems(warned) == ["cell 0: RuntimeWarning: invalid value encountered in divide"]


def test_a_failing_chapter_names_its_notebook_cell_and_traceback():
    from papermill.exceptions import PapermillExecutionError

    err = PapermillExecutionError(cell_index=7, exec_count=3, source="1/0", ename="ZeroDivisionError",
                                  evalue="division by zero", traceback=["\x1b[31mTraceback\x1b[0m", "  line 1"])
    report = build.execution_report("05_class_detection", err)
    assert report.startswith("execution report: notebook 05_class_detection, cell 7 (execution count 3)")
    assert "ZeroDivisionError: division by zero" in report and "Traceback" in report and "\x1b" not in report
    assert "ValueError: bad" in build.execution_report("02_attack", ValueError("bad"))


def test_reader_warnings_become_visible_notes_in_a_kernel(monkeypatch):
    """Outside a kernel nothing is installed; inside one a CacheWarning is displayed as an HTML note."""
    import warnings

    from poisoncure.book import plots
    from poisoncure.cache import CacheWarning

    assert plots.show_reader_warnings() is False  # pytest is no IPython kernel
    shown = []
    import IPython
    import IPython.display

    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj.data))
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    assert plots.show_reader_warnings() is True
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning("entry x is unusable; rebuilding it", CacheWarning, "f.py", 1)
        warnings.showwarning("an ordinary warning", UserWarning, "f.py", 2)
    assert len(shown) == 1 and "rebuilding it" in shown[0] and "CacheWarning" in shown[0]


def test_pages_below_the_papers_scale_say_so():
    from poisoncure.book import plots

    note = plots.scale_note("smoke")
    assert note is not None and "smoke" in note and "not comparable" in note
    assert all(plots.scale_note(p) is not None for p in ("cpu-cnn", "cpu-full", "gpu"))
    assert plots.scale_note("full") is None  # the paper's own setup


def test_figures_fit_the_column_with_text_at_least_body_size():
    """A wide three-panel figure drawn with 6-pt ticks, legend and labels (as chapters used to) is narrowed to the
    column and its reading texts raised to the body size; text inside the data keeps its size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from poisoncure.book import plots

    fig, axes = plt.subplots(1, 3, figsize=(15, 3))
    for ax in axes:
        ax.plot([1, 2, 3], [3, 1, 2], label="a long legend entry")
        ax.set_xticks([1, 2, 3], ["one", "two", "three"], fontsize=6)
        ax.tick_params(axis="y", labelsize=6)
        ax.set_xlabel("x label", fontsize=6)
        ax.set_title("a title", fontsize=6)
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.text(2, 2, "inside", fontsize=6)
    fig.tight_layout()
    assert min(t.get_fontsize() for t in plots.reading_texts(fig)) == 6
    plots.fit_to_column(fig)
    assert plots.enlarge_small_text(fig)
    plots.fit_to_column(fig, relayout_first=True)
    for ax in axes:
        ax.set_ylim(0, 30)  # ticks made after the change follow it too
    fig.canvas.draw()
    read = [t for ax in axes for t in (*ax.get_xticklabels(), *ax.get_yticklabels(), ax.xaxis.label, ax.title,
                                       *ax.get_legend().get_texts())]
    assert len(read) > 3 * 8 and min(t.get_fontsize() for t in read) >= plots.MIN_TEXT_PT - 1e-9
    assert plots.MIN_TEXT_PT * plots.FIGURE_DPI / 72 >= plots.BODY_PX - 1e-9  # shown at natural size: body px
    assert max(fig.get_size_inches()[0], fig.get_tightbbox().width) <= plots.MAX_FIGURE_WIDTH * 1.01
    assert [t.get_fontsize() for ax in axes for t in ax.texts] == [6, 6, 6]  # data annotations untouched
    assert not plots.enlarge_small_text(fig)  # nothing left to raise
    plt.close(fig)


def test_colliding_texts_are_found_and_crowded_tick_labels_turned():
    """Ten long tick labels side by side on a narrow axes collide; untangling turns them until they do not, and a
    title wider than its axes is wrapped. A figure with room for its texts has no collision."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from poisoncure.book import plots

    fig, ax = plt.subplots(figsize=(3, 2.5))
    ax.bar(range(10), range(10))
    ax.set_xticks(range(10), [f"a long class name {k}" for k in range(10)], fontsize=plots.MIN_TEXT_PT)
    ax.set_title("a title far too long for the narrow axes under it, which must wrap")
    assert any("x tick" in c for c in plots.text_collisions(fig))
    assert plots.untangle_text(fig)
    fig.tight_layout()
    assert not [c for c in plots.text_collisions(fig) if "x tick" in c]
    assert "\n" in ax.get_title() and all(abs(t.get_rotation()) >= 45 for t in ax.get_xticklabels())
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([0, 1], [0, 1], label="line")
    ax.set_xticks([0, 1], ["zero", "one"])
    ax.legend()
    assert plots.text_collisions(fig) == [] and not plots.untangle_text(fig)
    plt.close(fig)


def test_panel_letters_travel_with_their_panels_when_a_row_is_reflowed():
    """A row of three panels too wide for the column becomes a grid of two rows: the third panel, once "right",
    is then below the first; its letter (c) goes with it, so a caption that names it by letter stays true."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from poisoncure.book import plots

    fig, axes = plt.subplots(1, 3, figsize=(9, 3))  # three 3-inch panels: two fit the column side by side
    for ax in axes[:2]:
        ax.set_title("a title")
    assert plots.label_panels(axes) == ["(a)", "(b)", "(c)"]
    assert [ax.get_title() for ax in axes] == ["(a) a title", "(b) a title", "(c)"]  # titles kept after the letter
    assert plots.reflow_row(fig)
    where = {ax.get_title()[:3]: (ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start)
             for ax in fig.axes}
    assert where == {"(a)": (0, 0), "(b)": (0, 1), "(c)": (1, 0)}
    plt.close(fig)
    with pytest.raises(ValueError, match="26"):
        plots.label_panels([None] * 27)


@pytest.mark.parametrize("path", sorted([*(ROOT / "notebooks").glob("*.py"),
                                         *(ROOT / "src" / "poisoncure" / "book" / "pages").glob("*.py")]),
                         ids=lambda p: p.name)
def test_captions_name_panels_by_letter_not_by_position(path):
    """"Left:", "Right:", "Middle:", "(left)" or "the right panel" stop being true when a row of panels is
    reflowed into a grid on a narrow column (plots.reflow_row); captions and figure docstrings use the letters of
    plots.label_panels instead. (Positions inside one plot, such as "left of the dotted line", are fine.)"""
    text = path.read_text()
    found = re.findall(r"\b(?:Left|Right|Middle):|\((?:left|right|middle)\)|\b(?:left|right|middle) panel\b", text,
                       flags=re.IGNORECASE)
    assert found == [], f"{path.name} names panels by position: {found}"


def test_the_readme_example_of_a_defense_on_your_own_model_runs():
    """The README's snippet, executed as written on a model and data of 'your own' (a tiny poisoned toy)."""
    import numpy as np
    import torch

    from poisoncure import attacks, data, models, train

    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Use a defense on your own model"):]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    rng = np.random.default_rng(0)
    clean = data.ImageSet(rng.integers(0, 256, (300, 32, 32, 3), dtype=np.uint8), np.arange(300) % 10)
    poisoned = attacks.poison(clean, attacks.PixelTrigger(3, 4, (255, 0, 255)), base=1, target=5, rate=0.3, seed=0)
    torch.manual_seed(0)
    model = models.small_cnn(width=4)
    own = data.ImageSet(poisoned.x, poisoned.y)
    train.fit(model, own, train.TrainConfig(epochs=1, batch_size=100), device="cpu", progress=False)
    namespace = {"x": own.x, "y": own.y, "model": model}
    exec(compile(snippet, "README.md", "exec"), namespace)
    assert namespace["res"].scan is not None and namespace["model"] is not None


def test_the_teaching_plan_covers_every_chapter_once_and_reports_times():
    """The teaching page's sessions name every chapter but the parameters page exactly once, and the generated
    table gives each session the summed execution time of its chapters (from the build's execution log)."""
    from poisoncure.book import build

    planned = [n for _, names in build.SESSIONS for n in names]
    pages = [n for n in build.notebook_sources() if n != "99_parameters"]
    assert sorted(planned) == sorted([build.SHARED_MODELS, *pages])
    numbers = build.chapter_numbers()
    assert sorted(numbers.values()) == list(range(1, len(numbers) + 1))
    # a chapter's file is numbered as the book numbers it (so --only 11_poishygiene reruns chapter 11)
    assert all(name.startswith(f"{k:02d}_") for name, k in numbers.items()), numbers


def test_session_times_sum_their_chapters(tmp_path, monkeypatch):
    import json

    from poisoncure.book import build

    log = tmp_path / "execution.json"
    log.write_text(json.dumps({"01_theory_toy": {"seconds": 60.0, "ok": True, "profile": "smoke", "device": "CPU (x)",
                                                 "commit": "abcdef1234"},
                               "02_attack": {"seconds": 120.0, "ok": True, "profile": "smoke", "device": "CPU (x)",
                                             "commit": "abcdef1234"}}))
    monkeypatch.setattr(build, "execution_log", lambda: log)
    text = build.session_times_markdown()
    assert "| 1 | 1, the shared models, 2 | 3.0 min |" in text and "| 2 | 3, 4 | not recorded |" in text
    assert "commit abcdef1" in text and "CPU (x)" in text


def test_the_package_root_gives_the_public_api_lazily():
    """``import poisoncure as pc``: every public name resolves to the object of its module, the import itself loads
    no torch, and a misspelt name fails with an AttributeError naming it."""
    import subprocess
    import sys

    import poisoncure as pc
    from poisoncure.defenses.poison_cure import PoisonCure
    from poisoncure.train import fit

    assert pc.PoisonCure is PoisonCure and pc.fit is fit
    for name in pc.__all__:
        assert getattr(pc, name) is not None, name
    assert "PoisonCure" in dir(pc)
    with pytest.raises(AttributeError, match="PoisonCur"):
        pc.PoisonCur  # noqa: B018
    out = subprocess.run([sys.executable, "-c", "import sys, poisoncure; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
