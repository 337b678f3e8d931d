import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from poisoncure import gradients, models, signal


@pytest.fixture(scope="module")
def net_and_images():
    torch.manual_seed(0)
    net = models.small_cnn(width=8).eval()
    x = np.random.default_rng(0).integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8)
    return net, x


@pytest.fixture
def fp32(monkeypatch):
    """Exact comparisons with a float32 reference: the library's passes in float32 too (bf16 where the CPU has it
    natively would round differently; its agreement is tested below)."""
    from poisoncure import train

    monkeypatch.setenv(train.PRECISION_ENV, "fp32")


def test_batched_gradients_equal_a_sample_by_sample_loop(net_and_images, fp32):
    net, x = net_and_images
    labels = np.arange(12) % 10
    batched = gradients.input_gradients(net, x, labels, batch_size=5, device="cpu")
    for i in range(len(x)):
        xi = torch.from_numpy(x[i:i + 1]).permute(0, 3, 1, 2).float().div(255).requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(net(xi), torch.tensor([labels[i]]))
        (g,) = torch.autograd.grad(loss, xi)
        np.testing.assert_allclose(batched[i], g.reshape(-1).numpy(), rtol=1e-4, atol=1e-6)


def test_one_label_for_all_and_batch_size_do_not_matter(net_and_images, fp32):
    net, x = net_and_images
    a = gradients.input_gradients(net, x, 3, batch_size=12, device="cpu")
    b = gradients.input_gradients(net, x, np.full(12, 3), batch_size=1, device="cpu")
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert all(p.requires_grad for p in net.parameters())  # restored afterwards


def test_without_a_batch_size_the_cpu_engine_takes_the_measured_batch_and_the_same_gradients(net_and_images, fp32):
    """bench/eval_layout.py measured batches of 256 faster than 500 on the CPU: the engine (and the paper's defense,
    which passes its gradient_batch None) uses it when no size is given, with the gradients of any other size."""
    from poisoncure.defenses.poison_cure import PoisonCure

    net, x = net_and_images
    x = np.concatenate([x] * 50)  # 600 images
    seen = []
    hook = net.register_forward_pre_hook(lambda m, inp: seen.append(len(inp[0])))
    try:
        default = gradients.input_gradients(net, x, 3, device="cpu")
        assert seen == [256, 256, 88]
        seen.clear()
        PoisonCure(device="cpu", progress=False)._grads(net, x, 3)
        assert seen == [256, 256, 88]
    finally:
        hook.remove()
    np.testing.assert_allclose(default, gradients.input_gradients(net, x, 3, batch_size=600, device="cpu"),
                               rtol=1e-4, atol=1e-6)


def test_without_a_batch_size_the_cpu_forward_passes_take_the_measured_batch_and_the_same_outputs(net_and_images,
                                                                                                   fp32):
    """bench/eval_batch.py measured batches of 256 faster than 1,000 for predictions and representations on the CPU:
    both take it when no size is given, with the outputs of any other size."""
    from poisoncure import train

    net, x = net_and_images
    x = np.concatenate([x] * 50)  # 600 images
    seen = []
    hook = net.features.register_forward_pre_hook(lambda m, inp: seen.append(len(inp[0])))
    try:
        pred = train.predict(net, x, device="cpu", tta=True)
        assert seen == [256, 256, 256, 256, 88, 88]  # each batch and its mirror image
        seen.clear()
        feats = gradients.features(net, x, device="cpu")
        assert seen == [256, 256, 88]
    finally:
        hook.remove()
    np.testing.assert_array_equal(pred, train.predict(net, x, batch_size=600, device="cpu", tta=True))
    np.testing.assert_allclose(feats, gradients.features(net, x, batch_size=600, device="cpu"), rtol=1e-4, atol=1e-6)


def test_bf16_passes_keep_the_direction_of_every_gradient(monkeypatch):
    """Input gradients with bf16 passes (native on AMX CPUs, emulated elsewhere) against float32, on a whitened
    network: per-sample cosine median 0.983-0.987 and minimum 0.79-0.90 over seeds 0-2 (measured on an AMX Xeon);
    the decisions built on them are compared in bench/gradient_precision.py."""
    from poisoncure import train

    torch.manual_seed(0)
    net = models.whitened_net(width=8)
    models.fit_whitening(net, torch.rand(64, 3, 32, 32))
    x = np.random.default_rng(0).integers(0, 256, size=(64, 32, 32, 3), dtype=np.uint8)
    out = {}
    for prec in ("fp32", "bf16"):
        monkeypatch.setenv(train.PRECISION_ENV, prec)
        out[prec] = gradients.input_gradients(net.eval(), x, np.arange(64) % 10, device="cpu")
    a, b = out["fp32"], out["bf16"]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert np.median(cos) > 0.95 and cos.min() > 0.5
    assert not np.array_equal(a, b)  # bf16 really ran


@pytest.mark.parametrize("labels, x_kind, match", [
    (10, "ok", "labels must lie"), (np.zeros(5, int), "ok", "shape"), (0, "empty", "no images"),
    (0, "float", "uint8"),
])
def test_gradient_engine_rejects_bad_input(net_and_images, labels, x_kind, match):
    net, x = net_and_images
    x = {"ok": x, "empty": x[:0], "float": x.astype(np.float32)}[x_kind]
    with pytest.raises(ValueError, match=match):
        gradients.input_gradients(net, x, labels, device="cpu")


def test_proposition_4_1_manual_backprop_equals_autograd():
    """dL/dx_i = sum_j delta_j sigma'(z_j) w_ji for a 3-layer ReLU MLP (the paper's Proposition 4.1)."""
    torch.manual_seed(1)
    w1, b1 = torch.randn(16, 8, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    w2, b2 = torch.randn(12, 16, dtype=torch.float64), torch.randn(12, dtype=torch.float64)
    w3, b3 = torch.randn(5, 12, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    x = torch.randn(30, 8, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 5, (30,))
    z1 = x @ w1.T + b1
    a1 = torch.relu(z1)
    z2 = a1 @ w2.T + b2
    a2 = torch.relu(z2)
    logits = a2 @ w3.T + b3
    torch.nn.functional.cross_entropy(logits, y, reduction="sum").backward()
    with torch.no_grad():  # hand-written back-propagation
        delta3 = torch.softmax(logits, 1) - torch.nn.functional.one_hot(y, 5)  # dL/dlogits
        delta2 = delta3 @ w3  # dL/da2
        delta1 = (delta2 * (z2 > 0)) @ w2  # dL/da1
        manual = (delta1 * (z1 > 0)) @ w1  # sum_j delta_j sigma'(z_j) w_ji
    torch.testing.assert_close(manual, x.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("strength", [4.0, 8.0])
def test_planted_rank_one_signal_is_recovered(strength):
    """Theorem 4.1 with n = 5000, d = 3072: the recovered direction matches the spiked-covariance prediction
    (|cos| ~ 0.90 at eps ||v||^2 = 4 sigma^2, where finite n caps it) and exceeds 0.95 at 8 sigma^2."""
    eps = 500 / 5500
    norm = np.sqrt(strength / eps)
    g, v, is_p = signal.planted_gradients(5000, 3072, eps, norm, sigma=1.0, seed=0, mu_norm=5.0)
    sig = signal.extract_signal(g)
    cos = signal.abs_cosine(sig.v_hat, v)
    assert cos == pytest.approx(signal.predicted_cosine(strength, eps, 5000, 3072), abs=0.03)
    if strength >= 8:
        assert cos >= 0.95
    # eigen-gap vs its finite-n prediction, both in the units of the normalised rows (row norm ~ sqrt(d) sigma):
    # 4 % and 0.1 % off here; the population value eps (1 - eps) ||v||^2 is 1.6x and 1.25x the measured gap
    scale = np.mean(np.linalg.norm(g - g.mean(0), axis=1) ** 2)
    assert sig.eigen_gap == pytest.approx(signal.predicted_gap(strength, eps, 5000, 3072) / scale, rel=0.12)
    scores = signal.pc1_scores(g, sig.v_hat)
    assert roc_auc_score(is_p, np.abs(scores)) > 0.9


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_extraction_finds_the_exact_top_vector_when_the_top_two_singular_values_are_close(seed):
    """A weak spike (top two singular values within 12-16 % of each other): the randomised SVD with the extraction's
    power iterations returns the exact SVD's top vector. With six iterations (the book's until 1447cd1) it did not:
    each of the four seeds fails (planted); bench/svd.py measures both."""
    g, _, _ = signal.planted_gradients(1500, 1024, 0.1, 5.0, seed=seed)
    gt = signal.normalise_rows(g)
    m = (gt - gt.mean(axis=0)).astype(np.float64)
    exact = np.linalg.svd(m, full_matrices=False)[2][0]
    assert signal.abs_cosine(signal.extract_signal(g, seed=seed).v_hat, exact) > 0.995


def test_predicted_gap_is_the_population_gap_for_many_samples_and_zero_below_the_threshold():
    eps = 0.1
    assert signal.predicted_gap(0.5, eps, 5000, 3072) == 0.0  # spike 0.45 below sqrt(d / n) = 0.78
    assert signal.predicted_gap(4.0, eps, 10**9, 3072) == pytest.approx((1 - eps) * 4.0, rel=1e-3)
    assert signal.predicted_gap(4.0, eps, 5000, 3072) < (1 - eps) * 4.0  # the noise bulk's edge eats into it


def test_predicted_cosine_has_the_detection_threshold():
    assert signal.predicted_cosine(0.5, 0.1, 5000, 3072) == 0.0  # below sqrt(d / n)
    assert 0.89 < signal.predicted_cosine(4.0, 500 / 5500, 5000, 3072) < 0.92
    assert signal.predicted_cosine(100.0, 0.1, 5000, 3072) > 0.99


def test_no_signal_gives_a_random_direction():
    g, v, _ = signal.planted_gradients(2000, 3072, 0.0, 50.0, seed=1)
    sig = signal.extract_signal(g)
    assert signal.abs_cosine(sig.v_hat, v) < 0.2


def test_uncentred_signal_is_oriented_along_the_mean():
    g, v, _ = signal.planted_gradients(300, 100, 1.0, 30.0, seed=2)  # a poison-only pool
    sig = signal.extract_signal(g, center=False)
    assert sig.v_hat @ v > 0.9


@pytest.mark.parametrize("bad, match", [(np.zeros(5), "2-D"), (np.zeros((1, 4)), "at least 2"),
                                        (np.full((3, 4), np.nan), "NaN")])
def test_signal_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        signal.extract_signal(bad)


def test_scores_and_cosine_validate_shapes():
    with pytest.raises(ValueError, match="v_hat"):
        signal.pc1_scores(np.ones((3, 4)), np.ones(5))
    with pytest.raises(ValueError, match="zero"):
        signal.abs_cosine(np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="eps"):
        signal.planted_gradients(10, 4, 1.5, 1.0)


def test_gmm_filter_separates_planted_poison_and_beats_chance():
    g, _, is_p = signal.planted_gradients(5500, 3072, 500 / 5500, np.sqrt(4 / (500 / 5500)), seed=3)
    sig = signal.extract_signal(g)
    filt = signal.gmm_filter(signal.pc1_scores(g, sig.v_hat))
    from poisoncure import metrics

    assert metrics.sensitivity(filt.flagged, is_p) > 85 and metrics.specificity(filt.flagged, is_p) > 90
    assert filt.consistent
    # the one-call pipeline (rows normalised once) gives exactly the steps' results
    sig2, filt2 = signal.extract_and_filter(g)
    np.testing.assert_array_equal(sig2.v_hat, sig.v_hat)
    np.testing.assert_array_equal(filt2.scores, filt.scores)
    np.testing.assert_array_equal(filt2.flagged, filt.flagged)
    with pytest.raises(ValueError, match="NaN"):
        signal.extract_and_filter(np.full((3, 4), np.nan))


def test_wasserstein_target_detection_finds_the_planted_class_and_not_a_clean_one():
    w = []
    for k in range(5):
        eps = 0.09 if k == 3 else 0.0
        g, _, _ = signal.planted_gradients(1500, 512, eps, 12.0, seed=10 + k)
        filt = signal.gmm_filter(signal.pc1_scores(g, signal.extract_signal(g).v_hat))
        w.append(filt.wasserstein)
    det = signal.detect_target(np.array(w))
    assert det.target == 3 and det.poisoned and det.ratio > 2
    clean = signal.detect_target(np.delete(np.array(w), 3))
    assert not clean.poisoned
    # a class not scanned (NaN) takes no part: neither candidate nor in the others' mean
    absent = signal.detect_target(np.insert(np.array(w), 1, np.nan))
    assert absent.target == 4 and absent.ratio == pytest.approx(det.ratio)


def test_base_class_is_the_label_with_the_largest_mean_abs_pc1():
    rng = np.random.default_rng(0)
    s = rng.normal(0, 0.05, size=(4, 100))
    flagged = np.zeros(100, bool)
    flagged[:10] = True
    s[2, :10] += 0.8  # base label 2
    s[1, :10] += 1.0  # the target itself: excluded
    m = signal.base_scores(s, flagged)
    assert signal.detect_base(m, target=1) == 2


@pytest.mark.parametrize("call, match", [
    (lambda: signal.gmm_filter(np.ones(1)), "at least 2"),
    (lambda: signal.detect_target(np.array([1.0])), "one value per class"),
    (lambda: signal.detect_target(np.array([1.0, -1.0])), "non-negative"),
    (lambda: signal.detect_target(np.array([1.0, np.inf])), "finite"),
    (lambda: signal.detect_target(np.array([1.0, np.nan, np.nan])), "at least 2 classes"),
    (lambda: signal.detect_target(np.array([1.0, 2.0]), threshold=0), "threshold"),
    (lambda: signal.base_scores(np.ones((3, 4)), np.zeros(4, bool)), "no sample is flagged"),
    (lambda: signal.base_scores(np.ones((3, 4)), np.zeros(5, bool)), "shape|must be"),
    (lambda: signal.detect_base(np.ones(3), target=3), "target"),
])
def test_detection_steps_reject_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_gradients_are_cached_per_model_indices_and_labels(cache, tiny_images, monkeypatch):
    from poisoncure import experiments, train

    torch.manual_seed(0)
    tm = experiments.TrainedModel(experiments.Recipe(poison="clean", width=8), models.small_cnn(width=8).eval(),
                                  tiny_images, train.AttackMetrics(0.0, [], None, None), train.FitHistory(), {},
                                  False)
    idx = np.arange(0, 40, 3)
    first = experiments.get_gradients(tm, idx, 2, device="cpu", cache=cache)
    assert first.shape == (len(idx), 3072)
    monkeypatch.setattr(gradients, "input_gradients", lambda *a, **k: pytest.fail("recomputed"))
    np.testing.assert_array_equal(experiments.get_gradients(tm, idx, 2, device="cpu", cache=cache), first)
    monkeypatch.undo()
    other = experiments.get_gradients(tm, idx, 3, device="cpu", cache=cache)
    assert not np.allclose(other, first)
