"""Checks on the built book (run by `python3 tasks.py test` after the build; marker `book`)."""

import json
import os
import shutil

import pytest

from poisoncure import book

pytestmark = pytest.mark.book


@pytest.fixture(scope="module")
def html_dir():
    d = book.build_dir() / "html"
    if not (d / "index.html").is_file():
        pytest.fail("the book is not built: run `python3 tasks.py book` first")
    return d


def test_every_chapter_shows_every_figure_and_table(html_dir):
    assert book.check(html_dir) == []


def test_every_chapter_executed_and_was_recorded(html_dir):
    import json

    log = json.loads((book.execution_log()).read_text())
    for name in book.notebook_sources():
        assert log[name]["ok"], name


def test_the_check_fails_when_a_figure_is_missing(html_dir, tmp_path):
    """Remove one image from a copy of the build: the check must report it."""
    copy = tmp_path / "html"
    shutil.copytree(html_dir, copy)
    page = copy / "book" / "chapters" / "02_attack.html"
    html = page.read_text()
    start = html.index("<img")
    page.write_text(html[:start] + html[html.index(">", start) + 1:])
    problems = book.check(copy)
    assert any("02_attack" in p and "figures" in p for p in problems)


def test_pages_and_notebooks_have_no_error_output(html_dir):
    """No traceback on a page nor in an executed notebook's stderr (which the pages do not show)."""
    pages = list((html_dir / "book" / "chapters").glob("*.html"))
    assert len(pages) >= len(book.notebook_sources())
    for page in pages:
        assert "Traceback (most recent call last)" not in page.read_text(), page.name
    for name in book.notebook_sources():
        nb = json.loads((book.chapters_dir() / f"{name}.ipynb").read_text())
        assert book.stderr_problems(nb) == [], name


# ------------------------------------------------------------------ the pages in a real browser
def _chromium_or_skip() -> None:
    from poisoncure import browser

    if browser.find_chromium() is None:
        msg = ("no Chromium: install Debian's chromium-headless-shell (python3 tasks.py test does it as root) "
               "or set POISONCURE_CHROMIUM")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


def test_every_page_renders_in_a_browser(html_dir):
    """Every page in headless Chromium: figures load, tables render, no errors, links resolve, math typeset."""
    from poisoncure import browser

    _chromium_or_skip()
    reports = browser.check_book(html_dir, screenshots=book.build_dir() / "screenshots")
    assert {f"book/chapters/{n}.html" for n in book.notebook_sources()} <= {r.page for r in reports}
    assert [(r.page, r.problems) for r in reports if r.problems] == []
    by_page = {r.page: r for r in reports}
    assert by_page["book/chapters/01_theory_toy.html"].math > 0  # the theory chapter is all formulas
    assert all(r.images > 0 for p, r in by_page.items() if "/chapters/" in p)
    shots = list((book.build_dir() / "screenshots").glob("*.png"))
    assert len(shots) >= len(reports) and all(p.stat().st_size > 0 for p in shots), (len(shots), len(reports))


def test_the_browser_check_fails_when_a_figure_is_removed(html_dir, tmp_path):
    """Delete one figure file from a copy of the build: the browser sees a broken image on that page."""
    import re

    from poisoncure import browser

    _chromium_or_skip()
    copy = tmp_path / "html"
    shutil.copytree(html_dir, copy)
    page = copy / "book" / "chapters" / "02_attack.html"
    src = re.findall(r'<img[^>]+src="([^"]+_images/[^"]+)"', page.read_text())[0]
    (page.parent / src).resolve().unlink()
    (report,) = browser.check_book(copy, only=["02_attack"])
    assert any("did not load" in p for p in report.problems), report.problems
