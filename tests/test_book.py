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


def test_the_check_fails_when_a_table_shows_pythons_true_or_nan(html_dir, tmp_path):
    """A cell that reads True or NaN on a chapter page (planted in a copy of the build) is reported; the parameters
    page, whose table writes values as Python does, is not checked for it."""
    copy = tmp_path / "html"
    shutil.copytree(html_dir, copy)
    page = copy / "book" / "chapters" / "05_class_detection.html"
    html = page.read_text()
    at = html.index("<td")
    page.write_text(html[:at] + "<td>True</td><td>NaN</td>" + html[at:])
    problems = book.check(copy)
    assert any("05_class_detection" in p and "'NaN', 'True'" in p for p in problems), problems
    assert not any("99_parameters" in p for p in problems)


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
    from poisoncure.book import browser

    if browser.find_chromium() is None:
        msg = ("no Chromium: install Debian's chromium-headless-shell (python3 tasks.py test does it as root) "
               "or set POISONCURE_CHROMIUM")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


def test_every_page_renders_in_a_browser(html_dir):
    """Every page in headless Chromium: figures load, tables render, no errors, links resolve, math typeset."""
    from poisoncure.book import browser

    _chromium_or_skip()
    reports = browser.check_book(html_dir, screenshots=book.build_dir() / "screenshots")
    assert {f"book/chapters/{n}.html" for n in book.notebook_sources()} <= {r.page for r in reports}
    assert [(r.page, r.problems) for r in reports if r.problems] == []
    by_page = {r.page: r for r in reports}
    assert by_page["book/chapters/01_theory_toy.html"].math > 0  # the theory chapter is all formulas
    assert all(r.images > 0 for p, r in by_page.items() if "/chapters/" in p)
    assert all(r.downloads >= 2 for p, r in by_page.items() if "/chapters/" in p)  # .ipynb and .py, both checked
    shots = list((book.build_dir() / "screenshots").glob("*.png"))
    assert len(shots) >= len(reports) and all(p.stat().st_size > 0 for p in shots), (len(shots), len(reports))


def _check_chapter_2_without(html_dir, tmp_path, link: str) -> list[str]:
    """The browser check's problems for chapter 2 in a copy of the build from which the first file the page links
    by ``link`` (a regular expression with one group: the relative URL) was deleted."""
    import re

    from poisoncure.book import browser

    _chromium_or_skip()
    copy = tmp_path / "html"
    shutil.copytree(html_dir, copy)
    page = copy / "book" / "chapters" / "02_attack.html"
    (page.parent / re.findall(link, page.read_text())[0]).resolve().unlink()
    (report,) = browser.check_book(copy, only=["02_attack"])
    return report.problems


def test_the_browser_check_fails_when_a_figure_is_removed(html_dir, tmp_path):
    """Delete one figure file from a copy of the build: the browser sees a broken image on that page."""
    problems = _check_chapter_2_without(html_dir, tmp_path, r'<img[^>]+src="([^"]+_images/[^"]+)"')
    assert any("did not load" in p for p in problems), problems


def test_the_browser_check_fails_when_a_download_is_missing(html_dir, tmp_path):
    """Delete the executed notebook behind chapter 2's download link from a copy of the build: the browser
    check reports it."""
    problems = _check_chapter_2_without(html_dir, tmp_path, r'href="([^"]+_downloads/[^"]+\.ipynb)"')
    assert any("cannot be fetched" in p for p in problems), problems


def test_the_browser_check_fails_on_planted_readability_defects(html_dir, tmp_path):
    """An over-wide table, a cell cut short, a literal backtick, a shrunken figure and a spec-internal reference
    planted in a copy of chapter 2: the browser check names each; the page as built has none of them."""
    import re

    from poisoncure.book import browser

    _chromium_or_skip()
    copy = tmp_path / "html"
    shutil.copytree(html_dir, copy)
    page = copy / "book" / "chapters" / "02_attack.html"
    html = page.read_text()
    img = re.search(r'<img[^>]+src="[^"]+_images/[^"]+"[^>]*>', html).group(0)
    planted = ('<div class="output"><table><tr><td style="white-space:nowrap">' + "wide " * 400 + "</td></tr>"
               "<tr><td>automobile, bird, dog, fr...</td></tr></table></div>"
               "<p>set the parameter `eta` as in SPEC 3(e)</p>" + img.replace("<img", '<img style="width:30%"'))
    end_h1 = html.index("</h1>", html.index('<article class="bd-article"')) + len("</h1>")
    page.write_text(html[:end_h1] + planted + html[end_h1:])
    (report,) = browser.check_book(copy, only=["02_attack"])
    found = " | ".join(report.problems)
    for what in ("wider than the text column", "a table cell cut short", "a literal backtick",
                 "a figure too small to read", "an internal reference 'SPEC'"):
        assert what in found, (what, report.problems)


def test_the_verdict_is_on_the_introduction_and_in_chapter_8(html_dir):
    """The reproduction verdict is shown where a reader looks first, one row per claim, with its rule."""
    from poisoncure.experiments import verdict

    for page in ("book/intro.html", "book/chapters/08_full_results.html"):
        html = (html_dir / page).read_text()
        assert html.count('class="verdict-table"') == 1, page
        table = html[html.index('class="verdict-table"'):]
        table = table[:table.index("</table>")]
        assert table.count("<tr>") == 1 + len(verdict.CLAIMS), page
        assert "held" in table and "How to read it" in html, page


def test_the_teaching_page_shows_each_sessions_measured_time(html_dir):
    html = (html_dir / "book" / "teaching.html").read_text()
    import re

    assert "their execution in this build" in html and "Measured by the build" in html
    assert len(re.findall(r"\d+\.\d min</", html)) == len(book.SESSIONS)  # a measured time for every session


# ------------------------------------------------------------------ the printable edition
def _plain(text: str) -> str:
    """Text without whitespace or hyphenation, ligatures spelt out, for comparing a PDF's extracted text with the
    HTML's."""
    import re
    import unicodedata

    return re.sub(r"[\s\u00ad-]+", "", unicodedata.normalize("NFKC", text))


def test_the_pdf_edition_holds_every_chapter_title_and_figure_caption(html_dir):
    """One PDF for the book (one bookmark per page of the table of contents) and one per page; every chapter's
    title and the plain-text start of every figure caption appear in the book's text."""
    import html
    import re

    from pypdf import PdfReader

    whole = book.pdf_dir() / book.PDF_BOOK
    assert whole.is_file(), "no PDF edition: python3 tasks.py book writes it after the HTML"
    reader = PdfReader(str(whole))
    order = book.toc_pages()
    assert len(reader.outline) == len(order)
    assert len(reader.pages) >= 2 * len(book.notebook_sources())
    for rel in order:
        assert (book.pdf_dir() / (rel.rsplit("/", 1)[-1].removesuffix(".html") + ".pdf")).is_file(), rel
    text = _plain("".join(p.extract_text() or "" for p in reader.pages))
    checked = 0
    for name in book.notebook_sources():
        page = (html_dir / "book" / "chapters" / f"{name}.html").read_text()
        h1 = re.sub(r'<a class="headerlink".*?</a>', "", re.search(r"<h1>(.*?)</h1>", page, re.S).group(1))
        title = html.unescape(re.sub(r"<[^>]+>", "", h1))
        assert _plain(title) in text, f"{name}: title {title!r} not in the PDF"
        for caption in re.findall(r"<figcaption>(.*?)</figcaption>", page, re.S):
            caption = re.sub(r'<a class="headerlink".*?</a>', "", caption, flags=re.S)  # the pilcrow "#" link
            words = html.unescape(re.sub(r"<[^>]+>", " ", caption))
            words = re.split(r"\\\(|\$|\\\[", words)[0]  # up to the first formula (typeset, not text, in the PDF)
            words = re.sub(r"^\s*(Fig\.|Table)\s*[\d.]+\s*", "", words).strip()[:40]
            if len(_plain(words)) >= 15:
                assert _plain(words) in text, f"{name}: caption {words!r} not in the PDF"
                checked += 1
    assert checked >= 20, checked
