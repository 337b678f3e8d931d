#!/usr/bin/env python3
"""Project tasks with nothing but Python 3.11 and pip (no make, conda or internet beyond PyPI needed).

    python3 tasks.py book    # create .venv, install everything, execute every notebook (smoke), render HTML
    python3 tasks.py test    # the same install, lint, unit tests, the book build, and checks on the HTML

Extra: ``python3 tasks.py book --profile full``, ``python3 tasks.py book --only 02_attack -p epochs=6``,
``python3 tasks.py setup`` (install only), ``python3 tasks.py lint``.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".poisoncure-installed"


def run(*cmd: str | Path, check: bool = True) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    rc = subprocess.run([str(c) for c in cmd], cwd=ROOT).returncode
    if check and rc != 0:
        sys.exit(rc)
    return rc


def setup() -> None:
    """Create ``.venv`` and install the pinned dependencies and the package (skipped when up to date)."""
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"Python 3.11 is required, this is {sys.version.split()[0]}")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.is_file() and STAMP.read_text() == wanted and PY.exists():
        return
    start = time.perf_counter()
    if not PY.exists():
        venv.create(VENV, with_pip=True)
    run(PY, "-m", "pip", "install", "--disable-pip-version-check", "-q", "-e", ".")
    STAMP.write_text(wanted)
    print(f"installed in {time.perf_counter() - start:.0f} s", flush=True)


def pytest(*args: str) -> None:
    rc = run(PY, "-m", "pytest", *args, check=False)
    if rc == 5:
        sys.exit("pytest collected no tests: counted as a failure")
    if rc != 0:
        sys.exit(rc)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("setup", "book", "test", "lint"):
        sys.exit(__doc__)
    cmd, rest = sys.argv[1], sys.argv[2:]
    setup()
    if cmd == "lint":
        run(PY, "-m", "ruff", "check", ".")
    elif cmd == "book":
        run(PY, "-m", "poisoncure.book", "build", *rest)
        print(f"\nopen {ROOT / 'book' / '_build' / 'html' / 'index.html'} in a browser", flush=True)
    elif cmd == "test":
        run(PY, "-m", "ruff", "check", ".")
        pytest("-m", "not book")
        run(PY, "-m", "poisoncure.book", "build", "--profile", "smoke")
        pytest("-m", "book")


if __name__ == "__main__":
    main()
