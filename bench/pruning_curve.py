"""Fine-Pruning's curves: every pruned model evaluated whole (the book's until this change) against the layers
before the pruned one run once per image and only the rest per ratio (:meth:`FinePruning.predictions`), in one run
on the same model and images.

Model: the smoke profile's architecture (the whitened network at width 16, flip test-time augmentation) with its
whitening fitted to the images and random weights otherwise: the time of a forward pass does not depend on the
weights, and the check of agreement needs no trained model (the unit test checks agreement on a trained one).
Two workloads, as chapter 7 runs them per attacked model: the defense's own curve (20 ratios, 1,000 clean images)
and the chapter's curve figure (20 ratios, 2,000 held-out images and their triggered base-class images). Prints the
time of each way (best of three), their ratio and whether the predictions agree.

    .venv/bin/python bench/pruning_curve.py
"""

import time

import numpy as np
import torch

from poisoncure import attacks, data, models, provenance, train
from poisoncure.defenses.fine_pruning import FinePruning, keep_mask

REPEATS = 3


def whole(fp: FinePruning, model, order, ratios, x):
    """The former way: a masked copy of the model, evaluated whole at each ratio."""
    pruned, mask = fp.masked_copy(model)
    out = []
    for r in ratios:
        mask.keep.copy_(torch.from_numpy(keep_mask(order, r)))
        out.append(train.predict(pruned, x, device=fp.device))
    return np.stack(out)


def best(f):
    times, out = [], None
    for _ in range(REPEATS):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    cifar = data.load_cifar10()
    torch.manual_seed(0)
    model = models.whitened_net(width=16)
    models.fit_whitening(model, train.to_float(torch.from_numpy(cifar.train.x[:5000])))
    model.tta = True
    model.eval()
    fp = FinePruning(device="cpu", progress=False)
    order = np.random.default_rng(0).permutation(fp.activations(model, None)[1])
    clean = data.balanced_subset(cifar.test, 100, seed=0)
    held = data.balanced_subset(cifar.test, 200, seed=1)
    spec = attacks.AttackSpec(attacks.paper_trigger(1, "blend"), base=1, target=5, rate=0.1, seed=0)
    curve_x = np.concatenate([held.x, attacks.triggered_test_set(held, spec).x])
    print(f"device: {provenance.device_name('cpu')}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"precision {train.precision(torch.device('cpu'))}")
    for name, x in (("defense's curve, 1,000 clean images", clean.x), ("chapter 7's figure, held-out + triggered "
                                                                        f"({len(curve_x)} images)", curve_x)):
        t_old, p_old = best(lambda x=x: whole(fp, model, order, fp.ratios, x))
        t_new, p_new = best(lambda x=x: fp.predictions(model, order, fp.ratios, x))
        print(f"{name}: whole model per ratio {t_old:.2f} s, split {t_new:.2f} s, {t_old / t_new:.1f}x faster; "
              f"predictions agree on {100 * (p_old == p_new).mean():.2f} % of {p_old.size}")


if __name__ == "__main__":
    main()
