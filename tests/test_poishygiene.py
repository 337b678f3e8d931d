"""PoisHygiene (SPEC-related-defenses Part II B; C.5 items 8-9), the all-to-one backdoor and the pool models.

The detection test uses two hand-built linear classifiers on 3x8x8 inputs: a healthy one that reads the top six
rows (left half against right half) and an infected twin that also sends anything with a bright bottom-right
corner to label 1 — an extra input region mapped to the target, as a backdoor is. The corner is invisible to the
healthy model, so probes can find inputs the infected model calls 1 while the healthy one insists on 0.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch
from torch import nn

from poisoncure import attacks, data, models
from poisoncure.defenses.poishygiene import MITIGATE_FINETUNE, PoisHygiene, train_reference

SHAPE = (3, 8, 8)


class TwoClass(nn.Module):
    """logits (-s/2, s/2) with s = scale·(mean of the top-left block − mean of the top-right block)
    + trigger·(mean of the bottom-right 2x2 corner)."""

    def __init__(self, scale: float = 20.0, trigger: float = 0.0):
        super().__init__()
        self.scale, self.trigger = scale, trigger

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale * (x[:, :, :6, :4].mean((1, 2, 3)) - x[:, :, :6, 4:].mean((1, 2, 3)))
        s = s + self.trigger * x[:, :, 6:, 6:].mean((1, 2, 3))
        return torch.stack([-s / 2, s / 2], 1)  # both logits depend on x, as in a real network


def hygiene(**kw) -> PoisHygiene:
    params = dict(probes=16, steps=200, warm_steps=200, calibration_steps=200, calibration_rounds=2, lr=0.05,
                  device="cpu", progress=False)
    return PoisHygiene(**{**params, **kw})


def test_detect_flags_the_infected_label_and_not_its_healthy_twin():
    ph = hygiene()
    healthy, reference = TwoClass(20.0), TwoClass(18.0)
    infected = TwoClass(20.0, trigger=60.0)
    gam = ph.gammas(reference, SHAPE, 2)
    sick = ph.scan(infected, reference, SHAPE, 2, gammas=gam)
    well = ph.scan(healthy, reference, SHAPE, 2, gammas=gam)
    assert sick.prob[1] >= 0.9 and sick.prob[0] <= 0.1
    assert list(sick.infected) == [False, True] and sick.model_infected and sick.suspect == 1
    assert well.prob.max() <= 0.1 and not well.model_infected
    # the successful probes sit in the poisoned region: the infected model says 1 and the reference 0, and
    # blacking out the corner (removing the "trigger") sends them back to 0 under the infected model too
    probes = torch.from_numpy(sick.probes[1][sick.success[1]])
    assert (infected(probes).argmax(1) == 1).all() and (reference(probes).argmax(1) == 0).all()
    probes[:, :, 6:, 6:] = 0.0
    assert (infected(probes).argmax(1) == 0).all()


def test_gamma_is_half_the_attainable_maximum_and_lambda_is_positive_finite():
    ph = hygiene()
    reference = TwoClass(18.0)
    gam = ph.gammas(reference, SHAPE, 2)
    # the largest cross-entropy of a logit pair (-s/2, s/2) with |s| <= 18 is softplus(18) for either label
    attainable = float(nn.functional.softplus(torch.tensor(18.0)))
    assert gam.shape == (1, 2)
    np.testing.assert_allclose(gam, 0.5 * attainable, rtol=0.02)
    lam = ph.calibrate(TwoClass(20.0, trigger=60.0), [reference, TwoClass(15.0)], SHAPE, 2)
    assert lam.shape == (2, 2) and np.isfinite(lam).all() and (lam > 0).all()


def test_ensemble_criterion_needs_every_reference_to_disagree():
    """A second reference that sees the corner (it is infected too) removes the disagreement: nothing passes."""
    ph = hygiene()
    infected = TwoClass(20.0, trigger=60.0)
    one = ph.scan(infected, [TwoClass(18.0)], SHAPE, 2)
    both = ph.scan(infected, [TwoClass(18.0), TwoClass(18.0, trigger=60.0)], SHAPE, 2)
    assert one.prob[1] >= 0.9
    assert both.prob.max() <= 0.1


def test_grey_probes_stay_grey_and_in_the_image_domain():
    ph = hygiene(grey=True, probes=4, steps=50, warm_steps=50, calibration_steps=50, calibration_rounds=1)
    scan = ph.scan(TwoClass(20.0, trigger=60.0), TwoClass(18.0), SHAPE, 2)
    assert scan.probes.shape == (2, 4, *SHAPE)
    assert np.array_equal(scan.probes[:, :, 0], scan.probes[:, :, 2])
    assert scan.probes.min() >= 0.0 and scan.probes.max() <= 1.0


class LayoutSpy(TwoClass):
    """TwoClass that records whether every batch it is given is channels_last."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.layouts: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.layouts.append(x.is_contiguous(memory_format=torch.channels_last))
        return super().forward(x)


@pytest.mark.parametrize("grey", [False, True])
def test_every_probe_batch_reaches_the_networks_in_channels_last(grey):
    """As every other batch of the library: on the CPU an NCHW batch takes oneDNN's slow paths (bench/README.md,
    "PoisHygiene's probes in channels_last"). Grey probes are one channel expanded to three, never contiguous."""
    ph = hygiene(grey=grey, probes=4, steps=5, warm_steps=5, calibration_steps=5, calibration_rounds=1)
    suspect, reference = LayoutSpy(20.0, trigger=60.0), LayoutSpy(18.0)
    ph.scan(suspect, reference, SHAPE, 2)
    ph.craft(suspect, reference, target=1, others=np.zeros(4, dtype=int), shape=SHAPE)
    assert len(suspect.layouts) > 10 and len(reference.layouts) > 10
    assert all(suspect.layouts) and all(reference.layouts)


def test_craft_makes_the_model_say_target_and_the_reference_say_other():
    ph = hygiene(steps=300)
    infected, reference = TwoClass(20.0, trigger=60.0), TwoClass(18.0)
    x, ok = ph.craft(infected, reference, target=1, others=np.zeros(8, dtype=int), shape=SHAPE)
    assert ok.all()
    xt = torch.from_numpy(x)
    ce = nn.functional.cross_entropy
    assert float(ce(infected(xt), torch.ones(8, dtype=torch.long), reduction="none").max()) < 0.01
    assert float(ce(reference(xt), torch.zeros(8, dtype=torch.long), reduction="none").max()) < 0.01
    with pytest.raises(ValueError, match="others"):
        ph.craft(infected, reference, target=1, others=np.ones(3, dtype=int), shape=SHAPE)


@pytest.mark.parametrize(("name", "value"), [("probes", 0), ("steps", 0), ("lr", 0.0), ("beta", -1.0),
                                             ("rho_gamma", 1.5), ("tau", 1.0), ("optimizer", "sgd"),
                                             ("init_mean", 2.0), ("chunk", 0), ("calibration_rounds", 0)])
def test_bad_parameters_raise(name, value):
    with pytest.raises(ValueError, match=name):
        PoisHygiene(**{name: value})


def test_scan_rejects_bad_inputs():
    ph = hygiene(probes=2, steps=1, warm_steps=0, calibration_steps=1, calibration_rounds=1)
    with pytest.raises(ValueError, match="at least one model"):
        ph.scan(TwoClass(), [], SHAPE, 2)
    with pytest.raises(ValueError, match="gammas must have shape"):
        ph.scan(TwoClass(), TwoClass(), SHAPE, 2, gammas=np.ones((1, 3)))
    with pytest.raises(ValueError, match="num_classes"):
        ph.scan(TwoClass(), TwoClass(), SHAPE, 1)


def test_train_reference_stops_at_the_goal(tiny_images):
    """Labels that a model can read off one pixel: a reference gets there within a few epochs and stops."""
    x = tiny_images.x.copy()
    x[:, 0, 0, :] = (tiny_images.y * 25)[:, None].astype(np.uint8)
    images = data.ImageSet(x, tiny_images.y)
    torch.manual_seed(0)
    cfg = dataclasses.replace(MITIGATE_FINETUNE, batch_size=20, lr=0.05)
    _, acc = train_reference(models.pool_cnn("III"), images, images, goal=30.0, config=cfg, max_epochs=30,
                             device="cpu")
    assert acc[-1] >= 30.0 and all(a < 30.0 for a in acc[:-1]) and len(acc) < 30
    _, capped = train_reference(models.pool_cnn("III"), images, images, goal=100.0, config=cfg, max_epochs=2,
                                device="cpu")
    assert len(capped) == 2
    with pytest.raises(ValueError, match="goal"):
        train_reference(models.pool_cnn("III"), images, images, goal=0.0)


# --------------------------------------------------------------------------------------- attacks, models, data
def test_all_to_one_poisons_rate_of_the_whole_set_outside_the_target(tiny_images):
    trig = attacks.PatchTrigger(size=4, row=26, col=26)
    ps = attacks.poison_all_to_one(tiny_images, trig, target=0, rate=0.1, seed=3)
    assert ps.is_poison.sum() == 20  # 10 % of 200
    assert (ps.y_true[ps.is_poison] != 0).all() and (ps.y[ps.is_poison] == 0).all()
    assert np.array_equal(ps.y[~ps.is_poison], tiny_images.y[~ps.is_poison])
    assert np.array_equal(ps.x[~ps.is_poison], tiny_images.x[~ps.is_poison])
    assert (ps.x[ps.is_poison][:, 26:30, 26:30] == 255).all()
    assert ps.spec.source_classes == tuple(range(1, 10))
    again = attacks.poison_all_to_one(tiny_images, trig, target=0, rate=0.1, seed=3)
    assert np.array_equal(again.is_poison, ps.is_poison)
    for bad in (0.0, 1.5, 0.95):  # 0.95 asks for 190 poisons, only 180 images are not of the target
        with pytest.raises(ValueError, match="rate"):
            attacks.poison_all_to_one(tiny_images, trig, target=0, rate=bad)


def test_grey_noise_pattern_is_grey_and_seeded():
    p = attacks.blend_pattern("greynoise:4")
    assert p.shape == (32, 32, 3) and np.array_equal(p[..., 0], p[..., 1]) and np.array_equal(p[..., 0], p[..., 2])
    assert np.array_equal(p, attacks.blend_pattern("greynoise:4"))
    assert not np.array_equal(p, attacks.blend_pattern("greynoise:5"))
    with pytest.raises(ValueError, match="integer seed"):
        attacks.blend_pattern("greynoise:x")


@pytest.mark.parametrize(("kind", "params"), [("I", 290_074), ("II", 427_978), ("III", 117_274)])
def test_pool_models_shapes_and_sizes(kind, params):
    m = models.pool_cnn(kind)
    assert models.count_parameters(m) == params
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="kind"):
        models.pool_cnn("VII")


def _write_idx(folder, name, arr):
    import gzip

    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    (folder / name).write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))


def test_fashion_mnist_reader_layout_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    imgs = {"train": rng.integers(0, 256, (6, 28, 28)), "t10k": rng.integers(0, 256, (4, 28, 28))}
    for part, x in imgs.items():
        _write_idx(tmp_path, f"{part}-images-idx3-ubyte.gz", x)
        _write_idx(tmp_path, f"{part}-labels-idx1-ubyte.gz", np.arange(len(x)) % 10)
    with pytest.raises(data.DataCorruptError, match="SHA-256"):
        data.load_fashion_mnist(tmp_path)  # hand-made files are not the published content
    d = data.load_fashion_mnist(tmp_path, verify=False)
    assert d.train.x.shape == (6, 32, 32, 3) and d.test.x.shape == (4, 32, 32, 3)
    assert d.train.classes == data.FASHION_CLASSES
    assert np.array_equal(d.train.x[:, 2:30, 2:30, 1], imgs["train"]) and (d.train.x[:, :2] == 0).all()
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(data.DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load_fashion_mnist(tmp_path)


def test_fashion_mnist_from_the_debian_package():
    """The real data set where it is installed (`python3 tasks.py test` installs it on CI, so it must be there)."""
    if not data.FASHION_DEBIAN_DIR.is_dir() and not os.environ.get("POISONCURE_FASHION_MNIST"):
        if os.environ.get("CI"):
            pytest.fail("CI is set but Fashion-MNIST is missing: `python3 tasks.py test` should have installed it")
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    d = data.load_fashion_mnist()
    assert len(d.train) == 60_000 and len(d.test) == 10_000
    assert np.array_equal(np.bincount(d.train.y), np.full(10, 6000))


def test_calibration_keeps_lambda_where_the_suspect_is_saturated():
    """A suspect so sure of label 1 everywhere that its loss is exactly 0 (a noise-blend backdoor on noise-like
    probes): the ascent cannot raise it, and λ for that label keeps its start value 1/k instead of dropping to 0."""
    class Saturated(nn.Module):
        def forward(self, x):
            s = 1000.0 + x.mean((1, 2, 3))
            return torch.stack([-s / 2, s / 2], 1)

    ph = hygiene(calibration_steps=20)
    refs = [TwoClass(18.0), TwoClass(15.0)]
    lam = ph.calibrate(Saturated(), refs, SHAPE, 2)
    np.testing.assert_allclose(lam[:, 1], 0.5)
    assert (lam[:, 0] > 0).all() and not np.allclose(lam[:, 0], 0.5)
    scan = ph.scan(Saturated(), refs, SHAPE, 2)  # no FloatingPointError
    assert scan.prob.shape == (2,)
