"""Chapter 10: Xiang, Miller & Kesidis's detection without the training set, and their additive attacks.

A hand-built model with a known backdoor pair must be found (pair, p-value, pattern); the Gamma null and the
order-statistic p-value are checked on simulated statistics (SPEC-related-defenses C.2, T-B1 to T-B4, T-B6).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from poisoncure import attacks, data, experiments
from poisoncure.defenses import reverse_engineer as rem

D = 3 * 32 * 32
SOURCE, TARGET = 2, 7


class PlantedPairModel(nn.Module):
    """Linear class templates plus a backdoor that sends the source class to the target once the input moves a
    little along a trigger direction w (a gate on the source template keeps the other classes out). The gate is a
    smooth ReLU (softplus), like a trained network's, so its direction shows in the gradient at v = 0."""

    def __init__(self, seed: int = 0, tau: float = 0.3, gamma: float = 40.0, beta: float = 2.0):
        super().__init__()
        rng = np.random.default_rng(seed)
        q, _ = np.linalg.qr(rng.standard_normal((D, 11)))
        self.register_buffer("u", torch.tensor(q[:, :10].T, dtype=torch.float32))  # (10, D) class templates
        self.register_buffer("w", torch.tensor(q[:, 10], dtype=torch.float32))  # trigger direction
        self.amp = torch.tensor(rng.uniform(2.5, 4.0, size=10), dtype=torch.float32)  # class template strength
        self.tau, self.gamma, self.beta = tau, gamma, beta

    def images(self, per_class: int, seed: int = 1) -> data.ImageSet:
        rng = np.random.default_rng(seed)
        y = np.repeat(np.arange(10), per_class)
        x = 0.5 + (self.amp.numpy()[y, None] * self.u.numpy()[y]) + 0.01 * rng.standard_normal((len(y), D))
        x = np.clip(x, 0, 1).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return data.ImageSet(np.rint(x * 255).astype(np.uint8), y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.reshape(len(x), -1) - 0.5
        logits = self.beta * z @ self.u.T
        gate = nn.functional.softplus(10 * (z @ self.w + z @ self.u[SOURCE] - (self.amp[SOURCE] + self.tau))) / 10
        return logits + self.gamma * gate[:, None] * nn.functional.one_hot(torch.tensor(TARGET), 10)


@pytest.fixture(scope="module")
def planted():
    torch.manual_seed(0)
    model = PlantedPairModel()
    return model, model.images(12)


def test_finds_the_planted_pair_with_small_p_and_the_pattern(planted):
    model, clean = planted
    det = rem.ReverseEngineeringDetector(per_class=10, eta=0.1, device="cpu", progress=False)
    res = det.run(model, clean)
    off = ~np.eye(10, dtype=bool)
    assert (res.source, res.target) == (SOURCE, TARGET)
    assert res.detected and res.p_value < 0.05
    assert res.search.reached[off].all()
    assert (res.search.rho[off] >= det.pi).all()
    assert res.search.norms[SOURCE, TARGET] < 0.5 * np.median(res.search.norms[off])
    # the estimated pattern points along the trigger direction
    assert float(res.pattern.ravel() @ model.w.numpy()) / np.linalg.norm(res.pattern) > 0.5
    # the truncated null is more decisive than the naive one
    assert res.null.p_value < res.naive.p_value


def test_without_the_backdoor_no_detection(planted):
    model, clean = planted
    model.gamma = 0.0
    try:
        res = rem.ReverseEngineeringDetector(per_class=10, eta=0.1, device="cpu", progress=False).run(model, clean)
    finally:
        model.gamma = 40.0
    assert not res.detected and res.p_value > 0.05


def test_batched_equals_one_pair_per_pass(planted):
    model, clean = planted
    kw = dict(per_class=10, eta=0.1, max_iter=60, device="cpu", progress=False)
    a = rem.ReverseEngineeringDetector(chunk=4096, **kw).search(model, clean)
    b = rem.ReverseEngineeringDetector(chunk=10, **kw).search(model, clean)
    np.testing.assert_allclose(a.patterns, b.patterns, atol=1e-5)
    np.testing.assert_array_equal(a.iterations, b.iterations)


def test_truncated_gamma_recovers_parameters_and_flags_an_outlier():
    rng = np.random.default_rng(0)
    r = np.sort(stats.gamma.rvs(8, scale=0.1, size=90, random_state=rng))
    shape, scale, ok = rem.truncated_gamma_fit(r[:81], r[81])
    assert ok and abs(shape / 8 - 1) < 0.3 and abs(scale / 0.1 - 1) < 0.3
    r_out = r.copy()
    r_out[-1] = 10 * np.median(r)
    assert rem.gamma_null(r_out, 10).p_value < 1e-3


def test_null_p_values_are_not_small_without_outlier():
    rng = np.random.default_rng(1)
    ps = [rem.gamma_null(stats.gamma.rvs(8, scale=0.1, size=90, random_state=rng), 10).p_value for _ in range(100)]
    assert 0.3 <= float(np.mean(ps)) <= 0.8


def test_order_statistic_pvalue_numerics():
    for r_max in (0.5, 1.0, 1.5):
        direct = 1 - stats.gamma.cdf(r_max, 8, scale=0.1) ** 90
        assert rem.order_statistic_pvalue(r_max, 8, 0.1, 90) == pytest.approx(direct, abs=1e-12)
    tiny = rem.order_statistic_pvalue(6.0, 8, 0.1, 90)  # 1 - cdf**90 rounds to 0 here
    assert 0 < tiny < 1e-13
    assert tiny == pytest.approx(90 * stats.gamma.sf(6.0, 8, scale=0.1), rel=1e-6)


@pytest.mark.parametrize("kwargs", [dict(per_class=1), dict(pi=0.0), dict(pi=1.2), dict(eta=0), dict(bound=0.01),
                                    dict(max_iter=0), dict(objective="log"), dict(theta=1.0), dict(num_classes=2),
                                    dict(chunk=0)])
def test_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        rem.ReverseEngineeringDetector(**kwargs)


def test_rejects_too_few_clean_images(planted):
    model, _ = planted
    with pytest.raises(ValueError, match="per_class"):
        rem.ReverseEngineeringDetector(per_class=10, device="cpu").search(model, model.images(5))


def test_a_pair_confused_without_perturbation_is_the_most_extreme():
    rng = np.random.default_rng(0)
    k = 10
    norms = rng.uniform(1.0, 3.0, size=(k, k))
    np.fill_diagonal(norms, 0.0)
    norms[4, 6] = 0.0  # 80% of class 4 already classified as 6
    search = rem.PairSearch(norms, norms, np.ones((k, k), bool), np.zeros((k, k), int), np.ones((k, k)),
                            np.zeros((k, k)), np.zeros((k, k, 3, 32, 32), np.float32))
    res = rem.ReverseEngineeringDetector(eta=0.1, device="cpu").analyse(search)
    assert (res.source, res.target) == (4, 6) and res.detected


def test_statistics_reject_bad_norms():
    with pytest.raises(ValueError):
        rem.reciprocal_statistics(np.ones((3, 4)))
    norms = np.ones((4, 4))
    norms[0, 1] = 0.0
    with pytest.raises(ValueError, match="confused"):
        rem.reciprocal_statistics(norms)


# ------------------------------------------------------------------------------------- the additive attacks
def test_chessboard_pattern_matches_the_paper():
    v = attacks.chessboard_pattern(0.2, seed=3)
    nz = v != 0
    assert v.shape == (32, 32, 3) and v.dtype == np.float32
    assert nz.all(axis=2).sum() == 512 and (nz.any(axis=2) == nz.all(axis=2)).all()  # half the pixels, 3 channels
    assert ((np.add.outer(np.arange(32), np.arange(32)) % 2 == 0) == nz[..., 0]).all()
    assert np.linalg.norm(v) == pytest.approx(0.2, abs=1e-6)
    assert v[nz].mean() == pytest.approx(5.1e-3, abs=2e-4) and (v >= 0).all()


def test_sparse_pattern_matches_the_paper():
    v = attacks.sparse_pattern(0.6, seed=5)
    rows, cols, chans = np.nonzero(v)
    assert len(rows) == 4 and len(set(zip(rows, cols, strict=True))) == 4
    assert np.linalg.norm(v) == pytest.approx(0.6, abs=1e-6)
    assert not np.array_equal(v, attacks.sparse_pattern(0.6, seed=6))


def test_additive_trigger_adds_and_clips(tiny_images):
    trig = attacks.AdditiveTrigger("chessboard", l2=2.0, seed=0)
    x = tiny_images.x[:5]
    out = trig.apply(x).astype(np.float64) / 255
    want = np.clip(x / 255 + trig.delta()[None], 0, 1)
    assert np.abs(out - want).max() <= 0.5 / 255 + 1e-7
    rebuilt = attacks.trigger_from_dict({"kind": "additive", "pattern": "sparse", "l2": 0.6, "seed": 1})
    assert rebuilt.pattern == "sparse"
    with pytest.raises(ValueError):
        attacks.AdditiveTrigger("stripes")
    with pytest.raises(ValueError):
        attacks.AdditiveTrigger("chessboard", l2=0.0)


def test_poison_add_appends_copies_single_and_multi_source(tiny_images):
    trig = attacks.AdditiveTrigger("chessboard", l2=2.0)
    ps = attacks.poison_add(tiny_images, trig, "automobile", "truck", 5, seed=0)
    n = len(tiny_images)
    assert len(ps) == n + 5 and ps.is_poison.sum() == 5 and ps.is_poison[n:].all()
    assert (ps.y[n:] == 9).all() and (ps.y_true[n:] == 1).all()
    np.testing.assert_array_equal(ps.x[:n], tiny_images.x)  # the originals stay
    assert ps.spec.added and ps.spec.source_classes == (1,)
    multi = attacks.poison_add(tiny_images, trig, [c for c in range(9)], 9, 3, seed=0)
    assert len(multi) == n + 27 and multi.spec.source_classes == tuple(range(9))
    test = attacks.triggered_test_set(tiny_images, multi.spec)
    assert len(test) == 9 * 20
    with pytest.raises(ValueError, match="source"):
        attacks.poison_add(tiny_images, trig, [1, 9], 9, 3)
    with pytest.raises(ValueError, match="n_per_source"):
        attacks.poison_add(tiny_images, trig, 1, 9, 21)


def test_additive_recipe_uses_xiang_pair_and_keeps_other_keys():
    r = experiments.Recipe(poison="chessboard", additive_l2=2.0, poison_rate=0.2)
    assert (r.base, r.target) == experiments.XIANG_PAIR
    assert r.trigger() == attacks.AdditiveTrigger("chessboard", 2.0, seed=2000)
    assert "additive_l2" not in experiments.Recipe(poison="blend").cache_config()
    assert r.cache_config()["pair"] is None
    assert "additive_l2" not in experiments.Recipe.param_names()
    with pytest.raises(ValueError):
        experiments.Recipe(poison="chessboard", additive_l2=-1.0)
