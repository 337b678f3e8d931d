"""One training step of the smoke profile's network (whitened, width 16, batch 256, float32) with its weights and
batches in channels_last (what :func:`poisoncure.train.fit` uses) against NCHW, in one run on this machine.

The library chose channels_last on CPUs with native bf16. Whether it also pays where training runs in float32 on
AVX2 only (the AMD EPYC Milan kind, no AVX-512) can be checked on an AVX-512 machine by capping oneDNN's
instruction set: ``ONEDNN_MAX_CPU_ISA=AVX2 python bench/train_layout.py``. Random images and labels (the work does
not depend on them); ``--repeats`` rounds alternate the two layouts, 10 timed steps after 3 warm-up steps each, and
the best round of each is kept.

    python bench/train_layout.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from poisoncure import models, provenance, train

LAYOUTS = {"channels_last": torch.channels_last, "NCHW": torch.contiguous_format}


def images_per_second(layout: torch.memory_format, x: torch.Tensor, y: torch.Tensor, steps: int = 10) -> float:
    torch.manual_seed(0)
    net = models.whitened_net(width=16)
    models.fit_whitening(net, train.to_float(x))
    net = net.to(memory_format=layout).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    xf = train.to_float(x).contiguous(memory_format=layout)
    for i in range(steps + 3):
        if i == 3:
            start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(xf), y).backward()
        opt.step()
    return len(x) * steps / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (256, 32, 32, 3), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (256,), generator=g)
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "as detected")
    print(f"{provenance.device_name('cpu')}, torch {torch.__version__}, oneDNN instruction set: {isa}, float32")
    best = {name: 0.0 for name in LAYOUTS}
    for _ in range(args.repeats):
        for name, layout in LAYOUTS.items():
            best[name] = max(best[name], images_per_second(layout, x, y))
    for name, ips in best.items():
        print(f"{name:14s} {ips:8.0f} training images/s")
    print(f"channels_last / NCHW: {best['channels_last'] / best['NCHW']:.2f}×")


if __name__ == "__main__":
    main()
