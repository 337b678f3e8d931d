"""Shared fixtures. Tests never touch the user's cache: each test session gets its own cache folder,
except the slow tests that reuse decoded CIFAR-10 (`cifar` fixture)."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from poisoncure import attacks, data, models, train
from poisoncure.cache import Cache


@pytest.fixture
def cache(tmp_path) -> Cache:
    return Cache(tmp_path / "cache")


@pytest.fixture
def tiny_images() -> data.ImageSet:
    """200 random images, 20 per class, in a fixed order."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(200, 32, 32, 3), dtype=np.uint8)
    y = np.repeat(np.arange(10), 20)
    return data.ImageSet(x, y)


def write_batches(folder: Path, n_train: int = 20, n_test: int = 10, seed: int = 0) -> tuple[np.ndarray, ...]:
    """A hand-made cifar-10-batches-py folder (pickled like the official one) with random images."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for name in [*sorted(data.TRAIN_BATCHES), *data.TEST_BATCHES]:
        n = n_test if name == "test_batch" else n_train
        x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, size=n)
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": x.transpose(0, 3, 1, 2).reshape(n, -1), "labels": y.tolist()}, fh)
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs[:5]), np.concatenate(ys[:5]), xs[5], ys[5]


def write_jpeg_archive(path: Path, per_class: int = 2) -> None:
    """A hand-made archive in the layout of shared/data/cifar10-jpeg.tar.gz."""
    rng = np.random.default_rng(1)
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test"):
            for cls in data.CLASSES:
                for i in range(per_class):
                    buf = io.BytesIO()
                    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
                    info = tarfile.TarInfo(f"{split}/{cls}/{i:04d}.jpg")
                    info.size = buf.tell()
                    buf.seek(0)
                    tar.addfile(info, buf)


@pytest.fixture(scope="session")
def cifar() -> data.Cifar10:
    """The real CIFAR-10 (from the offline archive on the build machines); skips where none is available."""
    try:
        return data.load_cifar10(download=False)
    except data.DataNotFoundError as err:
        pytest.skip(f"CIFAR-10 not available here: {err}")


@pytest.fixture(scope="session")
def cifar_small_test(cifar) -> data.Cifar10:
    """The real CIFAR-10 training split with a test split of 100 images per class (1,000, class-balanced, seed 0), for
    the end-to-end runs of tiny experiments: they evaluate every model several times (before, after each repair,
    with flip test-time augmentation), and on all 10,000 test images that was most of their time."""
    return data.Cifar10(cifar.train, data.balanced_subset(cifar.test, 100, seed=0),
                        {**cifar.source, "test": "100 per class (tests/conftest.py: cifar_small_test)"})


def pytest_configure(config):
    """Under pytest-xdist (``-n N``), share the cores among the workers: each worker's torch, and the processes a
    test starts, get cores // N threads, so that N workers do not run 2 N threads on N cores."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = max(1, cores // int(workers))
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


def pytest_addoption(parser):
    parser.addoption("--fixture-seed", type=int, default=0,
                     help="seed of the slow tests' trained fixtures (tiny_models): bench/slow_margins.py runs several")


@dataclass
class TinyModels:
    sub: data.ImageSet  #: 600 training images per class
    test: data.ImageSet  #: 200 test images per class
    ps: attacks.PoisonedSet  #: sub with 20 % of the automobiles given pair 1's one-pixel trigger and relabelled dog
    poisoned: torch.nn.Module
    clean: torch.nn.Module
    clean_cnn: torch.nn.Module  #: a clean small CNN (width 16) trained the same way, for Neural Cleanse's test


#: The tiny models' training: the whitened fast network (width 16: 16/64/64), 4 epochs on 6,000 CIFAR-10 images.
TINY_TRAINING = {"epochs": 4, "batch_size": 128, "lr": 0.1, "augment": "flip", "label_smoothing": 0.2}


def build_tiny_models(cifar: data.Cifar10, seed: int = 0) -> TinyModels:
    """A poisoned and a clean whitened network (width 16, 4 epochs on 6,000 CIFAR-10 images; ~15 s each on 2 cores).

    Chosen for a strong effect on every CPU: pair 1's one-pixel trigger on 20 % of the automobiles (120 of 6,000
    images) is learned in the first epoch by the whitened network (attack success 96-100 % over seeds and thread
    counts, bench/slow_margins.py), where the small CNN never learned it and a noise blend was learned on one CPU
    kind and not on another. Deterministic algorithms are asked for where torch supports them.

    Neural Cleanse's test uses a clean *small CNN* (``clean_cnn``): on the clean whitened network Neural Cleanse finds
    natural triggers of 12-15 pixels (L1) for four labels at seeds 1 and 2, so a hand-wired 9-pixel backdoor no
    longer stands out by the test's factor of 5 (whitening, which makes a one-pixel trigger easy to learn, makes
    small perturbations strong for every label)."""
    sub = data.balanced_subset(cifar.train, 600, seed=0)
    test = data.balanced_subset(cifar.test, 200, seed=0)
    ps = attacks.poison(sub, attacks.paper_trigger(1, "pixel"), "automobile", "dog", rate=0.2, seed=seed)
    cfg = train.TrainConfig(**TINY_TRAINING, seed=seed)
    nets = []
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        for images, build in ((ps.as_imageset(), models.whitened_net), (sub, models.whitened_net),
                              (sub, models.small_cnn)):
            torch.manual_seed(seed)
            net = build(width=16)
            train.fit(net, images, cfg, "cpu", progress=False)
            nets.append(net)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    return TinyModels(sub, test, ps, *nets)


@pytest.fixture(scope="session")
def tiny_models(cifar, request) -> TinyModels:
    """The slow tests' poisoned and clean models (:func:`build_tiny_models`, seed ``--fixture-seed``)."""
    return build_tiny_models(cifar, request.config.getoption("--fixture-seed"))
