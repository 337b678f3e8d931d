"""CIFAR-10, found offline or online, decoded once and cached as uint8 arrays.

Search order of :func:`load_cifar10` (the first that exists is used; nothing is silently skipped when it
exists but is broken — a corrupt source raises):

1. an explicit ``path`` argument, else the ``POISONCURE_CIFAR10`` environment variable — either a
   ``cifar-10-batches-py`` folder or the JPEG archive;
2. the standard ``cifar-10-batches-py`` folder in the data root (:func:`paths.data_root`);
3. the offline archive ``shared/data/cifar10-jpeg.tar.gz`` (what the project's build machines and CI use);
4. torchvision's standard downloader into the data root, when ``download=True`` and the machine is online.

Every source is checksummed (MD5 per batch file as published with CIFAR-10, SHA-256 for the JPEG archive).
Decoded arrays are cached (:mod:`poisoncure.cache`) so decoding happens once per machine.

Note on the JPEG archive: it is a quality-75 re-encoding of CIFAR-10; accuracies are within about a point
of the original. Triggers are applied after decoding and poisoned images are never re-encoded.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import socket
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import paths
from .cache import Cache, file_digest

CLASSES: tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer",
                            "dog", "frog", "horse", "ship", "truck")

#: SHA-256 of ``shared/data/cifar10-jpeg.tar.gz`` (see ``shared/data/README.md``).
JPEG_ARCHIVE_SHA256 = "00a78acaf3d7c27307ba029958650e48cba76f3704c03e4cd1dd6bf77963ed47"
JPEG_ARCHIVE_NAME = "cifar10-jpeg.tar.gz"

#: The official python-version archive and its batch files (MD5s as published; identical to torchvision's).
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_TGZ_MD5 = "c58f30108f718f92721af3b95e74349a"
BATCHES_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = {"data_batch_1": "c99cafc152244af753f735de768cd75f",
                 "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
                 "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
                 "data_batch_4": "634d18415352ddfa80567beed471001a",
                 "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb"}
TEST_BATCHES = {"test_batch": "40351d587109b95175f43aff81a1287e"}


def check_images(x: np.ndarray) -> None:
    """Raise ``ValueError`` unless ``x`` is a uint8 array of images (N, H, W, 3)."""
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must be a uint8 array of shape (N, H, W, 3), got "
                         f"{getattr(x, 'dtype', type(x))} {getattr(x, 'shape', '')}")


class DataNotFoundError(FileNotFoundError):
    """No usable CIFAR-10 source; the message lists every place tried and what to do."""


class DataCorruptError(ValueError):
    """A CIFAR-10 source exists but fails its checksum or cannot be decoded."""


@dataclass
class ImageSet:
    """Images and labels. ``x``: uint8 (N, 32, 32, 3) in HWC order; ``y``: int64 (N,)."""

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...] = CLASSES

    def __post_init__(self) -> None:
        if self.x.dtype != np.uint8 or self.x.ndim != 4 or self.x.shape[-1] != 3:
            raise ValueError(f"x must be uint8 of shape (N, H, W, 3), got {self.x.dtype} {self.x.shape}")
        if self.y.shape != (len(self.x),):
            raise ValueError(f"y must have shape ({len(self.x)},), got {self.y.shape}")
        if len(self.y) and (self.y.min() < 0 or self.y.max() >= len(self.classes)):
            raise ValueError(f"labels must lie in [0, {len(self.classes) - 1}]")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: np.ndarray) -> ImageSet:
        return ImageSet(self.x[index], self.y[index], self.classes)


def image_set(source: Any, labels: Any = None, classes: Sequence[str] | None = None,
              mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
              batch_size: int = 1024) -> ImageSet:
    """Your own images as the library's :class:`ImageSet` (uint8 HWC), from what torch code usually holds.

    ``source`` is one of: a ``torch.utils.data.Dataset`` (or any sequence) of ``(image, label)`` pairs, whose
    images are tensors (C, H, W), PIL images or uint8 (H, W, C) arrays (torchvision's data sets with or without
    ``ToTensor()``); or a batch of images, a tensor or array (N, C, H, W) / (N, H, W, C), with ``labels`` (N,).
    Float images are taken to lie in [0, 1], or to be normalised as ``(x - mean) / std`` per channel when ``mean``
    and ``std`` are given (as a ``Normalize`` transform made them); they are rounded to the nearest of the 256
    levels (the library's models put normalisation inside the model and read [0, 1] images). Grey images
    (one channel) are repeated over three. ``classes`` names the labels (default: CIFAR-10's when there are ten
    or fewer labels, else ``"0"``, ``"1"``, ...). Any image size is kept; the library's models expect 32 x 32."""
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std (the Normalize transform's), or neither")
    if labels is None:  # a data set of (image, label) pairs
        if isinstance(source, (np.ndarray, torch.Tensor)):
            raise ValueError("a batch of images needs its labels: image_set(images, labels)")
        try:
            n = len(source)
        except TypeError:
            raise ValueError(f"source must be a Dataset of (image, label) pairs or a batch of images, got "
                             f"{type(source).__name__}") from None
        chunks, ys = [], []
        for start in range(0, n, batch_size):
            pairs = [source[i] for i in range(start, min(n, start + batch_size))]
            chunks.append(_to_uint8_hwc([_as_array(img) for img, _ in pairs], mean, std))
            ys += [int(lab) for _, lab in pairs]
        x = np.concatenate(chunks) if chunks else np.zeros((0, 32, 32, 3), np.uint8)
        y = np.asarray(ys, dtype=np.int64)
    else:
        x = _to_uint8_hwc(_as_array(source), mean, std)
        y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64).reshape(-1)
    if len(y) != len(x):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    if len(y) and y.min() < 0:
        raise ValueError("labels must be >= 0")
    k = int(y.max()) + 1 if len(y) else 0
    if classes is None:
        classes = CLASSES if k <= len(CLASSES) else tuple(str(c) for c in range(k))
    return ImageSet(x, y, tuple(classes))


def _as_array(img: Any) -> np.ndarray:
    """A tensor, PIL image or array as a numpy array (no copy where none is needed)."""
    if hasattr(img, "detach"):
        return img.detach().cpu().numpy()
    return np.asarray(img)


def _to_uint8_hwc(images: Any, mean: Sequence[float] | None, std: Sequence[float] | None) -> np.ndarray:
    """Images (a list of one image each, or an array of a batch) as uint8 (N, H, W, 3)."""
    a = np.stack(images) if isinstance(images, list) else np.asarray(images)
    if a.ndim == 3:  # grey images without a channel axis (N, H, W)
        a = a[:, None] if a.dtype != np.uint8 else a[..., None]
    if a.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W) or (N, H, W, C), got shape {a.shape}")
    channels_first = a.shape[1] in (1, 3) and a.shape[-1] not in (1, 3)
    if a.dtype != np.uint8 and a.shape[1] in (1, 3):
        channels_first = True  # float tensors are CHW (torch's layout)
    if channels_first:
        a = a.transpose(0, 2, 3, 1)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    if a.shape[-1] != 3:
        raise ValueError(f"images must have 1 or 3 channels, got shape {a.shape}")
    if a.dtype == np.uint8:
        if mean is not None:
            raise ValueError("mean and std apply to float images; these are uint8 already")
        return np.ascontiguousarray(a)
    a = a.astype(np.float32)
    if mean is not None:
        m, sd = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        if m.size not in (1, 3) or sd.size not in (1, 3) or (sd <= 0).any():
            raise ValueError("mean and std need 1 or 3 values each, std > 0")
        a = a * sd + m
    if not np.isfinite(a).all() or a.min() < -1e-3 or a.max() > 1 + 1e-3:
        raise ValueError(f"float images must lie in [0, 1] (or give the mean and std they were normalised with); "
                         f"got values in [{a.min():.3g}, {a.max():.3g}]")
    return np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)


@dataclass
class Cifar10:
    """The training and test splits plus where they came from."""

    train: ImageSet
    test: ImageSet
    source: dict[str, str] = field(default_factory=dict)  #: kind, location and checksum of the source


# --------------------------------------------------------------------------------------------- sources
def verify_batches(folder: Path) -> str:
    """Check every batch file of a ``cifar-10-batches-py`` folder; return a combined fingerprint."""
    parts = []
    for name, md5 in {**TRAIN_BATCHES, **TEST_BATCHES}.items():
        path = folder / name
        if not path.is_file():
            raise DataCorruptError(f"{folder} has no {name}: not a complete cifar-10-batches-py folder")
        got = file_digest(path, "md5")
        if got != md5:
            raise DataCorruptError(f"{path} has MD5 {got}, expected {md5}: the file is corrupt or not CIFAR-10;"
                                   " delete the folder and download it again")
        parts.append(got)
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def read_batches(folder: Path) -> tuple[ImageSet, ImageSet]:
    """Read a ``cifar-10-batches-py`` folder (the pickled format of the official archive)."""

    def read(names: list[str]) -> ImageSet:
        xs, ys = [], []
        for name in names:
            with open(folder / name, "rb") as fh:
                batch = pickle.load(fh, encoding="latin1")
            xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(np.asarray(batch["labels"], dtype=np.int64))
        return ImageSet(np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys))

    return read(sorted(TRAIN_BATCHES)), read(sorted(TEST_BATCHES))


def read_jpeg_archive(archive: Path) -> tuple[ImageSet, ImageSet]:
    """Decode ``train/<class>/NNNN.jpg`` and ``test/<class>/NNNN.jpg`` from the offline archive.

    Images are ordered by split, class (CIFAR-10 label order) and file name, so the arrays are deterministic.
    """
    from PIL import Image

    found: dict[str, list[tuple[int, str, np.ndarray]]] = {"train": [], "test": []}
    index = {name: i for i, name in enumerate(CLASSES)}
    with tarfile.open(archive, "r|gz") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 3 or parts[0] not in found or parts[1] not in index:
                continue
            raw = tar.extractfile(member).read()
            with Image.open(io.BytesIO(raw)) as img:
                arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
            if arr.shape != (32, 32, 3):
                raise DataCorruptError(f"{member.name} in {archive} is {arr.shape}, expected (32, 32, 3)")
            found[parts[0]].append((index[parts[1]], parts[2], arr))

    def stack(items: list[tuple[int, str, np.ndarray]], split: str) -> ImageSet:
        if not items:
            raise DataCorruptError(f"{archive} holds no {split}/<class>/*.jpg images")
        items.sort(key=lambda t: (t[0], t[1]))
        return ImageSet(np.stack([t[2] for t in items]), np.array([t[0] for t in items], dtype=np.int64))

    return stack(found["train"], "train"), stack(found["test"], "test")


def download_cifar10(root: Path, url: str = CIFAR10_URL, md5: str = CIFAR10_TGZ_MD5) -> Path:
    """Download and extract the official archive into ``root`` with torchvision's downloader.

    Returns the ``cifar-10-batches-py`` folder. ``url``/``md5`` are parameters so the code path can be
    tested against a local server.
    """
    from torchvision.datasets.utils import download_and_extract_archive

    root.mkdir(parents=True, exist_ok=True)
    download_and_extract_archive(url, download_root=str(root), md5=md5)
    folder = root / BATCHES_DIR
    if not folder.is_dir():
        raise DataCorruptError(f"the archive from {url} did not contain {BATCHES_DIR}/")
    return folder


def is_online(host: str = "www.cs.toronto.edu", port: int = 443, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the CIFAR-10 host can be opened (a 3-second probe)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------- loading
def _candidates(path: str | Path | None) -> list[tuple[str, Path]]:
    """Where CIFAR-10 is looked for, in order, as (description, path)."""
    out: list[tuple[str, Path]] = []
    if path is not None:
        out.append(("explicit path argument", Path(path).expanduser()))
    elif os.environ.get("POISONCURE_CIFAR10"):
        out.append(("POISONCURE_CIFAR10", Path(os.environ["POISONCURE_CIFAR10"]).expanduser()))
    out.append(("data root", paths.data_root() / BATCHES_DIR))
    shared = paths.shared_dir()
    if shared is not None:
        out.append(("offline archive in shared/data", shared / "data" / JPEG_ARCHIVE_NAME))
    return out


def _identify(location: Path, verify: bool) -> tuple[str, Path, str]:
    """(kind, resolved location, fingerprint) of an existing source, checksummed when ``verify``.

    A folder is a ``cifar-10-batches-py`` folder or its parent; a file is the JPEG archive."""
    if location.is_dir():
        folder = location / BATCHES_DIR if (location / BATCHES_DIR).is_dir() else location
        fingerprint = verify_batches(folder) if verify else "unverified:" + str(folder.resolve())
        return "batches", folder, fingerprint
    if verify:
        got = file_digest(location)
        if got != JPEG_ARCHIVE_SHA256:
            raise DataCorruptError(f"{location} has SHA-256 {got}, expected {JPEG_ARCHIVE_SHA256}: "
                                   "the archive is corrupt or not the project's CIFAR-10 copy")
        return "jpeg-archive", location, got
    return "jpeg-archive", location, "unverified:" + str(location.resolve())


def load_cifar10(path: str | Path | None = None, *, download: bool = True, verify: bool = True,
                 cache: Cache | None = None) -> Cifar10:
    """Load CIFAR-10 as uint8 arrays (see the module docstring for the search order).

    Parameters
    ----------
    path:
        A ``cifar-10-batches-py`` folder (or its parent) or the JPEG archive. Overrides ``POISONCURE_CIFAR10``.
    download:
        Allow torchvision's downloader into the data root when nothing is found locally and the machine
        is online.
    verify:
        Check published checksums. ``False`` is meant for hand-made test copies only.
    cache:
        Where decoded arrays are kept (default: the project cache).
    """
    cache = cache or Cache()
    tried: list[str] = []
    chosen: tuple[str, Path, str] | None = None
    for desc, location in _candidates(path):
        if not location.exists():
            if desc in ("explicit path argument", "POISONCURE_CIFAR10"):
                raise DataNotFoundError(f"CIFAR-10 {desc} {location} does not exist")
            tried.append(f"{desc}: {location} (absent)")
            continue
        chosen = _identify(location, verify)
        break
    if chosen is None:
        target = paths.data_root()
        if download and is_online():
            chosen = _identify(download_cifar10(target), verify)
        else:
            tried.append(f"download into {target}: " + ("disabled (download=False)" if not download
                                                          else "machine is offline"))
            raise DataNotFoundError(
                "CIFAR-10 not found. Tried, in order:\n  - " + "\n  - ".join(tried) +
                "\nWhat to do: pass path=... or set POISONCURE_CIFAR10 to a cifar-10-batches-py folder or to "
                f"{JPEG_ARCHIVE_NAME}; or put cifar-10-batches-py under {target}; or run once on a machine "
                "with internet access (the official archive is downloaded there).")
    kind, location, fingerprint = chosen

    def build(folder: Path) -> dict[str, str]:
        train, test = read_batches(location) if kind == "batches" else read_jpeg_archive(location)
        np.savez(folder / "cifar10.npz", x_train=train.x, y_train=train.y, x_test=test.x, y_test=test.y)
        return {"source": str(location)}

    def load(folder: Path) -> tuple[ImageSet, ImageSet]:
        with np.load(folder / "cifar10.npz") as z:
            return ImageSet(z["x_train"], z["y_train"]), ImageSet(z["x_test"], z["y_test"])

    result = cache.get_or_build("cifar10", {"kind": kind, "fingerprint": fingerprint}, build, load)
    train, test = result.value
    return Cifar10(train, test, {"kind": kind, "location": str(location), "fingerprint": fingerprint})


def balanced_subset(images: ImageSet, per_class: int | None, seed: int = 0,
                    classes: Sequence[int] | None = None) -> ImageSet:
    """A deterministic class-balanced subset: ``per_class`` images of every class (all if ``None``), or of the
    class indices ``classes`` only.

    The chosen indices are sorted, so the subset keeps the original order. Raises ``ValueError`` when a class
    has fewer than ``per_class`` images.
    """
    if per_class is None:
        return images
    if per_class <= 0:
        raise ValueError(f"per_class must be a positive integer or None, got {per_class}")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in (range(len(images.classes)) if classes is None else classes):
        idx = np.flatnonzero(images.y == c)
        if len(idx) < per_class:
            raise ValueError(f"per_class={per_class} but class {c} ({images.classes[c]}) has {len(idx)} images")
        chosen.append(rng.choice(idx, size=per_class, replace=False))
    return images.subset(np.sort(np.concatenate(chosen)))


# --------------------------------------------------------------------------------------------- Fashion-MNIST
FASHION_CLASSES: tuple[str, ...] = ("T-shirt/top", "trouser", "pullover", "dress", "coat",
                                    "sandal", "shirt", "sneaker", "bag", "ankle boot")
#: Where Debian's ``dataset-fashion-mnist`` package puts the original IDX files.
FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
#: SHA-256 of each file's *decompressed* bytes (the ``.gz`` wrappers differ between distributions; the IDX
#: content does not). Measured on Debian's package 0.0~git20200523.55506a9-1.
FASHION_FILES = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


def read_idx(raw: bytes) -> np.ndarray:
    """Decode one IDX file (the MNIST format: magic, dims, big-endian sizes, uint8 payload)."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataCorruptError("not a uint8 IDX file (bad magic number)")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    payload = raw[4 + 4 * ndim:]
    if len(payload) != int(np.prod(shape)):
        raise DataCorruptError(f"IDX payload has {len(payload)} bytes, the header announces shape {shape}")
    return np.frombuffer(payload, dtype=np.uint8).reshape(shape)


def to_cifar_layout(grey: np.ndarray) -> np.ndarray:
    """Grey 28x28 images (N, 28, 28) -> uint8 (N, 32, 32, 3): a 2-pixel black border, the grey value in all
    three channels. Every trigger, model and defense of the library then applies unchanged."""
    padded = np.pad(grey, ((0, 0), (2, 2), (2, 2)))
    return np.ascontiguousarray(np.repeat(padded[..., None], 3, axis=3))


#: torchvision's mirror of the original files (``torchvision.datasets.FashionMNIST.mirrors``); the downloader
#: can be pointed elsewhere with ``POISONCURE_FASHION_MNIST_MIRROR`` (any URL urllib opens, ``file://`` included)
FASHION_MIRROR_ENV = "POISONCURE_FASHION_MNIST_MIRROR"


def fashion_download_dir() -> Path:
    """Where :func:`fetch_fashion_mnist` puts its copy: the folder ``POISONCURE_FASHION_MNIST`` names, else
    ``<data root>/fashion-mnist``."""
    env = os.environ.get("POISONCURE_FASHION_MNIST")
    return Path(env).expanduser() if env else paths.data_root() / "fashion-mnist"


def _has_fashion_files(folder: Path) -> bool:
    return all((folder / name).is_file() for name in FASHION_FILES)


def find_fashion_mnist() -> Path | None:
    """The first folder holding the four Fashion-MNIST files: ``POISONCURE_FASHION_MNIST``, Debian's package
    folder, then a copy downloaded earlier (:func:`fashion_download_dir`); ``None`` when there is none."""
    env = os.environ.get("POISONCURE_FASHION_MNIST")
    if env:
        return Path(env).expanduser() if _has_fashion_files(Path(env).expanduser()) else None
    for folder in (FASHION_DEBIAN_DIR, fashion_download_dir()):
        if _has_fashion_files(folder):
            return folder
    return None


def fetch_fashion_mnist(dest: str | Path | None = None, mirror: str | None = None) -> Path:
    """Download the four original files with torchvision's downloader into ``dest`` (default
    :func:`fashion_download_dir`) and return the folder. Content is checked by :func:`load_fashion_mnist`
    (the SHA-256 of the IDX bytes), not by the ``.gz`` wrapper, which differs between mirrors.

    ``mirror`` (or ``POISONCURE_FASHION_MNIST_MIRROR``) replaces torchvision's mirror: a URL ending in ``/``
    under which the four file names are found. Raises :class:`DataNotFoundError` naming the remedies when a file
    cannot be fetched (offline, say)."""
    from torchvision.datasets import FashionMNIST
    from torchvision.datasets.utils import download_url

    folder = Path(dest) if dest is not None else fashion_download_dir()
    base = mirror or os.environ.get(FASHION_MIRROR_ENV) or FashionMNIST.mirrors[0]
    base = base if base.endswith("/") else base + "/"
    partial = folder / ".partial"
    for name in FASHION_FILES:
        if (folder / name).is_file():
            continue
        try:
            download_url(base + name, str(partial), filename=name, md5=None)
        except Exception as err:  # urllib's URLError, OSError, torchvision's RuntimeError
            raise DataNotFoundError(
                f"Fashion-MNIST: could not download {base + name} ({type(err).__name__}: {err}). Install Debian's "
                "package (apt-get install dataset-fashion-mnist), or set POISONCURE_FASHION_MNIST to a folder "
                "holding the four original *-ubyte.gz files, or retry online.") from err
        folder.mkdir(parents=True, exist_ok=True)
        os.replace(partial / name, folder / name)  # a file appears whole or not at all
    if partial.is_dir():
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def load_fashion_mnist(path: str | Path | None = None, *, verify: bool = True, download: bool = True) -> Cifar10:
    """Fashion-MNIST (Xiao et al. 2017; 60k training, 10k test, 10 classes) in the library's image layout.

    Looked for in ``path``, else by :func:`find_fashion_mnist` (``POISONCURE_FASHION_MNIST``, Debian's package
    folder, an earlier download); when none holds it and ``download`` is true, torchvision's downloader fetches it
    (:func:`fetch_fashion_mnist`; needs the internet). The four original ``*-ubyte.gz`` files are read and checked
    against :data:`FASHION_FILES`; images become (N, 32, 32, 3) with :func:`to_cifar_layout`. Returned as a
    :class:`Cifar10`-shaped pair of splits with ``classes`` = :data:`FASHION_CLASSES`.
    """
    import gzip

    if path is not None:
        folder = Path(path).expanduser()
    else:
        folder = find_fashion_mnist()
        if folder is None and download:
            folder = fetch_fashion_mnist()
        folder = folder or fashion_download_dir()
    missing = [name for name in FASHION_FILES if not (folder / name).is_file()]
    if missing:
        raise DataNotFoundError(
            f"Fashion-MNIST not found in {folder} (missing {', '.join(missing)}). Install Debian's package "
            "(`apt-get install dataset-fashion-mnist`, which `python3 tasks.py book` does when run as root), "
            "or set POISONCURE_FASHION_MNIST to a folder holding the four original *-ubyte.gz files, or run "
            "online once (torchvision's downloader fills data/fashion-mnist).")
    arrays = {}
    for name, sha in FASHION_FILES.items():
        try:
            raw = gzip.decompress((folder / name).read_bytes())
        except (OSError, EOFError) as err:
            raise DataCorruptError(f"{folder / name} cannot be decompressed: {err}") from err
        if verify and hashlib.sha256(raw).hexdigest() != sha:
            raise DataCorruptError(f"{folder / name} does not hold the published Fashion-MNIST content "
                                   f"(SHA-256 of its IDX bytes differs from {sha})")
        arrays[name.split("-")[0] + "-" + name.split("-")[1]] = read_idx(raw)
    split = {}
    for part in ("train", "t10k"):
        x, y = arrays[f"{part}-images"], arrays[f"{part}-labels"].astype(np.int64)
        if x.shape[1:] != (28, 28) or len(x) != len(y):
            raise DataCorruptError(f"Fashion-MNIST {part} split has images {x.shape} and labels {y.shape}")
        split[part] = ImageSet(to_cifar_layout(x), y, FASHION_CLASSES)
    return Cifar10(split["train"], split["t10k"], {"kind": "fashion-mnist-idx", "location": str(folder)})
