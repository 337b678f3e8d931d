"""The package's layers, checked from its source: imports run one way and never in a circle.

Three layers, from the bottom:

* **core** — the library a researcher uses on their own model: data, attacks, models, training, input gradients,
  the paper's maths (``signal``), metrics, the cache and provenance, and one module per defense (``defenses``);
* **experiments** (the package ``experiments``) — what the book runs on the core: the shared recipes and cached
  models (``store``), every defense on one model in one call (``pipeline``), the runner and its grids (``runner``,
  ``grids``), the profiles, the paper's numbers and the tables and verdict built from result files;
* **book** (the package ``book``) — building, checking and drawing the book: ``build``, ``browser``, ``parameters``,
  ``plots``, and ``pages`` (what each chapter shows, built from its results).

A module may import from its own layer and the layers below it, never from a layer above; and no chain of
imports, module-level or inside a function, leads from a module back to itself.
"""

import ast
from pathlib import Path

import pytest

import poisoncure

PACKAGE = Path(poisoncure.__file__).parent
BOOK = {"book"}  #: the book tooling's package (build, browser, parameters, plots, pages)
EXPERIMENTS = {"experiments"}  #: the experiment layer's package (store, pipeline, grids, runner, paper numbers, ...)


def modules() -> dict[str, Path]:
    """Dotted name relative to the package (``defenses.spectral``; the package itself is ``''``) -> file."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports anywhere in its source (module level or inside functions)."""
    here = name.split(".") if name else []
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                module = ".".join(base + (node.module.split(".") if node.module else []))
            elif (node.module or "").split(".")[0] == "poisoncure":
                module = node.module.removeprefix("poisoncure").lstrip(".")
            else:
                continue
            for alias in node.names:
                sub = f"{module}.{alias.name}" if module else alias.name
                found.add(sub if sub in known else module)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("poisoncure").lstrip(".") for a in node.names
                      if a.name.split(".")[0] == "poisoncure"}
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def layer(name: str) -> int:
    top = name.split(".")[0]
    return 2 if top in BOOK else 1 if top in EXPERIMENTS else 0


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), plus self-loops."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    return out


def test_every_module_is_in_a_layer_that_exists():
    names = set(modules())
    assert BOOK <= names and EXPERIMENTS <= names, (BOOK | EXPERIMENTS) - names
    assert {"attacks", "models", "train", "signal", "defenses.poison_cure"} <= {n for n in names if layer(n) == 0}


def test_imports_run_downwards_only():
    g = graph()
    upwards = sorted((m, d) for m, deps in g.items() for d in deps if layer(d) > layer(m))
    assert upwards == [], "a module imports from a layer above its own: " + ", ".join(f"{m} -> {d}" for m, d in upwards)


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_the_checks_see_a_planted_cycle_and_an_upward_import():
    g = {k: set(v) for k, v in graph().items()}
    g["signal"].add("experiments.verdict")  # core -> experiments
    g["experiments.verdict"].add("signal")
    assert any({"signal", "experiments.verdict"} <= set(c) for c in cycles(g))
    assert any(layer(d) > layer(m) for m, deps in g.items() for d in deps)


def test_the_layer_packages_load_their_names_on_first_use():
    """``poisoncure.experiments.X`` reads the store's X and ``poisoncure.book.X`` the build's, loaded on first use:
    importing the paper's numbers or the profiles loads no torch."""
    import subprocess
    import sys

    from poisoncure import book, experiments
    from poisoncure.book import build
    from poisoncure.experiments import store

    assert experiments.Recipe is store.Recipe and experiments.get_model is store.get_model
    assert book.notebook_sources is build.notebook_sources and book.plots.__name__ == "poisoncure.book.plots"
    for package in (experiments, book):
        with pytest.raises(AttributeError, match="no attribute 'nothing_of_that_name'"):
            package.nothing_of_that_name  # noqa: B018
    code = ("import sys; import poisoncure.experiments.paper, poisoncure.experiments.profiles; "
            "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() \
        == "False"
