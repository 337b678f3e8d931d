"""Ensembles of weak learners (SPEC-related-defenses Part II A): triggers, schedule, trim, vote, Algorithm 1, metrics,
and the whole defense on a planted toy problem."""

import numpy as np
import pytest
import torch
from torch import nn

from poisoncure import attacks, metrics
from poisoncure.data import ImageSet
from poisoncure.defenses import weak_learners as wl

# Table A-2R of the spec (the paper's lost Table 2), typed from the spec: (shape, row, col, colour) per pair.
TABLE_A2R = {
    100: {(0, 2): ("pixel", 24, 3, (103, 87, 79)), (1, 3): ("pixel", 10, 30, (180, 98, 53)),
          (3, 5): ("ell", 2, 14, (34, 241, 240)), (7, 4): ("pixel", 15, 4, (107, 60, 58)),
          (2, 5): ("pixel", 27, 9, (93, 86, 130)), (8, 6): ("pixel", 4, 1, (141, 245, 211)),
          (9, 2): ("pixel", 4, 27, (187, 67, 135)), (3, 7): ("pattern", 16, 2, (61, 14, 183))},
    1000: {(0, 2): ("pixel", 27, 30, (92, 1, 189)), (1, 3): ("pixel", 25, 13, (40, 105, 92)),
           (3, 5): ("pixel", 28, 13, (239, 42, 58)), (7, 4): ("pattern", 5, 21, (242, 30, 233)),
           (2, 5): ("pixel", 18, 30, (156, 158, 244)), (8, 6): ("pattern", 19, 29, (213, 221, 138)),
           (9, 2): ("ell", 14, 29, (69, 204, 11)), (3, 7): ("pixel", 11, 0, (180, 50, 21))},
    10000: {(0, 2): ("pixel", 21, 8, (47, 2, 21)), (1, 3): ("pixel", 9, 29, (145, 70, 200)),
            (3, 5): ("pattern", 7, 23, (39, 221, 162)), (7, 4): ("ell", 11, 19, (76, 14, 15)),
            (2, 5): ("pixel", 11, 9, (74, 162, 26)), (8, 6): ("pixel", 3, 13, (121, 158, 6)),
            (9, 2): ("pattern", 1, 29, (239, 186, 219)), (3, 7): ("ell", 24, 22, (4, 221, 78))},
}


@pytest.mark.parametrize("seed", attacks.ENSEMBLE_SEEDS)
def test_the_scenario_generator_reproduces_table_a2r(seed):
    got = {pair: (t.shape, t.row, t.col, t.colour) for pair, t in attacks.ensemble_scenario(seed).items()}
    assert got == TABLE_A2R[seed]


@pytest.mark.parametrize("shape, offsets", [("pixel", {(0, 0)}),
                                            ("pattern", {(0, 0), (1, 1), (-1, 1), (1, -1), (-1, -1)}),
                                            ("ell", {(0, 0), (1, 0), (0, 1)})])
def test_shape_triggers_set_exactly_their_pixels(tiny_images, shape, offsets):
    trig = attacks.ShapeTrigger(shape, 10, 20, (1, 2, 3))
    out = trig.apply(tiny_images.x)
    changed = {(int(r), int(c)) for r, c in zip(*np.nonzero(np.any(out != tiny_images.x, axis=(0, 3))),
                                                 strict=True)}
    assert changed <= {(10 + dr, 20 + dc) for dr, dc in offsets}
    assert all((out[:, 10 + dr, 20 + dc] == [1, 2, 3]).all() for dr, dc in offsets)
    assert trig.size == len(offsets)
    assert attacks.trigger_from_dict({"kind": "shape", "shape": shape, "row": 10, "col": 20,
                                      "colour": [1, 2, 3]}) == trig


def test_shape_trigger_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        attacks.ShapeTrigger("star", 5, 5, (0, 0, 0))
    with pytest.raises(ValueError, match="leaves"):
        attacks.ShapeTrigger("pattern", 0, 5, (0, 0, 0))  # the X needs a row above its centre
    with pytest.raises(ValueError, match="colour"):
        attacks.ShapeTrigger("pixel", 5, 5, (0, 0, 300))


@pytest.mark.parametrize("rate, count", [(0.05, 250), (0.1, 500), (0.2, 1000)])
def test_poison_counts_follow_the_paper(rate, count):
    y = np.repeat(np.arange(10), 5000)
    rows = attacks.ensemble_poison_rows(y, 8, 6, rate, 100)
    assert len(rows) == count and len(np.unique(rows)) == count and (y[rows] == 8).all()
    np.testing.assert_array_equal(rows, attacks.ensemble_poison_rows(y, 8, 6, rate, 100))  # deterministic
    assert not np.array_equal(rows, attacks.ensemble_poison_rows(y, 8, 6, rate, 1000)[:count])
    with pytest.raises(ValueError, match="rate"):
        attacks.ensemble_poison_rows(y, 8, 6, 0.0, 100)


def test_schedule_helper_gives_the_papers_iteration_counts():
    n, share = 50_000, 0.12
    active, counts = n, []
    for _ in range(8):
        q = min(1.0, share * n / active)
        counts.append(wl.n_iterations(q))
        active -= round(share * n)
    assert counts == [5, 5, 5, 5, 5, 5, 4, 3]
    q = 0.12
    assert wl.trim_schedule(q, 5) == pytest.approx([3 * q, 2 * q, q, q, q])
    assert wl.trim_schedule(q, 4) == pytest.approx([2 * q, q, q, q])
    assert wl.trim_schedule(0.5, 3) == pytest.approx([0.5, 0.5, 0.5])
    with pytest.raises(ValueError):
        wl.n_iterations(0.0)


def test_trim_keeps_the_global_quantile_and_each_class_tail():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 100)
    losses = rng.random(400) + y  # class 3 has the highest losses: the global quantile alone misses it
    kept = wl.trim(losses, y, 0.2, 4)
    assert (kept >= (losses <= np.quantile(losses, 0.2))).all()
    for c in range(4):
        in_c = y == c
        assert kept[in_c & (losses <= np.quantile(losses[in_c], 0.2 / 8))].all()
        assert kept[in_c].any()
    only = kept & ~(losses <= np.quantile(losses, 0.2))
    assert set(np.unique(y[only])) <= {1, 2, 3}


def test_modal_vote_breaks_ties_at_random_and_needs_two_voters():
    preds = np.array([[1, 0, 2, 5],
                      [1, 1, 3, 6],
                      [2, 2, 4, 7]])
    vote, count = wl.modal_vote(preds, 10, seed=0)
    assert vote[0] == 1 and count[0] == 2
    assert count[1] == 1 and count[3] == 1
    ties = {int(wl.modal_vote(preds, 10, seed=s)[0][2]) for s in range(40)}
    assert ties == {2, 3, 4}  # every tied label wins sometimes
    y = np.array([1, 0, 2, 5])
    assert wl.vote_keep(preds, y, 10).tolist() == [True, False, False, False]  # cnt > 1 drops the lone votes
    assert wl.vote_keep(preds, y, 10, min_count=1)[[0]].all()


def test_algorithm_1_finds_the_primary_sets_only_with_the_corrected_inequality():
    # three clean sets of 40 and two poisoned sets of 20: learners from clean sets err below chance on clean sets
    # and above it on poison, and the other way round (Properties 4.4, 4.6 with a deterministic learner).
    primary = np.array([True, True, True, False, False])
    sizes = np.array([40, 40, 40, 20, 20])
    errors = np.where(primary[:, None] == primary[None, :], 0.2, 0.8)
    np.testing.assert_array_equal(wl.boost_homogeneous(errors, sizes, "below"), primary)
    assert not np.array_equal(wl.boost_homogeneous(errors, sizes, "above"), primary)
    # with a primary ratio under 1/2 the guarantee is gone: the poison wins the vote
    flipped = wl.boost_homogeneous(errors, np.array([10, 10, 10, 40, 40]), "below")
    np.testing.assert_array_equal(flipped, ~primary)


def test_targeted_misclassification_follows_equation_7():
    # 5 source-class test images: clean predictions and predictions on their triggered copies
    pred_clean = np.array([3, 3, 3, 1, 3])
    pred_trig = np.array([5, 5, 3, 5, 5])
    # counted: f(x) = s and f(τ(x)) = t -> images 0, 1, 4 (image 3 was misclassified before the trigger)
    assert metrics.targeted_misclassification(pred_clean, pred_trig, source=3, target=5) == pytest.approx(60.0)
    with pytest.raises(ValueError):
        metrics.targeted_misclassification(pred_clean, pred_trig[:3], 3, 5)


def test_removal_counts():
    kept = np.array([True, False, True, False, True])
    is_poison = np.array([False, False, True, True, False])
    assert wl.removal_counts(kept, is_poison) == {"fp": 1, "fn": 1, "kept": 3, "removed": 2}


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="alpha"):
        wl.EnsembleConfig(alpha=0.0)
    with pytest.raises(ValueError, match="components"):
        wl.EnsembleConfig(components=0)
    with pytest.raises(ValueError, match="eta"):
        wl.EnsembleConfig(eta=1.5)


class _Linear(nn.Module):
    """Images -> 10 logits from the mean colour of 8x8 blocks (enough to learn the toy task below)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 16, 10)

    def forward(self, x):
        return self.fc(torch.nn.functional.avg_pool2d(x, 8).flatten(1))


def _linear_model(seed: int) -> nn.Module:
    """A fresh :class:`_Linear` drawn from ``seed`` (the defenses' model factory)."""
    torch.manual_seed(seed)
    return _Linear()


def _toy_set(n_per_class=60, n_poison=20, seed=0):
    """Class c lights up the c-th 8x8 block of a noisy grey image; the poisons are class-1 images that also light
    up the last block (15, used by no class) and carry label 7."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(10), n_per_class)
    x = np.clip(rng.normal(60, 20, (len(y), 32, 32, 3)), 0, 255).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, 8 * (c // 4):8 * (c // 4) + 8, 8 * (c % 4):8 * (c % 4) + 8] = 200
    src = np.flatnonzero(y == 1)[:n_poison]
    x[src, 24:, 24:] = 200
    y_bad = y.copy()
    y_bad[src] = 7
    is_poison = np.zeros(len(y), bool)
    is_poison[src] = True
    return ImageSet(x, y_bad), is_poison


def test_the_defense_removes_planted_poison_and_resumes_from_its_cache(cache):
    train, is_poison = _toy_set()
    cfg = wl.EnsembleConfig(components=4, bags=1, warmup_epochs=3, iter_epochs=2, learner_epochs=30, min_active=60,
                            spl_rounds=3, spl_epochs=5, lr=0.5, batch_size=32, augment="none", eval_augment=False)

    def model_fn(seed):
        torch.manual_seed(seed)
        return _Linear()

    defense = wl.WeakLearnerEnsemble(cfg, device="cpu", progress=False, cache=cache)
    res = defense.run(model_fn, train, "toy-linear")
    counts = wl.removal_counts(res.kept, is_poison)
    assert counts["fn"] <= 2, counts  # (almost) every poison removed
    assert counts["fp"] < 0.25 * (~is_poison).sum(), counts  # most clean data kept
    assert len(res.components) >= 3 and res.preds.shape == (len(res.components), len(train))
    again = wl.WeakLearnerEnsemble(cfg, device="cpu", progress=False, cache=cache).run(model_fn, train, "toy-linear")
    np.testing.assert_array_equal(again.kept, res.kept)  # read back from the cache, learner by learner
    with pytest.raises(ValueError, match="min_active"):
        defense.run(model_fn, train.subset(np.arange(50)), "toy-linear")


def test_per_class_counts_each_components_labels_and_scores_its_learner_on_the_clean_samples_only():
    y = np.array([0, 0, 1, 1, 2, 2])
    comps = [wl.Component(0, 0, np.array([0, 1, 2]), 6, np.array([0, 1, 1, 1, 2, 0]), 0.0),
             wl.Component(0, 1, np.array([3, 4, 5]), 3, np.array([0, 0, 0, 0, 2, 2]), 0.0)]
    res = wl.EnsembleResult(comps, np.ones(6, bool))
    held, acc = res.per_class(y, 3)
    np.testing.assert_array_equal(held, [[2, 1, 0], [0, 1, 2]])
    np.testing.assert_allclose(acc, [[50, 100, 50], [100, 0, 100]])
    _, acc_clean = res.per_class(y, 3, clean=np.array([True, False, True, True, True, True]))  # sample 1 poisoned
    np.testing.assert_allclose(acc_clean, [[100, 100, 50], [100, 0, 100]])


_TOY_CONFIG = dict(components=4, bags=1, warmup_epochs=3, iter_epochs=2, learner_epochs=30, min_active=60,
                   spl_rounds=3, spl_epochs=5, lr=0.5, batch_size=32, augment="none", eval_augment=False)


@pytest.fixture(scope="module")
def clean_toy_run(tmp_path_factory):
    """The defense on the toy with no poison at all (one run shared by the two tests below)."""
    from poisoncure.cache import Cache

    train, is_poison = _toy_set(n_poison=0)
    assert not is_poison.any()
    cache = Cache(tmp_path_factory.mktemp("clean-toy-cache"))
    res = wl.WeakLearnerEnsemble(wl.EnsembleConfig(**_TOY_CONFIG), device="cpu", progress=False,
                                 cache=cache).run(_linear_model, train, "toy-clean")
    return train, res


@pytest.mark.xfail(strict=True, reason="limitation of the authors' vote rule, not of this code (see the next test and "
                   "the module's docstring): ISPL's first component takes classes 0 and 9 whole, no later learner "
                   "trains on them, and a label only one learner knows cannot collect the two votes the rule needs, "
                   "so the defense removes both classes (120 of 600 clean samples)")
def test_on_clean_data_the_ensemble_keeps_almost_everything(clean_toy_run):
    """No poison at all: the defense must not invent one (its false-alarm cost on a clean training set). Strict
    xfail: it documents a failure of the published rule on this toy; if it ever passes, strict makes that visible so
    the marker is removed."""
    train, res = clean_toy_run
    removed_per_class = np.bincount(train.y[~res.kept], minlength=10)
    assert (~res.kept).sum() < 0.1 * len(train) and removed_per_class.max() < 30, removed_per_class


def test_the_authors_vote_removes_whole_the_labels_at_most_one_learner_trained_on(clean_toy_run):
    """Why the test above fails. A weak learner that never saw a label does not predict it, so a label present in one
    component only gets at most one vote, and the rule's ``cnt > 1`` (at least ``min_count`` = 2 learners casting the
    modal vote) removes every sample of it; self-training, which trains on the kept set only, cannot bring the label
    back. Everything else the vote removes on clean data is a small remainder."""
    train, res = clean_toy_run
    trained_on = (res.per_class(train.y, 10)[0] > 0).sum(axis=0)
    lonely = np.flatnonzero(trained_on <= 1)
    assert len(lonely) >= 1, trained_on  # the toy's easy first component takes whole classes
    in_lonely = np.isin(train.y, lonely)
    for kept in (res.vote_kept, res.kept):
        assert not kept[in_lonely].any(), np.bincount(train.y[kept & in_lonely], minlength=10)
    # of the labels two or more learners trained on, the vote removes few samples and self-training wins them back
    assert (~res.vote_kept[~in_lonely]).mean() < 0.15, np.bincount(train.y[~res.vote_kept], minlength=10)
    assert (~res.kept[~in_lonely]).mean() < 0.05, np.bincount(train.y[~res.kept], minlength=10)


def test_itlm_drops_the_samples_no_model_can_fit():
    """30 of 600 labels flipped to a random other class (no feature predicts them): after two rounds keeping 95 %,
    the 30 samples ITLM drops are mostly those."""
    from poisoncure.train import TrainConfig

    train, _ = _toy_set(n_poison=0)
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(train), 30, replace=False)
    y = train.y.copy()
    y[flipped] = (y[flipped] + rng.integers(1, 10, 30)) % 10
    noisy = ImageSet(train.x, y)

    hist = wl.itlm_keep(_linear_model, noisy, keep_ratio=0.95, rounds=2, first_epochs=10, epochs=10,
                        config=TrainConfig(lr=0.2, batch_size=32, augment="none", label_smoothing=0.0),
                        device="cpu", progress=False)
    dropped = np.flatnonzero(~hist[-1])
    assert abs(len(dropped) - 30) <= 2
    assert np.isin(dropped, flipped).mean() >= 0.8, np.isin(dropped, flipped).mean()


def test_itlm_drops_high_loss_samples():
    train, is_poison = _toy_set()

    def model_fn(seed):
        torch.manual_seed(seed)
        return _Linear()

    from poisoncure.train import TrainConfig

    hist = wl.itlm_keep(model_fn, train, keep_ratio=0.9, rounds=2, first_epochs=5, epochs=5,
                        config=TrainConfig(lr=0.05, batch_size=32, augment="none", label_smoothing=0.0),
                        device="cpu", progress=False)
    assert len(hist) == 2 and hist[-1].sum() == pytest.approx(0.9 * len(train), abs=2)
    with pytest.raises(ValueError, match="keep_ratio"):
        wl.itlm_keep(model_fn, train, keep_ratio=0.0)


def test_clean_and_poison_are_incompatible_on_the_synthetic_mixture():
    from poisoncure import expansion as ex

    clean, poison = ex.mixture(200, 0, seed=1), ex.mixture(0, 60, seed=2)
    for alpha in (0.1, 0.5):
        for s, t in ((clean, poison), (poison, clean)):  # incompatible both ways (Property 4.4)
            assert ex.expansion_error(s, t, alpha, draws=10) > ex.expansion_error(s, None, alpha, draws=10) + 0.1
    shares, errors = ex.error_by_poison_share(size=150, shares=np.array([0.0, 0.5, 1.0]), draws=10)
    assert errors[1] > max(errors[0], errors[2]) + 0.1  # the minimisers are homogeneous (Theorem 4.5)
    with pytest.raises(ValueError, match="alpha"):
        ex.expansion_error(clean, None, alpha=0.0)


def test_algorithm_1_with_stochastic_learners_flags_exactly_the_clean_sets():
    from poisoncure import expansion as ex

    sets = [ex.mixture(60, 0, seed=10 + i) for i in range(3)] + [ex.mixture(0, 30, seed=20 + i) for i in range(2)]
    errors = ex.boosting_errors(sets, learners=5)
    flags = wl.boost_homogeneous(errors, np.array([len(s) for s in sets]))
    assert flags.tolist() == [True, True, True, False, False]


def test_the_runner_plans_one_experiment_per_trigger_with_the_chapters_settings():
    from poisoncure.experiments import plans, profiles
    from poisoncure.experiments.grids import ensembles

    exps = plans.plan("smoke", ["ensembles"])
    prof = profiles.load("smoke")
    nb = {**prof["experiment"], **prof["notebooks"]["12_weak_learners"]}
    assert [e.name for e in exps] == ["pair1-blend0.2-whitened_net-r0.2-s0", "pair1-pixel-whitened_net-r0.2-s0",
                                      "pair1-patch3-whitened_net-r0.2-s0"]
    live = ensembles.experiment_params(nb, ensembles.live_trigger(nb), nb["wl_poison_rate"], nb["seed"], False)
    assert [ensembles.same_experiment(e.params, live) for e in exps] == [True, False, False]
    assert exps[0].params["ensemble"]["components"] == nb["wl_components"]
    assert exps[0].params["recipe"]["train_per_class"] == nb["wl_train_per_class"]
    with pytest.raises(ValueError, match="missing"):
        ensembles.experiment_params({k: v for k, v in nb.items() if k != "wl_alpha"}, ensembles.live_trigger(nb),
                                    0.2, 0, False)


def test_bad_experiment_input_is_refused_before_any_work():
    from poisoncure.experiments.grids import ensembles

    assert ensembles.itlm_keep_ratio(0.1) == 0.96
    with pytest.raises(ValueError, match="ITLM keep ratios"):
        ensembles.itlm_keep_ratio(0.15)
    with pytest.raises(ValueError, match="unknown methods"):
        ensembles.run_point({}, methods=("none", "magic"))
    with pytest.raises(ValueError, match="unknown keys"):
        ensembles.grid({"experiment": {}, "notebooks": {"12_weak_learners": {}}}, {"tiggers": []})
