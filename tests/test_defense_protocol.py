"""The one interface every defense follows (``poisoncure/defenses/base.py``): sample detectors answer ``detect`` per
training image, label detectors ``detect_labels`` per label and have no ``detect``, repairs hand back a new model,
and ``score`` / ``detect`` / ``repair`` on the same model and data run the scan once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import poisoncure as pc
from poisoncure.data import ImageSet
from poisoncure.defenses import base
from poisoncure.models import small_cnn

SAMPLE_DETECTORS = (pc.PoisonCure, pc.SpectralSignatures, pc.ActivationClustering, pc.WeakLearnerEnsemble)
LABEL_DETECTORS = (pc.NeuralCleanse, pc.ReverseEngineeringDetector, pc.PoisHygiene)


def fresh_images(tiny_images: ImageSet) -> ImageSet:
    """A private copy (the tests below edit it in place)."""
    return ImageSet(tiny_images.x.copy(), tiny_images.y.copy(), tiny_images.classes)


def counting(obj, name: str) -> list[int]:
    """Replace ``obj.name`` by a wrapper that records each call; returns the record."""
    calls: list[int] = []
    real = getattr(obj, name)

    def wrapper(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    setattr(obj, name, wrapper)
    return calls


def test_each_defense_names_its_verdict():
    for cls in SAMPLE_DETECTORS:
        assert cls.detect is not base.LabelDetector.detect, f"{cls.__name__} must flag samples with detect"
    for cls in (*LABEL_DETECTORS, pc.PoisonCure, pc.ActivationClustering):
        assert callable(cls.detect_labels) and callable(cls.score_labels), cls.__name__
    for cls in LABEL_DETECTORS:
        assert issubclass(cls, base.LabelDetector)
        with pytest.raises(TypeError, match="detect_labels"):
            cls().detect(None, None)
    fp = pc.FinePruning()  # judges channels: neither detect nor detect_labels
    assert not hasattr(fp, "detect") and not hasattr(fp, "detect_labels") and callable(fp.pruned_channels)


def test_the_paper_defense_scans_once_for_score_detect_labels_and_repair(tiny_images):
    torch.manual_seed(0)
    net, train = small_cnn(width=8).eval(), fresh_images(tiny_images)
    cure = pc.PoisonCure(threshold=1e6, device="cpu", progress=False)  # nothing can be flagged: cheap repair
    scans = counting(cure, "scan")
    score, flags = cure.score(net, train), cure.detect(net, train)
    labels, distances = cure.detect_labels(net, train), cure.score_labels(net, train)
    repaired = cure.repair(net, train)
    assert len(scans) == 1
    assert score.shape == flags.shape == (len(train),) and labels.shape == distances.shape == (10,)
    assert repaired is not net

    with torch.no_grad():  # the model trained further in place: a different model, scanned again
        next(net.parameters()).add_(0.01)
    cure.detect(net, train)
    assert len(scans) == 2
    train.x[0, 0, 0, 0] ^= 1  # one pixel of the data edited in place: scanned again
    cure.detect(net, train)
    assert len(scans) == 3
    cure.score(net, train)
    assert len(scans) == 3


def test_representation_defenses_read_the_layer_once(tiny_images):
    torch.manual_seed(0)
    net, train = small_cnn(width=8).eval(), fresh_images(tiny_images)
    for defense in (pc.SpectralSignatures(device="cpu", progress=False),
                    pc.ActivationClustering(device="cpu", progress=False)):
        reads = counting(defense, "representations")
        defense.score(net, train)
        defense.detect(net, train)
        assert len(reads) == 1, type(defense).__name__
    ac = pc.ActivationClustering(device="cpu", progress=False)
    verdict = ac.detect_labels(net, train)
    np.testing.assert_array_equal(verdict, ac.scan(net, train).poisoned)
    assert ac.score_labels(net, train).shape == (10,)


def test_neural_cleanse_reverses_once_and_repair_copies(tiny_images):
    torch.manual_seed(0)
    net, clean = small_cnn(width=8).eval(), fresh_images(tiny_images)
    nc = pc.NeuralCleanse(steps=4, check_every=2, anomaly_threshold=1e6, device="cpu", progress=False)
    runs = counting(nc, "reverse_engineer")
    assert nc.score_labels(net, clean).shape == (10,)
    assert not nc.detect_labels(net, clean).any()
    repaired = nc.repair(net, clean)  # nothing flagged: an unchanged copy, never the input object
    assert len(runs) == 1
    assert repaired is not net
    assert all(torch.equal(a, b) for a, b in zip(repaired.state_dict().values(), net.state_dict().values(),
                                                 strict=True))


def test_digests_follow_every_weight_and_statistic():
    net = small_cnn(width=8)
    before = base.model_digest(net)
    assert base.model_digest(net) == before
    bn = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_mean[0] += 1.0  # a buffer, not a parameter
    assert base.model_digest(net) != before
    with pytest.raises(TypeError, match="ImageSet"):
        base.data_digest(np.zeros((2, 32, 32, 3), np.uint8))


def test_memo_keeps_only_the_last_entry():
    memo = base.Memo()
    assert memo(("a",), lambda: 1) == 1 and memo(("a",), lambda: 2) == 1
    assert memo(("b",), lambda: 3) == 3 and memo(("a",), lambda: 4) == 4
    assert memo.computed == 3
