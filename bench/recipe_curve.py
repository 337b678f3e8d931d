"""Accuracy per CPU minute of the whitened fast network: which widths, epochs and airbench options a CPU profile
can afford, with both of the paper's attacks planted at once.

Each configuration trains one `models.whitened_net` on all 50,000 CIFAR-10 training images carrying two attacks
(pair 1: the paper's out-of-distribution blend image at 20 % opacity on 10 % of the automobiles -> dog; pair 2:
the one-pixel trigger on 10 % of the ships -> frog), then measures clean accuracy (and the worst class) and both
attack successes (beside the share of untriggered base-class images already sent to the target), with and without
flip test-time augmentation, and the training time on this machine. One JSON
line per configuration is appended to ``--out`` with the machine, commit and parameters, so the curve can be
drawn and extended across sessions; the table is printed as it goes. Nothing here enters the cache.

    .venv/bin/python bench/recipe_curve.py --configs 16:2 16:4 32:4 [--lookahead 0.95] [--bias-lr-scale 8]
                                           [--augment flip] [--batch 256] [--lr 0.2] [--out FILE]

A configuration is ``width:epochs`` (widths ``(w, 4w, 4w)``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from poisoncure import attacks, data, models, provenance, train

ROOT = Path(__file__).resolve().parents[1]


def poisoned_training_set(clean: data.ImageSet, seed: int = 0):
    """Both attacks planted at once: pair 1 blend (skimage image, 20 %) and pair 2 one pixel, 10 % each."""
    specs, images = [], clean
    for pair, size in ((1, "blend"), (2, "pixel")):
        base, target = attacks.PAPER_PAIRS[pair]
        trig = attacks.paper_trigger(pair, size, opacity=0.2, blend_source="skimage")
        p = attacks.poison(images, trig, base=base, target=target, rate=0.1, seed=seed)
        images = data.ImageSet(p.x, p.y)
        specs.append((f"pair {pair} {size}", p.spec))
    return images, specs


def run(width: int, epochs: int, args, train_set, test, specs) -> dict:
    cfg = train.TrainConfig(epochs=epochs, batch_size=args.batch, lr=args.lr, augment=args.augment,
                            label_smoothing=args.label_smoothing, lookahead=args.lookahead,
                            bias_lr_scale=args.bias_lr_scale, seed=args.seed)
    torch.manual_seed(args.seed)
    net = models.whitened_net(width=width)
    start = time.perf_counter()
    train.fit(net, train_set, cfg, device="cpu", progress=False)
    seconds = time.perf_counter() - start
    config = {k: v for k, v in vars(args).items() if k not in ("configs", "out")}
    row = {"width": width, "epochs": epochs, "train_seconds": round(seconds, 1), "config": config,
           "precision": train.precision("cpu"), "provenance": provenance.collect("cpu")}
    for tta in (False, True):
        clean = train.evaluate(net, test, device="cpu", tta=tta)
        key = "tta" if tta else "plain"
        row[key] = {"clean_accuracy": round(clean.clean_accuracy, 2),
                    "worst_class": round(min(clean.per_class_accuracy), 2),
                    **{name: round(train.evaluate(net, test, spec, device="cpu", tta=tta).attack_success_rate, 2)
                       for name, spec in specs}}
        for name, spec in specs:  # the floor: untriggered base-class images the model already sends to the target
            pred = train.predict(net, test.x[test.y == spec.base], device="cpu", tta=tta)
            row[key][f"{name} without trigger"] = round(100.0 * float((pred == spec.target).mean()), 2)
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["16:2", "16:4"], help="width:epochs")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--label-smoothing", type=float, default=0.2)
    ap.add_argument("--augment", default="flip", choices=train.AUGMENTATIONS)
    ap.add_argument("--lookahead", type=float, default=0.0)
    ap.add_argument("--bias-lr-scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-class", type=int, default=None, help="training images per class (default: all 5,000)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "recipe_curve.jsonl")
    args = ap.parse_args(argv)
    cifar = data.load_cifar10()
    train_set, specs = poisoned_training_set(data.balanced_subset(cifar.train, args.per_class, args.seed), args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(f"{provenance.device_name('cpu')}; {train.precision('cpu')}; commit {provenance.git_commit()}; "
          f"batch {args.batch}, lr {args.lr}, "
          f"augment {args.augment}, lookahead {args.lookahead}, bias lr x{args.bias_lr_scale}")
    print(f"{'widths':<12} {'epochs':>6} {'train s':>8} {'clean':>6} {'worst':>6} {'blend':>6} {'pixel':>6} "
          f"{'clean+tta':>9} {'worst+tta':>9} {'blend+tta':>9} {'pixel+tta':>9}")
    for spec in args.configs:
        width, epochs = (int(v) for v in spec.split(":"))
        row = run(width, epochs, args, train_set, cifar.test, specs)
        with open(args.out, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        cols = ("clean_accuracy", "worst_class", "pair 1 blend", "pair 2 pixel")
        plain = " ".join(f"{row['plain'][c]:>6.1f}" for c in cols)
        tta = " ".join(f"{row['tta'][c]:>9.1f}" for c in cols)
        print(f"{f'{width}/{4 * width}/{4 * width}':<12} {epochs:>6} {row['train_seconds']:>8.0f} {plain} {tta}",
              flush=True)


if __name__ == "__main__":
    main()
