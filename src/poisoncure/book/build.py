"""Build the book: Jupytext notebooks -> papermill (profile parameters) -> Jupyter Book HTML.

One execution path (STYLE: papermill-driven books). Jupyter Book never executes anything
(``execute_notebooks: off``); it renders the notebooks papermill executed into ``book/chapters/``.

Usage::

    python -m poisoncure.book build [--profile smoke] [--only 02_attack] [-p name=value ...] [--no-render]
    python -m poisoncure.book check      # every figure and table of every chapter is in the HTML
    python -m poisoncure.book pdf        # the printable edition from the built HTML (build does it too)
    python -m poisoncure.book params 02_attack

A cell error stops that chapter (papermill raises) and fails the build; the other chapters still run.
On the pages, every code cell but the ``parameters`` cell is folded behind a toggle (tag a cell ``show-input`` to
keep it open); the notebooks in ``notebooks/`` stay plain code. Under its title, every chapter offers its downloads:
the executed notebook, its Jupytext source, and the chapter and the whole book as PDF (the printable edition,
printed from the built pages by headless Chromium into ``book/_build/html/_pdf/``).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import paths
from ..experiments import profiles
from ..experiments.report import short_commit
from . import parameters


def root() -> Path:
    r = paths.project_root()
    if r is None:
        raise RuntimeError("the book is built from a clone of the project (pip install -e .)")
    return r


def notebook_sources() -> dict[str, Path]:
    """``{name: path}`` of ``notebooks/NN_*.py`` in chapter order."""
    return {p.stem: p for p in sorted((root() / "notebooks").glob("[0-9][0-9]_*.py"))}


def chapters_dir() -> Path:
    return root() / "book" / "chapters"


def build_dir() -> Path:
    return root() / "book" / "_build"


def declared_parameters(source: Path) -> dict[str, Any]:
    """Names and default values assigned in the notebook's cell tagged ``parameters``."""
    return cell_defaults(parameters_cell(source))


def cell_defaults(cell_source: str) -> dict[str, Any]:
    """Names and literal values assigned in a parameters cell's source."""
    out: dict[str, Any] = {}
    for node in ast.parse(cell_source).body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    out[t.id] = ast.literal_eval(node.value)
    return out


def parameters_cell(source: Path) -> str:
    """Source of the notebook's cell tagged ``parameters``."""
    import jupytext

    cells = [c for c in jupytext.read(source).cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{source.name} must have exactly one cell tagged 'parameters', found {len(cells)}")
    return cells[0].source


def parameter_table(profile_names: tuple[str, ...] = ("smoke", "full")) -> Any:
    """One row per (chapter, parameter): meaning, valid values and the value in each profile (a DataFrame)."""
    import pandas as pd

    rows = []
    for name, src in notebook_sources().items():
        cell = parameters_cell(src)
        declared, notes = cell_defaults(cell), parameters.comments(cell)
        per_profile = {p: profiles.notebook_parameters(p, name, declared) for p in profile_names}
        for k, default in declared.items():
            if k == "profile":
                continue
            rule = parameters.RULES.get(k)
            row = {"chapter": name, "parameter": k, "meaning": notes.get(k, ""),
                   "valid values": rule.describe() if rule else ""}
            row.update({f"{p} profile": repr(per_profile[p].get(k, default)) for p in profile_names})
            rows.append(row)
    return pd.DataFrame(rows)


def execution_log() -> Path:
    """``book/_build/execution.json``: each chapter's last run (seconds, ok, profile, device, commit)."""
    return build_dir() / "execution.json"


def execution_times() -> Any:
    """Each chapter's last recorded execution (``book/_build/execution.json``) as a DataFrame, after the build's
    :data:`SHARED_MODELS` step when it was recorded."""
    import pandas as pd

    log = execution_log()
    data = json.loads(log.read_text()) if log.is_file() else {}
    steps = [SHARED_MODELS, *notebook_sources()]
    rows = [{"chapter": n, "seconds": data[n]["seconds"], "ok": data[n]["ok"], "profile": data[n]["profile"],
             "device": data[n]["device"], "commit": data[n]["commit"]} for n in steps if n in data]
    return pd.DataFrame(rows, columns=["chapter", "seconds", "ok", "profile", "device", "commit"])


@dataclass
class Execution:
    name: str
    seconds: float
    ok: bool
    error: str = ""


def execution_report(name: str, error: Exception) -> str:
    """What a failed chapter prints: the notebook, the failing cell (index and execution count), the exception and
    its traceback (papermill's ``PapermillExecutionError`` carries them; other errors give their own text)."""
    head = f"execution report: notebook {name}"
    if hasattr(error, "cell_index"):
        trace = "\n".join(getattr(error, "traceback", []) or [])
        trace = re.sub(r"\x1b\[[0-9;]*m", "", trace)  # ANSI colours out of the CI log
        return (f"{head}, cell {error.cell_index} (execution count {getattr(error, 'exec_count', None)}): "
                f"{getattr(error, 'ename', type(error).__name__)}: {getattr(error, 'evalue', '')}\n{trace}")
    return f"{head}: {type(error).__name__}: {error}"


def execute(name: str, source: Path, parameters: dict[str, Any]) -> Execution:
    """Convert with Jupytext and execute with papermill into ``book/chapters/<name>.ipynb``."""
    import jupytext
    import papermill

    out_dir = chapters_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for cell in nb.cells:  # pages show prose, figures and the parameters; code folds behind a toggle
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if cell.cell_type == "code" and not {"parameters", "show-input", "hide-input"} & set(tags):
            tags.append("hide-input")
    nb.cells.insert(1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0,
                    markdown_cell(downloads_note(name)))
    staged = out_dir / f".{name}.source.ipynb"
    jupytext.write(nb, staged, fmt="ipynb")
    start = time.perf_counter()
    try:
        papermill.execute_notebook(str(staged), str(out_dir / f"{name}.ipynb"), parameters=parameters,
                                   kernel_name="python3", cwd=str(root()), progress_bar=False,
                                   log_output=True, stdout_file=sys.stdout, stderr_file=sys.stderr)
        ok, err = True, ""
        fold_injected_parameters(out_dir / f"{name}.ipynb")
    except Exception as e:  # PapermillExecutionError carries the cell and traceback
        ok, err = False, execution_report(name, e)
    finally:
        staged.unlink(missing_ok=True)
    return Execution(name, time.perf_counter() - start, ok, err)


def downloads_note(name: str) -> str:
    """The note under a chapter's title: its executed notebook and Jupytext source (Sphinx ``{download}`` copies
    them into ``_downloads/``) and the PDFs of the chapter and of the book (:func:`export_pdf`)."""
    return (":::{admonition} Take this chapter with you\n:class: tip\n"
            f"{{download}}`Executed notebook (.ipynb) <{name}.ipynb>` · "
            f"{{download}}`Jupytext source (.py) </notebooks/{name}.py>` · "
            f'<a href="../../{PDF_DIR}/{name}.pdf">this chapter as PDF</a> · '
            f'<a href="../../{PDF_DIR}/{PDF_BOOK}">the whole book as PDF</a>\n:::')


def markdown_cell(text: str):
    import nbformat

    return nbformat.v4.new_markdown_cell(text, metadata={"tags": ["downloads"]})


def static_dir() -> Path:
    """``book/_static``: files copied into the HTML build (generated, not tracked)."""
    return root() / "book" / "_static"


def vendor_mathjax() -> Path:
    """Copy MathJax (2.7, from the pinned ``jupyter-server-mathjax`` wheel) into ``book/_static/mathjax``.

    The pages then typeset their math with no network access: offline readers, course machines and the headless
    browser test all see rendered formulas instead of raw TeX (``_config.yml`` points ``mathjax_path`` here)."""
    import shutil

    import jupyter_server_mathjax

    src = Path(jupyter_server_mathjax.__file__).parent / "static"
    dst = static_dir() / "mathjax"
    stamp = dst / ".source"
    if stamp.is_file() and stamp.read_text() == str(src):
        return dst
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    stamp.write_text(str(src))
    return dst


def fold_injected_parameters(path: Path) -> None:
    """Fold papermill's injected-parameters cell (the values this build used) behind a toggle, like the code."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if "injected-parameters" in tags and "hide-input" not in tags:
            tags.append("hide-input")
    nbformat.write(nb, path)


def generated_dir() -> Path:
    """Page fragments the build writes from the committed results before rendering (``book/_generated``, not
    tracked): markdown pages include them, so their numbers are counted, never typed."""
    return root() / "book" / "_generated"


#: the build step that trains the models several chapters share, before the first chapter (its line in
#: ``execution.json``, on the run-times page and in the first session of the teaching plan)
SHARED_MODELS = "shared models"
#: what the teaching plan calls the steps and pages that have no chapter number
UNNUMBERED = {SHARED_MODELS: "the shared models", "98_own_model": "Use it on your own model"}

#: the teaching page's plan of sessions: (session, the chapters it covers as notebook names, and the shared models'
#: training before chapter 2); every chapter and page but the parameters page belongs to one session (a test checks
#: it)
SESSIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (1, ("01_theory_toy", SHARED_MODELS, "02_attack")), (2, ("03_poison_extraction", "04_filtering")),
    (3, ("05_class_detection", "06_neutralization")), (4, ("07_baselines",)),
    (5, ("08_full_results", "09_variable_size_sweep")), (6, ("10_reverse_engineering",)),
    (7, ("11_poishygiene",)), (8, ("12_weak_learners", "98_own_model")))


def chapter_numbers() -> dict[str, int]:
    """The number the book gives each notebook's chapter (from ``_toc.yml``'s numbered parts; a test checks that
    every file name starts with it)."""
    import yaml

    toc = yaml.safe_load((root() / "_toc.yml").read_text())
    files = [c["file"] for part in toc.get("parts", []) if part.get("numbered") for c in part.get("chapters", [])]
    return {Path(f).name: k for k, f in enumerate(files, start=1)}


def session_times_markdown() -> str:
    """The plan of sessions with each session's chapters' measured execution time in the build that wrote
    ``book/_build/execution.json`` (a MyST table and a sentence naming the profile, machine and commit)."""
    times = execution_times().set_index("chapter")
    numbers = chapter_numbers()
    lines = ["| session | chapters | their execution in this build |", "| --- | --- | --- |"]
    for session, names in SESSIONS:
        chapters = ", ".join(str(numbers.get(n, UNNUMBERED.get(n, n))) for n in names)
        have = [n for n in names if n in times.index]  # the shared models' step counts when it was recorded
        if any(n not in times.index for n in names if n != SHARED_MODELS):
            took = "not recorded"
        else:
            took = f"{times.loc[have, 'seconds'].sum() / 60:.1f} min"
        lines.append(f"| {session} | {chapters} | {took} |")
    if len(times):
        devices = ", ".join(sorted(set(times["device"])))
        commits = ", ".join(sorted({short_commit(c) for c in times["commit"]}))
        profiles_used = ", ".join(sorted(set(times["profile"])))
        where = (f"Measured by the build of this book (profile {profiles_used}; {devices}; commit {commits}). "
                 "A chapter that loads its models from the cache runs in a fraction of its first build's time.")
    else:
        where = "No chapter's execution has been recorded in this build yet."
    return "\n".join(lines) + "\n\n" + where + "\n"


def _write_atomic(path: Path, text: str) -> Path:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def write_generated() -> list[Path]:
    """Write :func:`generated_dir`'s fragments, which markdown pages include: the reproduction verdict
    (:func:`poisoncure.experiments.verdict.markdown`, in the introduction) and the sessions' measured times
    (:func:`session_times_markdown`, on the teaching page). Returns the files written."""
    from ..experiments import verdict

    out = generated_dir()
    out.mkdir(parents=True, exist_ok=True)
    return [_write_atomic(out / "verdict.md", verdict.markdown()),
            _write_atomic(out / "sessions.md", session_times_markdown())]


def render(strict: bool = True) -> int:
    """Render the executed notebooks and pages with Jupyter Book into ``book/_build/html`` (after
    :func:`write_generated`)."""
    vendor_mathjax()
    write_generated()
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe), "build", str(root()), "--path-output", str(root() / "book")]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    return subprocess.run(cmd, cwd=root()).returncode


#: the printable edition, inside the HTML build so that the pages can link it
PDF_DIR = "_pdf"
PDF_BOOK = "poisoncure-book.pdf"


def pdf_dir() -> Path:
    return build_dir() / "html" / PDF_DIR


def toc_pages() -> list[str]:
    """The book's pages in reading order, as paths of the built HTML (``book/intro.html``, ...), from ``_toc.yml``."""
    import yaml

    toc = yaml.safe_load((root() / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for part in toc.get("parts", []) for c in part.get("chapters", [])]
    return [f"{f}.html" for f in files]


def export_pdf() -> Any:
    """Print the built book (every page of ``_toc.yml``, in order) to ``book/_build/html/_pdf/``: one PDF per page and
    :data:`PDF_BOOK` for the whole book (:func:`poisoncure.book.browser.export_pdf`)."""
    import yaml

    from . import browser

    title = yaml.safe_load((root() / "_config.yml").read_text())["title"]
    edition = browser.export_pdf(build_dir() / "html", toc_pages(), pdf_dir(), title, PDF_BOOK)
    size = edition.book.stat().st_size / 2**20
    print(f"PDF edition: {edition.book} ({edition.pages} pages, {size:.1f} MB, {len(edition.chapters)} page files) "
          f"in {edition.seconds:.0f} s", flush=True)
    return edition


def record_execution(res: Execution, profile: str) -> None:
    """Add one chapter's run to ``book/_build/execution.json`` (written atomically)."""
    from .. import provenance

    log = execution_log()
    log.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(log.read_text()) if log.is_file() else {}
    data[res.name] = {"seconds": round(res.seconds, 1), "ok": res.ok, "profile": profile,
                      "device": provenance.device_name(), "commit": provenance.git_commit()}
    _write_atomic(log, json.dumps(data, indent=1))


def build(profile: str = "smoke", only: list[str] | None = None, overrides: dict[str, Any] | None = None,
          do_render: bool = True) -> int:
    """Execute the notebooks of ``profile`` (all, or ``only``) and render the book. Returns an exit code.

    ``overrides`` ({name: value}) apply to the executed notebooks that declare them; names and values are
    checked before anything runs. With ``only`` on a fresh clone, the chapters never executed run first (with the
    profile's values), so that one command always ends with a complete book."""
    sources = notebook_sources()
    names = only or list(sources)
    unknown = [n for n in names if n not in sources]
    if unknown:
        raise SystemExit(f"unknown notebook(s) {unknown}; notebooks are {list(sources)}")
    # kernels inherit this environment: figures must render inline (a headless MPLBACKEND=Agg would make
    # glue() store text instead of images, and the pages would silently lose their figures)
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    # resolve every parameter set first: bad names fail before any work
    # a page needs every chapter executed once: chapters never executed (a fresh clone) run first, in book order,
    # with the profile's values; the overrides apply to the chapters asked for
    never = [n for n in sources if n not in names and not (chapters_dir() / f"{n}.ipynb").is_file()] \
        if do_render else []
    if never:
        print(f"chapters never executed, run first with profile {profile!r}: {never}", flush=True)
    names = [n for n in sources if n in set(names) | set(never)]
    plan, values = {}, {}  # injected parameters; every value the notebook will run with
    for n in names:
        declared = declared_parameters(sources[n])
        try:
            plan[n] = profiles.notebook_parameters(profile, n, declared, None if n in never else overrides)
            values[n] = {**declared, **plan[n]}
            parameters.check(n, values[n])
        except ValueError as e:
            raise SystemExit(str(e)) from None
    results = []
    shared = shared_model_recipes(values)
    if shared:
        res = train_shared_models(shared)
        results.append(res)
        record_execution(res, profile)
    for n in names:
        print(f"\n=== executing {n} with profile {profile}: {plan[n]}", flush=True)
        res = execute(n, sources[n], plan[n])
        print(f"=== {n}: {'ok' if res.ok else 'FAILED'} in {res.seconds:.0f} s", flush=True)
        if not res.ok:
            print(res.error[-4000:], file=sys.stderr)
        results.append(res)
        record_execution(res, profile)  # after each chapter: a later chapter (the run-times page) reads it
    failed = [r.name for r in results if not r.ok]
    rc = 1 if failed else 0
    if do_render:
        missing = [n for n in sources if not (chapters_dir() / f"{n}.ipynb").is_file()]
        if missing:
            print(f"not rendering: notebooks never executed: {missing}", file=sys.stderr)
            return 1
        rc = rc or render()
        if rc == 0:
            export_pdf()
    if failed:
        print(f"FAILED notebooks: {failed}", file=sys.stderr)
    return rc


def shared_model_recipes(params: dict[str, dict[str, Any]]) -> list[tuple[Any, str]]:
    """The models the chapters of one build share: for every notebook whose parameters ({notebook: values}) hold
    the shared recipe's names and ``poisons``, one recipe per poisoned model and the clean reference, each recipe
    once, with the device the notebook names (chapters 2-7 and 10-11 load the same cached models)."""
    from ..experiments.store import Recipe

    out: dict[str, Any] = {}
    for values in params.values():
        if "poisons" not in values or any(k not in values for k in Recipe.param_names()):
            continue
        for poison in (*values["poisons"], "clean"):
            recipe = Recipe.from_params(values, poison=poison)
            out.setdefault(json.dumps(recipe.cache_config(), sort_keys=True, default=str),
                           (recipe, values.get("device", "auto")))
    return list(out.values())


def train_shared_models(recipes: list[tuple[Any, str]]) -> Execution:
    """Train (or find in the cache) the models the chapters share, once, before any chapter runs: a chapter then
    spends its time on its own idea, and no chapter pays for the models of all the others (chapter 2 shows the
    models and the time each took to train, from their provenance)."""
    from ..data import load_cifar10
    from ..experiments.store import get_model

    print(f"\n=== {SHARED_MODELS}: {len(recipes)} model(s) the chapters share", flush=True)
    start = time.perf_counter()
    try:
        cifar = load_cifar10()
        for r, device in recipes:
            tm = get_model(r, device=device, data=cifar)
            print(f"{r.poison:6s}: {'in the cache' if tm.from_cache else 'trained'} "
                  f"({tm.provenance['wall_seconds']:.0f} s when trained; clean accuracy "
                  f"{tm.metrics.clean_accuracy:.1f} %)", flush=True)
        ok, err = True, ""
    except Exception as e:  # reported like a chapter's failure; the chapters that need the models fail too
        ok, err = False, f"execution report: {SHARED_MODELS}: {type(e).__name__}: {e}"
        print(err, file=sys.stderr)
    res = Execution(SHARED_MODELS, time.perf_counter() - start, ok, err)
    print(f"=== {SHARED_MODELS}: {'ok' if ok else 'FAILED'} in {res.seconds:.0f} s", flush=True)
    return res


# ----------------------------------------------------------------------------------------------- check
GLUE_PREFIX = "application/papermill.record/"


def _outputs(nb: dict) -> tuple[int, int, list[str]]:
    """(image outputs, HTML table outputs, error outputs) of an executed notebook."""
    images = tables = 0
    errors = []
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                errors.append(f"{out.get('ename')}: {out.get('evalue')}")
            # glued outputs carry their MIME types under the papermill record prefix
            data = {k.removeprefix(GLUE_PREFIX): v for k, v in out.get("data", {}).items()}
            if any(k.startswith("image/") for k in data):
                images += 1
            html = data.get("text/html", "")
            html = "".join(html) if isinstance(html, list) else html
            tables += html.count("<table")
    return images, tables, errors


#: warnings a chapter may print without failing the build: a solver's convergence note (it depends on the CPU's
#: numerics, and the defenses report their own convergence) and a rebuilt cache entry (shown on the page as a note)
EXPECTED_WARNINGS = ("ConvergenceWarning", "CacheWarning")
_WARNING_LINE = re.compile(r":\d+: (\w*Warning): (.*)")


def stderr_problems(nb: dict) -> list[str]:
    """Tracebacks and unexpected warnings an executed notebook wrote to stderr (the rendered pages drop stderr,
    ``nb_output_stderr: remove``, so this is read from the notebook itself): ``cell <n>: stderr traceback (<last
    line>)`` or ``cell <n>: <Category>: <message>`` for a warning not in :data:`EXPECTED_WARNINGS`."""
    problems = []
    for i, cell in enumerate(nb.get("cells", [])):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                text = out.get("text", "")
                text = "".join(text) if isinstance(text, list) else text
                if "Traceback (most recent call last)" in text:
                    last = [line for line in text.strip().splitlines() if line.strip()][-1]
                    problems.append(f"cell {i}: stderr traceback ({last.strip()})")
                for match in _WARNING_LINE.finditer(text):
                    if match.group(1) not in EXPECTED_WARNINGS:
                        problems.append(f"cell {i}: {match.group(1)}: {match.group(2)[:160]}")
    return problems


#: a table cell that shows Python's own words for yes, no or nothing rather than the book's (formatting.YES, NO,
#: MISSING)
RAW_CELL = re.compile(r"<td[^>]*>\s*(True|False|NaN|nan|None|<NA>|&lt;NA&gt;)\s*</td>")
#: pages whose tables show parameter values as written in Python (``None``, ``True``), on purpose
LITERAL_PAGES = frozenset({"99_parameters"})


def check(html_dir: Path | None = None) -> list[str]:
    """Problems with the built HTML: a chapter page missing, fewer figures or tables on a page than its
    executed notebook produced, an image file missing or empty, an error output, a traceback on the page or in
    the notebook's stderr, a table cell that reads ``True``, ``False``, ``NaN`` or ``None`` (outside
    :data:`LITERAL_PAGES`)."""
    html_dir = html_dir or build_dir() / "html"
    problems = []
    for name in notebook_sources():
        executed = chapters_dir() / f"{name}.ipynb"
        page = html_dir / "book" / "chapters" / f"{name}.html"
        if not executed.is_file():
            problems.append(f"{name}: not executed ({executed} missing)")
            continue
        if not page.is_file():
            problems.append(f"{name}: page {page} missing")
            continue
        n_img, n_tab, errors = _outputs(json.loads(executed.read_text()))
        problems += [f"{name}: error output {e}" for e in errors]
        problems += [f"{name}: {e}" for e in stderr_problems(json.loads(executed.read_text()))]
        html = page.read_text()
        srcs = re.findall(r'<img[^>]+src="([^"]+)"', html)
        srcs = [s for s in srcs if "_images/" in s or s.startswith("data:image")]
        if len(srcs) < n_img:
            problems.append(f"{name}: notebook has {n_img} figures, page shows {len(srcs)}")
        for s in srcs:
            if s.startswith("data:"):
                continue
            f = (page.parent / s).resolve()
            if not f.is_file() or f.stat().st_size == 0:
                problems.append(f"{name}: image {s} missing or empty")
        if html.count("<table") < n_tab:
            problems.append(f"{name}: notebook has {n_tab} tables, page shows {html.count('<table')}")
        if "Traceback (most recent call last)" in html:
            problems.append(f"{name}: page shows a traceback")
        if name not in LITERAL_PAGES:
            raw = sorted(set(RAW_CELL.findall(html)))
            if raw:
                problems.append(f"{name}: table cells read {raw} (the book writes ✓ / ✗ and a dash: "
                                "poisoncure.book.formatting)")
        if n_img == 0:
            problems.append(f"{name}: chapter has no figure")
    return problems


def _parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise SystemExit(f"-p expects name=value, got {text!r}")
    key, value = text.split("=", 1)
    import yaml

    return key.strip(), yaml.safe_load(value)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m poisoncure.book", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="execute notebooks with papermill and render the book")
    b.add_argument("--profile", default="smoke", choices=profiles.available())
    b.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="execute only these notebooks (e.g. 02_attack)")
    b.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="override a parameter of the executed notebooks (YAML value)")
    b.add_argument("--no-render", action="store_true", help="execute only; do not run Jupyter Book")
    sub.add_parser("check", help="check that the built HTML shows every figure and table")
    sub.add_parser("pdf", help="print the built HTML to PDF (one file per page and one for the book)")
    p = sub.add_parser("params", help="list a notebook's parameters: default, meaning, valid values")
    p.add_argument("notebook")
    args = ap.parse_args(argv)
    if args.cmd == "build":
        overrides = dict(_parse_override(t) for t in args.param)
        return build(args.profile, args.only, overrides, not args.no_render)
    if args.cmd == "pdf":
        export_pdf()
        return 0
    if args.cmd == "check":
        problems = check()
        print("\n".join(problems) if problems else "book OK: every figure and table is in the HTML")
        return 1 if problems else 0
    src = notebook_sources().get(args.notebook)
    if src is None:
        raise SystemExit(f"unknown notebook {args.notebook!r}; notebooks are {list(notebook_sources())}")
    cell = parameters_cell(src)
    notes = parameters.comments(cell)
    for k, v in cell_defaults(cell).items():
        rule = parameters.RULES.get(k)
        print(f"{k} = {v!r}\n    {notes.get(k, '')}\n    valid: {rule.describe() if rule else '?'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
