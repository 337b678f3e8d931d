"""How the project installs and what it needs beyond pip: the lean library, the locked book environment,
licences and citation, and the fallbacks for Fashion-MNIST and Chromium on machines without apt or root."""

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import yaml

from poisoncure import data
from poisoncure.book import browser
from tests.test_poishygiene import _write_idx

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = ROOT / "requirements" / "book.lock"


def _name(req: str) -> str:
    return re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower().replace("_", "-")


def _locked() -> dict[str, tuple[str, int]]:
    """{package: (version, number of hashes)} of requirements/book.lock."""
    out, current = {}, None
    for line in LOCK.read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9_.\-]+)==([^ ;\\]+)", line):
            current = m.group(1).lower().replace("_", "-")
            out[current] = (m.group(2), 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            out[current] = (out[current][0], out[current][1] + 1)
    return out


def test_the_library_installs_lean_and_the_book_tool_chain_is_an_extra():
    core = {_name(d) for d in PYPROJECT["project"]["dependencies"]}
    assert core == {"torch", "torchvision", "numpy", "scipy", "scikit-learn", "scikit-image", "tqdm", "pyyaml"}
    assert not any("==" in d for d in PYPROJECT["project"]["dependencies"]), "the library takes ranges, not pins"
    extras = PYPROJECT["project"]["optional-dependencies"]
    book = {_name(d) for d in extras["book"]}
    assert {"jupyter-book", "papermill", "playwright", "pypdf", "pandas", "matplotlib"} <= book
    assert {"ray", "submitit"} == {_name(d) for d in extras["scale"]}
    assert "pot" not in {_name(d) for group in [PYPROJECT["project"]["dependencies"], *extras.values()] for d in group}


def test_the_lock_pins_every_dependency_with_hashes_inside_its_declared_range():
    from packaging.requirements import Requirement

    locked = _locked()
    assert len(locked) > 100, "the lock pins the transitive dependencies too"
    assert all(n_hashes >= 1 for _, n_hashes in locked.values()), [k for k, v in locked.items() if v[1] == 0]
    extras = PYPROJECT["project"]["optional-dependencies"]
    declared = [*PYPROJECT["project"]["dependencies"], *(d for group in extras.values() for d in group)]
    for text in declared:
        req = Requirement(text)
        if req.name == "poisoncure":
            continue
        name = req.name.lower().replace("_", "-")
        assert name in locked, f"{name} is declared but not in the lock: run python3 tasks.py lock"
        assert req.specifier.contains(locked[name][0], prereleases=True), (text, locked[name][0])
    assert locked["torch"][0] == "2.14.1"  # the build the committed results were computed with


def test_setup_installs_the_lock_with_hash_checking_and_environment_yml_uses_it():
    tasks = (ROOT / "tasks.py").read_text()
    assert '"--require-hashes", "--no-deps", "-r", LOCK' in tasks
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == ["-r requirements/book.lock"]
    assert "python=3.11" in env["dependencies"]
    for name in ("pyproject.toml", "environment.yml"):  # no pointer to a file that does not exist
        for ref in re.findall(r"tests/\w+\.py", (ROOT / name).read_text()):
            assert (ROOT / ref).is_file(), f"{name} names {ref}, which does not exist"


#: import names of the book's and the engines' packages (the extras), absent from a library-only install
BOOK_ONLY = {"pandas", "matplotlib", "mpl_toolkits", "pylab", "seaborn", "papermill", "jupytext", "nbformat",
             "playwright", "pypdf", "myst_nb", "myst_parser", "sphinx", "jupyter_book", "ray", "submitit", "art",
             "ipython", "ipykernel"}
CORE = ("attacks", "models", "train", "gradients", "signal", "metrics", "data", "cache", "expansion",
        "clean_label", "toy", "experiments", *(f"defenses.{p.stem}" for p in sorted(
            (ROOT / "src" / "poisoncure" / "defenses").glob("[a-z]*.py"))))


def _site_without_book_packages(dest: Path) -> Path:
    """A copy of this environment's site-packages (as symbolic links) without the extras' packages."""
    import sysconfig

    site = Path(sysconfig.get_paths()["purelib"])
    dest.mkdir()
    for entry in site.iterdir():
        top = re.split(r"[-.]", entry.name, maxsplit=1)[0].lower()
        if top not in BOOK_ONLY and entry.suffix != ".pth" and not entry.name.startswith("__editable__"):
            (dest / entry.name).symlink_to(entry)
    return dest


def test_the_library_core_runs_without_the_book_tool_chain(tmp_path):
    """Python started on a site-packages without the book's and engines' packages (as a library-only install
    has): the core imports, trains a tiny model and takes its input gradients."""
    site = _site_without_book_packages(tmp_path / "site")
    code = f"""
import importlib, importlib.util, sys
for name in {sorted(BOOK_ONLY)!r}:
    assert importlib.util.find_spec(name) is None, name + ' should not be importable here'
for m in {CORE!r}:
    importlib.import_module('poisoncure.' + m)
import numpy as np
from poisoncure import data, gradients, models, train
x = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
images = data.ImageSet(x, np.arange(40) % 10)
net = models.small_cnn(width=4)
train.fit(net, images, train.TrainConfig(epochs=1, batch_size=20), device='cpu', progress=False)
g = gradients.input_gradients(net, x[:8], 3, device='cpu')
assert np.isfinite(np.asarray(g)).all()
print('ok')
"""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{site}", "PYTHONNOUSERSITE": "1"}
    res = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().splitlines()[-1] == "ok"


def test_licence_and_citation_files_agree_with_the_metadata():
    assert PYPROJECT["project"]["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "CC BY 4.0" in (ROOT / "LICENSE").read_text()
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["version"] == PYPROJECT["project"]["version"] and cff["license"] == "MIT"
    assert "1911.08040" in cff["preferred-citation"]["url"]
    footer = yaml.safe_load((ROOT / "_config.yml").read_text())["html"]["extra_footer"]
    assert all(lic in footer for lic in browser.FOOTER_LICENCES)
    assert "file: book/cite" in (ROOT / "_toc.yml").read_text()


# ------------------------------------------------------------------ Fashion-MNIST without Debian's package
def _fake_mirror(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for part, n in (("train", 6), ("t10k", 4)):
        _write_idx(folder, f"{part}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(folder, f"{part}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return folder


#: a mirror that refuses at once (nothing listens on port 9 of the loopback)
NO_MIRROR = "http://127.0.0.1:9/"


@pytest.mark.network
def test_fashion_mnist_comes_through_torchvisions_downloader_from_a_mirror(tmp_path, monkeypatch):
    """Offline, the downloader is pointed at a local copy (served on localhost): the four files land whole in the
    download folder, are found there afterwards, and read (verify=False: hand-made content)."""
    monkeypatch.delenv("POISONCURE_FASHION_MNIST", raising=False)
    monkeypatch.setenv("POISONCURE_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setattr(data, "FASHION_DEBIAN_DIR", tmp_path / "no-debian-package")
    assert data.find_fashion_mnist() is None
    with browser.serve(_fake_mirror(tmp_path / "mirror")) as mirror:
        folder = data.fetch_fashion_mnist(mirror=mirror)
    assert folder == tmp_path / "data" / "fashion-mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(data.FASHION_FILES)  # no partial files left
    assert data.find_fashion_mnist() == folder
    d = data.load_fashion_mnist(verify=False)
    assert d.train.x.shape == (6, 32, 32, 3)
    with pytest.raises(data.DataCorruptError, match="SHA-256"):
        data.load_fashion_mnist()  # the published content is still what the default checks


def test_fashion_mnist_unavailable_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("POISONCURE_FASHION_MNIST", str(tmp_path / "empty"))
    monkeypatch.setenv(data.FASHION_MIRROR_ENV, NO_MIRROR)
    with pytest.raises(data.DataNotFoundError, match="apt-get install dataset-fashion-mnist") as err:
        data.load_fashion_mnist()
    assert "POISONCURE_FASHION_MNIST" in str(err.value)


# ------------------------------------------------------------------ Chromium without Debian's package
def _no_system_chromium(monkeypatch, tmp_path):
    monkeypatch.delenv("POISONCURE_CHROMIUM", raising=False)
    monkeypatch.setattr(browser, "CHROMIUM_CANDIDATES", ())
    monkeypatch.setattr(browser.shutil, "which", lambda name: None)
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", str(tmp_path / "ms-playwright"))


def test_playwrights_managed_chromium_is_found_when_no_system_chromium(tmp_path, monkeypatch):
    """Where Playwright's install would put its headless shell, a local copy (here a stand-in executable) is used."""
    _no_system_chromium(monkeypatch, tmp_path)
    assert browser.find_chromium() is None
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        full = Path(pw.chromium.executable_path)
    revision = full.parents[1].name.rsplit("-", 1)[-1]
    shell = full.parents[2] / f"chromium_headless_shell-{revision}" / "chrome-headless-shell-linux64" / \
        "chrome-headless-shell"
    shell.parent.mkdir(parents=True)
    shell.write_text("#!/bin/sh\n")
    shell.chmod(0o755)
    assert browser.find_chromium() == str(shell)


def _tasks_module():
    spec = importlib.util.spec_from_file_location("project_tasks", ROOT / "tasks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_uv_comes_from_its_own_pin_and_hashes_in_the_lock():
    tasks = _tasks_module()
    lines = tasks.locked_requirement("uv").splitlines()
    version, n_hashes = _locked()["uv"]
    assert lines[0].startswith(f"uv=={version} ")
    assert len(lines) == 1 + n_hashes >= 2 and all(line.strip().startswith("--hash=sha256:") for line in lines[1:])
    with pytest.raises(KeyError):
        tasks.locked_requirement("no-such-package")


def _fake_setup(tasks, tmp_path, monkeypatch, failing: str = "") -> list[list[str]]:
    """Run ``tasks.setup()`` into a venv under ``tmp_path`` with ``run`` replaced: every command is recorded and
    succeeds, except the uv bootstrap or uv's install of the lock when ``failing`` names it."""
    venv = tmp_path / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    for name, value in {"VENV": venv, "PY": venv / "bin" / "python", "STAMP": venv / ".stamp"}.items():
        monkeypatch.setattr(tasks, name, value)
    calls = []

    def run(*cmd, check=True):
        cmd = [str(c) for c in cmd]
        calls.append(cmd)
        if "uv-requirement.txt" in " ".join(cmd):  # the bootstrap: pip installs uv from the lock's pin
            if failing == "uv bootstrap":
                return 1
            (venv / "bin" / "uv").touch()
            return 0
        return 1 if cmd[0].endswith("uv") and failing == "uv install" else 0

    monkeypatch.setattr(tasks, "run", run)
    tasks.setup()
    assert (venv / ".stamp").is_file()
    assert calls[-1][-3:] == ["--no-deps", "-e", "."]  # the package goes in editable either way
    return calls


def test_setup_installs_the_lock_with_uv_hash_checked_and_with_the_system_certificates(tmp_path, monkeypatch):
    """uv installs the lock (hash-checked, no resolution) and pip does not install it again. uv reads neither pip's
    configuration nor SSL_CERT_FILE unless told: in a clean environment behind a proxy whose CA is only in the
    system's store it failed ("invalid peer certificate: UnknownIssuer", AMD EPYC build machine, `env -i`) and the
    set-up fell back to pip at 3-4x the time; ``--system-certs`` makes it use that store."""
    tasks = _tasks_module()
    calls = _fake_setup(tasks, tmp_path, monkeypatch)
    installs = [c for c in calls if str(tasks.LOCK) in c]
    assert len(installs) == 1 and installs[0][0].endswith("uv") and installs[0][1:3] == ["pip", "install"]
    assert {"--system-certs", "--require-hashes", "--no-deps", "--compile-bytecode"} <= set(installs[0])


@pytest.mark.parametrize("failing", ["uv install", "uv bootstrap"])
def test_setup_falls_back_to_pip_when_uv_fails(tmp_path, monkeypatch, failing):
    """Where uv cannot be installed or cannot install the lock (no wheel, no index it can reach), pip installs the
    lock, hash-checked; the package goes in editable either way and the stamp is written."""
    tasks = _tasks_module()
    calls = _fake_setup(tasks, tmp_path, monkeypatch, failing)
    installs = [c for c in calls if str(tasks.LOCK) in c]
    assert installs[-1][:3] == [str(tasks.PY), "-m", "pip"]
    assert installs[-1][-4:] == ["--require-hashes", "--no-deps", "-r", str(tasks.LOCK)]
    assert len(installs) == (2 if failing == "uv install" else 1)  # uv tried first where it could be installed


@pytest.mark.network
def test_tasks_stop_at_once_without_apt_and_without_the_data(tmp_path, monkeypatch):
    """apt-get hidden from the PATH, no copy of Fashion-MNIST, no mirror reachable: the set-up step stops with a
    message naming what to install (and a local mirror given, it completes)."""
    tasks = _tasks_module()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no apt-get (and nothing else) on the PATH
    monkeypatch.setenv("POISONCURE_FASHION_MNIST", str(tmp_path / "fmnist"))
    monkeypatch.setenv(data.FASHION_MIRROR_ENV, NO_MIRROR)
    with pytest.raises(SystemExit) as stop:
        tasks.ensure_fashion_mnist()
    assert "apt-get install dataset-fashion-mnist" in str(stop.value)
    assert "POISONCURE_FASHION_MNIST" in str(stop.value)
    with browser.serve(_fake_mirror(tmp_path / "mirror")) as mirror:
        monkeypatch.setenv(data.FASHION_MIRROR_ENV, mirror)
        tasks.ensure_fashion_mnist()
    assert sorted(p.name for p in (tmp_path / "fmnist").iterdir()) == sorted(data.FASHION_FILES)


def test_tasks_stop_at_once_without_a_chromium(tmp_path, monkeypatch):
    tasks = _tasks_module()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("POISONCURE_CHROMIUM", str(tmp_path / "no-chromium"))  # named, but not there
    monkeypatch.setenv("PLAYWRIGHT_DOWNLOAD_HOST", "http://127.0.0.1:9")  # Playwright's download refused at once
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", str(tmp_path / "ms-playwright"))
    with pytest.raises(SystemExit) as stop:
        tasks.ensure_chromium()
    assert "apt-get install chromium-headless-shell" in str(stop.value)
    assert "playwright install --only-shell chromium" in str(stop.value)
