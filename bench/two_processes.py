"""Benchmark: would the build gain from running two chapters at once, one thread each?

A chapter's time is mostly training steps of the smoke profile's network. This script measures, in one run on this
machine, the training throughput (images/s, bf16 autocast where :func:`poisoncure.train.precision` picks it) of:

1. one process with all the machine's torch threads (how a chapter runs today);
2. as many processes as there are cores, one thread each, at the same time (two chapters side by side): their sum.

The ratio (2) / (1) is what running chapters in parallel could buy at best on the training steps (the rest of a
chapter, the kernel's start and the figures, would overlap too). Each measurement is a fixed wall time of steps after
a warm-up, the first case again at the end to show the machine's drift. Nothing is asserted.

    .venv/bin/python bench/two_processes.py [--model whitened_net:16] [--seconds 15] [--batch 256]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F


def worker(model_spec: str, threads: int, seconds: float, batch: int) -> float:
    """Training steps on random images for ``seconds`` of wall time, ``threads`` torch threads; images per second."""
    from poisoncure import models
    from poisoncure.train import autocast, precision

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    name, _, width = model_spec.partition(":")
    model = getattr(models, name)(**({"width": int(width)} if width else {}))
    if models.unfitted_whitening(model):
        models.fit_whitening(model, torch.rand(512, 3, 32, 32))
    model = model.to(memory_format=torch.channels_last).train()
    x = torch.rand(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    dev, prec = torch.device("cpu"), precision("cpu")

    def step() -> None:
        with autocast(dev, prec):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step()
        n += batch
    return n / (time.perf_counter() - start)


def run_workers(args: argparse.Namespace, processes: int, threads: int) -> list[float]:
    """``processes`` workers at once, each with ``threads`` threads; their images per second."""
    cmd = [sys.executable, __file__, "--worker", "--model", args.model, "--seconds", str(args.seconds),
           "--batch", str(args.batch), "--threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(processes)]
    return [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="whitened_net:16", help="name or name:width (the smoke profile's network)")
    ap.add_argument("--seconds", type=float, default=15.0, help="wall time of steps per measurement")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(worker(args.model, args.threads, args.seconds, args.batch))
        return
    from poisoncure import provenance
    from poisoncure.train import precision

    cores = os.cpu_count() or 1
    one = run_workers(args, 1, cores)[0]
    side_by_side = run_workers(args, cores, 1)
    again = run_workers(args, 1, cores)[0]
    print(f"{provenance.device_name('cpu')}; commit {provenance.git_commit()}; {args.model}, batch {args.batch}, "
          f"precision {precision('cpu')}, {args.seconds:g} s per measurement")
    print(f"one process, {cores} threads:            {one:8.0f} img/s")
    print(f"{cores} processes, 1 thread each, at once: {sum(side_by_side):8.0f} img/s "
          f"({' + '.join(f'{v:.0f}' for v in side_by_side)})")
    print(f"one process, {cores} threads, again:     {again:8.0f} img/s")
    print(f"side by side / one process: {sum(side_by_side) / ((one + again) / 2):.2f} "
          "(against the mean of the two single-process runs)")


if __name__ == "__main__":
    main()
