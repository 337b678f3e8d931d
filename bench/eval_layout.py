"""Evaluation passes of a trained network — representations, input gradients, predictions — with its weights in the
layout they are loaded in (NCHW) against channels_last, and the input-gradient batch size, in one run on this machine.

A trained model is written to the cache with ordinary (NCHW) weights, and a model loaded from it kept them: only
:func:`poisoncure.train.fit` put a network in channels_last. The batches reach it in channels_last, so every
convolution of a loaded model on the CPU converted its weights first. This times, for the smoke profile's whitened
network (width 16) and the small CNN (width 24), untrained (the work does not depend on the weights):

- ``features``: one float32 forward pass (what Spectral Signatures, Activation Clustering and Fine-Pruning read);
- ``gradients``: the per-sample input gradients of the paper's scan, in the library's precision and in float32
  (what a CPU without native bf16 computes), at batch 500 (the default before) and 256;
- ``predict``: flip test-time-augmented predictions in the library's precision.

Each variant runs ``--repeats`` times, alternating, and the best time of each is kept; the outputs of the two layouts
are compared too (equal up to float rounding: only the memory layout differs).

    python bench/eval_layout.py [--images 5000] [--repeats 3] [--scan] [--no-passes]

``--scan`` also times the paper's whole scan (every class, the base-class search and the filtering, no fine-tuning)
of the smoke profile's one-pixel model with gradient batches of 500 and of 256, alternating, the gradients' share
apart, and checks that the two scans agree in every number (the model comes from the cache, or is trained first:
about 2 minutes); ``--no-passes`` skips the single passes above.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from poisoncure import gradients, models, provenance, train


def network(kind: str) -> torch.nn.Module:
    model = models.whitened_net(width=16) if kind == "whitened_net16" else models.small_cnn(width=24)
    x = torch.rand(2000, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    models.fit_whitening(model, x)  # a no-op for the small CNN
    model.tta = True
    return model.eval()


def timed(fn, model) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn(model)
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scan", action="store_true", help="also time the paper's scan of the smoke one-pixel model")
    ap.add_argument("--no-passes", action="store_true", help="skip the single passes (with --scan: the scan alone)")
    args = ap.parse_args()
    prov = provenance.collect("cpu")
    print(f"{prov['device']}, torch {torch.__version__}, library precision {train.precision('cpu')}, "
          f"{args.images} images, best of {args.repeats}")
    x = np.random.default_rng(0).integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    y = np.random.default_rng(1).integers(0, 10, args.images)
    for kind in () if args.no_passes else ("whitened_net16", "small_cnn24"):
        model = network(kind)
        cases = {
            "features (float32)": lambda m: gradients.features(m, x, device="cpu"),
            "gradients, batch 500": lambda m: gradients.input_gradients(m, x, y, batch_size=500, device="cpu"),
            "gradients, batch 256": lambda m: gradients.input_gradients(m, x, y, batch_size=256, device="cpu"),
            "gradients float32, batch 500": lambda m: fp32(lambda: gradients.input_gradients(
                m, x, y, batch_size=500, device="cpu")),
            "gradients float32, batch 256": lambda m: fp32(lambda: gradients.input_gradients(
                m, x, y, batch_size=256, device="cpu")),
            "predict (flip TTA)": lambda m: train.predict(m, x, device="cpu"),
        }
        print(f"\n{kind}: ms per image, weights NCHW (as loaded) | channels_last | speed-up | max |difference|")
        for name, fn in cases.items():
            fn(model)  # warm-up: oneDNN builds its kernels once per shape
            t_nchw = t_cl = float("inf")
            out_nchw = out_cl = None
            for _ in range(args.repeats):  # the two layouts alternate, so a change of machine speed hits both
                model.to(memory_format=torch.contiguous_format)
                t, out_nchw = timed(fn, model)
                t_nchw = min(t_nchw, t)
                model.to(memory_format=torch.channels_last)
                t, out_cl = timed(fn, model)
                t_cl = min(t_cl, t)
            diff = float(np.abs(np.asarray(out_nchw, np.float64) - np.asarray(out_cl, np.float64)).max())
            print(f"  {name:30s} {1000 * t_nchw / len(x):6.3f} | {1000 * t_cl / len(x):6.3f} | "
                  f"{t_nchw / t_cl:5.2f}x | {diff:.2g}")
    if args.scan:
        scan(args.repeats)


def scan(repeats: int) -> None:
    """The paper's scan of the smoke profile's one-pixel model at gradient batches 500 and 256, alternating."""
    from poisoncure.data import load_cifar10
    from poisoncure.defenses import poison_cure
    from poisoncure.experiments import profiles
    from poisoncure.experiments.store import Recipe, get_model

    cifar = load_cifar10()
    tm = get_model(Recipe.from_params(profiles.load("smoke")["experiment"], poison="pixel"), device="cpu",
                   data=cifar, progress=False)
    train_set = tm.train_set.as_imageset()
    engine, in_gradients = poison_cure.input_gradients, [0.0]

    def timed_engine(*args, **kwargs):  # the scan's time in the gradient engine
        t = time.perf_counter()
        out = engine(*args, **kwargs)
        in_gradients[0] += time.perf_counter() - t
        return out

    poison_cure.input_gradients = timed_engine
    best: dict[int, tuple[float, float]] = {500: (float("inf"), 0.0), 256: (float("inf"), 0.0)}
    found = {}
    try:
        for _ in range(repeats):
            for batch in best:
                in_gradients[0] = 0.0
                t = time.perf_counter()
                res = poison_cure.PoisonCure(gradient_batch=batch, device="cpu", progress=False).run(
                    tm.model, train_set, neutralize=False)
                best[batch] = min(best[batch], (time.perf_counter() - t, in_gradients[0]))
                found[batch] = (res.scan.distances, res.filtering.flagged)
    finally:
        poison_cure.input_gradients = engine
    same = np.array_equal(found[500][0], found[256][0]) and np.array_equal(found[500][1], found[256][1])
    (t500, g500), (t256, g256) = best[500], best[256]
    print(f"\nthe paper's scan of the smoke one-pixel model (10 classes, base search, filtering), best of {repeats}: "
          f"batch 500 {t500:.1f} s ({g500:.1f} s of it in gradients), batch 256 {t256:.1f} s ({g256:.1f} s): "
          f"{t500 / t256:.2f}x the scan, {g500 / g256:.2f}x the gradients; distances and flags identical: {same}")


def fp32(fn):
    """Run ``fn`` with the library's precision forced to float32 (as on a CPU without native bf16)."""
    old = os.environ.get(train.PRECISION_ENV)
    os.environ[train.PRECISION_ENV] = "fp32"
    try:
        return fn()
    finally:
        if old is None:
            os.environ.pop(train.PRECISION_ENV)
        else:
            os.environ[train.PRECISION_ENV] = old


if __name__ == "__main__":
    main()
