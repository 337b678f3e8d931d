"""Feature-collision poisons (:mod:`poisoncure.clean_label`): the collision happens, the constraints hold, the
poisoned set keeps honest labels and leaves the adversarial class out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from poisoncure.clean_label import CollisionConfig, assemble_clean_label, collide, nearest_bases, poison_clean_label
from poisoncure.data import FASHION_CLASSES, ImageSet
from poisoncure.gradients import features
from poisoncure.models import Classifier, pool_cnn


def grey_images(n: int, seed: int, labels: np.ndarray | None = None) -> ImageSet:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n) if labels is None else labels
    x = np.repeat(rng.integers(0, 256, (n, 32, 32, 1)), 3, axis=3).astype(np.uint8)
    return ImageSet(x, y.astype(np.int64), FASHION_CLASSES)


@pytest.fixture(scope="module")
def net() -> Classifier:
    torch.manual_seed(0)
    return pool_cnn("I").eval()


def feature_distance(model, a, b):
    return np.linalg.norm(features(model, a, device="cpu") - features(model, b, device="cpu"), axis=1)


@pytest.mark.parametrize("method", ["frog", "stingray"])
def test_collision_moves_features_towards_the_targets(net, method):
    imgs = grey_images(12, 0)
    bases, targets = imgs.x[:6], imgs.x[6:]
    # an untrained net has small features and gradients, hence the large step (the spec's 0.01 suits trained ones)
    cfg = CollisionConfig(method, steps=30, lr=50.0, watermark=0.0)
    poisons, stats = collide(net, bases, targets, cfg, device="cpu")
    assert poisons.shape == bases.shape and poisons.dtype == np.uint8
    assert (poisons[..., :1] == poisons).all()  # grey in, grey out
    before = feature_distance(net, bases, targets)
    after = feature_distance(net, poisons, targets)
    assert after.mean() < 0.8 * before.mean()
    assert stats["distance_after"] < stats["distance_before"] and stats["iterations"] == 30
    change = np.abs(poisons.astype(int) - bases.astype(int)).max() / 255
    if method == "stingray":  # inside the L-infinity ball (up to the uint8 rounding)
        assert change <= 8 / 255 + 0.5 / 255
        assert stats["max_pixel_change"] == pytest.approx(change)


def test_frog_starts_from_the_watermarked_base_and_its_penalty_pulls_back(net):
    imgs = grey_images(8, 1)
    bases, targets = imgs.x[:4], imgs.x[4:]
    # one tiny step: the poison is (almost) the 30 % watermark of the target on the base
    p, _ = collide(net, bases, targets, CollisionConfig("frog", steps=1, lr=1e-6), device="cpu")
    mark = np.round(0.7 * bases.astype(float) + 0.3 * targets.astype(float))
    assert np.abs(p.astype(float) - mark).max() <= 1
    # a huge penalty keeps the poison at its start however large the step
    far, _ = collide(net, bases, targets, CollisionConfig("frog", steps=20, lr=1.0, beta0=1e9, watermark=0.0),
                     device="cpu")
    assert np.abs(far.astype(int) - bases.astype(int)).max() <= 1


def test_frog_stops_when_nothing_changes():
    class Flat(nn.Module):  # features that do not depend on the input: zero gradient, no change at all
        def embed(self, x):
            return torch.zeros(len(x), 4) + 0 * x.sum((1, 2, 3))[:, None]

    imgs = grey_images(4, 2)
    _, stats = collide(Flat(), imgs.x[:2], imgs.x[2:], CollisionConfig("frog", steps=50, beta0=0.0), device="cpu")
    assert stats["iterations"] == 2


def test_nearest_bases_are_distinct_and_nearest(net):
    cands = grey_images(10, 3).x
    targets = cands[[7, 2, 7]]  # the third asks again for candidate 7, which is taken
    picks = nearest_bases(net, cands, targets, device="cpu")
    assert picks[0] == 7 and picks[1] == 2 and picks[2] not in (7, 2)
    d = feature_distance(net, cands, np.repeat(targets[2:], 10, axis=0))
    d[[7, 2]] = np.inf
    assert picks[2] == int(np.argmin(d))
    with pytest.raises(ValueError, match="candidates"):
        nearest_bases(net, cands[:2], targets)


def test_poisoned_set_keeps_labels_and_drops_the_source(net):
    clean = grey_images(300, 4)
    ps, stats = poison_clean_label(clean, source=8, target=0, rate=0.05, model=net,
                                   config=CollisionConfig("stingray", steps=3), seed=1, device="cpu")
    n = round(0.05 * len(clean))
    assert ps.is_poison.sum() == n and (ps.y != 8).all()
    assert len(ps) == len(clean) - int((clean.y == 8).sum())
    assert np.array_equal(ps.y, ps.y_true)  # clean label: nothing relabelled
    assert (ps.y[ps.is_poison] == 0).all() and (ps.spec.base, ps.spec.target) == (8, 0)
    assert 0 <= stats["kept_label"] <= 100
    # the non-poisons are the clean images, in order
    kept = clean.subset(np.flatnonzero(clean.y != 8))
    assert np.array_equal(ps.x[~ps.is_poison], kept.x[~ps.is_poison])
    assert not np.array_equal(ps.x[ps.is_poison], kept.x[ps.is_poison])


@pytest.mark.parametrize(("kwargs", "match"), [({"rate": 0.0}, "rate"), ({"rate": 0.5}, "poisons"),
                                               ({"target": 8}, "differ"), ({"source": "bird"}, "unknown")])
def test_bad_attacks_raise(net, kwargs, match):
    clean = grey_images(200, 5)
    args = {"source": 8, "target": 0, "rate": 0.05, "model": net, "config": CollisionConfig("frog", steps=1),
            "device": "cpu", **kwargs}
    with pytest.raises(ValueError, match=match):
        poison_clean_label(clean, **args)


@pytest.mark.parametrize(("kwargs", "match"), [({"method": "sting"}, "method"), ({"steps": 0}, "steps"),
                                               ({"eps": 0.0}, "eps"), ({"watermark": 1.0}, "watermark"),
                                               ({"beta0": -1.0}, "beta0")])
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CollisionConfig(**kwargs)


def test_config_budget_and_key():
    assert CollisionConfig("frog").budget == 1000 and CollisionConfig("stingray").budget == 200
    frog = CollisionConfig("frog").cache_config()
    assert "eps" not in frog and frog["steps"] == 1000 and "batch_size" not in frog
    # the settings of the other method do not change the key
    assert CollisionConfig("stingray", lr=0.5).cache_config() == CollisionConfig("stingray").cache_config()


def test_assemble_checks_its_bases():
    clean = grey_images(50, 6)
    wrong = np.flatnonzero(clean.y != 0)[:2]
    with pytest.raises(ValueError, match="base"):
        assemble_clean_label(clean, 8, 0, 0.04, 0, wrong, clean.x[wrong])
