"""The paper's defense (defenses/poison_cure.py) and the training path it needs (offsets in train.fit)."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from poisoncure import experiments, metrics, models, train
from poisoncure.defenses.poison_cure import FINETUNE, ClassScan, CounterPoison, PoisonCure


class Recorder(nn.Module):
    """Logits from a linear layer; remembers every input batch."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3 * 32 * 32, 10)
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.lin(x.flatten(1))


def test_fit_adds_each_samples_offset_and_clips(tiny_images):
    offsets = np.zeros((2, 3, 32, 32), np.float32)
    offsets[0] += 0.5
    offsets[1, :, 3, 4] = -2.0
    which = np.full(len(tiny_images), -1)
    which[:50], which[50:80] = 0, 1
    net = Recorder()
    cfg = train.TrainConfig(epochs=1, batch_size=len(tiny_images), augment="none", schedule="constant", lr=1e-9)
    train.fit(net, tiny_images, cfg, "cpu", progress=False, offsets=offsets, offset_index=which)
    seen = net.seen[0]
    base = torch.from_numpy(tiny_images.x).permute(0, 3, 1, 2).float() / 255
    expected = (base + torch.from_numpy(np.concatenate([offsets, np.zeros((1, 3, 32, 32), np.float32)])[which]))
    expected = expected.clamp(0, 1)
    # the batch is in shuffled order: match rows by content
    order = [int(torch.argmin((expected - row).abs().flatten(1).sum(1))) for row in seen]
    assert sorted(order) == list(range(len(tiny_images)))
    torch.testing.assert_close(seen, expected[order])
    assert (expected[:50] >= 0.5).all() and (expected[50:80, :, 3, 4] == 0).all()


@pytest.mark.parametrize("kwargs, match", [
    ({"offsets": np.zeros((1, 3, 32, 32))}, "together"),
    ({"offsets": np.zeros((1, 32, 32, 3)), "offset_index": np.zeros(200)}, "shape"),
    ({"offsets": np.zeros((1, 3, 32, 32)), "offset_index": np.zeros(5)}, "offset_index must have shape"),
    ({"offsets": np.zeros((1, 3, 32, 32)), "offset_index": np.full(200, 3)}, r"\[-1, 0\]"),
    ({"offsets": np.full((1, 3, 32, 32), np.nan), "offset_index": np.zeros(200)}, "NaN"),
])
def test_fit_rejects_bad_offsets(tiny_images, kwargs, match):
    with pytest.raises(ValueError, match=match):
        train.fit(models.small_cnn(width=8), tiny_images, train.TrainConfig(epochs=1), "cpu", progress=False,
                  **kwargs)


def test_constant_schedule_keeps_the_learning_rate():
    cfg = train.TrainConfig(schedule="constant", lr=0.01)
    assert {train._lr_factor(s, 100, cfg) for s in range(100)} == {1.0}


@pytest.mark.parametrize("kwargs, match", [
    ({"threshold": 0}, "threshold"), ({"eta": -1}, "eta"), ({"finetune": {"lr": 0.1}}, "finetune"),
    ({"num_classes": 1}, "num_classes"), ({"gradient_batch": 0}, "gradient_batch"),
])
def test_defense_parameters_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PoisonCure(**kwargs)


def test_scan_leaves_out_an_empty_class_and_rejects_bad_labels(tiny_images):
    """A class without training samples (Mislabel relabels its base class away) is not scanned: its W is NaN, the
    other classes' scans are those of the full set, and the target test runs over the scanned classes only."""
    net = models.small_cnn(width=8)
    pc = PoisonCure(progress=False, device="cpu")
    full = pc.scan(net, tiny_images)
    keep = np.flatnonzero(tiny_images.y != 3)
    no_cats = pc.scan(net, tiny_images.subset(keep))
    assert np.isnan(no_cats.distances[3]) and np.isnan(no_cats.means[3]).all() and not no_cats.signals[3].any()
    others = np.arange(10) != 3
    np.testing.assert_allclose(no_cats.distances[others], full.distances[others], rtol=1e-6)
    np.testing.assert_allclose(no_cats.scores, full.scores[keep], rtol=1e-6, atol=1e-9)
    w = no_cats.distances[others]
    assert no_cats.target != 3 and no_cats.ratio == pytest.approx(w.max() / np.delete(w, w.argmax()).mean())
    assert pc.score_labels(net, tiny_images.subset(keep))[3] == 0
    one_class = tiny_images.subset(np.flatnonzero(tiny_images.y == 0))
    with pytest.raises(ValueError, match="at least 2 classes"):
        pc.scan(net, one_class)
    with pytest.raises(ValueError, match="labels must lie"):
        PoisonCure(num_classes=5, progress=False).scan(net, tiny_images)
    with pytest.raises(TypeError, match="ImageSet"):
        pc.scan(net, tiny_images.x)


def test_base_and_counter_poison_reject_bad_input(tiny_images):
    net = models.small_cnn(width=8)
    pc = PoisonCure(progress=False, device="cpu")
    with pytest.raises(ValueError, match="none of flagged_rows"):
        pc.find_base(net, tiny_images, 5, np.array([0, 1]))  # rows 0, 1 are airplanes
    with pytest.raises(ValueError, match="target must lie"):
        pc.find_base(net, tiny_images, 10, np.array([0]))
    with pytest.raises(ValueError, match="need at least 2"):
        pc.counter_poison(net, tiny_images, 5, np.array([100]))


def test_augmented_set_relabels_the_filtered_set_and_copies_clean_non_target_images(tiny_images):
    target, base = 5, 1
    flagged = np.array([100, 101, 102])  # three "dog" samples
    signals = np.random.default_rng(0).standard_normal((10, 3, 32, 32)).astype(np.float32)
    signals[target] = 0
    counter = CounterPoison(signals, target, 2.0)
    aug, which = PoisonCure(progress=False).augmented_set(tiny_images, flagged, base, counter)
    n = len(tiny_images)
    assert (which[:n] == -1).all()
    np.testing.assert_array_equal(aug.y[flagged], base)
    copies = np.flatnonzero(tiny_images.y != target)
    assert len(aug) == n + len(copies)
    np.testing.assert_array_equal(which[n:], tiny_images.y[copies])
    np.testing.assert_array_equal(aug.x[n:], tiny_images.x[copies])
    np.testing.assert_allclose(counter.offsets[3], 2.0 * signals[3])


def test_artefacts_round_trip_through_npz(tmp_path):
    rng = np.random.default_rng(0)
    scan = ClassScan(rng.random(10), 5, 4.2, 2.0, True, rng.random(30), rng.random(30) > 0.5, rng.random((10, 6)),
                     rng.random((10, 2)), rng.random((10, 2)), rng.random((10, 2)), rng.random((10, 2)),
                     np.zeros(10, np.int64))
    scan.save(tmp_path / "scan.npz")
    back = ClassScan.load(tmp_path / "scan.npz")
    assert back.target == 5 and back.poisoned is True and back.ratio == 4.2
    np.testing.assert_array_equal(back.signals, scan.signals)
    np.testing.assert_array_equal(back.far, scan.far)


def test_poison_cure_for_a_recipe_fine_tunes_with_its_augmentation_and_smoothing():
    pc = experiments.poison_cure_for(experiments.Recipe(augment="none", label_smoothing=0.05), eta=4.0)
    assert pc.finetune == dataclasses.replace(FINETUNE, augment="none", label_smoothing=0.05)
    assert pc.eta == 4.0 and pc.config()["finetune"]["lr"] == 0.01


@pytest.mark.slow
def test_the_defense_finds_filters_and_neutralizes_a_real_backdoor_and_leaves_a_clean_model_alone(tiny_models):
    """End to end on the tiny one-pixel-poisoned whitened network (conftest): target class found, the filtered set
    beats chance by far, and one epoch of counter-poison fine-tuning removes most of the backdoor. On the clean model
    trained the same way, no class is flagged."""
    ps = tiny_models.ps
    pc = PoisonCure(progress=False, device="cpu",
                    finetune=dataclasses.replace(FINETUNE, augment="flip"))
    res = pc.run(tiny_models.poisoned, ps.as_imageset())
    assert res.scan.poisoned and res.scan.target == ps.spec.target
    assert res.scan.ratio > 2
    # Not asserted here: which label the base scan names. On this 6,000-image one-pixel model it is not a property
    # with margin (bench/slow_margins.py: the true base above the other labels' mean m in 4 of 6 seed x thread runs,
    # z = -0.9 to 1.8), so it would make the test depend on the seed; the base scan's rule is tested on synthetic
    # scores (test_gradients_signal) and its result on real models is measured by the runner's grids.
    assert 0 <= res.base.base < 10 and res.base.base != ps.spec.target
    truth = ps.is_poison[res.filtering.rows]
    assert metrics.sensitivity(res.filtering.flagged, truth) > 80
    assert metrics.specificity(res.filtering.flagged, truth) > 80
    assert res.counter.signals[ps.spec.target].sum() == 0
    before = train.evaluate(tiny_models.poisoned, tiny_models.test, ps.spec, "cpu")
    after = train.evaluate(res.model, tiny_models.test, ps.spec, "cpu")
    assert before.attack_success_rate > 80
    assert after.attack_success_rate < 20
    assert after.clean_accuracy > before.clean_accuracy - 10
    assert res.model is not tiny_models.poisoned

    clean_scan = pc.scan(tiny_models.clean, tiny_models.sub)
    assert not clean_scan.poisoned, f"clean model flagged class {clean_scan.target} with R = {clean_scan.ratio:.2f}"


def test_score_and_detect_follow_the_interface(tiny_images):
    net = models.small_cnn(width=8)
    pc = PoisonCure(progress=False, device="cpu", threshold=1e6)  # no class can pass: nothing flagged
    assert pc.detect(net, tiny_images).shape == (len(tiny_images),)
    assert not pc.detect(net, tiny_images).any()
    assert (pc.score(net, tiny_images) == 0).all()
    repaired = pc.repair(net, tiny_images)  # nothing to neutralize: an unchanged copy, never the input object
    assert repaired is not net
    assert all(torch.equal(a, b) for a, b in zip(repaired.state_dict().values(), net.state_dict().values(),
                                                 strict=True))
    assert not pc.detect_labels(net, tiny_images).any() and pc.score_labels(net, tiny_images).shape == (10,)
