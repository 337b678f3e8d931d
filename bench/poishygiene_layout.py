"""PoisHygiene's probe optimisation with the probes in channels_last (since 83ab2f4) against NCHW (before), in one
run on this machine.

The probe batches of PoisHygiene were the library's only batches that reached a network in NCHW; on the CPU that
takes oneDNN's slow paths (max-pooling about ten times slower than in channels_last). This times the two fixed-length
parts of a scan — the γ calibration on the references and one round of the λ calibration on suspect and references —
for chapter 11's two settings, with untrained networks of the same architectures (a fixed number of steps, so the
weights do not change the work):

- Fashion-MNIST: suspect PoisHygiene's Model I, references Models II and III, grey probes (one channel repeated);
- CIFAR-10: suspect the whitened network (width 16), reference the small CNN (width 24).

Each variant runs ``--repeats`` times, alternating, and the best time of each is kept; the γ values of the two
variants are printed too (equal up to float rounding: only the memory layout differs).

    python bench/poishygiene_layout.py [--steps 100] [--repeats 2]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
import torch
import torch.nn.functional as F

from poisoncure import models, provenance, train
from poisoncure.defenses import poishygiene
from poisoncure.defenses.poishygiene import PoisHygiene


def nchw_ce(model, x, y):
    """The per-sample loss as it was before: the probes passed on in whatever layout they have (NCHW)."""
    with train.autocast(x.device):
        logits = model(x)
    return F.cross_entropy(logits.float(), y, reduction="none")


@contextlib.contextmanager
def layout(name: str):
    kept = poishygiene._per_sample_ce
    if name == "NCHW (before)":
        poishygiene._per_sample_ce = nchw_ce
    try:
        yield
    finally:
        poishygiene._per_sample_ce = kept


def settings():
    torch.manual_seed(0)
    fm = (models.pool_cnn("I"), [models.pool_cnn("II"), models.pool_cnn("III")], True)
    torch.manual_seed(0)
    suspect = models.whitened_net(width=16)
    models.fit_whitening(suspect, torch.rand(512, 3, 32, 32))  # fitted to noise: any fixed filters do for timing
    cifar = (suspect, [models.small_cnn(width=24)], False)
    return {"Fashion-MNIST (Models I; II, III)": fm, "CIFAR-10 (whitened net; small CNN)": cifar}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=100, help="ascent steps of each calibration run")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each variant (alternating; the best is kept)")
    args = ap.parse_args()
    print(f"{provenance.device_name('cpu')}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, precision {train.precision('cpu')}; {args.steps} steps per calibration run, 10 probes per label")
    variants = ("NCHW (before)", "channels_last (now)")
    for name, (suspect, refs, grey) in settings().items():
        best = {v: {"gammas": np.inf, "lambda": np.inf} for v in variants}
        gam = {}
        for _ in range(args.repeats):
            for v in variants:
                ph = PoisHygiene(probes=10, calibration_steps=args.steps, calibration_rounds=1, grey=grey, seed=0,
                                 device="cpu", progress=False)
                with layout(v):
                    t0 = time.perf_counter()
                    gam[v] = ph.gammas(refs)
                    t1 = time.perf_counter()
                    ph.calibrate(suspect, refs)
                    t2 = time.perf_counter()
                best[v]["gammas"] = min(best[v]["gammas"], t1 - t0)
                best[v]["lambda"] = min(best[v]["lambda"], t2 - t1)
        print(f"\n{name}")
        for part in ("gammas", "lambda"):
            before, now = best[variants[0]][part], best[variants[1]][part]
            print(f"  {part:7s} {before:6.2f} s -> {now:6.2f} s   ({before / now:.2f}x)")
        diff = np.max(np.abs(gam[variants[0]] - gam[variants[1]]) / np.abs(gam[variants[0]]))
        print(f"  gamma values: largest relative difference between the layouts {diff:.2e}")


if __name__ == "__main__":
    main()
