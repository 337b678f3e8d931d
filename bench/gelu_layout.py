"""The whitened networks with :class:`poisoncure.models.GELU` (a channels_last batch computed through a permuted,
contiguous view) against ``torch.nn.GELU`` (before), in one run on this machine.

Every batch the library feeds a network is channels_last. On the CPU, PyTorch's GELU kernels, forward and backward,
take a slow path for a 4-d channels_last tensor, while ReLU, batch norm and max-pooling do not. This times, with
untrained networks (the work does not depend on the weights), alternating the two variants ``--repeats`` times and
keeping the best of each:

1. GELU alone, forward and backward, on a batch of the width-64 network's first group (256 x 64 x 15 x 15) in NCHW, in
   channels_last with ``nn.GELU`` and in channels_last with ``models.GELU``;
2. one training step (batch 256, Nesterov SGD) of the whitened network at widths 16 (the smoke profile) and 64
   (``cpu-full``), in the library's precision (bf16 where the CPU has it natively);
3. the input gradients of 2,048 images (``gradients.input_gradients``, the paper's scans), width 16;
4. PoisHygiene's λ calibration on the CIFAR-10 setting of chapter 11 (suspect the whitened network of width 16,
   reference the small CNN of width 24; 100 ascent steps, 10 probes per label);
5. with ``--fit``: whole ``train.fit`` runs of the smoke recipe (width 16, 2 epochs of 20,000 random images: data
   loading, augmentation, schedule and lookahead included), the real training loop rather than one step.

    python bench/gelu_layout.py [--repeats 3] [--fit] [--only-fit]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from poisoncure import gradients, models, provenance, train
from poisoncure.defenses.poishygiene import PoisHygiene

VARIANTS = ("nn.GELU (before)", "models.GELU (now)")


def with_torch_gelu(net: torch.nn.Module) -> torch.nn.Module:
    """``net`` with every :class:`models.GELU` replaced by a plain ``torch.nn.GELU`` (the network as it was)."""
    for name, child in net.named_children():
        if isinstance(child, models.GELU):
            setattr(net, name, torch.nn.GELU(approximate=child.approximate))
        else:
            with_torch_gelu(child)
    return net


def whitened(width: int, variant: str) -> torch.nn.Module:
    torch.manual_seed(0)
    net = models.whitened_net(width=width)
    models.fit_whitening(net, torch.rand(512, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    return (with_torch_gelu(net) if variant == VARIANTS[0] else net).to(memory_format=torch.channels_last)


def seconds(fn: Callable[[], object], warm: int, timed: int) -> float:
    for _ in range(warm):
        fn()
    start = time.perf_counter()
    for _ in range(timed):
        fn()
    return (time.perf_counter() - start) / timed


def gelu_alone(dtype: torch.dtype) -> dict[str, float]:
    x = torch.randn(256, 64, 15, 15, generator=torch.Generator().manual_seed(0)).to(dtype)
    cases = {"NCHW, nn.GELU": (torch.contiguous_format, torch.nn.GELU()),
             "channels_last, nn.GELU": (torch.channels_last, torch.nn.GELU()),
             "channels_last, models.GELU": (torch.channels_last, models.GELU())}
    out = {}
    for name, (fmt, module) in cases.items():
        xi = x.clone(memory_format=fmt).requires_grad_(True)
        grad = torch.ones_like(xi)
        out[name] = seconds(lambda xi=xi, module=module, grad=grad: module(xi).backward(grad), 3, 20)
    return out


def training_step(width: int, variant: str) -> float:
    """Training images per second of one step at batch 256."""
    net = whitened(width, variant).train()
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01, momentum=0.9, nesterov=True)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(256, 3, 32, 32, generator=g).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (256,), generator=g)
    dev = torch.device("cpu")

    def step():
        opt.zero_grad(set_to_none=True)
        with train.autocast(dev):
            loss = F.cross_entropy(net(x).float(), y)
        loss.backward()
        opt.step()

    return 256 / seconds(step, 3, 10 if width == 16 else 4)


def input_gradients(variant: str, images: np.ndarray) -> float:
    """Images per second of the input gradients (the library's batch)."""
    net = whitened(16, variant).eval()
    return len(images) / seconds(lambda: gradients.input_gradients(net, images, 3, device="cpu"), 1, 2)


def hygiene_lambda(variant: str) -> float:
    """Seconds of one λ calibration round (100 steps) on chapter 11's CIFAR-10 setting."""
    suspect = whitened(16, variant).eval()
    torch.manual_seed(0)
    ref = models.small_cnn(width=24).eval()
    ph = PoisHygiene(probes=10, calibration_steps=100, calibration_rounds=1, seed=0, device="cpu", progress=False)
    return seconds(lambda: ph.calibrate(suspect, [ref]), 0, 1)


def fit_seconds(variant: str, images: np.ndarray, labels: np.ndarray) -> float:
    """Seconds of one ``train.fit`` of the smoke recipe (2 epochs) on ``images``."""
    from poisoncure.experiments import profiles
    from poisoncure.experiments.store import Recipe

    recipe = Recipe.from_params({**profiles.load("smoke")["experiment"], "epochs": 2}, poison="clean")
    torch.manual_seed(0)
    net = models.whitened_net(width=16)
    if variant == VARIANTS[0]:
        with_torch_gelu(net)
    start = time.perf_counter()
    train.fit(net, train.ImageSet(images, labels), recipe.train_config(), "cpu", progress=False)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="alternating rounds; the best of each variant is kept")
    ap.add_argument("--fit", action="store_true", help="also time whole train.fit runs (part 5)")
    ap.add_argument("--only-fit", action="store_true", help="time only the train.fit runs (part 5)")
    args = ap.parse_args()
    prec = train.precision("cpu")
    print(f"{provenance.device_name('cpu')}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"precision {prec}; best of {args.repeats} alternating rounds")
    if args.fit or args.only_fit:
        g = np.random.default_rng(0)
        images, labels = g.integers(0, 256, (20_000, 32, 32, 3), dtype=np.uint8), g.integers(0, 10, 20_000)
        secs: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(args.repeats):
            for v in VARIANTS:
                secs[v].append(fit_seconds(v, images, labels))
        before, now = min(secs[VARIANTS[0]]), min(secs[VARIANTS[1]])
        print(f"\n5. train.fit, smoke recipe, 2 epochs of 20,000 images (s; every round: "
              f"{', '.join(f'{a:.1f}/{b:.1f}' for a, b in zip(*secs.values(), strict=True))})\n"
              f"   {VARIANTS[0]}: {before:8.1f}   {VARIANTS[1]}: {now:8.1f}   ({before / now:.2f}x)")
        if args.only_fit:
            return
    dtype = torch.bfloat16 if prec == "bf16" else torch.float32
    alone: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, s in gelu_alone(dtype).items():
            alone[name] = min(alone.get(name, np.inf), s)
    print(f"\n1. GELU forward + backward, 256 x 64 x 15 x 15, {dtype}: ms per batch")
    for name, s in alone.items():
        print(f"   {name:28s} {1e3 * s:7.2f}")
    images = np.random.default_rng(0).integers(0, 256, (2048, 32, 32, 3), dtype=np.uint8)
    parts = {"2. training step, width 16 (images/s)": (lambda v: training_step(16, v), max),
             "2. training step, width 64 (images/s)": (lambda v: training_step(64, v), max),
             "3. input gradients, width 16 (images/s)": (lambda v: input_gradients(v, images), max),
             "4. PoisHygiene λ round, CIFAR-10 (s)": (hygiene_lambda, min)}
    for title, (fn, best) in parts.items():
        got: dict[str, float] = {}
        for _ in range(args.repeats):
            for v in VARIANTS:
                val = fn(v)
                got[v] = best(got[v], val) if v in got else val
        before, now = got[VARIANTS[0]], got[VARIANTS[1]]
        speedup = now / before if best is max else before / now
        print(f"\n{title}\n   {VARIANTS[0]}: {before:8.1f}   {VARIANTS[1]}: {now:8.1f}   ({speedup:.2f}x)")


if __name__ == "__main__":
    main()
