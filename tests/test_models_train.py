import numpy as np
import pytest
import torch

from poisoncure import metrics, models, train


@pytest.mark.parametrize("name, kwargs", [("small_cnn", {}), ("small_cnn_whitened", {"width": 8}),
                                          ("whitened_net", {"width": 8}), ("resnet18", {"width": 8}), ("vgg19", {})])
def test_models_map_pixel_images_to_logits(name, kwargs):
    m = models.build_model(name, **kwargs).eval()
    x = torch.rand(2, 3, 32, 32)
    models.fit_whitening(m, torch.rand(16, 3, 32, 32))
    assert m(x).shape == (2, 10)
    assert m.embed(x).ndim == 2


def test_resnet18_has_the_papers_parameter_count():
    assert models.count_parameters(models.resnet18()) == 11_173_962


def test_normalisation_lives_inside_the_model():
    m = models.small_cnn()
    x = torch.full((1, 3, 32, 32), 0.5)
    expected = (0.5 - torch.tensor(models.CIFAR_MEAN)) / torch.tensor(models.CIFAR_STD)
    torch.testing.assert_close(m.normalize(x)[0, :, 0, 0], expected)


def test_unknown_model_raises():
    with pytest.raises(ValueError, match="model must be one of"):
        models.build_model("resnet1000")


def test_augment_none_and_flip():
    x = torch.rand(64, 3, 32, 32)
    torch.testing.assert_close(train.augment_batch(x, "none"), x)
    out = train.augment_batch(x, "flip", torch.Generator().manual_seed(0))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()


def test_crop_flip_is_a_shifted_window_of_the_padded_image():
    x = torch.rand(32, 3, 32, 32)
    out = train.augment_batch(x, "crop_flip", torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(len(x)):
        windows = [padded[i, :, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(2)) for w in windows)


@pytest.mark.parametrize("field, value", [("epochs", 0), ("lr", 0.0), ("augment", "rotate"),
                                          ("schedule", "step"), ("label_smoothing", 1.0), ("batch_size", 0),
                                          ("bias_lr_scale", 0.0), ("lookahead", 1.0), ("lookahead", -0.1)])
def test_train_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        train.TrainConfig(**{field: value})


def test_resolve_device():
    assert train.resolve_device("cpu").type == "cpu"
    assert train.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            train.resolve_device("cuda")


def test_metrics_values_and_errors():
    assert metrics.accuracy(np.array([1, 2, 3]), np.array([1, 2, 0])) == pytest.approx(200 / 3)
    assert metrics.attack_success_rate(np.array([5, 5, 1, 5]), 5) == 75.0
    flagged, truth = np.array([1, 1, 0, 0], bool), np.array([1, 0, 0, 0], bool)
    assert metrics.sensitivity(flagged, truth) == 100.0
    assert metrics.specificity(flagged, truth) == pytest.approx(200 / 3)
    assert metrics.detection_rates(flagged, truth) == {"sensitivity": 100.0, "specificity": pytest.approx(200 / 3)}
    assert metrics.detection_rates(flagged, np.zeros(4, bool)) == {"sensitivity": None, "specificity": 50.0}
    assert metrics.detection_rates(flagged, np.ones(4, bool)) == {"sensitivity": 50.0, "specificity": None}
    with pytest.raises(ValueError, match="empty"):
        metrics.accuracy(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="poisoned"):
        metrics.sensitivity(flagged, np.zeros(4, bool))
    with pytest.raises(ValueError, match="shape|1-D"):
        metrics.accuracy(np.zeros(3), np.zeros(4))


@pytest.mark.slow
def test_a_poisoned_model_learns_the_backdoor_and_a_clean_one_does_not(tiny_models):
    """The whitened network trained briefly on a 10-class subset (conftest): clean accuracy well above chance, the
    one-pixel backdoor works on the poisoned model and not on a clean one trained the same way."""
    m_p = train.evaluate(tiny_models.poisoned, tiny_models.test, tiny_models.ps.spec, "cpu")
    m_c = train.evaluate(tiny_models.clean, tiny_models.test, tiny_models.ps.spec, "cpu")
    assert m_p.clean_accuracy > 35  # chance is 10%
    assert m_p.attack_success_rate > 80
    assert m_c.attack_success_rate < 20


# ------------------------------------------------------------------------------------ the whitened network
def test_whitening_decorrelates_patches_and_is_fitted_once():
    """After fitting, the whitening layer's outputs on the fitting images have unit variance and no correlation
    (its first half of channels; the second half are their negatives)."""
    torch.manual_seed(0)
    net = models.whitened_net(width=8)
    with pytest.raises(RuntimeError, match="not fitted"):
        net(torch.rand(2, 3, 32, 32))
    base = torch.rand(64, 3, 32, 32)
    x = (base + 0.5 * base.roll(1, dims=2)).clamp(0, 1)  # correlated neighbouring pixels
    assert models.fit_whitening(net, x) == 1 and models.fit_whitening(net, x) == 0
    white = net.features[0]
    out = white(net.normalize(x))[:, :12].permute(0, 2, 3, 1).reshape(-1, 12).double()
    cov = torch.cov(out.T)
    torch.testing.assert_close(cov, torch.eye(12, dtype=torch.float64), atol=0.02, rtol=0)
    torch.testing.assert_close(out.mean(0), torch.zeros(12, dtype=torch.float64), atol=1e-3, rtol=0)


def test_whitening_survives_saving_reinitialising_and_is_not_trained():
    torch.manual_seed(0)
    net = models.whitened_net(width=4)
    imgs = train.ImageSet(np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8),
                          np.repeat(np.arange(10), 4))
    train.fit(net, imgs, train.TrainConfig(epochs=1, batch_size=20), "cpu", progress=False)  # fits it first
    weight = net.features[0].weight.clone()
    assert weight.abs().sum() > 0 and not any(p is net.features[0].weight for p in net.parameters())
    train.fit(net, imgs, train.TrainConfig(epochs=1, batch_size=20, seed=3), "cpu", progress=False)
    torch.testing.assert_close(net.features[0].weight, weight)  # fine-tuning keeps the fitted filters
    train.reinitialise(net, seed=1)
    torch.testing.assert_close(net.features[0].weight, weight)  # "from scratch" keeps them too
    fresh = models.whitened_net(width=4)
    fresh.load_state_dict(net.state_dict())
    assert models.unfitted_whitening(fresh) == []
    torch.testing.assert_close(fresh.eval()(torch.ones(1, 3, 32, 32)), net.eval()(torch.ones(1, 3, 32, 32)))


def test_whitened_net_parameter_counts_match_its_docstring():
    assert [models.count_parameters(models.whitened_net(width=w)) for w in (16, 32, 64)] == [126_794, 497_802,
                                                                                            1_972_490]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_the_layout_aware_gelu_is_torchs_gelu_and_keeps_the_layout(dtype, approximate, layout):
    """models.GELU computes a channels_last batch through a permuted view (a speed fix, bench/gelu_layout.py): its
    values and input gradients equal nn.GELU's in either layout within rounding (torch's kernels compute erf and
    tanh in more than one way), and the output keeps the input's layout. H != W, so a permutation back in the wrong
    order fails it."""
    x = (torch.randn(4, 6, 5, 7, generator=torch.Generator().manual_seed(0)) * 3).to(dtype)
    grad = torch.randn(4, 6, 5, 7, generator=torch.Generator().manual_seed(1)).to(dtype)

    def run(module, memory_format):
        xi = x.clone(memory_format=memory_format).requires_grad_(True)
        y = module(xi)
        y.backward(grad.contiguous(memory_format=memory_format))
        return y.detach(), xi.grad

    y, g = run(models.GELU(approximate=approximate), layout)
    assert y.shape == x.shape and y.is_contiguous(memory_format=layout)
    for memory_format in (torch.contiguous_format, torch.channels_last):
        y_ref, g_ref = run(torch.nn.GELU(approximate=approximate), memory_format)
        torch.testing.assert_close(y, y_ref)
        torch.testing.assert_close(g, g_ref)


def test_the_whitened_networks_use_the_layout_aware_gelu():
    for net in (models.whitened_net(width=4), models.small_cnn_whitened(width=4)):
        acts = [m for m in net.modules() if isinstance(m, torch.nn.GELU)]
        assert acts and all(type(m) is models.GELU for m in acts)


def _toy_images(n: int = 60) -> train.ImageSet:
    rng = np.random.default_rng(0)
    return train.ImageSet(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), np.arange(n) % 10)


def _trained(cfg: train.TrainConfig) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = models.small_cnn(width=4)
    train.fit(net, _toy_images(), cfg, "cpu", progress=False)
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_the_default_recipe_is_unchanged_by_the_airbench_options():
    """bias_lr_scale 1 and lookahead 0 are the recipe as it was: the same weights, bit for bit."""
    base = train.TrainConfig(epochs=1, batch_size=20)
    same = train.TrainConfig(epochs=1, batch_size=20, bias_lr_scale=1.0, lookahead=0.0)
    for k, v in _trained(base).items():
        assert torch.equal(v, _trained(same)[k]), k


def test_bias_lr_scale_moves_only_the_one_dimensional_parameters():
    """With the learning rate of the batch-norm shifts and biases scaled, those move further from their start
    than without, and the first conv's weights take another path only through them."""
    torch.manual_seed(0)
    start = models.small_cnn(width=4).state_dict()
    plain = _trained(train.TrainConfig(epochs=1, batch_size=20))
    scaled = _trained(train.TrainConfig(epochs=1, batch_size=20, bias_lr_scale=16.0))
    one_d = [k for k, v in start.items() if v.ndim == 1 and v.is_floating_point() and "running" not in k
             and not torch.equal(plain[k], start[k])]
    assert one_d
    moved = lambda sd: sum(float((sd[k] - start[k]).abs().sum()) for k in one_d)  # noqa: E731
    assert moved(scaled) > 4 * moved(plain)


def test_lookahead_ends_on_the_slow_weights_between_start_and_the_plain_run():
    """The slow weights lag the trained ones: the lookahead run ends nearer its start than the plain run, and
    differs from it (the option does something), with every tensor finite."""
    torch.manual_seed(0)
    start = models.small_cnn(width=4).state_dict()
    plain = _trained(train.TrainConfig(epochs=2, batch_size=10))
    slow = _trained(train.TrainConfig(epochs=2, batch_size=10, lookahead=0.95))
    conv = [k for k, v in start.items() if v.ndim == 4]
    dist = lambda sd: sum(float((sd[k] - start[k]).norm()) for k in conv)  # noqa: E731
    assert all(torch.isfinite(v.float()).all() for v in slow.values())
    assert 0 < dist(slow) < dist(plain)


def test_flip_tta_sums_the_logits_of_the_image_and_its_mirror(monkeypatch):
    monkeypatch.setenv(train.PRECISION_ENV, "fp32")  # the reference below is float32; bf16 may flip near-ties
    torch.manual_seed(0)
    net = models.small_cnn(width=4).eval()
    x = _toy_images(20).x
    pred = train.predict(net, x, device="cpu", tta=True)
    xf = train.to_float(torch.from_numpy(x))
    with torch.inference_mode():
        expected = (net(xf) + net(xf.flip(3))).argmax(1).numpy()
    assert np.array_equal(pred, expected)
    mirrored = np.ascontiguousarray(x[:, :, ::-1])
    assert np.array_equal(train.predict(net, mirrored, device="cpu", tta=True), pred)  # symmetric by construction
    net.tta = True  # the model's own setting is the default of predict and evaluate
    assert np.array_equal(train.predict(net, x, device="cpu"), pred)
    assert not np.array_equal(train.predict(net, x, device="cpu", tta=False), pred)


def test_a_recipe_with_tta_builds_models_that_predict_with_it():
    from poisoncure import experiments

    assert experiments.build_model_arch(experiments.Recipe(model="whitened_net", tta=True)).tta is True
    assert experiments.build_model_arch(experiments.Recipe(model="whitened_net")).tta is False
    # tta enters the cache key only when on, so the keys of the other models stay as they were
    assert "tta" not in experiments.Recipe().cache_config()
    assert experiments.Recipe(tta=True).cache_config()["tta"] is True


def test_precision_policy_and_its_override(monkeypatch):
    monkeypatch.delenv(train.PRECISION_ENV, raising=False)
    expected = "bf16" if train.cpu_has_native_bf16() else "fp32"
    assert train.precision("cpu") == expected
    monkeypatch.setenv(train.PRECISION_ENV, "fp32")
    assert train.precision("cpu") == "fp32"
    monkeypatch.setenv(train.PRECISION_ENV, "bf16")
    assert train.precision("cpu") == "bf16"
    monkeypatch.setenv(train.PRECISION_ENV, "half")
    with pytest.raises(ValueError, match="POISONCURE_PRECISION"):
        train.precision("cpu")


@pytest.mark.parametrize("prec", ["fp32", "bf16"])
def test_training_records_its_precision_and_learns_in_both(monkeypatch, prec):
    """bf16 autocast on the CPU (native on AMX machines, emulated elsewhere) trains the same toy problem as float32."""
    monkeypatch.setenv(train.PRECISION_ENV, prec)
    rng = np.random.default_rng(0)
    y = np.arange(400) % 10
    x = np.clip(rng.normal(0, 12, (400, 32, 32, 3)) + 22 * y[:, None, None, None] + 20, 0, 255).astype(np.uint8)
    images = train.ImageSet(x, y)  # the class sets the brightness: learnable in a few epochs
    torch.manual_seed(0)
    net = models.small_cnn(width=4)
    hist = train.fit(net, images, train.TrainConfig(epochs=8, batch_size=50, lr=0.05), device="cpu", progress=False)
    assert hist.precision == prec
    # measured over seeds 0-2, 1 and 2 threads, fp32 and bf16 on an AMX Xeon: 90.25-100 %
    assert metrics.accuracy(train.predict(net, images.x, device="cpu"), images.y) > 70


def test_on_epoch_sees_every_epoch_in_eval_mode_and_changes_nothing(monkeypatch):
    monkeypatch.setenv(train.PRECISION_ENV, "fp32")
    images = _toy_images(200)
    cfg = train.TrainConfig(epochs=3, batch_size=50, lr=0.05)
    seen = []

    def probe(epoch, model):
        seen.append((epoch, model.training))
        return {"epoch": epoch, "accuracy": metrics.accuracy(train.predict(model, images.x, device="cpu"), images.y)}

    torch.manual_seed(0)
    a = models.small_cnn(width=4)
    hist = train.fit(a, images, cfg, device="cpu", progress=False, on_epoch=probe)
    torch.manual_seed(0)
    b = models.small_cnn(width=4)
    train.fit(b, images, cfg, device="cpu", progress=False)
    assert seen == [(1, False), (2, False), (3, False)]
    assert [m["epoch"] for m in hist.epoch_metrics] == [1, 2, 3]
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_trigger_as_seen_is_the_input_gradient_of_a_neuron_tuned_to_the_trigger():
    """Behind the whitened network's fixed first layer, a unit whose weights are the trigger's image there has the
    input gradient WᵀW(δ/std)/std; a network without that layer sees the trigger as it is."""
    torch.manual_seed(0)
    net = models.whitened_net(width=4)
    models.fit_whitening(net, torch.rand(64, 3, 32, 32))
    delta = np.random.default_rng(0).normal(size=(3, 32, 32)).astype(np.float32)
    layer = net.features[0]
    std = net.normalize.std[0]
    tuned = torch.nn.functional.conv2d(torch.from_numpy(delta)[None] / std, layer.weight)
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    (layer(net.normalize(x)) * tuned).sum().backward()
    seen = models.trigger_as_seen(net, delta)
    assert np.allclose(seen, x.grad[0].numpy(), rtol=1e-4, atol=1e-4 * np.abs(seen).max())
    assert np.array_equal(models.trigger_as_seen(models.small_cnn(width=4), delta), delta)


def test_prepare_whitening_fits_an_unfitted_layer_once():
    net = models.whitened_net(width=4)
    images = _toy_images(40)
    with pytest.raises(RuntimeError, match="not fitted"):
        train.predict(net, images.x, device="cpu")
    assert train.prepare_whitening(net, images, seed=0, device="cpu") == 1
    w = net.features[0].weight.clone()
    assert train.prepare_whitening(net, images, seed=1, device="cpu") == 0  # a fitted layer is kept
    assert torch.equal(net.features[0].weight, w)
    assert train.predict(net, images.x, device="cpu").shape == (40,)
