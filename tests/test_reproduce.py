"""The reproduction runner: planning, result files (typed, atomic, checked, never trusted when damaged), resuming."""

import dataclasses
import os
import subprocess
import warnings
from pathlib import Path

import pytest

from poisoncure.book.pages import reverse_page
from poisoncure.experiments import plans, profiles, result_files, runner
from poisoncure.experiments.plans import plan
from poisoncure.experiments.report import Report, Result, Scores
from poisoncure.experiments.result_files import ResultWarning, load_results, read_result
from poisoncure.experiments.runner import run

ROOT = Path(__file__).resolve().parents[1]


def value_report(value, **details) -> Report:
    """A report holding one number (what the fake runners measure)."""
    return Report(None, None, None, None, Scores(float(value)), {}, {"value": value, **details})


def fake_runners(calls):
    """Runners that record what they were asked and return numbers derived from the parameters."""

    def fake(params, device="auto", data=None, progress=False):
        calls.append(params["recipe"].get("pair", params["poison"]))
        return value_report(params["recipe"]["seed"] + 1), {"train": 0.01}

    return {"main": fake, "reverse": fake, "sweep": fake}


def test_full_plan_is_the_papers_grid_and_chapter_8s_models():
    main = plan("full", ["main"])
    assert len(main) == 18  # 9 pairs x 2 poison sizes (SPEC §2.8)
    assert {e.params["poison"] for e in main} == {"blend", "pixel"}
    assert {e.params["recipe"]["pair"] for e in main} == set(range(1, 10))
    assert all(e.params["recipe"]["model"] == "resnet18" and e.params["recipe"]["poison_rate"] == 0.1 for e in main)
    assert len({e.name for e in main}) == len({e.key for e in main}) == 18
    reverse = plan("full", ["reverse"])
    assert [e.params["poison"] for e in reverse] == ["chessboard", "blend", "clean", "clean", "clean"]
    assert [e.params["recipe"]["train_per_class"] for e in reverse[2:]] == [None, 1000, 2500]


def test_only_and_bad_grids():
    names = [e.name for e in plan("full", ["main", "reverse"], only=["pair1-*", "clean-*"])]
    assert names == ["pair1-blend-resnet18-r0.1-s0", "pair1-pixel-resnet18-r0.1-s0",
                     "clean-resnet18-s0", "clean-1000-resnet18-s0", "clean-2500-resnet18-s0"]
    with pytest.raises(ValueError, match="no experiment"):
        plan("full", only=["nothing-*"])
    with pytest.raises(ValueError, match="unknown grid"):
        plan("full", ["tables"])
    with pytest.raises(ValueError, match="shard"):
        run("smoke", shard=(3, 2), runners=fake_runners([]))


def test_run_writes_provenance_then_skips_finished_work(tmp_path):
    calls = []
    first = run("smoke", ["main"], root=tmp_path, progress=False, runners=fake_runners(calls))
    assert [s for _, s in first] == ["done"] and calls == [1]
    exp = first[0][0]
    record = read_result(exp.path("smoke", tmp_path), exp)
    assert record.report == value_report(1) and record.profile == "smoke"
    for key in ("commit", "device", "torch", "seed", "stages", "wall_seconds", "versions", "machine_load"):
        assert key in record.provenance
    load = record.provenance["machine_load"]
    assert load["threads"] >= 1 and load["cpu_seconds"] >= 0 and 0 <= load["cpu_share"]
    again = run("smoke", ["main"], root=tmp_path, progress=False, runners=fake_runners(calls))
    assert [s for _, s in again] == ["skipped"] and calls == [1]
    assert [r.name for r in load_results("smoke", "main", tmp_path)] == [exp.name]


@pytest.mark.parametrize("damage", ["truncate", "edit", "garbage", "stale", "format"])
def test_damaged_result_is_detected_rerun_and_never_shown(tmp_path, damage):
    calls = []
    (exp, _), = run("smoke", ["main"], root=tmp_path, progress=False, runners=fake_runners(calls))
    path = exp.path("smoke", tmp_path)
    text = path.read_text()
    if damage == "truncate":
        path.write_text(text[: len(text) // 2])
    elif damage == "edit":  # a hand-typed number: valid JSON, wrong checksum
        path.write_text(text.replace('"value": 1', '"value": 99'))
    elif damage == "garbage":
        path.write_bytes(b"\x00\xff not json")
    elif damage == "format":  # another schema version
        path.write_text(text.replace('"format": 2', '"format": 3'))
    else:  # written for other parameters: rebuild the record with its own (valid) checksum but another key
        record = read_result(path, exp)
        result_files.write_result(path, dataclasses.replace(record, key="0" * 64))
    with pytest.warns(ResultWarning):
        assert read_result(path, exp) is None
    with pytest.warns(ResultWarning):
        assert load_results("smoke", "main", tmp_path) == []
    with pytest.warns(ResultWarning):
        (_, status), = run("smoke", ["main"], root=tmp_path, progress=False, runners=fake_runners(calls))
    assert status == "done" and calls == [1, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_result(path, exp).report == value_report(1)


def test_interrupted_experiment_leaves_no_file_and_keeps_finished_ones(tmp_path):
    calls = []

    def flaky(params, device="auto", data=None, progress=False):
        if params["poison"] == "blend" and params["recipe"]["train_per_class"] is None:
            raise KeyboardInterrupt
        calls.append(params["poison"])
        return value_report(0), {}

    with pytest.raises(KeyboardInterrupt):
        run("smoke", ["reverse"], root=tmp_path, progress=False, runners={"reverse": flaky})
    done = {p.stem for p in (tmp_path / "smoke" / "reverse").glob("*")}
    assert done == {"chessboard-whitened_net-s0"}  # the one before the interruption; no temporary file left
    status = run("smoke", ["reverse"], root=tmp_path, progress=False,
                 runners={"reverse": fake_runners([])["reverse"]})
    assert [s for _, s in status] == ["skipped", "done", "done", "done"]


def test_shards_partition_the_grid(tmp_path):
    names = [e.name for e in plan("full", ["main"])]
    parts = []
    for k in (1, 2, 3):
        calls = []
        res = run("full", ["main"], root=tmp_path / str(k), shard=(k, 3), progress=False, runners=fake_runners(calls))
        parts += [e.name for e, _ in res]
    assert sorted(parts) == sorted(names)


def test_cli_lists_state(tmp_path, capsys):
    run("smoke", ["main"], root=tmp_path, progress=False, runners=fake_runners([]))
    assert runner.main(["--profile", "smoke", "--list", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("done") and all(line.startswith("to do") for line in out[1:])
    with pytest.raises(SystemExit):
        runner.main(["--profile", "smoke", "--shard", "x"])


def test_committed_results_are_valid():
    """Every result file in the repository passes the checks the chapters rely on (checksum, current plan)."""
    root = plans.results_root()
    committed = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert "full" in committed
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResultWarning)
        records = [r for prof in committed for grid in plans.GRIDS for r in load_results(prof, grid)]
    n_files = sum(1 for prof in committed for _ in (root / prof).glob("*/*.json"))
    assert records and len(records) == n_files  # every file of every profile is valid and in its profile's plan
    for record in records:
        assert record.provenance["commit"] != "unknown" and record.provenance["device"]


def test_reverse_table_reads_the_committed_runs():
    records = load_results("full", "reverse")
    table = reverse_page.reverse_table(records)
    assert len(table) == len(records) and {"p (truncated)", "reported pair", "device, commit"} <= set(table.columns)
    assert ((table["p (truncated)"] >= 0) & (table["p (truncated)"] <= 1)).all()
    assert reverse_page.reverse_table([]).empty


def arithmetic_runner(params, device="auto", data=None, progress=False):
    """A deterministic stand-in for an experiment: numbers drawn from a generator seeded by the parameters;
    the process id goes to the stage times, to see where it ran."""
    import os

    import numpy as np

    r = params["recipe"]
    rng = np.random.default_rng([r["pair"], r["seed"], len(params["poison"])])
    return value_report(rng.normal(), pair=r["pair"], poison=params["poison"]), {"pid": os.getpid()}


@pytest.mark.parametrize("engine, options", [("ray", {"num_cpus": 2}), ("submitit", {"cluster": "local"})])
def test_engines_give_the_sequential_results(tmp_path, engine, options):
    """Ray (a local instance) and submitit (its local executor) run the experiments in other processes and the
    records they bring back equal the sequential run's (parameters, key, results)."""
    import os
    import sys

    import cloudpickle
    from ray import cloudpickle as ray_cloudpickle

    for pickler in (cloudpickle, ray_cloudpickle):  # workers cannot import the tests package: send it by value
        pickler.register_pickle_by_value(sys.modules[__name__])
    runners = {"main": arithmetic_runner, "reverse": arithmetic_runner}
    only = ["pair1-*", "pair2-*"]
    seq = run("full", ["main"], only, root=tmp_path / "seq", progress=False, runners=runners)
    par = run("full", ["main"], only, root=tmp_path / engine, progress=False, runners=runners, engine=engine,
              engine_options={**options, "folder": tmp_path / "jobs" / "%j", "gpus": 0})
    assert [e.name for e, _ in par] == [e.name for e, _ in seq] and {s for _, s in par} == {"done"}
    assert len(par) == 4
    for exp, _ in seq:
        a = read_result(exp.path("full", tmp_path / "seq"), exp)
        b = read_result(exp.path("full", tmp_path / engine), exp)
        assert b is not None and (a.key, a.params, a.report) == (b.key, b.params, b.report)
        assert b.provenance["stages"]["pid"] != os.getpid()  # it ran in a worker, not here
    # a second run finds everything done
    again = run("full", ["main"], only, root=tmp_path / engine, progress=False, runners=runners, engine=engine,
                engine_options=options)
    assert {s for _, s in again} == {"skipped"}


def test_unknown_engine_raises(tmp_path):
    with pytest.raises(ValueError, match="engine"):
        run("smoke", ["main"], root=tmp_path, progress=False, runners=fake_runners([]), engine="dask")


def test_provenance_text_says_when_artifacts_came_from_another_commit():
    def rec(commit, artifacts, **extra):
        prov = {"device": "CPU", "commit": commit, "wall_seconds": 60, **extra}
        if artifacts is not None:
            prov["artifacts"] = artifacts
        return Result("main", "x", "k", "smoke", {}, value_report(0), prov)

    same = rec("abc1234", [{"kind": "model", "commit": "abc1234"}])
    assert "another commit" not in result_files.provenance_text([same])
    other = rec("abc1234", [{"kind": "model", "commit": "fff0000"}, {"kind": "gradients", "commit": "abc1234"}])
    text = result_files.provenance_text([same, other])
    assert "1 cached artifacts were computed at another commit" in text and "fff0000" in text
    legacy = rec("abc1234", None)
    assert "1 of 2 files were written before" in result_files.provenance_text([same, legacy])
    legacy = rec("abc1234", None, stages={"train": 0.4})
    marked = result_files.mark_legacy_provenance(legacy)
    assert marked.provenance["legacy_artifacts"].startswith("model read from an older cache entry")
    assert "1 read it from an older cache entry" in result_files.provenance_text([same, marked])
    assert result_files.mark_legacy_provenance(marked) is None and result_files.mark_legacy_provenance(same) is None
    legacy = rec("abc1234", None, stages={"train": 300.0})
    assert result_files.mark_legacy_provenance(legacy).provenance["legacy_artifacts"] == "trained in this run"


def test_restamp_marks_old_files_without_touching_their_numbers(tmp_path):
    (exp, _), = run("smoke", ["main"], root=tmp_path, progress=False, runners=fake_runners([]))
    path = exp.path("smoke", tmp_path)
    record = read_result(path, exp)
    old = {k: v for k, v in record.provenance.items() if k != "artifacts"}  # as written before artifact lists existed
    result_files.write_result(path, dataclasses.replace(record, provenance=old))
    assert result_files.restamp(tmp_path) == [path] and result_files.restamp(tmp_path) == []
    back = read_result(path, exp)
    assert back.report == record.report and "legacy_artifacts" in back.provenance


def test_execute_lists_the_cached_artifacts_a_runner_used(tmp_path, monkeypatch):
    from poisoncure.cache import Cache

    monkeypatch.setenv("POISONCURE_CACHE", str(tmp_path))

    def fake(params, device="auto", data=None, progress=False):
        def build(folder):
            (folder / "x.txt").write_text("x")

        Cache().get_or_build("model", {"seed": params["recipe"]["seed"]}, build, lambda f: None)
        return value_report(1), {}

    (exp,) = plan("smoke", ["main"])
    first = runner.execute("smoke", exp, runners={"main": fake}).provenance
    second = runner.execute("smoke", exp, runners={"main": fake}).provenance
    assert [a["from_cache"] for a in first["artifacts"]] == [False]
    assert [a["from_cache"] for a in second["artifacts"]] == [True]
    assert second["artifacts"][0]["commit"] == first["commit"] and second["artifacts"][0]["key"]


def test_the_gpu_command_runs_the_named_grid_in_shards_and_refuses_an_unknown_one(tmp_path):
    """bench/gpu_grid.sh, the one command of a GPU slot (main, then sweep, hygiene, ensembles, compare): every shard
    runs the runner on the grid it is given, with the pattern, and the results are packed as that grid's archive; a
    misspelt grid is refused before anything runs. A stand-in Python records the calls instead of computing."""
    calls, res = tmp_path / "calls", tmp_path / "res"
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PY": str(fake), "RESULTS": str(res), "GRID": "compare", "ONLY": "pair1-*", "SHARDS": "2",
           "LIMIT": "60"}
    subprocess.run(["bash", "bench/gpu_grid.sh"], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    lines = calls.read_text().splitlines()
    assert lines[0] == "-"  # the data, decoded once before the shards
    assert sorted(lines[1:]) == [f"-m poisoncure.experiments.runner --profile gpu --grid compare --only pair1-* "
                                 f"--shard {k}/2 --results {res}" for k in (1, 2)]
    assert (res / "gpu-compare.tar.gz").is_file()
    bad = subprocess.run(["bash", "bench/gpu_grid.sh"], cwd=ROOT, env={**env, "GRID": "comprae"},
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "GRID must be one of" in bad.stderr
    assert len(calls.read_text().splitlines()) == 3  # nothing ran


def test_the_gpu_command_accepts_exactly_the_gpu_profiles_grids():
    """bench/gpu_grid.sh lists the grids it accepts (it checks before the data are decoded); the list must be the
    `gpu` profile's `reproduce` grids, so a grid added to the profile cannot be refused by the command."""
    line = next(ln for ln in (ROOT / "bench" / "gpu_grid.sh").read_text().splitlines() if ln.startswith("GRIDS="))
    assert line.split("=", 1)[1].strip('"').split() == list(profiles.load("gpu")["reproduce"])
