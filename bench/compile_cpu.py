"""One training step of the smoke profile's network, eager against ``torch.compile``, on the CPU, in one run.

Issue 26 asks for ``torch.compile`` "where it pays". This measures whether it pays for the book's CPU training: the
whitened network (width 16) at the smoke recipe's batch size (256), channels_last, the library's precision policy
(bf16 autocast where the CPU has native bf16), Nesterov SGD with label smoothing as in ``train.fit``. It prints the
first step (for the compiled model: the compilation) and the mean of the following steps after a warm-up, for a
compiled model and then a second instance (whose compilation the in-process cache may shorten).

    python bench/compile_cpu.py [--steps 40]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from poisoncure import models, provenance, train

BATCH = 256


def network() -> torch.nn.Module:
    torch.manual_seed(0)
    net = models.whitened_net(width=16)
    models.fit_whitening(net, torch.rand(512, 3, 32, 32))  # fitted to noise: any fixed filters do for timing
    return net.to(memory_format=torch.channels_last).train()


def time_steps(net: torch.nn.Module, steps: int) -> tuple[float, float]:
    """(seconds of the first step, mean seconds per step after five more)."""
    xb = torch.rand(BATCH, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    yb = torch.randint(0, 10, (BATCH,))
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)

    def step():
        with train.autocast(torch.device("cpu")):
            loss = F.cross_entropy(net(xb), yb, label_smoothing=0.2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    for _ in range(5):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return first, (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=40, help="timed steps after the warm-up")
    args = ap.parse_args()
    print(f"{provenance.device_name('cpu')}, torch {torch.__version__}, precision {train.precision('cpu')}, "
          f"batch {BATCH}")
    rows = [("eager", time_steps(network(), args.steps)),
            ("torch.compile", time_steps(torch.compile(network()), args.steps)),
            ("torch.compile, second instance", time_steps(torch.compile(network()), args.steps)),
            ("eager, again", time_steps(network(), args.steps))]
    eager = min(r[1][1] for r in rows if r[0].startswith("eager"))
    for name, (first, per_step) in rows:
        print(f"{name:32s} first step {first:6.1f} s, then {1000 * per_step:6.1f} ms/step "
              f"({eager / per_step:.2f}x the faster eager run)")


if __name__ == "__main__":
    main()
