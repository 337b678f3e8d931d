"""The slow tests' margins over seeds and thread counts: each trained fixture's measured values beside its bar.

    .venv/bin/python bench/slow_margins.py                 # seeds 0 1 2, torch threads 1 and the default
    .venv/bin/python bench/slow_margins.py --seeds 0 --threads 2

For every (seed, threads) it builds the slow tests' ``tiny_models`` (tests/conftest.py) and measures what
tests/test_models_train.py and tests/test_poison_cure.py assert, printing one row per run and, last, the worst
value of each quantity over all runs against its bar. A row whose values clear every bar passes the slow tests
for that seed and thread count; the distance to the bar is the margin that must hold on a CPU we cannot choose.
(To run the tests themselves that way: ``OMP_NUM_THREADS=1 pytest -m slow --fixture-seed 2``.)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poisoncure import data, metrics, provenance, train  # noqa: E402
from poisoncure.defenses.poison_cure import FINETUNE, PoisonCure  # noqa: E402
from tests.conftest import build_tiny_models  # noqa: E402

#: (quantity, bar, "min" when the value must stay above the bar, "max" when below): the slow tests' assertions
BARS = [("clean accuracy", 35.0, "min"), ("attack success", 80.0, "min"), ("clean model's attack success", 20.0, "max"),
        ("ratio R", 2.0, "min"), ("sensitivity", 80.0, "min"), ("specificity", 80.0, "min"),
        ("attack success after", 20.0, "max"), ("clean accuracy drop", 10.0, "max"),
        ("clean model's R", 2.0, "max")]


def measure(cifar: data.Cifar10, seed: int) -> dict[str, float]:
    tm = build_tiny_models(cifar, seed)
    ps = tm.ps
    before = train.evaluate(tm.poisoned, tm.test, ps.spec, "cpu")
    clean_m = train.evaluate(tm.clean, tm.test, ps.spec, "cpu")
    pc = PoisonCure(progress=False, device="cpu", finetune=dataclasses.replace(FINETUNE, augment="flip"))
    res = pc.run(tm.poisoned, ps.as_imageset())
    truth = ps.is_poison[res.filtering.rows]
    after = train.evaluate(res.model, tm.test, ps.spec, "cpu")
    clean_scan = pc.scan(tm.clean, tm.sub)
    m_others = np.delete(res.base.m, [ps.spec.target, ps.spec.base])
    return {"target found": float(res.scan.poisoned and res.scan.target == ps.spec.target),
            "base above others": float(res.base.m[ps.spec.base] > m_others.mean()),
            "clean accuracy": before.clean_accuracy, "attack success": before.attack_success_rate,
            "clean model's attack success": clean_m.attack_success_rate, "ratio R": res.scan.ratio,
            "sensitivity": metrics.sensitivity(res.filtering.flagged, truth),
            "specificity": metrics.specificity(res.filtering.flagged, truth),
            "attack success after": after.attack_success_rate,
            "clean accuracy drop": before.clean_accuracy - after.clean_accuracy,
            "clean model's R": clean_scan.ratio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, torch.get_num_threads()])
    args = parser.parse_args()
    cifar = data.load_cifar10(download=False)
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for seed in args.seeds:
            start = time.perf_counter()
            row = {"seed": seed, "threads": threads, **measure(cifar, seed)}
            row["seconds"] = round(time.perf_counter() - start, 1)
            rows.append(row)
            print(pd.DataFrame([row]).round(2).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    print(f"\n{provenance.device_name('cpu')}, commit {provenance.git_commit()}")
    print(table.round(2).to_string(index=False))
    print("\nworst over all runs against its bar:")
    for name, bar, side in BARS:
        worst = table[name].min() if side == "min" else table[name].max()
        ok = worst > bar if side == "min" else worst < bar
        rel = ">" if side == "min" else "<"
        print(f"  {name:30s} worst {worst:7.2f}  bar {rel} {bar:5.1f}  {'ok' if ok else 'FAILS'}")
    for name in ("target found", "base above others"):
        print(f"  {name:30s} in {int(table[name].sum())} of {len(table)} runs")


if __name__ == "__main__":
    main()
