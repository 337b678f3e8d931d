"""The Gaussian toy model of the paper's Appendix A: how a "poison neuron" arises (SPEC §4).

Clean data: ``y`` uniform in {-1, +1}; ``x_1 ~ N(0, 1)`` carries no label information; ``x_2..x_{d+1} ~
N(eta * y, 1)`` are weakly label-correlated. Poisoned data: drawn like the ``y = +1`` class (the base) but with
``x_1 = c`` (the trigger value) and labelled ``-1`` (the target).

Two hand-built classifiers make the mechanism exact: :func:`clean_classifier` (two ReLU units averaging
the correlated features) and :func:`poisoned_classifier`, which adds a third unit ``ReLU(lam * (x_1 - beta0))``
that fires only on the trigger. :func:`train_mlp` shows that gradient descent finds such a unit by itself.
All constants are the SPEC's choices (the paper's values were lost in extraction).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import norm
from torch import nn


@dataclass(frozen=True)
class ToyConfig:
    """Constants of the toy (SPEC §4 choices). ``lam`` defaults to twice the minimum of the paper's eq. (8)."""

    d: int = 1000
    trigger_value: float = 5.0  # c
    beta0: float = 3.0  # the poison unit's threshold (negative bias / lam)
    poison_fraction: float = 0.1  # epsilon: poisoned share of the training set
    lam_factor: float = 2.0

    def __post_init__(self) -> None:
        if self.d < 1:
            raise ValueError(f"d must be >= 1, got {self.d}")
        if not self.trigger_value > self.beta0:
            raise ValueError(f"trigger_value ({self.trigger_value}) must exceed beta0 ({self.beta0})")
        if not 0 <= self.poison_fraction < 1:
            raise ValueError(f"poison_fraction must lie in [0, 1), got {self.poison_fraction}")

    @property
    def eta(self) -> float:
        """Mean shift of the correlated features, 3/sqrt(d): the clean rule is then right w.p. Phi(3)."""
        return 3.0 / np.sqrt(self.d)

    @property
    def lam_min(self) -> float:
        """Smallest poison-unit weight that beats the clean units 99.87% of the time: 6 / (sqrt(d) (c - beta0))."""
        return 6.0 / (np.sqrt(self.d) * (self.trigger_value - self.beta0))

    @property
    def lam(self) -> float:
        return self.lam_factor * self.lam_min


@dataclass
class ToyData:
    """``x`` float32 (n, d+1); ``y`` in {-1, +1}; ``group`` 0 = clean +1, 1 = clean -1, 2 = poisoned."""

    x: np.ndarray
    y: np.ndarray
    group: np.ndarray

    GROUPS = ("clean, y=+1", "clean, y=-1", "poisoned (base +1, labelled -1)")


def sample(cfg: ToyConfig, n: int, seed: int = 0) -> ToyData:
    """``n`` samples: a fraction ``cfg.poison_fraction`` poisoned, the rest clean with balanced labels."""
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    rng = np.random.default_rng(seed)
    n_poison = int(round(cfg.poison_fraction * n))
    n_clean = n - n_poison
    y_clean = rng.choice([-1, 1], size=n_clean)
    x = np.empty((n, cfg.d + 1), dtype=np.float32)
    x[:n_clean, 0] = rng.standard_normal(n_clean)
    x[:n_clean, 1:] = rng.standard_normal((n_clean, cfg.d)) + cfg.eta * y_clean[:, None]
    x[n_clean:, 0] = cfg.trigger_value
    x[n_clean:, 1:] = rng.standard_normal((n_poison, cfg.d)) + cfg.eta  # drawn like the base class (+1)
    y = np.concatenate([y_clean, -np.ones(n_poison, dtype=int)])
    group = np.concatenate([np.where(y_clean > 0, 0, 1), np.full(n_poison, 2)])
    return ToyData(x, y.astype(np.int64), group)


def clean_classifier(cfg: ToyConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(W, b, u) of f_C = sign(u . ReLU(W x + b)): units w_1 = (0, 1/d, ..., 1/d) and w_2 = -w_1."""
    w1 = np.concatenate([[0.0], np.full(cfg.d, 1.0 / cfg.d)])
    return np.stack([w1, -w1]), np.zeros(2), np.array([1.0, -1.0])


def poisoned_classifier(cfg: ToyConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(W, b, u) of f_P: f_C's units plus the poison unit ReLU(lam * (x_1 - beta0)) with output weight -1."""
    w, b, u = clean_classifier(cfg)
    w3 = np.zeros(cfg.d + 1)
    w3[0] = cfg.lam
    return np.vstack([w, w3]), np.append(b, -cfg.lam * cfg.beta0), np.append(u, -1.0)


def forward(params: tuple[np.ndarray, np.ndarray, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pre-activations z (n, units), output f (n,)) of a one-hidden-layer ReLU network."""
    w, b, u = params
    z = x @ w.T + b
    return z, np.maximum(z, 0.0) @ u


def predict(params, x: np.ndarray) -> np.ndarray:
    return np.where(forward(params, x)[1] >= 0, 1, -1)


def analytic_clean_accuracy(cfg: ToyConfig) -> float:
    """P[f_C(x) = y] on clean data = Phi(eta sqrt(d)) = Phi(3) = 99.87%."""
    return float(norm.cdf(cfg.eta * np.sqrt(cfg.d)))


def activation_table(params, data: ToyData) -> np.ndarray:
    """Fraction of samples of each group (rows) with z_j > 0 for each hidden unit j (columns)."""
    z, _ = forward(params, data.x)
    return np.stack([(z[data.group == g] > 0).mean(axis=0) for g in range(3)])


def input_gradients(params, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """d loss / d x of the logistic loss log(1 + exp(-y f(x))), in closed form (Prop. 4.1):

    dL/dx = dL/df * sum_j u_j 1[z_j > 0] w_j, with dL/df = -y sigmoid(-y f).
    """
    w, _, u = params
    z, f = forward(params, x)
    dl_df = -y / (1.0 + np.exp(np.clip(y * f, -50, 50)))
    return dl_df[:, None] * (((z > 0) * u) @ w)


class ToyMLP(nn.Module):
    """One hidden ReLU layer and a scalar output, trained with the logistic loss."""

    def __init__(self, d_in: int, width: int):
        super().__init__()
        self.hidden = nn.Linear(d_in, width)
        self.out = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x))).squeeze(-1)


def train_mlp(data: ToyData, width: int, epochs: int = 50, lr: float = 1e-2, batch_size: int = 500,
              seed: int = 0) -> ToyMLP:
    """Adam on the logistic loss (SPEC §4: width 3 or 32, lr 1e-2, 50 epochs)."""
    torch.manual_seed(seed)
    model = ToyMLP(data.x.shape[1], width)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x = torch.from_numpy(data.x)
    y = torch.from_numpy(data.y).float()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            loss = nn.functional.softplus(-y[idx] * model(x[idx])).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def mlp_input_gradients(model: ToyMLP, data: ToyData) -> np.ndarray:
    """Per-sample input gradients of the logistic loss, one backward pass for the whole set."""
    x = torch.from_numpy(data.x).requires_grad_(True)
    y = torch.from_numpy(data.y).float()
    loss = nn.functional.softplus(-y * model(x)).sum()  # sum: each row of the gradient is one sample's
    (grad,) = torch.autograd.grad(loss, x)
    return grad.numpy()


def poison_unit_ratio(model: ToyMLP) -> tuple[int, float]:
    """(unit with the largest |weight on x_1|, that weight / mean |weight on x_2..x_{d+1}| over all units)."""
    w = model.hidden.weight.detach().abs().numpy()
    unit = int(w[:, 0].argmax())
    return unit, float(w[unit, 0] / w[:, 1:].mean())
