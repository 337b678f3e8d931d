"""Benchmark: training and input-gradient throughput of each model, in one run on one machine, with the achieved
GFLOP/s of training as a fraction of this machine's measured dense-matmul peak.

The gradient engine (``poisoncure.gradients.input_gradients``) needs one forward and one backward pass per batch,
with no parameter gradients and no optimiser step, so it should cost at most about as much per image as training
(ratio ~1 or below). Both are timed in this one run, on this machine, and printed as a ratio; nothing is
asserted (timings never go in tests). Models are given as ``name`` or ``name:width`` (the smoke profile's small
CNN is ``small_cnn:24``; the whitened fast network ``whitened_net:16`` ... ``:64``). The FLOPs of one training step
are counted by ``torch.utils.flop_counter`` (forward and backward convolutions and matmuls); the peak is the best of
a few square matmuls (fp32 on a CPU, bf16 on CUDA) timed in the same run.

    .venv/bin/python bench/extraction_vs_training.py [--models small_cnn:24 whitened_net:16 resnet18]
                                                     [--batch 256] [--repeats 5]
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
from poisoncure.train import augment_batch, resolve_device, to_float


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def time_training_step(model, x_uint8: np.ndarray, y: np.ndarray, dev: torch.device, repeats: int) -> float:
    """Median seconds of one SGD step (as in ``train.fit``: float conversion, flip, AMP on CUDA) on the batch."""
    model.to(dev).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    xb_u8, yb = torch.from_numpy(x_uint8).to(dev), torch.from_numpy(y).to(dev)
    times = []
    for i in range(repeats + 1):
        _sync(dev)
        t = time.perf_counter()
        xb = augment_batch(to_float(xb_u8), "flip")
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(dev)
        if i:  # the first step warms up
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def time_extraction(model, x_uint8: np.ndarray, y: np.ndarray, dev: torch.device, repeats: int) -> float:
    """Median seconds of ``input_gradients`` on the batch (one backward pass, float32), including the copy back."""
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


def matmul_peak(dev: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of an n x n matmul on this device (fp32 on a CPU, bf16 on CUDA), as the roofline's ceiling."""
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
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
    args = ap.parse_args(argv)
    dev = resolve_device(args.device)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(args.batch, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, size=args.batch)
    peak = matmul_peak(dev)
    print(f"device: {provenance.device_name(dev)}; commit {provenance.git_commit()}; batch {args.batch}; "
          f"median of {args.repeats} repeats; torch threads {torch.get_num_threads()}; "
          f"dense matmul peak {peak:.1f} GFLOP/s")
    head = (f"{'model':<16} {'params':>9} {'train img/s':>12} {'extract img/s':>14} {'extract/train':>14} "
            f"{'train GFLOP/img':>16} {'train GFLOP/s':>14} {'of peak':>8} {'train vs first':>15}")
    print(head)
    first = None
    for spec in args.models:
        torch.manual_seed(0)
        model = build(spec)
        t_train = time_training_step(model, x, y, dev, args.repeats)
        t_grad = time_extraction(model, x, y, dev, args.repeats)
        flops = training_flops(model, x, y, dev) / args.batch
        rate = args.batch / t_train
        first = first or rate
        print(f"{spec:<16} {models.count_parameters(model):>9,} {rate:>12.0f} {args.batch / t_grad:>14.0f} "
              f"{t_grad / t_train:>14.2f} {flops / 1e9:>16.3f} {flops * rate / 1e9:>14.1f} "
              f"{flops * rate / 1e9 / peak:>8.1%} {rate / first:>15.2f}")


if __name__ == "__main__":
    main()
