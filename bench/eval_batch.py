"""The batch size of the forward-only passes on the CPU — predictions (:func:`poisoncure.train.predict`) and
representations (:func:`poisoncure.gradients.features`) — 1,000 images (the default before) against 256 (the input
gradients' batch since 63b6875, ``gradients.DEFAULT_BATCH``), in one run on this machine.

For the smoke profile's whitened network (width 16, flip test-time augmentation) and the small CNN (width 24),
untrained (the work does not depend on the weights), on CIFAR-10 test images: each variant runs ``--repeats`` times,
the batch sizes alternating, and the best time of each is kept; the outputs of the two batch sizes are compared
(predictions: share identical; representations: largest absolute difference).

    python bench/eval_batch.py [--images 5000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from poisoncure import data, gradients, models, provenance, train

BATCHES = (1000, 256)


def network(kind: str, x: np.ndarray) -> torch.nn.Module:
    torch.manual_seed(0)
    model = models.whitened_net(width=16) if kind == "whitened_net16" else models.small_cnn(width=24)
    models.fit_whitening(model, train.to_float(torch.from_numpy(x[:2000])))  # a no-op for the small CNN
    model.tta = True
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    x = data.load_cifar10().test.x[: args.images]
    print(f"{provenance.device_name('cpu')}, torch {torch.__version__}, library precision "
          f"{train.precision(torch.device('cpu'))}, {len(x)} images, best of {args.repeats}")
    for kind in ("whitened_net16", "small_cnn24"):
        model = network(kind, x)
        cases = {"predict (flip TTA)": lambda b, model=model: train.predict(model, x, batch_size=b, device="cpu"),
                 "features (float32)": lambda b, model=model: gradients.features(model, x, batch_size=b, device="cpu")}
        print(f"\n{kind}: ms per image at batch " + " | ".join(map(str, BATCHES)) + " | speed-up | agreement")
        for name, fn in cases.items():
            fn(BATCHES[-1])  # warm-up: oneDNN builds its kernels once per shape
            best = dict.fromkeys(BATCHES, float("inf"))
            out = {}
            for _ in range(args.repeats):  # alternating, so a change of machine speed hits both
                for b in BATCHES:
                    t = time.perf_counter()
                    out[b] = fn(b)
                    best[b] = min(best[b], time.perf_counter() - t)
            a, z = out[BATCHES[0]], out[BATCHES[-1]]
            agree = (f"{100 * (a == z).mean():.2f} % identical" if a.dtype.kind == "i"
                     else f"max |diff| {float(np.abs(a.astype(np.float64) - z).max()):.2g}")
            print(f"  {name:20s} " + " | ".join(f"{1000 * best[b] / len(x):6.3f}" for b in BATCHES)
                  + f" | {best[BATCHES[0]] / best[BATCHES[-1]]:5.2f}x | {agree}")


if __name__ == "__main__":
    main()
