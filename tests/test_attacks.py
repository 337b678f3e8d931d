import dataclasses

import numpy as np
import pytest

from poisoncure import attacks
from poisoncure.data import ImageSet


def test_pixel_trigger_touches_only_its_pixel(tiny_images):
    trig = attacks.PixelTrigger(5, 7, (1, 2, 3))
    out = trig.apply(tiny_images.x)
    changed = np.any(out != tiny_images.x, axis=-1)
    assert not changed[:, np.arange(32) != 5].any() and not changed[:, :, np.arange(32) != 7].any()
    assert (out[:, 5, 7] == [1, 2, 3]).all()


def test_patch_trigger_touches_only_its_square(tiny_images):
    trig = attacks.PatchTrigger(3, 10, 20, colour=(255, 0, 0), style="checker")
    out = trig.apply(tiny_images.x)
    mask = np.zeros((32, 32), bool)
    mask[10:13, 20:23] = True
    assert (out[:, ~mask] == tiny_images.x[:, ~mask]).all()
    np.testing.assert_array_equal(out[0, 10:13, 20:23], trig.pattern())
    assert (trig.pattern()[0, 1] == 0).all() and (trig.pattern()[0, 0] == [255, 0, 0]).all()


def test_blend_trigger_follows_the_formula(tiny_images):
    trig = attacks.BlendTrigger("noise:3", 0.2)
    pattern = attacks.blend_pattern("noise:3").astype(np.float64)
    expected = np.clip(np.rint(0.8 * tiny_images.x + 0.2 * pattern), 0, 255)
    np.testing.assert_array_equal(trig.apply(tiny_images.x), expected.astype(np.uint8))


def test_skimage_patterns_ship_offline_and_differ():
    pats = [attacks.blend_pattern(f"skimage:{name}") for name in attacks.BLEND_IMAGES]
    assert all(p.shape == (32, 32, 3) and p.dtype == np.uint8 for p in pats)
    assert len({p.tobytes() for p in pats}) == len(pats)


def test_poison_counts_labels_and_records(tiny_images):
    ps = attacks.poison(tiny_images, attacks.PixelTrigger(0, 0, (255, 0, 0)), base="cat", target="dog",
                        rate=0.25, seed=1)
    cat, dog = 3, 5
    assert ps.is_poison.sum() == 5  # 25% of 20 cat images
    assert (ps.y_true[ps.is_poison] == cat).all() and (ps.y[ps.is_poison] == dog).all()
    np.testing.assert_array_equal(ps.y[~ps.is_poison], tiny_images.y[~ps.is_poison])
    np.testing.assert_array_equal(ps.x[~ps.is_poison], tiny_images.x[~ps.is_poison])
    assert (ps.x[ps.is_poison, 0, 0] == [255, 0, 0]).all()
    np.testing.assert_array_equal(ps.y_true, tiny_images.y)
    assert ps.spec.base == cat and ps.spec.target == dog and ps.spec.rate == 0.25


def test_poison_is_deterministic_per_seed(tiny_images):
    trig = attacks.BlendTrigger("noise:0", 0.2)
    a = attacks.poison(tiny_images, trig, 1, 2, 0.5, seed=7)
    b = attacks.poison(tiny_images, trig, 1, 2, 0.5, seed=7)
    c = attacks.poison(tiny_images, trig, 1, 2, 0.5, seed=8)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.is_poison, b.is_poison)
    assert not np.array_equal(a.is_poison, c.is_poison)


def test_poison_does_not_modify_its_input(tiny_images):
    before = tiny_images.x.copy()
    attacks.poison(tiny_images, attacks.PixelTrigger(1, 1, (0, 0, 0)), 0, 1, 1.0)
    np.testing.assert_array_equal(tiny_images.x, before)


@pytest.mark.parametrize("kwargs, param", [
    (dict(base="kitten", target="dog", rate=0.1), "kitten"),
    (dict(base="cat", target="cat", rate=0.1), "target"),
    (dict(base="cat", target="dog", rate=0.0), "rate"),
    (dict(base="cat", target="dog", rate=1.5), "rate"),
    (dict(base="cat", target="dog", rate=0.01), "rate"),  # rounds to no image of 20
    (dict(base=12, target="dog", rate=0.1), "class index"),
])
def test_poison_rejects_bad_parameters(tiny_images, kwargs, param):
    with pytest.raises(ValueError, match=param):
        attacks.poison(tiny_images, attacks.PixelTrigger(0, 0, (0, 0, 0)), **kwargs)


@pytest.mark.parametrize("make, param", [
    (lambda: attacks.PixelTrigger(32, 0, (0, 0, 0)), "outside"),
    (lambda: attacks.PixelTrigger(0, -1, (0, 0, 0)), "outside"),
    (lambda: attacks.PixelTrigger(0, 0, (0, 0, 256)), "colour"),
    (lambda: attacks.BlendTrigger("noise:0", 0.0), "opacity"),
    (lambda: attacks.BlendTrigger("noise:0", 1.5), "opacity"),
    (lambda: attacks.BlendTrigger("imagenet:cat", 0.2), "pattern"),
    (lambda: attacks.BlendTrigger("skimage:chelsea", 0.2), "pattern"),
    (lambda: attacks.PatchTrigger(5, 30, 0), "fit"),
    (lambda: attacks.PatchTrigger(2, 0, 0, style="stripes"), "style"),
    (lambda: attacks.paper_trigger(10, "pixel"), "pair"),
    (lambda: attacks.paper_trigger(1, "medium"), "size"),
])
def test_triggers_reject_bad_parameters(make, param):
    with pytest.raises(ValueError, match=param):
        make()


def test_pure_functions_reject_bad_images():
    with pytest.raises(ValueError, match="uint8"):
        attacks.apply_pixel(np.zeros((1, 32, 32, 3), np.float32), 0, 0, (0, 0, 0))
    with pytest.raises(ValueError, match="outside"):
        attacks.apply_pixel(np.zeros((1, 32, 32, 3), np.uint8), 40, 0, (0, 0, 0))
    with pytest.raises(ValueError, match="opacity"):
        attacks.apply_blend(np.zeros((1, 32, 32, 3), np.uint8), np.zeros((32, 32, 3), np.uint8), 0)


def test_paper_pixel_triggers_are_fixed_per_pair():
    assert attacks.paper_trigger(1, "pixel") == attacks.paper_trigger(1, "pixel")
    assert attacks.paper_trigger(1, "pixel") != attacks.paper_trigger(2, "pixel")


def test_trigger_round_trip_through_dict():
    for trig in (attacks.PixelTrigger(1, 2, (3, 4, 5)), attacks.PatchTrigger(2, 0, 0),
                 attacks.BlendTrigger("noise:1", 0.3)):
        assert attacks.trigger_from_dict(dataclasses.asdict(trig)) == trig


def test_triggered_test_set_and_mean_perturbation(tiny_images):
    ps = attacks.poison(tiny_images, attacks.PixelTrigger(4, 4, (255, 255, 255)), "cat", "dog", 0.5)
    trig = attacks.triggered_test_set(tiny_images, ps.spec)
    assert len(trig) == 20 and (trig.y == 3).all() and (trig.x[:, 4, 4] == 255).all()
    delta = attacks.mean_perturbation(tiny_images.x, ps.spec.trigger)
    assert delta.shape == (3, 32, 32)
    assert np.count_nonzero(np.abs(delta).sum(0)) == 1 and np.abs(delta[:, 4, 4]).sum() > 0
    assert isinstance(ps.as_imageset(), ImageSet)


def test_a_blend_trigger_takes_the_users_own_pattern_array(tiny_images):
    """A pattern array (uint8 HWC, float in [0, 1], or grey HW) blends like a named pattern with the same pixels,
    is hashable, compares by content, round-trips through the stored dict, and bad arrays say what is wrong."""
    named = attacks.BlendTrigger("noise:7", 0.3)
    own = attacks.BlendTrigger(attacks.blend_pattern("noise:7"), 0.3)
    assert np.array_equal(own.apply(tiny_images.x), named.apply(tiny_images.x))
    assert own == attacks.BlendTrigger(attacks.blend_pattern("noise:7").astype(np.float64) / 255.0, 0.3)
    assert own != attacks.BlendTrigger(attacks.blend_pattern("noise:8"), 0.3) and own != named
    assert len({own, attacks.BlendTrigger(attacks.blend_pattern("noise:7"), 0.3)}) == 1
    grey = attacks.BlendTrigger(np.full((32, 32), 200, np.uint8), 1.0)
    assert (grey.apply(tiny_images.x) == 200).all()
    ps = attacks.poison(tiny_images, own, "cat", "dog", 0.5)
    spec = ps.spec.to_dict()
    assert isinstance(spec["trigger"]["pattern"], list)
    assert attacks.trigger_from_dict(spec["trigger"]) == own
    assert "uint8 array 32x32" in repr(own)
    for bad, words in ((np.zeros((32, 32, 4)), "square"), (np.full((32, 32, 3), 2.0), r"\[0, 1\]"),
                       (np.zeros((32, 32, 3), np.int64), "dtype")):
        with pytest.raises(ValueError, match=words):
            attacks.BlendTrigger(bad, 0.2)
    with pytest.raises(ValueError, match="resize"):
        attacks.BlendTrigger(np.zeros((16, 16, 3), np.uint8), 0.2).apply(tiny_images.x)
