#!/usr/bin/env python3
"""Project tasks with nothing but Python 3.11 and pip (no make, conda or internet beyond PyPI needed).

    python3 tasks.py book    # create .venv, install everything, execute every notebook (smoke), render HTML
    python3 tasks.py test    # the same install, lint, unit tests, the book build, and checks on the HTML
                             # (including every page opened in headless Chromium, installed with apt-get if missing)

Both install Debian's dataset-fashion-mnist with apt-get when it is missing and the user is root (PoisHygiene's data).

Extra: ``python3 tasks.py book --profile full``, ``python3 tasks.py book --only 02_attack -p epochs=6``,
``python3 tasks.py setup`` (install only), ``python3 tasks.py lint``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".poisoncure-installed"
#: where Debian's dataset-fashion-mnist package puts the training images (see poisoncure.data.load_fashion_mnist)
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


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


def apt_install(*packages: str) -> bool:
    """Install Debian packages with apt-get when running as root (as on the CI machines); False elsewhere."""
    if not (shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0):
        return False
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    if run(*install, check=False) != 0:
        run("apt-get", "update", "-q")
        run(*install)
    return True


def ensure_chromium() -> None:
    """The browser test needs Chromium: install Debian's chromium-headless-shell (about 100 MB) when missing.

    Needs root and apt-get (as on the CI machines); elsewhere it prints how to provide one, and the browser test
    is skipped with that reason (it fails instead when the CI variable is set)."""
    probe = "from poisoncure.browser import find_chromium; print(find_chromium() or '')"
    found = subprocess.run([str(PY), "-c", probe], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    if found or apt_install("chromium-headless-shell"):
        return
    print("no Chromium found for the browser test: install Debian's chromium-headless-shell (or chromium), or set "
          "POISONCURE_CHROMIUM to a Chromium binary", flush=True)


def ensure_fashion_mnist() -> None:
    """PoisHygiene's experiments use Fashion-MNIST from Debian's dataset-fashion-mnist (30 MB): install it when
    missing and no other copy is named by POISONCURE_FASHION_MNIST. Elsewhere print how to provide it."""
    if os.environ.get("POISONCURE_FASHION_MNIST") or FASHION_MNIST.is_file():
        return
    if apt_install("dataset-fashion-mnist"):
        return
    print("Fashion-MNIST not found: install Debian's dataset-fashion-mnist, or set POISONCURE_FASHION_MNIST to a "
          "folder with the four original *-ubyte.gz files", flush=True)


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
    if cmd in ("book", "test"):
        ensure_fashion_mnist()
    if cmd == "lint":
        run(PY, "-m", "ruff", "check", ".")
    elif cmd == "book":
        run(PY, "-m", "poisoncure.book", "build", *rest)
        print(f"\nopen {ROOT / 'book' / '_build' / 'html' / 'index.html'} in a browser", flush=True)
    elif cmd == "test":
        run(PY, "-m", "ruff", "check", ".")
        pytest("-m", "not book")
        run(PY, "-m", "poisoncure.book", "build", "--profile", "smoke")
        ensure_chromium()
        pytest("-m", "book")


if __name__ == "__main__":
    main()
