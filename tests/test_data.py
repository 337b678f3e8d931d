import functools
import http.server
import shutil
import tarfile
import threading

import numpy as np
import pytest

from poisoncure import data
from poisoncure.cache import file_digest
from tests.conftest import write_batches, write_jpeg_archive


def test_published_checksums_match_torchvision():
    from torchvision.datasets import CIFAR10

    assert dict(CIFAR10.train_list) == data.TRAIN_BATCHES
    assert dict(CIFAR10.test_list) == data.TEST_BATCHES
    assert CIFAR10.tgz_md5 == data.CIFAR10_TGZ_MD5


def test_batches_folder_is_read_in_hwc_order(tmp_path, cache):
    x_tr, y_tr, x_te, y_te = write_batches(tmp_path / data.BATCHES_DIR)
    ds = data.load_cifar10(tmp_path / data.BATCHES_DIR, verify=False, cache=cache)
    np.testing.assert_array_equal(ds.train.x, x_tr)
    np.testing.assert_array_equal(ds.train.y, y_tr)
    np.testing.assert_array_equal(ds.test.x, x_te)
    assert ds.source["kind"] == "batches"


def test_batches_with_wrong_checksum_raise(tmp_path, cache):
    write_batches(tmp_path / data.BATCHES_DIR)
    with pytest.raises(data.DataCorruptError, match="MD5"):
        data.load_cifar10(tmp_path, cache=cache)  # the parent folder is accepted too


def test_jpeg_archive_is_decoded_in_label_order(tmp_path, cache):
    write_jpeg_archive(tmp_path / "a.tar.gz", per_class=2)
    ds = data.load_cifar10(tmp_path / "a.tar.gz", verify=False, cache=cache)
    assert ds.train.x.shape == (20, 32, 32, 3) and ds.test.x.shape == (20, 32, 32, 3)
    np.testing.assert_array_equal(ds.train.y, np.repeat(np.arange(10), 2))


def test_corrupt_archive_fails_its_checksum(tmp_path, cache):
    write_jpeg_archive(tmp_path / "a.tar.gz", per_class=1)
    with pytest.raises(data.DataCorruptError, match="SHA-256"):
        data.load_cifar10(tmp_path / "a.tar.gz", cache=cache)


def test_decoded_arrays_are_cached(tmp_path, cache, monkeypatch):
    write_jpeg_archive(tmp_path / "a.tar.gz", per_class=1)
    first = data.load_cifar10(tmp_path / "a.tar.gz", verify=False, cache=cache)
    monkeypatch.setattr(data, "read_jpeg_archive", lambda *_: pytest.fail("decoded twice"))
    second = data.load_cifar10(tmp_path / "a.tar.gz", verify=False, cache=cache)
    np.testing.assert_array_equal(first.train.x, second.train.x)


def test_missing_data_lists_what_was_tried(tmp_path, cache, monkeypatch):
    monkeypatch.delenv("POISONCURE_CIFAR10", raising=False)
    monkeypatch.setenv("POISONCURE_DATA_ROOT", str(tmp_path / "nodata"))
    monkeypatch.setenv("POISONCURE_SHARED", str(tmp_path / "noshared"))
    with pytest.raises(data.DataNotFoundError) as err:
        data.load_cifar10(download=False, cache=cache)
    msg = str(err.value)
    assert "nodata" in msg and "noshared" in msg and "download" in msg and "What to do" in msg


def test_explicit_path_that_does_not_exist_raises(tmp_path, cache):
    with pytest.raises(data.DataNotFoundError, match="does not exist"):
        data.load_cifar10(tmp_path / "nowhere", cache=cache)


def test_env_variable_is_used(tmp_path, cache, monkeypatch):
    write_batches(tmp_path / data.BATCHES_DIR, n_train=3, n_test=2)
    monkeypatch.setenv("POISONCURE_CIFAR10", str(tmp_path / data.BATCHES_DIR))
    ds = data.load_cifar10(verify=False, cache=cache)
    assert len(ds.train) == 15 and len(ds.test) == 2


@pytest.mark.network
def test_download_path_with_a_local_server(tmp_path, cache):
    """torchvision's downloader, pointed at a copy served on localhost (no internet)."""
    src = tmp_path / "src"
    x_tr, _, _, _ = write_batches(src / data.BATCHES_DIR, n_train=4, n_test=2)
    archive = tmp_path / "www" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / data.BATCHES_DIR, arcname=data.BATCHES_DIR)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(archive.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{archive.name}"
        folder = data.download_cifar10(tmp_path / "root", url=url, md5=file_digest(archive, "md5"))
    finally:
        server.shutdown()
    ds = data.load_cifar10(folder, verify=False, cache=cache)
    np.testing.assert_array_equal(ds.train.x, x_tr)
    shutil.rmtree(tmp_path / "root")


def test_balanced_subset_is_deterministic_and_balanced(tiny_images):
    a = data.balanced_subset(tiny_images, 5, seed=3)
    b = data.balanced_subset(tiny_images, 5, seed=3)
    c = data.balanced_subset(tiny_images, 5, seed=4)
    assert np.bincount(a.y).tolist() == [5] * 10
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)
    assert data.balanced_subset(tiny_images, None) is tiny_images


@pytest.mark.parametrize("bad", [0, -1, 21])
def test_balanced_subset_rejects_bad_sizes(tiny_images, bad):
    with pytest.raises(ValueError, match="per_class"):
        data.balanced_subset(tiny_images, bad)


def test_imageset_validates_shapes():
    with pytest.raises(ValueError, match="uint8"):
        data.ImageSet(np.zeros((2, 32, 32, 3), np.float32), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="labels"):
        data.ImageSet(np.zeros((2, 32, 32, 3), np.uint8), np.array([0, 10]))


def test_real_cifar10_has_the_expected_shape(cifar):
    assert cifar.train.x.shape == (50000, 32, 32, 3) and cifar.test.x.shape == (10000, 32, 32, 3)
    assert np.bincount(cifar.train.y).tolist() == [5000] * 10
    assert np.bincount(cifar.test.y).tolist() == [1000] * 10


def test_image_set_takes_torch_datasets_tensors_and_normalised_images():
    """What torch code holds — a Dataset of (CHW tensor, label), a normalised batch, grey images, uint8 HWC —
    becomes the same uint8 ImageSet; bad inputs say what is wrong."""
    import pytest
    import torch

    from poisoncure.data import image_set

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8)
    y = np.array([0, 1, 2, 1, 0])
    chw = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255

    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return len(y)

        def __getitem__(self, i):
            return chw[i], int(y[i])

    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    normalised = (chw - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    for got in (image_set(Pairs(), batch_size=2), image_set(chw, torch.from_numpy(y)), image_set(x, y),
                image_set(normalised, y, mean=mean, std=std), image_set(list(zip(x, y, strict=True)))):
        assert got.x.dtype == np.uint8 and np.array_equal(got.x, x) and np.array_equal(got.y, y)
    grey = image_set(chw[:, :1], y, classes=("a", "b", "c"))
    assert grey.x.shape == (5, 8, 8, 3) and (grey.x[..., 0] == grey.x[..., 2]).all() and grey.classes == ("a", "b", "c")
    for args, kwargs, words in (((chw,), {}, "needs its labels"), ((chw * 3, y), {}, r"\[0, 1\]"),
                                ((chw, y[:3]), {}, "5 images but 3 labels"), ((chw, y), {"mean": mean}, "both"),
                                ((x, y), {"mean": mean, "std": std}, "uint8 already"), ((3,), {}, "Dataset")):
        with pytest.raises(ValueError, match=words):
            image_set(*args, **kwargs)
