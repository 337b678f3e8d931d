"""Check the built book the way a reader meets it: every page opened in a real (headless) Chromium.

For each HTML page of ``book/_build/html`` (served on a local port, as a reader would with ``http.server``):

* every ``<img>`` has loaded (non-zero natural width);
* every table has rows and cells;
* no cell output shows an error or a traceback;
* every internal link resolves (the file exists and, for ``page.html#anchor``, the anchor exists on that page);
* the math is typeset by MathJax: as many rendered formulas as TeX sources, none with a TeX error;
* a full-page screenshot is saved for review (``book/_build/screenshots/<page>.png``).

Usage::

    python -m poisoncure.browser [--html book/_build/html] [--screenshots DIR]

Chromium comes from Debian's ``chromium-headless-shell`` or ``chromium`` package (``python3 tasks.py test`` installs
the first when it can), or from ``POISONCURE_CHROMIUM``; it is driven by Playwright's Python package.
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
    """Path of a Chromium binary: ``POISONCURE_CHROMIUM``, then Debian's packages, then the PATH."""
    env = os.environ.get("POISONCURE_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    for c in CHROMIUM_CANDIDATES:
        if Path(c).is_file():
            return c
    for name in ("chromium-headless-shell", "chromium", "chromium-browser"):
        if (p := shutil.which(name)) is not None:
            return p
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
  };
}
"""

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


def check_book(html_dir: Path, screenshots: Path | None = None, chromium: str | None = None,
               width: int = 1280, only: list[str] | None = None) -> list[PageReport]:
    """Open every page of the built book in headless Chromium; one report per page (see the module doc).

    ``only`` restricts the check to pages whose path (relative to ``html_dir``) contains one of the strings."""
    from playwright.sync_api import sync_playwright

    html_dir = Path(html_dir).resolve()
    if not (html_dir / "index.html").is_file():
        raise FileNotFoundError(f"no built book in {html_dir}: run `python3 tasks.py book` first")
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("no Chromium found: install Debian's chromium-headless-shell (python3 tasks.py test "
                                "does it when run as root) or set POISONCURE_CHROMIUM to a Chromium binary")
    if screenshots is not None:
        screenshots.mkdir(parents=True, exist_ok=True)
    reports, ids = [], {}
    with serve(html_dir) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            for path in pages(html_dir):
                rel = path.relative_to(html_dir).as_posix()
                if only is not None and not any(o in rel for o in only):
                    continue
                rep = PageReport(rel)
                page.goto(base + rel, wait_until="load")
                page.wait_for_function("document.readyState === 'complete'")
                has_mathjax = page.evaluate(_WAIT_MATH) if page.evaluate("!!document.querySelector('.math')") \
                    else True
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
                rep.links, link_problems = check_links(html_dir, base, state["hrefs"], ids)
                rep.problems += link_problems
                if screenshots is not None:
                    shot = screenshots / (rel.replace("/", "__").removesuffix(".html") + ".png")
                    page.screenshot(path=str(shot), full_page=True)
                reports.append(rep)
        finally:
            browser.close()
    return reports


def main(argv: list[str] | None = None) -> int:
    from . import book

    ap = argparse.ArgumentParser(prog="python -m poisoncure.browser", description=__doc__.splitlines()[0])
    ap.add_argument("--html", type=Path, default=None, help="built HTML folder (default: book/_build/html)")
    ap.add_argument("--screenshots", type=Path, default=None,
                    help="folder for one full-page screenshot per page (default: book/_build/screenshots)")
    args = ap.parse_args(argv)
    html = args.html or book.build_dir() / "html"
    shots = args.screenshots or book.build_dir() / "screenshots"
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
