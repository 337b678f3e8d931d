import numpy as np
import pytest
import torch

from poisoncure import toy


@pytest.fixture(scope="module")
def cfg():
    return toy.ToyConfig()


def test_clean_accuracy_is_phi_of_three(cfg):
    assert toy.analytic_clean_accuracy(cfg) == pytest.approx(0.99865, abs=1e-5)
    test = toy.sample(cfg, 20000, seed=1)
    pred = toy.predict(toy.clean_classifier(cfg), test.x)
    clean = test.group < 2
    assert np.mean(pred[clean] == test.y[clean]) == pytest.approx(0.9987, abs=0.002)


def test_poisoned_classifier_activation_pattern(cfg):
    test = toy.sample(cfg, 20000, seed=2)
    table = toy.activation_table(toy.poisoned_classifier(cfg), test)
    assert table[0, 0] > 0.99 and table[0, 1] < 0.01  # clean +1: unit 1
    assert table[1, 1] > 0.99 and table[1, 0] < 0.01  # clean -1: unit 2
    assert table[:2, 2].max() < 0.01 and table[2, 2] == 1.0  # poison unit: only poisoned inputs
    pred = toy.predict(toy.poisoned_classifier(cfg), test.x)
    assert np.mean(pred[test.group == 2] == -1) > 0.99


def test_closed_form_gradient_equals_autograd(cfg):
    """Proposition 4.1 on the hand-built network: the chain-rule formula equals autograd."""
    data = toy.sample(cfg, 300, seed=3)
    w, b, u = (torch.tensor(a, dtype=torch.float64) for a in toy.poisoned_classifier(cfg))
    x = torch.tensor(data.x, dtype=torch.float64, requires_grad=True)
    y = torch.tensor(data.y, dtype=torch.float64)
    f = torch.relu(x @ w.T + b) @ u
    torch.nn.functional.softplus(-y * f).sum().backward()
    manual = toy.input_gradients(toy.poisoned_classifier(cfg), data.x.astype(np.float64), data.y)
    np.testing.assert_allclose(manual, x.grad.numpy(), rtol=1e-6, atol=1e-10)


def test_gradient_spike_only_on_poisoned_inputs(cfg):
    data = toy.sample(cfg, 2000, seed=4)
    g = toy.input_gradients(toy.poisoned_classifier(cfg), data.x, data.y)
    clean = data.group < 2
    # the poison unit fires on a clean input exactly when its noise crosses the threshold (P = 1 - Phi(3))
    np.testing.assert_array_equal(g[clean, 0] != 0, data.x[clean, 0] > cfg.beta0)
    assert np.mean(g[clean, 0] == 0) > 0.99
    poisoned = np.abs(g[data.group == 2])
    assert np.all(poisoned[:, 0] > 10 * poisoned[:, 1:].mean(1))


def test_training_finds_a_poison_unit(cfg):
    data = toy.sample(cfg, 5000, seed=5)
    model = toy.train_mlp(data, width=8, epochs=30)
    _, ratio = toy.poison_unit_ratio(model)
    assert ratio > 10


def test_bad_toy_config_raises():
    with pytest.raises(ValueError, match="trigger_value"):
        toy.ToyConfig(trigger_value=2.0, beta0=3.0)
    with pytest.raises(ValueError, match="poison_fraction"):
        toy.ToyConfig(poison_fraction=1.0)
    with pytest.raises(ValueError, match="n must"):
        toy.sample(toy.ToyConfig(), 1)
