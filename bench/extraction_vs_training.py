"""Benchmark: per-image cost of input-gradient extraction vs one training step, on the same model and batch.

The gradient engine (``poisoncure.gradients.input_gradients``) needs one forward and one backward pass per batch,
with no parameter gradients and no optimiser step, so it should cost at most about as much per image as training
(ratio ~1 or below). Both are timed in this one run, on this machine, and printed as a ratio; nothing is
asserted (timings never go in tests).

    .venv/bin/python bench/extraction_vs_training.py [--models small_cnn resnet18] [--batch 256] [--repeats 5]
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["small_cnn", "resnet18"], choices=sorted(models.MODELS))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    dev = resolve_device(args.device)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(args.batch, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, size=args.batch)
    print(f"device: {provenance.device_name(dev)}; commit {provenance.git_commit()}; batch {args.batch}; "
          f"median of {args.repeats} repeats")
    print(f"{'model':<12} {'train step ms/img':>18} {'extraction ms/img':>18} {'ratio extract/train':>20}")
    for name in args.models:
        torch.manual_seed(0)
        model = models.build_model(name)
        t_train = time_training_step(model, x, y, dev, args.repeats)
        t_grad = time_extraction(model, x, y, dev, args.repeats)
        print(f"{name:<12} {1e3 * t_train / args.batch:>18.3f} {1e3 * t_grad / args.batch:>18.3f} "
              f"{t_grad / t_train:>20.2f}")


if __name__ == "__main__":
    main()
