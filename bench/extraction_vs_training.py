"""Benchmark: training and input-gradient throughput of each model, in one run on one machine, with the achieved
GFLOP/s of training as a fraction of this machine's measured dense-matmul peak.

The gradient engine (``poisoncure.gradients.input_gradients``) needs one forward and one backward pass per batch,
with no parameter gradients and no optimiser step, so it should cost at most about as much per image as training
(ratio ~1 or below). Both are timed in this one run, on this machine, and printed as a ratio; nothing is
asserted (timings never go in tests). Models are given as ``name`` or ``name:width`` (the smoke profile's small
CNN is ``small_cnn:24``; the whitened fast network ``whitened_net:16`` ... ``:64``). The FLOPs of one training step
are counted by ``torch.utils.flop_counter`` (forward and backward convolutions and matmuls); the peak is the best of
a few square matmuls in the same arithmetic, timed in the same run. Training is timed in every precision of
``--precisions`` (default: float32 and, where :func:`poisoncure.train.precision` picks it, bf16 autocast), so the
bf16 speed-up of this machine is a ratio measured in one run; input gradients are taken in the library's precision
(``train.precision``: bf16 autocast where native, with the loss and the returned gradients in float32).

    .venv/bin/python bench/extraction_vs_training.py [--models small_cnn:24 whitened_net:16 resnet18]
                                                     [--batch 256] [--repeats 5] [--precisions fp32 bf16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from poisoncure import models, provenance
from poisoncure.gradients import input_gradients
from poisoncure.train import augment_batch, autocast, precision, resolve_device, to_float


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def time_training_step(model, x_uint8: np.ndarray, y: np.ndarray, dev: torch.device, repeats: int,
                       prec: str = "fp32") -> float:
    """Median seconds of one SGD step (as in ``train.fit``: float conversion, flip, autocast in ``prec``)."""
    model.to(dev).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    xb_u8, yb = torch.from_numpy(x_uint8).to(dev), torch.from_numpy(y).to(dev)
    times = []
    for i in range(repeats + 1):
        _sync(dev)
        t = time.perf_counter()
        xb = augment_batch(to_float(xb_u8), "flip")
        with autocast(dev, prec):
            loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(dev)
        if i:  # the first step warms up
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def time_extraction(model, x_uint8: np.ndarray, y: np.ndarray, dev: torch.device, repeats: int) -> float:
    """Median seconds of ``input_gradients`` on the batch (one backward pass, library precision), copy back included."""
    times = []
    for i in range(repeats + 1):
        _sync(dev)
        t = time.perf_counter()
        input_gradients(model, x_uint8, y, batch_size=len(x_uint8), device=dev)
        _sync(dev)
        if i:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def training_flops(model, x_uint8: np.ndarray, y: np.ndarray, dev: torch.device) -> float:
    """FLOPs of one training step's forward and backward pass on the batch (torch's FLOP counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.to(dev).to(memory_format=torch.channels_last).train()
    xb, yb = to_float(torch.from_numpy(x_uint8).to(dev)), torch.from_numpy(y).to(dev)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(xb), yb).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def matmul_peak(dev: torch.device, prec: str, n: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of an n x n matmul on this device in ``prec`` ('fp32' or 'bf16'), as the roofline's ceiling."""
    dtype = torch.bfloat16 if prec == "bf16" else torch.float32
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    best = float("inf")
    for i in range(repeats + 1):
        _sync(dev)
        t = time.perf_counter()
        a @ b
        _sync(dev)
        if i:
            best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def build(spec: str):
    """``name`` or ``name:width`` -> a fresh model (a whitened network gets its whitening fitted to random images)."""
    name, _, width = spec.partition(":")
    model = models.build_model(name, **({"width": int(width)} if width else {}))
    if models.unfitted_whitening(model):
        rng = np.random.default_rng(1)
        models.fit_whitening(model, to_float(torch.from_numpy(rng.integers(0, 256, (512, 32, 32, 3), dtype=np.uint8))))
    return model


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["small_cnn:24", "whitened_net:16", "whitened_net:32", "resnet18"],
                    help="name or name:width, name one of " + ", ".join(sorted(models.MODELS)))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=None,
                    help="training arithmetic(s) to time (default: fp32, and bf16 where the library would use it)")
    args = ap.parse_args(argv)
    dev = resolve_device(args.device)
    precs = args.precisions or sorted({"fp32", precision(dev)}, key=("fp32", "bf16").index)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(args.batch, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, size=args.batch)
    peaks = {p: matmul_peak(dev, p) for p in precs}
    print(f"device: {provenance.device_name(dev)}; commit {provenance.git_commit()}; batch {args.batch}; "
          f"median of {args.repeats} repeats; torch threads {torch.get_num_threads()}; library precision "
          f"{precision(dev)}; dense matmul peak " + ", ".join(f"{p} {v:.1f} GFLOP/s" for p, v in peaks.items()))
    cols = "".join(f" {'train img/s ' + p:>17} {'GFLOP/s ' + p:>13} {'of peak':>8}" for p in precs)
    print(f"{'model':<16} {'params':>9}{cols} {'extract img/s':>14} {'extract/train':>14} {'GFLOP/img':>10} "
          f"{'last vs first':>14} {'train vs first model':>21}")
    first = None
    for spec in args.models:
        torch.manual_seed(0)
        model = build(spec)
        rates = {p: args.batch / time_training_step(model, x, y, dev, args.repeats, p) for p in precs}
        t_grad = time_extraction(model, x, y, dev, args.repeats)
        flops = training_flops(model, x, y, dev) / args.batch
        best = rates[precs[-1]]
        first = first or best
        cells = "".join(f" {rates[p]:>17.0f} {flops * rates[p] / 1e9:>13.1f} {flops * rates[p] / 1e9 / peaks[p]:>8.1%}"
                        for p in precs)
        print(f"{spec:<16} {models.count_parameters(model):>9,}{cells} {args.batch / t_grad:>14.0f} "
              f"{t_grad / (args.batch / best):>14.2f} {flops / 1e9:>10.3f} {best / rates[precs[0]]:>14.2f} "
              f"{best / first:>21.2f}")


if __name__ == "__main__":
    main()
