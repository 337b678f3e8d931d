"""Check the built book the way a reader meets it: every page opened in a real (headless) Chromium.

For each HTML page of ``book/_build/html`` (served on a local port, as a reader would with ``http.server``):

* every ``<img>`` has loaded (non-zero natural width);
* every table has rows and cells;
* no cell output shows an error or a traceback;
* every internal link resolves (the file exists and, for ``page.html#anchor``, the anchor exists on that page);
* the math is typeset by MathJax: as many rendered formulas as TeX sources, none with a TeX error;
* every chapter page offers its downloads: the executed notebook (fetched, it opens with ``nbformat`` and holds
  the page's figures) and its Jupytext source;
* the footer states the licences of the code and of the text;
* the page reads well at a 1280-px window (:func:`readability`): no table or figure wider than the text column (a
  table marked ``wide-table`` may scroll inside a box that fits, its first column fixed), no table cell cut short
  with "..." and no rows left out by pandas, no figure shown below :data:`READABLE_SCALE` of its natural width, no
  literal backtick in the prose, no typographic quotes in code meant to be copied, no project-internal references
  (:data:`INTERNAL_REFERENCES`); code blocks keep their lines and may scroll;
* a full-page screenshot is saved for review (``book/_build/screenshots/<page>.png``).

:func:`export_pdf` prints the same pages, in the book's order, with the same browser into one PDF per page and one
for the whole book (the printable edition).

Usage::

    python -m poisoncure.book.browser [--html book/_build/html] [--screenshots DIR]

Chromium comes from ``POISONCURE_CHROMIUM``, Debian's ``chromium-headless-shell`` or ``chromium`` package
(``python3 tasks.py test`` installs the first when it can), the PATH, or Playwright's own managed Chromium
(``python -m playwright install --only-shell chromium``); it is driven by Playwright's Python package.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import os
import re
import shutil
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium-headless-shell", "/usr/bin/chromium-headless-shell",
                       "/usr/bin/chromium", "/usr/bin/chromium-browser")
# Flags for a closed network: no background connections, no sandbox (root in CI containers)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SKIP_DIRS = {"_static", "_sources", "_images", "_sphinx_design_static", "_panels_static"}
SKIP_PAGES = {"genindex.html", "search.html"}


def find_chromium() -> str | None:
    """Path of a Chromium binary: ``POISONCURE_CHROMIUM``, then Debian's packages, then the PATH, then
    Playwright's managed Chromium (:func:`playwright_chromium`)."""
    env = os.environ.get("POISONCURE_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    for c in CHROMIUM_CANDIDATES:
        if Path(c).is_file():
            return c
    for name in ("chromium-headless-shell", "chromium", "chromium-browser"):
        if (p := shutil.which(name)) is not None:
            return p
    return playwright_chromium()


def playwright_chromium() -> str | None:
    """Playwright's managed Chromium for the installed Playwright (its headless shell first, then the full
    browser), as ``playwright install`` puts it under ``PLAYWRIGHT_BROWSERS_PATH`` or Playwright's default folder;
    ``None`` when it is not installed (or Playwright is not)."""
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            full = Path(pw.chromium.executable_path)  # <browsers>/chromium-<rev>/<platform dir>/<binary>
    except Exception:  # no playwright package, or its driver cannot start
        return None
    revision = full.parents[1].name.rsplit("-", 1)[-1]
    shells = sorted(full.parents[2].glob(f"chromium_headless_shell-{revision}/*/*headless*shell"))
    for candidate in [*shells, full]:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def pages(html_dir: Path) -> list[Path]:
    """The book's HTML pages (not Sphinx's index/search pages or static files), sorted."""
    out = []
    for p in sorted(html_dir.rglob("*.html")):
        rel = p.relative_to(html_dir)
        if SKIP_DIRS & set(rel.parts[:-1]) or rel.name in SKIP_PAGES or any(q.startswith(".") for q in rel.parts):
            continue
        if re.search(r'http-equiv="refresh"', p.read_text(errors="replace")[:2000], re.IGNORECASE):
            continue  # the root index.html only redirects to the first page
        out.append(p)
    return out


@dataclass
class PageReport:
    page: str
    images: int = 0
    tables: int = 0
    math: int = 0
    links: int = 0
    downloads: int = 0
    problems: list[str] = field(default_factory=list)


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on a free localhost port for the duration; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no request log on stderr
        pass


# Everything the page itself can tell, measured after MathJax has finished
_PAGE_STATE = """
() => {
  const imgs = [...document.querySelectorAll('article img, main img')];
  const tables = [...document.querySelectorAll('article table, main table')];
  const errors = [...document.querySelectorAll('.output.error, .output.traceback, .cell_output .traceback')];
  const text = document.body.innerText;
  const tex = document.querySelectorAll('span.math.notranslate, div.math.notranslate').length;
  let rendered = 0, texErrors = [];
  if (window.MathJax && MathJax.Hub) {
    for (const jax of MathJax.Hub.getAllJax()) {
      rendered += 1;
      const mml = jax.root ? jax.root.toMathML('') : '';
      if (mml.includes('merror')) texErrors.push(jax.originalText.slice(0, 80));
    }
  }
  return {
    brokenImages: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src')),
    images: imgs.length,
    emptyTables: tables.filter(t => t.rows.length === 0 || t.querySelectorAll('td, th').length === 0).length,
    tables: tables.length,
    errorOutputs: errors.length,
    traceback: text.includes('Traceback (most recent call last)'),
    tex: tex, rendered: rendered, texErrors: texErrors,
    hrefs: [...document.querySelectorAll('a[href]')].map(a => a.href),
    footer: [...document.querySelectorAll('footer')].map(f => f.innerText).join(' '),
  };
}
"""

# What makes a page hard to read, measured at the reader's window size: elements wider than the text column,
# table cells cut short by pandas, figures shrunk below READABLE_SCALE of their natural width, and internal text
# (literal backticks outside code, typographic quotes inside code meant to be copied, spec-internal references)
_READABILITY = """
(args) => {
  const article = document.querySelector('article.bd-article') || document.querySelector('main');
  if (!article) return {column: 0, wide: [], truncated: [], small: [], text: []};
  const style = getComputedStyle(article);
  const column = article.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  const label = el => {
    const fig = el.closest('figure, div.cell, section');
    const cap = fig && fig.querySelector('figcaption, .caption-number');
    const id = (fig && fig.id) || (el.closest('[id]') || {}).id || '';
    const name = cap ? cap.innerText.slice(0, 60).replace(/\\s+/g, ' ') : el.tagName.toLowerCase();
    return name + (id ? ` (#${id})` : '');
  };
  const wide = [];
  // a table marked wide-table may be wider if it scrolls inside a box that fits the column, its first column fixed
  const scrolls = el => {
    if (!el.classList.contains('wide-table')) return false;
    let box = el.parentElement;
    const scrolling = b => ['auto', 'scroll'].includes(getComputedStyle(b).overflowX);
    while (box && box !== article && !scrolling(box)) box = box.parentElement;
    const first = el.querySelector('tr > :first-child');
    return !!box && box !== article && box.getBoundingClientRect().width <= column + 2 && !!first
      && getComputedStyle(first).position === 'sticky';
  };
  for (const el of article.querySelectorAll('table, img')) {
    const w = Math.max(el.scrollWidth, el.getBoundingClientRect().width);
    if (w > column + 2 && !scrolls(el)) {
      wide.push(`${label(el)}: ${Math.round(w)} px in a ${Math.round(column)}-px column`);
    }
  }
  const truncated = [];
  for (const c of article.querySelectorAll('td, th')) {
    const t = c.innerText.trim();
    if (/(\\.\\.\\.|…)$/.test(t) && !args.ellipses.includes(t)) {
      truncated.push(`${label(c)}: '${t.slice(-40)}'`);
    }
  }
  for (const p of article.querySelectorAll('.output p, .output div, .cell_output p')) {
    const t = p.innerText.trim();
    if (/^\\d+ rows × \\d+ columns$/.test(t)) truncated.push(`${label(p)}: pandas shows '${t}'`);
  }
  const small = [];
  for (const img of article.querySelectorAll('img')) {
    if (!(img.complete && img.naturalWidth > 0)) continue;
    const shown = img.getBoundingClientRect().width;
    if (shown < args.scale * img.naturalWidth) {
      small.push(`${label(img)}: shown ${Math.round(shown)} px of ${img.naturalWidth}`);
    }
  }
  const clone = article.cloneNode(true);
  const notProse = 'pre, code, .highlight, .cell_input, script, style, .MathJax, mjx-container';
  for (const el of clone.querySelectorAll(notProse)) el.remove();
  const prose = clone.innerText;
  const text = [];
  const tick = prose.indexOf('`');
  if (tick >= 0) {
    text.push(`a literal backtick: '${prose.slice(Math.max(0, tick - 40), tick + 40).replace(/\\s+/g, ' ')}'`);
  }
  for (const re of args.internal) {
    const m = prose.match(new RegExp(re));
    if (m) text.push(`an internal reference '${m[0]}'`);
  }
  for (const code of article.querySelectorAll('pre, code')) {
    if (/[“”‘’]/.test(code.innerText)) text.push(`typographic quotes in code: '${code.innerText.slice(0, 60)}'`);
  }
  return {column: column, wide: wide, truncated: truncated, small: small, text: text};
}
"""
#: a figure shown at less than this fraction of its natural width (or of the column, if narrower) is too small
READABLE_SCALE = 0.8
#: patterns of text that belongs to the project's own notes, not to a reader's page
INTERNAL_REFERENCES = (r"\bSPEC\b", r"\bB-Q\d", r"mini configuration")
#: cell texts that end in an ellipsis by design (none so far)
ELLIPSES: tuple[str, ...] = ()


def readability(page) -> list[str]:
    """The readability problems of the open page (see :data:`_READABILITY`)."""
    state = page.evaluate(_READABILITY, {"scale": READABLE_SCALE, "internal": list(INTERNAL_REFERENCES),
                                         "ellipses": list(ELLIPSES)})
    return ([f"wider than the text column: {w}" for w in state["wide"]]
            + [f"a table cell cut short: {t}" for t in state["truncated"]]
            + [f"a figure too small to read: {s}" for s in state["small"]]
            + [f"internal text on the page: {t}" for t in state["text"]])


_WAIT_MATH = """
() => new Promise(resolve => {
  if (!(window.MathJax && MathJax.Hub && MathJax.Hub.Queue)) { resolve(false); return; }
  MathJax.Hub.Queue(() => resolve(true));
})
"""


def _ids(page: Path, cache: dict[Path, set[str]]) -> set[str]:
    if page not in cache:
        cache[page] = set(re.findall(r'\sid="([^"]+)"', page.read_text(errors="replace")))
    return cache[page]


def check_links(html_dir: Path, base: str, hrefs: list[str], ids: dict[Path, set[str]]) -> tuple[int, list[str]]:
    """(internal links checked, problems) for the absolute link URLs of a page served from ``base``."""
    n, problems = 0, []
    for href in hrefs:
        if not href.startswith(base):
            continue  # external (or mailto:, javascript:): not reachable offline, not the book's to check
        n += 1
        parts = urlsplit(href)
        target = (html_dir / unquote(parts.path).lstrip("/")).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            problems.append(f"link {href!r}: {target.name} does not exist")
        elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in _ids(target, ids):
            problems.append(f"link {href!r}: no anchor #{parts.fragment} on {target.name}")
    return n, problems


#: what every page's footer must say (the licences: code, then text and figures)
FOOTER_LICENCES = ("MIT", "CC BY 4.0")


def check_downloads(base: str, hrefs: list[str]) -> tuple[int, list[str]]:
    """(downloads checked, problems) for a chapter page: it must link its executed notebook (``.ipynb``: fetched,
    it opens with ``nbformat``, validates and holds at least one figure output) and its Jupytext source (``.py``,
    a percent-format notebook)."""
    import urllib.request

    import nbformat

    links = sorted({h for h in hrefs if h.startswith(base) and "/_downloads/" in h})
    notebooks = [h for h in links if h.endswith(".ipynb")]
    sources = [h for h in links if h.endswith(".py")]
    problems = []
    if not notebooks:
        problems.append("no download of the executed notebook (.ipynb)")
    if not sources:
        problems.append("no download of the Jupytext source (.py)")
    def fetch(href: str) -> str | None:
        try:
            with urllib.request.urlopen(href) as response:
                return response.read().decode()
        except OSError as err:  # urllib's HTTPError / URLError
            problems.append(f"download {href.rsplit('/', 1)[-1]} cannot be fetched: {err}")
            return None

    for href in notebooks:
        if (raw := fetch(href)) is None:
            continue
        try:
            nb = nbformat.reads(raw, as_version=4)
            nbformat.validate(nb)
        except Exception as err:
            problems.append(f"download {href.rsplit('/', 1)[-1]} is not a valid notebook: {err}")
            continue
        figures = sum(any("image/" in k for k in out.get("data", {}))
                      for cell in nb.cells for out in cell.get("outputs", []))
        if figures == 0:
            problems.append(f"download {href.rsplit('/', 1)[-1]} holds no figure output (not the executed notebook)")
    for href in sources:
        if (text := fetch(href)) is None:
            continue
        if "# %%" not in text:
            problems.append(f"download {href.rsplit('/', 1)[-1]} is not a Jupytext percent-format source")
    return len(notebooks) + len(sources), problems


def _launch(pw, chromium: str | None):
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("no Chromium found: install Debian's chromium-headless-shell (python3 tasks.py test "
                                "does it when run as root), or Playwright's (python -m playwright install "
                                "--only-shell chromium), or set POISONCURE_CHROMIUM to a Chromium binary")
    return pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)


def _open(page, url: str) -> bool:
    """Load a page and wait for MathJax; False when the page has formulas but MathJax did not load."""
    page.goto(url, wait_until="load")
    page.wait_for_function("document.readyState === 'complete'")
    return page.evaluate(_WAIT_MATH) if page.evaluate("!!document.querySelector('.math')") else True


def check_book(html_dir: Path, screenshots: Path | None = None, chromium: str | None = None,
               width: int = 1280, only: list[str] | None = None) -> list[PageReport]:
    """Open every page of the built book in headless Chromium; one report per page (see the module doc).

    ``only`` restricts the check to pages whose path (relative to ``html_dir``) contains one of the strings."""
    from playwright.sync_api import sync_playwright

    html_dir = Path(html_dir).resolve()
    if not (html_dir / "index.html").is_file():
        raise FileNotFoundError(f"no built book in {html_dir}: run `python3 tasks.py book` first")
    if screenshots is not None:
        screenshots.mkdir(parents=True, exist_ok=True)
    reports, ids = [], {}
    with serve(html_dir) as base, sync_playwright() as pw:
        browser = _launch(pw, chromium)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            for path in pages(html_dir):
                rel = path.relative_to(html_dir).as_posix()
                if only is not None and not any(o in rel for o in only):
                    continue
                rep = PageReport(rel)
                has_mathjax = _open(page, base + rel)
                state = page.evaluate(_PAGE_STATE)
                rep.images, rep.tables, rep.math = state["images"], state["tables"], state["rendered"]
                rep.problems += [f"image {s!r} did not load" for s in state["brokenImages"]]
                if state["emptyTables"]:
                    rep.problems.append(f"{state['emptyTables']} table(s) without rows or cells")
                if state["errorOutputs"] or state["traceback"]:
                    rep.problems.append("an error output or a traceback is shown")
                if not has_mathjax:
                    rep.problems.append("MathJax did not load: formulas show as raw TeX")
                elif state["rendered"] < state["tex"]:
                    rep.problems.append(f"{state['tex']} formulas, {state['rendered']} typeset by MathJax")
                rep.problems += [f"TeX error in {t!r}" for t in state["texErrors"]]
                rep.problems += [f"the footer does not state the licence {lic!r}" for lic in FOOTER_LICENCES
                                 if lic not in state["footer"]]
                rep.problems += readability(page)
                rep.links, link_problems = check_links(html_dir, base, state["hrefs"], ids)
                rep.problems += link_problems
                if "/chapters/" in rel:
                    rep.downloads, download_problems = check_downloads(base, state["hrefs"])
                    rep.problems += download_problems
                if screenshots is not None:
                    shot = screenshots / (rel.replace("/", "__").removesuffix(".html") + ".png")
                    page.screenshot(path=str(shot), full_page=True)
                reports.append(rep)
        finally:
            browser.close()
    return reports


# ----------------------------------------------------------------------------------------------- PDF
#: for print: code blocks, figures, tables and notes kept whole on a page when they fit; long code lines wrapped
#: (a page has no horizontal scroll bar)
PRINT_CSS = ("div.highlight, figure, table, div.admonition { break-inside: avoid; } "
             "pre { white-space: pre-wrap; overflow-wrap: anywhere; }")


@dataclass
class PdfEdition:
    book: Path
    chapters: dict[str, Path]
    pages: int
    seconds: float


def export_pdf(html_dir: Path, order: list[str], out_dir: Path, title: str, book_name: str,
               chromium: str | None = None) -> PdfEdition:
    """Print the built pages to PDF with headless Chromium (print styles, A4, backgrounds, formulas typeset by
    MathJax first): one file per page, ``<out_dir>/<stem>.pdf``, and the whole book in ``order`` (page paths
    relative to ``html_dir``, e.g. ``book/chapters/02_attack.html``) as ``<out_dir>/<book_name>`` with one
    bookmark per page. Files are written atomically (a partial PDF never replaces a good one)."""
    import time

    from playwright.sync_api import sync_playwright
    from pypdf import PdfWriter

    start = time.perf_counter()
    html_dir = Path(html_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    with serve(html_dir) as base, sync_playwright() as pw:
        browser = _launch(pw, chromium)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            for rel in order:
                if not _open(page, base + rel):
                    raise RuntimeError(f"{rel}: MathJax did not load, the PDF would show raw TeX")
                page.emulate_media(media="print")
                page.add_style_tag(content=PRINT_CSS)
                target = out_dir / (Path(rel).stem + ".pdf")
                tmp = target.with_suffix(".pdf.tmp")
                page.pdf(path=str(tmp), format="A4", print_background=True,
                         margin={"top": "16mm", "bottom": "16mm", "left": "14mm", "right": "14mm"})
                tmp.replace(target)
                files[rel] = target
        finally:
            browser.close()
    writer = PdfWriter()
    for rel, path in files.items():
        first = len(writer.pages)
        writer.append(str(path))
        writer.add_outline_item(_page_title(html_dir / rel), first)
    writer.add_metadata({"/Title": title})
    whole = out_dir / book_name
    tmp = whole.with_suffix(".pdf.tmp")
    with open(tmp, "wb") as fh:
        writer.write(fh)
    tmp.replace(whole)
    return PdfEdition(whole, files, len(writer.pages), time.perf_counter() - start)


def _page_title(page: Path) -> str:
    match = re.search(r"<title>(.*?)</title>", page.read_text(errors="replace"), re.S)
    import html

    return html.unescape(match.group(1)).split(" — ")[0].strip() if match else page.stem


def main(argv: list[str] | None = None) -> int:
    from .. import paths  # not the book module: it imports this one (for the PDF), and imports run one way

    ap = argparse.ArgumentParser(prog="python -m poisoncure.book.browser", description=__doc__.splitlines()[0])
    ap.add_argument("--html", type=Path, default=None, help="built HTML folder (default: book/_build/html)")
    ap.add_argument("--screenshots", type=Path, default=None,
                    help="folder for one full-page screenshot per page (default: book/_build/screenshots)")
    args = ap.parse_args(argv)
    root = paths.project_root()
    if root is None and (args.html is None or args.screenshots is None):
        raise SystemExit("not in a clone of the project: pass --html and --screenshots")
    html = args.html or root / "book" / "_build" / "html"
    shots = args.screenshots or root / "book" / "_build" / "screenshots"
    reports = check_book(html, shots)
    bad = 0
    for r in reports:
        status = "ok" if not r.problems else "PROBLEMS"
        print(f"{r.page}: {status} ({r.images} images, {r.tables} tables, {r.math} formulas, {r.links} links)")
        for p in r.problems:
            print(f"    {p}")
        bad += bool(r.problems)
    print(f"{len(reports)} pages, {bad} with problems; screenshots in {shots}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
