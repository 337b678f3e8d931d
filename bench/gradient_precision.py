"""What bf16 arithmetic does to the paper's defense: input gradients and the scan, filter and base decisions computed
with float32 and with bf16 passes through the same trained models, in one run on one machine.

The library runs the network's passes of :func:`poisoncure.gradients.input_gradients` in bf16 where the device
computes it natively (:func:`poisoncure.train.precision`), with the softmax and cross-entropy in float32. This script
trains one whitened network per trigger (pair 1, one pixel and the blend, 10 % of the base class; all of CIFAR-10,
``--epochs`` epochs, widths ``(w, 4w, 4w)``), then for each precision runs the paper's detection
(:meth:`PoisonCure.run` without neutralization: class scan, base scan, filtering) and prints, per model: the
per-sample cosine between the two precisions' target-class gradients (median and 1st percentile), the ratio R and
the named target and base under each, the filter's sensitivity and specificity under each, the number of samples
whose flag differs, and the time of each scan. Nothing enters the cache; nothing is asserted.

    .venv/bin/python bench/gradient_precision.py [--width 32] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from poisoncure import attacks, data, metrics, models, provenance, train
from poisoncure.defenses.poison_cure import PoisonCure
from poisoncure.gradients import input_gradients
from poisoncure.train import PRECISION_ENV


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args(argv)
    cifar = data.load_cifar10()
    base, target = attacks.PAPER_PAIRS[1]
    print(f"{provenance.device_name('cpu')}; commit {provenance.git_commit()}; library precision here "
          f"{train.precision('cpu')}; whitened_net width {args.width}, {args.epochs} epochs, "
          f"pair 1 ({base} -> {target})")
    for size in ("pixel", "blend"):
        trig = attacks.paper_trigger(1, size, opacity=0.2, blend_source="skimage")
        ps = attacks.poison(cifar.train, trig, base=base, target=target, rate=0.1, seed=0)
        torch.manual_seed(0)
        net = models.whitened_net(width=args.width)
        train.fit(net, ps.as_imageset(), train.TrainConfig(epochs=args.epochs, label_smoothing=0.2), "cpu",
                  progress=False)
        m = train.evaluate(net, cifar.test, ps.spec, "cpu")
        rows = np.flatnonzero(ps.y == ps.spec.target)
        out, grads = {}, {}
        for prec in ("fp32", "bf16"):
            os.environ[PRECISION_ENV] = prec
            grads[prec] = input_gradients(net, ps.x[rows], ps.spec.base, device="cpu")
            t = time.perf_counter()
            res = PoisonCure(device="cpu", progress=False).run(net, ps.as_imageset(), neutralize=False)
            flagged = res.is_poison(len(ps))
            out[prec] = {"seconds": time.perf_counter() - t, "ratio": res.scan.ratio, "target": res.scan.target,
                         "base": None if res.base is None else res.base.base, "flagged": flagged,
                         "sens": metrics.sensitivity(flagged[rows], ps.is_poison[rows]),
                         "spec": metrics.specificity(flagged[rows], ps.is_poison[rows])}
        os.environ.pop(PRECISION_ENV, None)
        a, b = grads["fp32"], grads["bf16"]
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)
        differ = int((out["fp32"]["flagged"] != out["bf16"]["flagged"]).sum())
        print(f"\n{size}: clean accuracy {m.clean_accuracy:.1f} %, attack success {m.attack_success_rate:.1f} %; "
              f"target-class gradients (base label): cosine fp32 vs bf16 median {np.median(cos):.4f}, "
              f"1st percentile {np.percentile(cos, 1):.4f}; flags that differ: {differ} of {len(ps)}")
        names = cifar.train.classes
        for prec, o in out.items():
            print(f"  {prec}: scan+base+filter {o['seconds']:6.1f} s; R {o['ratio']:.3f}, target "
                  f"{names[o['target']]}, base {None if o['base'] is None else names[o['base']]}; "
                  f"sensitivity {o['sens']:.1f} %, specificity {o['spec']:.1f} %")
        print(f"  bf16 / fp32 time: {out['bf16']['seconds'] / out['fp32']['seconds']:.2f}")


if __name__ == "__main__":
    main()
