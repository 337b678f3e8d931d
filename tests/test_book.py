"""Checks on the built book (run by `python3 tasks.py test` after the build; marker `book`)."""

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

    log = json.loads((book.build_dir() / "execution.json").read_text())
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


def test_pages_have_no_error_output(html_dir):
    for page in (html_dir / "book" / "chapters").glob("*.html"):
        text = page.read_text()
        assert "Traceback (most recent call last)" not in text, page.name
        assert "output stderr" not in text or "Error" not in text, page.name
