"""Every grid of the runner, end to end, on a tiny configuration of its real plan: the real runner (the code that
produced every committed result file) trains, defends and measures on real CIFAR-10, the record is written, read
back and verified, and the chapter's table renders its row. Minutes in all on 2 cores (marker ``slow``)."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest

from poisoncure import data
from poisoncure.book.pages import attack_page, reverse_page
from poisoncure.cache import canonical
from poisoncure.experiments import paper_tables, plans
from poisoncure.experiments.grids import sweep
from poisoncure.experiments.plans import Experiment
from poisoncure.experiments.result_files import read_result, write_result
from poisoncure.experiments.runner import execute

pytestmark = pytest.mark.slow

#: what makes an experiment tiny: 20 training images per class, one epoch, a width-8 network, few optimiser steps
TINY_RECIPE = {"train_per_class": 20, "epochs": 1, "width": 8, "batch_size": 64}
TINY_NESTED = {"nc_steps": 5, "clean_per_class": 5, "per_class": 2, "probes": 2, "warm_steps": 5,
               "calibration_steps": 5, "steps": 5, "restarts": 1, "components": 2, "learner_epochs": 1,
               "warmup_epochs": 1, "iter_epochs": 1, "min_active": 20, "spl_rounds": 1, "spl_epochs": 1,
               "itlm_rounds": 1, "itlm_first_epochs": 1, "itlm_epochs": 1, "batch_size": 64}


def tiny(exp: Experiment) -> Experiment:
    """The experiment with the sizes of :data:`TINY_RECIPE` / :data:`TINY_NESTED` wherever its parameters have them."""
    params = copy.deepcopy(exp.params)
    params["recipe"].update(TINY_RECIPE)
    params.update({k: v for k, v in TINY_NESTED.items() if k in params})  # top-level sizes (reverse: nc_steps, ...)
    for section in list(params.values()):
        if isinstance(section, dict) and section is not params["recipe"]:
            section.update({k: v for k, v in TINY_NESTED.items() if k in section})
    if "references" in params:
        params["references"]["per_class"] = [20]
    if exp.grid == "reverse":  # the pair search's step limit (2,000 by default: on a tiny model some pairs never stop)
        params["detector"]["max_iter"] = 20
    return Experiment(exp.grid, exp.name, params)


def table_of(grid: str, records: list, classes: tuple[str, ...]):
    if grid == "main":
        return paper_tables.experiment_rows(records)
    if grid == "reverse":
        return reverse_page.reverse_table(records)
    if grid == "sweep":
        return sweep.point_table(records)
    if grid == "hygiene":
        from poisoncure.book.pages import hygiene_page

        return hygiene_page.results_table(records, classes)
    from poisoncure.experiments.grids import ensembles

    return ensembles.method_table(records)


@pytest.mark.parametrize("profile, grid, name", [
    ("smoke", "main", "pair1-blend-*"), ("gpu", "main", "pair1-pixel-*"), ("smoke", "reverse", "chessboard-*"),
    ("smoke", "sweep", "pair1-pixel-whitened_net-r0.1-*"), ("cpu-cnn", "hygiene", "cifar-badnets-*"),
    ("smoke", "ensembles", "pair1-pixel-*")])
def test_the_real_runner_writes_a_verified_record_and_its_table_row(cifar_small_test: data.Cifar10, tmp_path,
                                                                     monkeypatch, profile, grid, name):
    monkeypatch.setenv("POISONCURE_CACHE", str(tmp_path / "cache"))
    (planned,) = plans.plan(profile, [grid], [name])
    exp = tiny(planned)
    record = execute(profile, exp, device="cpu", data=cifar_small_test)
    path = exp.path(profile, tmp_path)
    write_result(path, record)
    back = read_result(path, exp)
    assert back is not None and back.key == exp.key
    same = json.dumps(canonical(back.report.to_dict()), sort_keys=True) == json.dumps(
        canonical(record.report.to_dict()), sort_keys=True)  # NaN-safe
    assert same
    prov = back.provenance
    assert prov["commit"] and prov["device"].startswith("CPU") and prov["wall_seconds"] > 0
    # every cached artifact the run used is listed with its own provenance; a fresh cache built them all here
    assert prov["artifacts"] and all(a["commit"] == prov["commit"] and not a["from_cache"] for a in prov["artifacts"])
    assert {a["kind"] for a in prov["artifacts"]} & {"model", "hygiene_suspect"}, prov["artifacts"]
    rows = table_of(grid, [back], cifar_small_test.train.classes)
    assert len(rows) >= 1


def test_the_learning_grid_records_every_epoch_and_its_table_rows(cifar_small_test: data.Cifar10, tmp_path):
    """Chapter 2's learning curves: the real runner on a tiny configuration of the smoke plan (two epochs)."""
    (planned,) = plans.plan("smoke", ["learning"], ["pair1-pixel-small_cnn_whitened*"])
    exp = tiny(planned)
    exp.params["recipe"]["epochs"] = 2
    exp = Experiment(exp.grid, exp.name, exp.params)
    record = execute("smoke", exp, device="cpu", data=cifar_small_test)
    path = exp.path("smoke", tmp_path)
    write_result(path, record)
    back = read_result(path, exp)
    assert back is not None and back.key == exp.key
    res = back.report.details
    assert [e["epoch"] for e in res["epochs"]] == [1, 2] and len(res["train_loss"]) == 2
    assert all(0 <= e["attack_success_rate"] <= 100 and 0 <= e["clean_accuracy"] <= 100 for e in res["epochs"])
    assert res["precision"] in ("fp32", "bf16") and res["train_seconds"] > 0
    rows = attack_page.learning_table([back])
    assert list(rows["epoch"]) == [1, 2] and set(rows["network"]) == {"small CNN with a whitening stem"}
    whitened = dataclasses.replace(back, params={**back.params, "recipe": {**back.params["recipe"],
                                                                          "model": "whitened_net"}})
    assert set(attack_page.learning_table([whitened])["network"]) == {"whitened fast network 8/32/32"}


def test_the_learning_grid_refuses_bad_entries():
    prof = {"experiment": {"pair": 1, "seed": 0, "epochs": 2, "model": "small_cnn", "width": 8}, "notebooks": {}}
    with pytest.raises(ValueError, match="non-empty"):
        plans._learning_grid(prof, {"models": [], "triggers": [{"poison": "pixel"}]})
    with pytest.raises(ValueError, match="exactly 'model' and 'width'"):
        plans._learning_grid(prof, {"models": [{"model": "small_cnn"}], "triggers": [{"poison": "pixel"}]})
    with pytest.raises(ValueError, match="poison: pixel"):
        plans._learning_grid(prof, {"models": [{"model": "small_cnn", "width": 8}], "triggers": [{"poison": "x"}]})
    with pytest.raises(ValueError, match="unknown keys"):
        plans._learning_grid(prof, {"models": [], "triggers": [], "lr": 1})
