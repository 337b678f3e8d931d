import json
from dataclasses import dataclass

import numpy as np
import pytest

from poisoncure.cache import Cache, CacheWarning, canonical, config_hash


def _builder(calls):
    def build(folder):
        calls.append(1)
        np.save(folder / "x.npy", np.arange(5))
        return {"note": "built"}
    return build


def _load(folder):
    return np.load(folder / "x.npy")


def test_builds_once_then_hits(cache):
    calls = []
    a = cache.get_or_build("thing", {"a": 1}, _builder(calls), _load)
    b = cache.get_or_build("thing", {"a": 1}, _builder(calls), _load)
    assert calls == [1] and not a.hit and b.hit and b.info == {"note": "built"}
    np.testing.assert_array_equal(b.value, np.arange(5))


def test_different_config_different_entry(cache):
    calls = []
    cache.get_or_build("thing", {"a": 1}, _builder(calls), _load)
    cache.get_or_build("thing", {"a": 2}, _builder(calls), _load)
    assert len(calls) == 2
    assert config_hash("thing", {"a": 1}) != config_hash("thing", {"a": 1}, version="9.9")


def test_corrupt_payload_is_rebuilt_with_a_warning(cache):
    calls = []
    res = cache.get_or_build("thing", {"a": 1}, _builder(calls), _load)
    (res.path / "x.npy").write_bytes(b"garbage")
    with pytest.warns(CacheWarning, match="SHA-256"):
        again = cache.get_or_build("thing", {"a": 1}, _builder(calls), _load)
    assert len(calls) == 2 and not again.hit
    np.testing.assert_array_equal(again.value, np.arange(5))


def test_stale_or_unreadable_manifest_is_rebuilt(cache):
    calls = []
    res = cache.get_or_build("thing", {"a": 1}, _builder(calls), _load)
    manifest = json.loads((res.path / "manifest.json").read_text())
    manifest["config"] = {"a": 999}
    (res.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(CacheWarning, match="stale"):
        cache.get_or_build("thing", {"a": 1}, _builder(calls), _load)
    (res.path / "manifest.json").write_text("{not json")
    with pytest.warns(CacheWarning, match="unreadable"):
        cache.get_or_build("thing", {"a": 1}, _builder(calls), _load)
    assert len(calls) == 3
    assert cache.lookup("thing", {"a": 1}) is not None


def test_failed_build_leaves_nothing_behind(cache):
    def boom(folder):
        np.save(folder / "x.npy", np.arange(3))
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cache.get_or_build("thing", {"a": 1}, boom, _load)
    assert cache.lookup("thing", {"a": 1}) is None
    assert list((cache.root / "thing").iterdir()) == []


def test_builder_must_write_something(cache):
    with pytest.raises(RuntimeError, match="no payload"):
        cache.get_or_build("thing", {"a": 1}, lambda folder: None, _load)


def test_canonical_config_handles_dataclasses_and_rejects_objects():
    @dataclass
    class C:
        x: tuple = (1, 2)

    assert canonical({"b": C(), "a": np.int64(3)}) == {"a": 3, "b": {"x": [1, 2]}}
    with pytest.raises(TypeError, match="JSON"):
        canonical({"f": object()})
    with pytest.raises(ValueError, match="kind"):
        Cache().entry_path("bad/kind", {})


# ------------------------------------------------------------------ the code behind an entry is part of its key
def _package_copy(tmp_path):
    import shutil

    from poisoncure import cache as cache_mod

    copy = tmp_path / "poisoncure"
    shutil.copytree(cache_mod.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_editing_one_line_of_train_py_changes_the_models_cache_key(tmp_path):
    """A model cached by one training code is never loaded by another: the key hashes the package's source."""
    from poisoncure import experiments
    from poisoncure.cache import code_fingerprint

    copy = _package_copy(tmp_path)
    before = code_fingerprint(copy)
    assert before == code_fingerprint()  # the copy is the installed source
    train_py = copy / "train.py"
    text = train_py.read_text()
    train_py.write_text(text.replace("    epochs: int = 4\n", "    epochs: int = 5\n", 1))
    assert train_py.read_text() != text
    after = code_fingerprint(copy)
    assert after != before
    recipe = experiments.Recipe().cache_config()
    old_key = Cache(tmp_path, version=f"0.1.0+{before[:16]}").entry_path("model", recipe)
    new_key = Cache(tmp_path, version=f"0.1.0+{after[:16]}").entry_path("model", recipe)
    assert old_key != new_key
    # presentation modules are not part of it: a figure change retrains nothing
    (copy / "book/plots.py").write_text((copy / "book/plots.py").read_text() + "\n# a comment\n")
    assert code_fingerprint(copy) == after


def test_an_entry_built_by_other_code_is_stale_and_rebuilt(tmp_path):
    calls = []
    Cache(tmp_path, version="0.1.0+aaaa").get_or_build("thing", {"a": 1}, _builder(calls), _load)
    again = Cache(tmp_path, version="0.1.0+bbbb").get_or_build("thing", {"a": 1}, _builder(calls), _load)
    assert len(calls) == 2 and not again.hit


def test_no_computing_module_imports_a_presentation_module():
    """The fingerprint leaves PRESENTATION out; that is safe only while no computing module depends on one."""
    import ast

    from poisoncure.cache import PACKAGE_DIR, PRESENTATION, PRESENTATION_PACKAGES, is_presentation

    banned = {name.removesuffix(".py").rsplit("/", 1)[-1] for name in PRESENTATION} | set(PRESENTATION_PACKAGES)
    assert is_presentation("book/pages/hygiene_page.py") and is_presentation("experiments/verdict.py")
    assert not is_presentation("defenses/poishygiene.py") and not is_presentation("experiments/store.py")
    offenders = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        rel = path.relative_to(PACKAGE_DIR).as_posix()
        if is_presentation(rel):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for n in names:
                if set(n.split(".")) & banned:
                    offenders.append(f"{rel} imports {n}")
    assert offenders == []


def test_record_artifacts_lists_each_entry_once_with_the_provenance_of_its_build(cache):
    from poisoncure.cache import record_artifacts

    calls = []
    cache.get_or_build("thing", {"a": 1}, _builder(calls), _load)  # built outside: not listed
    with record_artifacts() as used:
        cache.get_or_build("thing", {"a": 1}, _builder(calls), _load)
        cache.get_or_build("thing", {"a": 2}, _builder(calls), _load)
        cache.get_or_build("thing", {"a": 2}, _builder(calls), _load)
    assert [u["from_cache"] for u in used] == [True, False]
    assert all(u["kind"] == "thing" and u["commit"] and u["device"] and u["seconds"] >= 0 for u in used)
    with record_artifacts() as later:
        pass
    assert later == []
