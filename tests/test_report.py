"""The typed report and the result-file schema: round trips, one naming, and migrating format-1 files."""

import dataclasses
import hashlib
import json
import warnings

import pytest

from poisoncure.experiments import plans, report, result_files
from poisoncure.experiments.report import DefenseReport, Filtering, Report, Scores

#: the measurements of a ``main`` experiment as format 1 stored them (the layout run_main still measures into)
MAIN_V1 = {
    "target": 5, "base": 1, "n_train": 50000, "n_poison": 500, "train_seconds": 222.0, "images_per_second": 9008.1,
    "before": {"attack_success_rate": 99.2, "clean_accuracy": 90.49, "per_class_accuracy": [92.7] * 10,
               "poisoned_accuracy": 0.6},
    "ours": {"after": {"attack_success_rate": 0.2, "clean_accuracy": 89.25, "per_class_accuracy": [89.7] * 10,
                       "poisoned_accuracy": 95.9},
             "base": 1, "base_found": True, "candidate": 5, "distances": [0.09, 0.12, 0.7], "flagged": 500,
             "poisoned": True, "ratio": 7.72, "seconds": {"scan": 10.8}, "sensitivity": 100.0, "specificity": 99.5,
             "target_found": True},
    "activation_clustering": {"flagged_labels": [5, 7], "own_rule": {"flagged": 495, "sensitivity": 99.0,
                                                                     "specificity": 98.0},
                              "smaller_cluster": {"flagged": 490, "sensitivity": 97.0, "specificity": 100.0}},
    "spectral": {"flagged": 825, "sensitivity": 99.8, "specificity": 93.48,
                 "after": {"attack_success_rate": 0.0, "clean_accuracy": 90.71, "per_class_accuracy": [92.5] * 10,
                           "poisoned_accuracy": 95.4}}}


def test_main_measurements_become_a_report_with_one_naming():
    r = report.from_measurements("main", MAIN_V1)
    assert (r.target, r.base, r.n_train, r.n_poison) == (5, 1, 50000, 500)
    assert r.before == Scores(90.49, 99.2, [92.7] * 10, 0.6)
    ours = r[report.POISON_CURE]
    assert ours.labels == [5] and ours.names_target is True and ours.after.attack_success_rate == 0.2
    assert ours.filtering == Filtering(500, 100.0, 99.5)
    ac = r[report.CLUSTERING]
    assert ac.labels == [5, 7] and ac.names_target and ac.filtering.flagged == 495
    assert ac.details["smaller_cluster"]["sensitivity"] == 97.0
    ss = r[report.SPECTRAL]
    assert ss.labels is None and ss.names_target is None and ss.after.clean_accuracy == 90.71
    with pytest.raises(KeyError, match="Neural Cleanse.*it ran"):
        r[report.CLEANSE]


def test_report_round_trips_through_json():
    r = report.from_measurements("main", MAIN_V1)
    back = Report.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back == r and isinstance(back[report.SPECTRAL].after, Scores)


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="test_set"):
        Scores(90.0, test_set="train")
    with pytest.raises(ValueError, match="scope"):
        Filtering(scope="everything")
    with pytest.raises(ValueError, match="unknown grid"):
        report.from_measurements("tables", {})


def _write_v1(path, grid, name, params, results):
    """A format-1 result file as the previous library wrote it (its key and checksum included)."""
    body = {"format": 1, "grid": grid, "name": name, "key": plans.experiment_key(grid, params, fmt=1),
            "profile": "smoke", "params": params, "results": results,
            "provenance": {"commit": "abc1234", "device": "CPU", "wall_seconds": 1.0}}
    body["sha256"] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body))
    return body


def test_format_1_files_are_refused_then_migrated_with_every_number(tmp_path):
    (exp,) = plans.plan("smoke", ["main"])
    path = exp.path("smoke", tmp_path)
    _write_v1(path, "main", exp.name, exp.params, MAIN_V1)
    with pytest.warns(result_files.ResultWarning, match="format 1.*--migrate"):
        assert result_files.read_result(path, exp) is None
    assert result_files.migrate(tmp_path, commit="def5678") == [path]
    assert result_files.migrate(tmp_path) == []  # nothing left to do
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = result_files.read_result(path, exp)  # the key is this format's: the file counts as the experiment's
    assert got.report == report.from_measurements("main", MAIN_V1)
    assert got.provenance["commit"] == "abc1234" and got.provenance["migrated"]["commit"] == "def5678"
    assert got.provenance["migrated"]["from_format"] == 1


def test_migration_refuses_to_lose_a_number(tmp_path, monkeypatch):
    (exp,) = plans.plan("smoke", ["main"])
    _write_v1(exp.path("smoke", tmp_path), "main", exp.name, exp.params, MAIN_V1)

    build = report._BUILDERS["main"]

    def forgetful(r):  # a builder that drops the Activation Clustering smaller-cluster numbers
        out = build(r)
        ac = out.defenses[report.CLUSTERING]
        return dataclasses.replace(out, defenses={**out.defenses,
                                                  report.CLUSTERING: dataclasses.replace(ac, details={})})

    monkeypatch.setitem(report._BUILDERS, "main", forgetful)
    with pytest.raises(ValueError, match="would lose values"):
        result_files.migrate(tmp_path)


def test_damaged_format_1_file_is_left_alone(tmp_path):
    (exp,) = plans.plan("smoke", ["main"])
    path = exp.path("smoke", tmp_path)
    _write_v1(path, "main", exp.name, exp.params, MAIN_V1)
    path.write_text(path.read_text().replace("90.49", "95.0"))  # a hand-typed number
    with pytest.warns(result_files.ResultWarning, match="damaged"):
        assert result_files.migrate(tmp_path) == []
    assert json.loads(path.read_text())["format"] == 1


def test_every_committed_grid_reads_as_reports():
    """Each grid's committed files parse into reports whose defenses carry the book's names."""
    names = {report.POISON_CURE, report.SPECTRAL, report.CLUSTERING, report.CLEANSE, report.PRUNING, report.XIANG,
             report.HYGIENE, report.ENSEMBLE, report.ITLM}
    seen = set()
    for prof, grid in (("full", "main"), ("full", "reverse"), ("smoke", "sweep"), ("smoke", "ensembles"),
                       ("cpu-cnn", "hygiene"), ("smoke", "learning")):
        records = result_files.load_results(prof, grid)
        assert records, (prof, grid)
        for rec in records:
            assert isinstance(rec.report, Report) and set(rec.report.defenses) <= names
            assert all(isinstance(d, DefenseReport) for d in rec.report.defenses.values())
            seen.add(grid)
    assert len(seen) == 6


def test_machine_load_reads_a_waiting_process_as_a_small_cpu_share():
    """A run that got its cores: CPU share near 1; one that waited for them (here: slept): near 0."""
    import time

    from poisoncure import provenance

    with provenance.stopwatch() as busy:
        end = time.perf_counter() + 0.3
        while time.perf_counter() < end:
            pass
    with provenance.stopwatch() as idle:
        time.sleep(0.3)
    # margins that hold on a busy machine too: the loop gets at least a share of a core, the sleep almost none
    waited = provenance.machine_load(idle, 1, (1.0,))["cpu_share"]
    assert waited < 0.1 and provenance.machine_load(busy, 1, None)["cpu_share"] > max(0.15, 3 * waited)
    assert provenance.machine_load(idle, 1, (1.0,))["loadavg_start"] == 1.0


def test_short_commits_keep_the_dirty_mark():
    from poisoncure.experiments.report import short_commit

    assert short_commit("466ca3799e40+dirty") == "466ca37+dirty"
    assert short_commit("0123456789abcdef", 12) == "0123456789ab" and short_commit("abc") == "abc"
    from poisoncure.experiments.report import commit_parts

    assert commit_parts("466ca3799e40+dirty") == ("466ca37", True)
    assert commit_parts("466ca3799e40") == ("466ca37", False)


def test_device_names_accept_the_library_default():
    """Chapters pass their ``device`` parameter ("auto" by default) to the provenance of what they show."""
    from poisoncure import provenance

    assert provenance.device_name("auto") == provenance.device_name(None)
    assert provenance.device_name("cpu").startswith("CPU (") and "torch threads" in provenance.device_name("cpu")
