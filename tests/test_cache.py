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
