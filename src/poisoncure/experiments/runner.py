"""The full reproduction: the paper's grid run experiment by experiment, one result file each, resumable.

``python -m poisoncure.experiments --profile full`` runs every experiment of a profile's ``reproduce`` section
that has no valid result file yet and writes ``results/<profile>/<grid>/<name>.json``. Seven grids:

``main``
    The paper's Tables 1-5: for every (pair, poison, poison rate, seed), train the poisoned model of the
    profile's recipe, run the paper's full defense (target scan, base class, filtering, one-epoch
    neutralization), Activation Clustering and Spectral Signatures on the same training set, and optionally
    Spectral Signatures' retraining from scratch (Table 5).
``reverse``
    The models of the reverse-engineering chapter (``10_reverse_engineering``) at the profile's scale (the
    additive attack, the blend attack and clean models of several training-set sizes): Xiang et al.'s pair
    search with both nulls, Neural Cleanse and the paper's target scan on each.
``sweep``
    The variable-size sweep of chapter 9 (:mod:`poisoncure.experiments.grids.sweep`): every defense against trigger size
    and poison rate on one pair.
``hygiene``
    The PoisHygiene chapter's suspects, one attack each, on Fashion-MNIST and CIFAR-10
    (:func:`poisoncure.experiments.grids.hygiene.run_point`): the suspect, DETECT against the references, MITIGATE and
    its clean-only baseline, Neural Cleanse and the paper's target scan.
``learning``
    Chapter 2's learning curves (:func:`poisoncure.experiments.learning_curve`): clean accuracy and attack success
    after every epoch, for the small CNN with and without the whitening stem and for the whitened network, with
    the one-pixel and the blend trigger; why one network learns the one-pixel backdoor and another does not.
``ensembles``
    The chapter on ensembles of weak learners (:func:`poisoncure.experiments.grids.ensembles.run_point`): on one small
    recipe per trigger, the weak-learner ensemble, ITLM, Spectral Signatures, Activation Clustering and the paper's
    defense, each with its retrained (or neutralized) model.
``compare``
    Every defense of the book on the same models (:func:`poisoncure.experiments.grids.compare.run_point`): the
    paper's attacks, the other papers' attacks and clean models, each with all eight defenses through the one
    pipeline call, their repairs scored on the same held-out images.

The experiments are planned by :mod:`.plans`; each grid's run function below measures one and returns its typed
:class:`.report.Report`; :mod:`.result_files` writes it with its provenance (commit, device, library versions,
profile, seed, wall time of every stage) and reads it back only when intact and current, so a corrupt, partial or
stale file counts as missing and the next run redoes that experiment. Trained models stay in the cache.

Experiments are independent units. ``--engine ray`` runs them as Ray tasks (a local Ray instance, or a cluster
with ``--ray-address``: several GPUs on one or more nodes) and ``--engine submitit`` as Slurm jobs through
submitit (``--cluster local`` runs the jobs as subprocesses here); the default runs them one after another in
this process. Without any engine, ``--shard 1/3`` runs every third experiment, so several processes (on one
GPU, or on several machines sharing ``results/``) can run disjoint shards at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .. import provenance
from ..paths import results_root
from ..train import resolve_device
from .plans import GRIDS, Experiment, plan
from .report import Report, Result, from_measurements
from .result_files import migrate, read_result, restamp, write_result


# ------------------------------------------------------------------------------------------ one experiment
def _trained(params: dict[str, Any], device: str, data, progress: bool, stages: dict[str, float]):
    """The experiment's recipe and its trained model (from the cache when it exists), timed as stage 'train'."""
    from . import store

    recipe = store.Recipe(poison=params["poison"], **params["recipe"])
    with provenance.stage(stages, "train"):
        tm = store.get_model(recipe, device=device, data=data, progress=progress)
    return recipe, tm


def run_main(params: dict[str, Any], device: str = "auto", data=None, progress: bool = False) -> tuple[Report, dict]:
    """One experiment of the ``main`` grid: the paper's defense, Activation Clustering and Spectral Signatures (told the
    target) through :func:`pipeline.run_defenses`, detection rates within the target class, the neutralized model
    and, when ``retrain`` names it, Spectral Signatures' retrained model on the whole test set. Returns (results,
    stage wall times in seconds)."""
    from ..train import evaluate
    from . import pipeline, store

    data = data or store.load_cifar10()
    stages: dict[str, float] = {}
    recipe, tm = _trained(params, device, data, progress, stages)
    spec = tm.train_set.spec
    target, base = spec.target, spec.base
    is_poison = tm.train_set.is_poison
    out: dict[str, Any] = {"target": target, "base": base, "n_train": len(tm.train_set),
                           "n_poison": int(is_poison.sum()), "before": tm.metrics.to_dict(),
                           "train_seconds": round(tm.history.seconds, 1),
                           "images_per_second": round(tm.history.images_per_second, 1)}
    run = pipeline.run_defenses(tm, data, (pipeline.POISON_CURE, pipeline.CLUSTERING, pipeline.SPECTRAL),
                                pipeline.DefenseSettings.from_params(  # this grid's repair column: SS's retraining
                                    params["defense"], seed=recipe.seed,
                                    retrain=[k for k in params["defense"]["retrain"] if k == "spectral"]),
                                device=device, progress=progress, stages=stages)
    rows = run.target_rows
    cure = run[pipeline.POISON_CURE].artefact
    inside = pipeline.target_class_details(run, tm)  # the scan, the base, both detections inside the target class
    ours = inside[pipeline.POISON_CURE]
    out["ours"] = {**{k: v for k, v in ours.items() if k != "target_class"}, **ours["target_class"],
                   "target_found": ours["poisoned"] and ours["candidate"] == target,
                   "after": None if cure.after is None else cure.after.to_dict(),
                   "seconds": {k: round(v, 1) for k, v in cure.result.seconds.items()}}
    ac = run[pipeline.CLUSTERING]
    out["activation_clustering"] = {"flagged_labels": ac.labels,
                                    "own_rule": pipeline.rates(ac.flagged[rows], is_poison[rows]),
                                    **inside[pipeline.CLUSTERING]}
    ss = run[pipeline.SPECTRAL]
    out["spectral"] = pipeline.rates(ss.flagged[rows], is_poison[rows])
    if ss.repaired is not None:
        out["spectral"]["after"] = evaluate(ss.repaired, data.test, spec, device).to_dict()
    return from_measurements("main", out), stages


def run_reverse(params: dict[str, Any], device: str = "auto", data=None, progress: bool = False) -> tuple[Report, dict]:
    """One experiment of the ``reverse`` grid (the reverse-engineering chapter's measurements on one model)."""
    from ..defenses.neural_cleanse import NeuralCleanse
    from ..defenses.reverse_engineer import ReverseEngineeringDetector, pattern_correlation
    from . import pipeline, store

    data = data or store.load_cifar10()
    stages: dict[str, float] = {}
    recipe, tm = _trained(params, device, data, progress, stages)
    spec = store.attack_spec_or_none(tm)
    clean_set, _ = store.defender_split(data.test, params["clean_per_class"], seed=recipe.seed)
    out: dict[str, Any] = {"target": None if spec is None else spec.target, "base": None if spec is None else spec.base,
                           "n_train": len(tm.train_set), "before": tm.metrics.to_dict(),
                           "train_seconds": round(tm.history.seconds, 1)}
    detector = ReverseEngineeringDetector(**params["detector"], seed=recipe.seed, device=device, progress=progress)
    with provenance.stage(stages, "pair_search"):
        r, _ = store.get_pair_search(tm, detector, clean_set)
    out["xiang"] = {"norms": r.search.norms.tolist(), "reached": r.search.reached.tolist(),
                    "p_value": float(r.null.p_value), "p_naive": float(r.naive.p_value),
                    "null": [float(r.null.shape), float(r.null.scale)],
                    "naive": [float(r.naive.shape), float(r.naive.scale)],
                    "detected": bool(r.detected), "source": int(r.source), "target": int(r.target)}
    if params["poison"] in store.ADDITIVE:
        v = spec.trigger.delta()
        est = r.search.patterns[spec.base, spec.target]
        out["xiang"]["pattern_correlation"] = pattern_correlation(est, v)
        out["xiang"]["pattern_correlation_mirror"] = pattern_correlation(est, v[:, ::-1])
    nc = NeuralCleanse(steps=params["nc_steps"], seed=recipe.seed, device=device, progress=progress)
    with provenance.stage(stages, "neural_cleanse"):
        trig, _ = store.get_reversed_triggers(tm, nc, clean_set)
    out["neural_cleanse"] = {"anomaly": trig.anomaly.tolist(), "flagged": np.flatnonzero(trig.flagged).tolist()}
    with provenance.stage(stages, "poison_cure"):
        cure = store.get_poison_cure(tm, store.poison_cure_for(
            recipe, threshold=params["threshold"], device=device, progress=progress), neutralize=False, data=data)
    out["ours"] = pipeline.scan_summary(cure)
    return from_measurements("reverse", out), stages


def run_sweep(params: dict[str, Any], device: str = "auto", data=None, progress: bool = False) -> tuple[Report, dict]:
    """One experiment of the ``sweep`` grid: :func:`poisoncure.experiments.grids.sweep.run_point`."""
    from .grids.sweep import run_point

    measured, stages = run_point(params, device=device, data=data, progress=progress)
    return from_measurements("sweep", measured), stages


def run_hygiene(params: dict[str, Any], device: str = "auto", data=None, progress: bool = False
                ) -> tuple[Report, dict]:
    """One experiment of the ``hygiene`` grid: :func:`poisoncure.experiments.grids.hygiene.run_point`."""
    from .grids.hygiene import run_point

    measured, stages = run_point(params, device=device, data=data, progress=progress)
    return from_measurements("hygiene", measured), stages


def run_ensembles(params: dict[str, Any], device: str = "auto", data=None, progress: bool = False
                  ) -> tuple[Report, dict]:
    """One experiment of the ``ensembles`` grid: :func:`poisoncure.experiments.grids.ensembles.run_point`."""
    from .grids.ensembles import run_point

    measured, stages = run_point(params, device=device, data=data, progress=progress)
    return from_measurements("ensembles", measured), stages


def run_learning(params: dict[str, Any], device: str = "auto", data=None, progress: bool = False
                 ) -> tuple[Report, dict]:
    """One experiment of the ``learning`` grid: :func:`poisoncure.experiments.learning_curve`."""
    from . import store

    recipe = store.Recipe(poison=params["poison"], **params["recipe"])
    stages: dict[str, float] = {}
    with provenance.stage(stages, "train"):
        curve = store.learning_curve(recipe, device=device, data=data, progress=progress)
    return from_measurements("learning", curve), stages


def run_compare(params: dict[str, Any], device: str = "auto", data=None, progress: bool = False
                ) -> tuple[Report, dict]:
    """One experiment of the ``compare`` grid: :func:`poisoncure.experiments.grids.compare.run_point` (it builds its
    report itself, from the pipeline's run)."""
    from .grids.compare import run_point

    return run_point(params, device=device, data=data, progress=progress)


#: each grid's run function: ``(params, device=, data=, progress=) -> (report, stage wall times in s)``
RUNNERS: dict[str, Callable[..., tuple[Report, dict]]] = {
    "main": run_main, "reverse": run_reverse, "sweep": run_sweep, "hygiene": run_hygiene, "ensembles": run_ensembles,
    "learning": run_learning, "compare": run_compare}


# ------------------------------------------------------------------------------------------ running
def execute(profile: str, exp: Experiment, device: str = "auto", runners: dict | None = None, data=None
            ) -> Result:
    """Run one experiment where this function is called (this process, a Ray worker or a Slurm job) and return
    its :class:`.report.Result` with provenance (device, versions, stage times); :func:`write_result` stores
    it."""
    import torch

    from ..cache import record_artifacts

    runners = runners or RUNNERS
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    with provenance.stopwatch() as t, record_artifacts() as artifacts:
        report, stages = runners[exp.grid](exp.params, device=device, data=data, progress=False)
    seed = (exp.params.get("recipe") or exp.params.get("suspect") or {}).get("seed")
    return Result(exp.grid, exp.name, exp.key, profile, exp.params, report,
                  provenance.collect(resolve_device(device), seed=seed, stages=stages,
                                     wall_seconds=round(t["seconds"], 1), versions=provenance.library_versions(),
                                     artifacts=artifacts,
                                     machine_load=provenance.machine_load(t, torch.get_num_threads(), load_start)))


def _local(profile, todo, device, runners, options) -> Iterator[tuple[Experiment, Result]]:
    data = {}  # loaded once per data set: Fashion-MNIST for the hygiene grid's suspects, CIFAR-10 for the rest
    for exp in todo:
        if runners is RUNNERS:
            from ..data import load_cifar10, load_fashion_mnist

            name = "fashion" if "suspect" in exp.params else "cifar"
            if name not in data:
                data[name] = load_fashion_mnist() if name == "fashion" else load_cifar10()
            yield exp, execute(profile, exp, device, runners, data[name])
        else:
            yield exp, execute(profile, exp, device, runners, None)


def _gpus(options: dict[str, Any], device: str) -> float:
    """GPUs each experiment asks the engine for: the option, else 1 when this machine sees CUDA and the device
    is not 'cpu' (several experiments then share no GPU), else 0."""
    if options.get("gpus") is not None:
        return float(options["gpus"])
    import torch

    return 1.0 if device != "cpu" and torch.cuda.is_available() else 0.0


def _ray(profile, todo, device, runners, options) -> Iterator[tuple[Experiment, Result]]:
    """One Ray task per experiment (``ray.init(address)``: an existing cluster, or a local instance when None);
    records come back to this process in completion order."""
    try:
        import ray
    except ImportError as err:
        raise RuntimeError("engine 'ray' needs Ray: pip install ray") from err
    if not todo:
        return
    started = not ray.is_initialized()
    if started:  # a local instance may be sized (num_cpus); an existing cluster brings its own resources
        sizing = {"num_cpus": options.get("num_cpus")} if options.get("address") is None else {}
        ray.init(address=options.get("address"), include_dashboard=False, log_to_driver=False, **sizing)
    try:
        task = ray.remote(num_gpus=_gpus(options, device), num_cpus=options.get("cpus_per_experiment", 1))(execute)
        refs = {task.remote(profile, exp, device, None if runners is RUNNERS else runners): exp for exp in todo}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                yield refs[ref], ray.get(ref)
    finally:
        if started:
            ray.shutdown()


def _submitit(profile, todo, device, runners, options) -> Iterator[tuple[Experiment, Result]]:
    """One job per experiment through submitit: Slurm where ``sbatch`` exists (``cluster=None``), or
    ``cluster='local'`` (subprocesses on this machine) / ``'debug'`` (in this process)."""
    try:
        import submitit
    except ImportError as err:
        raise RuntimeError("engine 'submitit' needs submitit: pip install submitit") from err
    if not todo:
        return
    from ..cache import Cache

    folder = options.get("folder") or Cache().root / "submitit" / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster=options.get("cluster"))
    params = {"timeout_min": int(options.get("timeout_min", 60)), "gpus_per_node": int(_gpus(options, device)),
              "cpus_per_task": int(options.get("cpus_per_experiment", 1))}
    if options.get("partition"):
        params["slurm_partition"] = options["partition"]
    executor.update_parameters(**params)
    jobs = {}
    with executor.batch():
        for exp in todo:
            jobs[exp.name] = (exp, executor.submit(execute, profile, exp, device,
                                                   None if runners is RUNNERS else runners))
    by_job = {id(job): exp for exp, job in jobs.values()}
    for job in submitit.helpers.as_completed([job for _, job in jobs.values()]):
        yield by_job[id(job)], job.result()


ENGINES: dict[str, Callable[..., Iterator[tuple[Experiment, Result]]]] = {
    "local": _local, "ray": _ray, "submitit": _submitit}


def run(profile: str, grids: Iterable[str] | None = None, only: Iterable[str] | None = None,
        root: Path | None = None, device: str = "auto", shard: tuple[int, int] = (1, 1), force: bool = False,
        progress: bool = True, runners: dict[str, Callable[..., tuple[Report, dict]]] | None = None,
        engine: str = "local", engine_options: dict[str, Any] | None = None) -> list[tuple[Experiment, str]]:
    """Run the planned experiments that have no valid result (all of them with ``force``); ``shard = (k, n)``
    keeps every n-th experiment starting at the k-th. Returns (experiment, 'done' | 'skipped') in order.

    ``engine`` 'local' runs them one after another in this process; 'ray' and 'submitit' hand each experiment
    to Ray or submitit (Slurm) as an independent task and write each record here as it comes back
    (``engine_options``: 'address', 'num_cpus' for Ray; 'cluster', 'partition', 'timeout_min', 'folder' for
    submitit; 'gpus' and 'cpus_per_experiment' for both). Either way an interrupted run loses at most the
    experiments in progress, and the records are the same as the local run's (up to wall times and device)."""
    k, n = shard
    if not 1 <= k <= n:
        raise ValueError(f"shard must be k/n with 1 <= k <= n, got {k}/{n}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {tuple(ENGINES)}, got {engine!r}")
    runners = runners or RUNNERS
    exps = plan(profile, grids, only)[k - 1::n]
    todo = [e for e in exps if force or read_result(e.path(profile, root), e) is None]
    status = {e.name: "skipped" for e in exps}
    bar = tqdm(total=len(todo), desc=f"reproduce {profile} ({engine})", unit="experiment", disable=not progress)
    for exp, record in ENGINES[engine](profile, todo, device, runners, engine_options or {}):
        write_result(exp.path(profile, root), record)
        status[exp.name] = "done"
        bar.set_postfix_str(exp.name)
        bar.update()
    bar.close()
    return [(e, status[e.name]) for e in exps]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m poisoncure.experiments", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="full", help="profile with a 'reproduce' section (default: full)")
    parser.add_argument("--grid", action="append", choices=GRIDS, help="grid(s) to run (default: all of the profile's)")
    parser.add_argument("--only", action="append", metavar="PATTERN",
                        help="run only experiments whose name matches this shell pattern (repeatable)")
    parser.add_argument("--shard", default="1/1", metavar="K/N", help="run every N-th experiment from the K-th")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu' or 'cuda'")
    parser.add_argument("--results", type=Path, default=None, help="results folder (default: <project>/results)")
    parser.add_argument("--force", action="store_true", help="rerun experiments that already have a valid result")
    parser.add_argument("--list", action="store_true", help="list the experiments and their state; run nothing")
    parser.add_argument("--restamp", action="store_true",
                        help="mark the result files written before artifact lists with what their stage times show "
                             "(mark_legacy_provenance); run nothing")
    parser.add_argument("--migrate", action="store_true",
                        help="convert the result files of format 1 to this library's schema, in place (same numbers, "
                             "the migration stamped in their provenance); run nothing")
    parser.add_argument("--engine", default="local", choices=tuple(ENGINES),
                        help="'local' (one after another, here; default), 'ray' (a Ray cluster or a local Ray "
                             "instance) or 'submitit' (Slurm, or --cluster local)")
    parser.add_argument("--ray-address", default=None, help="Ray cluster to join (default: start a local one)")
    parser.add_argument("--cluster", default=None, choices=("slurm", "local", "debug"),
                        help="submitit executor (default: Slurm when available, else local)")
    parser.add_argument("--partition", default=None, help="Slurm partition (submitit)")
    parser.add_argument("--timeout-min", type=int, default=60, help="time limit per experiment job (submitit)")
    parser.add_argument("--gpus", type=float, default=None,
                        help="GPUs per experiment for ray/submitit (default: 1 if this machine sees CUDA, else 0)")
    args = parser.parse_args(argv)
    try:
        k, n = (int(x) for x in args.shard.split("/"))
        exps = plan(args.profile, args.grid, args.only)
    except ValueError as err:
        parser.error(str(err))
    if args.migrate:
        for path in migrate(args.results):
            print(f"migrated {path}")
        return 0
    if args.restamp:
        for path in restamp(args.results):
            print(f"marked {path}")
        return 0
    if args.list:
        for e in exps:
            state = "done" if read_result(e.path(args.profile, args.results), e) is not None else "to do"
            print(f"{state:6s} {e.grid}/{e.name}")
        return 0
    options = {"address": args.ray_address, "cluster": args.cluster, "partition": args.partition,
               "timeout_min": args.timeout_min, "gpus": args.gpus}
    done = run(args.profile, args.grid, args.only, args.results, args.device, (k, n), args.force,
               engine=args.engine, engine_options=options)
    print(f"{sum(s == 'done' for _, s in done)} run, {sum(s == 'skipped' for _, s in done)} already done "
          f"(results under {(args.results or results_root()) / args.profile})")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["ENGINES", "RUNNERS", "execute", "main", "run", "run_compare", "run_ensembles", "run_hygiene",
           "run_learning", "run_main", "run_reverse", "run_sweep"]
