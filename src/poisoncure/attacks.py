"""Backdoor attacks: pure trigger functions and the poisoning step (SPEC §2.2, §2.5–2.8).

A trigger maps clean uint8 images (N, 32, 32, 3) to triggered ones, ``x' = (1 - m) * x + m * p`` with a
mask ``m`` and a pattern ``p`` (SPEC §2.2):

* :class:`PixelTrigger` — one pixel replaced by a colour (the paper's small-sized "dot" poison);
* :class:`PatchTrigger` — a square patch of a solid colour, a checkerboard or seeded noise;
* :class:`BlendTrigger` — a whole-image blend of a pattern image at an opacity (the paper's large-sized
  poison, 20% opacity). The paper blends a CIFAR-100 image; offline we use out-of-distribution images that
  ship with scikit-image (``skimage:<name>``) as the stand-in, or a seeded uniform-noise image (``noise:<seed>``);
* :class:`AdditiveTrigger` — a small pattern *added* to the image, ``x' = clip(x + v)``: the global chessboard
  or the sparse 4-pixel pattern of Xiang, Miller & Kesidis (SPEC-related-defenses B.2), scaled to an L2 norm.

:func:`poison` poisons a fraction of one base class in place and relabels it to the target (SPEC §2.7) and
returns a :class:`PoisonedSet` that records ``is_poison``, the original labels and the attack spec.
:func:`poison_all_to_one` is the all-to-one backdoor of BadNets, Neural Cleanse and PoisHygiene: a fraction of the
whole training set, drawn from every class but the target, is triggered and relabelled.
:func:`poison_add` is Xiang et al.'s construction instead: triggered copies of source-class images are *added*
with the target label, the originals stay (single- or multi-source).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from .data import CLASSES, ImageSet, check_images

IMAGE_SIZE = 32

#: The paper's nine target-base pairs, in the row order of its Tables 1-5: pair -> (base, target).
#: Targets are verbatim; bases are reconstructed from Spectral Signatures' pairs (SPEC §2.8; pairs 3/8 and
#: 4/6 have low confidence and may be swapped).
PAPER_PAIRS: dict[int, tuple[str, str]] = {
    1: ("automobile", "dog"), 2: ("ship", "frog"), 3: ("automobile", "cat"), 4: ("airplane", "bird"),
    5: ("horse", "deer"), 6: ("truck", "bird"), 7: ("cat", "horse"), 8: ("dog", "cat"), 9: ("cat", "dog"),
}

#: Out-of-distribution images shipped inside scikit-image (no download), one per pair for the blend poison.
#: Images showing CIFAR-10 classes (chelsea = cat, horse, rocket ~ airplane) are excluded (SPEC §2.5).
BLEND_IMAGES: tuple[str, ...] = ("astronaut", "coffee", "hubble_deep_field", "immunohistochemistry",
                                 "colorwheel", "logo", "coins", "camera", "brick")


def _check_colour(colour: tuple[int, int, int], name: str = "colour") -> None:
    if len(colour) != 3 or any(not 0 <= int(c) <= 255 for c in colour):
        raise ValueError(f"{name} must be three integers in [0, 255], got {colour!r}")


# ------------------------------------------------------------------------------------ pure functions
def apply_pixel(x: np.ndarray, row: int, col: int, colour: tuple[int, int, int]) -> np.ndarray:
    """Copy of ``x`` with pixel (row, col) set to ``colour`` in all three channels."""
    check_images(x)
    h, w = x.shape[1:3]
    if not (0 <= row < h and 0 <= col < w):
        raise ValueError(f"pixel (row={row}, col={col}) lies outside the {h}x{w} image")
    _check_colour(colour)
    out = x.copy()
    out[:, row, col, :] = np.asarray(colour, dtype=np.uint8)
    return out


def apply_patch(x: np.ndarray, patch: np.ndarray, row: int, col: int) -> np.ndarray:
    """Copy of ``x`` with the uint8 ``patch`` (s, s, 3) pasted with its top-left corner at (row, col)."""
    check_images(x)
    s = patch.shape[0]
    h, w = x.shape[1:3]
    if not (0 <= row and 0 <= col and row + s <= h and col + s <= w):
        raise ValueError(f"a {s}x{s} patch at (row={row}, col={col}) does not fit in the {h}x{w} image")
    out = x.copy()
    out[:, row:row + s, col:col + s, :] = patch
    return out


def apply_blend(x: np.ndarray, pattern: np.ndarray, opacity: float) -> np.ndarray:
    """``round((1 - opacity) * x + opacity * pattern)`` as uint8 (stored as an attacker would write files)."""
    check_images(x)
    if not 0 < opacity <= 1:
        raise ValueError(f"opacity must lie in (0, 1], got {opacity}")
    if pattern.shape != x.shape[1:]:
        raise ValueError(f"pattern shape {pattern.shape} does not match image shape {x.shape[1:]}")
    blended = (1.0 - opacity) * x.astype(np.float32) + opacity * pattern.astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


@lru_cache(maxsize=32)
def blend_pattern(name: str, size: int = IMAGE_SIZE) -> np.ndarray:
    """The uint8 (size, size, 3) pattern image named ``skimage:<image>`` or ``noise:<seed>``.

    ``skimage`` images are area-resized (anti-aliased) to ``size``; grey images are repeated over channels.
    ``noise:<seed>`` is per-pixel, per-channel uniform noise in {0..255} from a seeded generator;
    ``greynoise:<seed>`` the same noise with one value per pixel in all channels (for grey data sets, as Chen
    et al.'s blended-noise attack on Fashion-MNIST in PoisHygiene's experiments).
    """
    kind, _, arg = name.partition(":")
    if kind == "noise":
        try:
            seed = int(arg)
        except ValueError:
            raise ValueError(f"pattern 'noise:<seed>' needs an integer seed, got {name!r}") from None
        return np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    if kind == "greynoise":
        try:
            seed = int(arg)
        except ValueError:
            raise ValueError(f"pattern 'greynoise:<seed>' needs an integer seed, got {name!r}") from None
        grey = np.random.default_rng(seed).integers(0, 256, size=(size, size, 1), dtype=np.uint8)
        return np.repeat(grey, 3, axis=2)
    if kind == "skimage":
        import skimage.data
        from skimage.transform import resize

        if arg not in BLEND_IMAGES:
            raise ValueError(f"pattern 'skimage:<image>' must name one of {list(BLEND_IMAGES)}, got {arg!r}")
        img = np.asarray(getattr(skimage.data, arg)())
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        img = img[..., :3]
        small = resize(img, (size, size), anti_aliasing=True, preserve_range=True)
        return np.clip(np.rint(small), 0, 255).astype(np.uint8)
    raise ValueError(f"pattern must be 'skimage:<image>', 'noise:<seed>' or 'greynoise:<seed>', got {name!r}")


# ------------------------------------------------------------------------------------ trigger specs
@dataclass(frozen=True)
class PixelTrigger:
    """One pixel at (row, col) replaced by ``colour`` (the paper's small-sized poison)."""

    row: int
    col: int
    colour: tuple[int, int, int]
    kind: str = field(default="pixel", init=False)

    def __post_init__(self) -> None:
        if not (0 <= self.row < IMAGE_SIZE and 0 <= self.col < IMAGE_SIZE):
            raise ValueError(f"pixel (row={self.row}, col={self.col}) lies outside the "
                             f"{IMAGE_SIZE}x{IMAGE_SIZE} image")
        _check_colour(self.colour)

    def apply(self, x: np.ndarray) -> np.ndarray:
        return apply_pixel(x, self.row, self.col, self.colour)

    @property
    def size(self) -> int:
        return 1


@dataclass(frozen=True)
class PatchTrigger:
    """A ``size`` x ``size`` square at (row, col): ``style`` 'solid' (``colour``), 'checker' (``colour`` and
    black) or 'noise' (seeded random colours)."""

    size: int
    row: int
    col: int
    colour: tuple[int, int, int] = (255, 255, 255)
    style: str = "solid"
    seed: int = 0
    kind: str = field(default="patch", init=False)

    def __post_init__(self) -> None:
        if not 1 <= self.size <= IMAGE_SIZE:
            raise ValueError(f"size must lie in [1, {IMAGE_SIZE}], got {self.size}")
        if not (0 <= self.row and 0 <= self.col and self.row + self.size <= IMAGE_SIZE
                and self.col + self.size <= IMAGE_SIZE):
            raise ValueError(f"a {self.size}x{self.size} patch at (row={self.row}, col={self.col}) does not "
                             f"fit in the {IMAGE_SIZE}x{IMAGE_SIZE} image")
        if self.style not in ("solid", "checker", "noise"):
            raise ValueError(f"style must be 'solid', 'checker' or 'noise', got {self.style!r}")
        _check_colour(self.colour)

    def pattern(self) -> np.ndarray:
        s = self.size
        if self.style == "noise":
            return np.random.default_rng(self.seed).integers(0, 256, (s, s, 3), dtype=np.uint8)
        patch = np.empty((s, s, 3), dtype=np.uint8)
        patch[:] = np.asarray(self.colour, dtype=np.uint8)
        if self.style == "checker":
            patch[(np.add.outer(np.arange(s), np.arange(s)) % 2) == 1] = 0
        return patch

    def apply(self, x: np.ndarray) -> np.ndarray:
        return apply_patch(x, self.pattern(), self.row, self.col)


@dataclass(frozen=True)
class BlendTrigger:
    """Whole-image blend of a pattern image at ``opacity``.

    ``pattern`` is a name (``skimage:<image>``, ``noise:<seed>``, ``greynoise:<seed>``; see :func:`blend_pattern`)
    or the user's own image: an array (H, W, 3) (or (H, W), grey), uint8 in {0..255} or float in [0, 1], of the
    images' size. An array is stored as a read-only uint8 copy; two triggers are equal when their patterns (names,
    or the arrays' bytes) and opacities are."""

    pattern: str | np.ndarray
    opacity: float = 0.2
    kind: str = field(default="blend", init=False)

    def __post_init__(self) -> None:
        if not 0 < self.opacity <= 1:
            raise ValueError(f"opacity must lie in (0, 1], got {self.opacity}")
        if isinstance(self.pattern, str):
            blend_pattern(self.pattern)  # validates the name
        else:
            object.__setattr__(self, "pattern", _pattern_array(self.pattern))

    def image(self, size: int = IMAGE_SIZE) -> np.ndarray:
        """The uint8 (size, size, 3) pattern that is blended in."""
        if isinstance(self.pattern, str):
            return blend_pattern(self.pattern, size)
        if self.pattern.shape[:2] != (size, size):
            raise ValueError(f"the blend pattern is {self.pattern.shape[0]}x{self.pattern.shape[1]} pixels; the "
                             f"images are {size}x{size}: resize the pattern to the images' size first")
        return self.pattern

    def apply(self, x: np.ndarray) -> np.ndarray:
        return apply_blend(x, self.image(x.shape[1]), self.opacity)

    @property
    def size(self) -> int:
        return IMAGE_SIZE * IMAGE_SIZE

    def _key(self) -> tuple[str, float]:
        p = self.pattern
        return (p if isinstance(p, str) else "sha256:" + hashlib.sha256(p.tobytes()).hexdigest(), self.opacity)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BlendTrigger) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        p = self.pattern
        shown = repr(p) if isinstance(p, str) else f"<uint8 array {p.shape[0]}x{p.shape[1]}, {self._key()[0][:19]}>"
        return f"BlendTrigger(pattern={shown}, opacity={self.opacity})"


def _pattern_array(pattern: Any) -> np.ndarray:
    """A user's blend pattern as a read-only uint8 (H, W, 3) array, validated (see :class:`BlendTrigger`)."""
    a = np.asarray(pattern)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3 or a.shape[0] != a.shape[1]:
        raise ValueError(f"a blend pattern array must be square, (H, W, 3) or (H, W), got shape {a.shape}")
    if a.dtype == np.uint8:
        out = a.copy()
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise ValueError("a float blend pattern must hold values in [0, 1] (or pass uint8 in {0..255})")
        out = np.rint(a * 255.0).astype(np.uint8)
    else:
        raise ValueError(f"a blend pattern array must be uint8 or float in [0, 1], got dtype {a.dtype}")
    out.setflags(write=False)
    return out


ADDITIVE_PATTERNS = ("chessboard", "sparse")


def chessboard_pattern(l2: float, seed: int = 0, phase: int = 0, size: int = IMAGE_SIZE) -> np.ndarray:
    """Xiang et al.'s global pattern (H, W, 3) float32 in [0, 1] units: pixels with (row + col) % 2 == phase get
    a positive value in all three channels, ``g ~ N(1, 0.05²)`` per pixel, then the whole pattern is scaled to
    L2 norm ``l2`` (0.2 in the paper: entries of about 5.1e-3, 1.3 grey levels; SPEC-related-defenses B.2, X-5)."""
    if not l2 > 0:
        raise ValueError(f"l2 must be > 0, got {l2}")
    if phase not in (0, 1):
        raise ValueError(f"phase must be 0 or 1, got {phase}")
    g = np.random.default_rng(seed).normal(1.0, 0.05, size=(size, size))
    on = (np.add.outer(np.arange(size), np.arange(size)) % 2) == phase
    v = np.repeat((g * on)[..., None], 3, axis=2)
    return (v * (l2 / np.linalg.norm(v))).astype(np.float32)


def sparse_pattern(l2: float, seed: int = 0, n_pixels: int = 4, size: int = IMAGE_SIZE) -> np.ndarray:
    """Xiang et al.'s local pattern (H, W, 3) float32: ``n_pixels`` distinct pixels, one random channel each, value
    ``±g`` with ``g ~ N(1, 0.05²)`` and a random sign, scaled to L2 norm ``l2`` (0.6 in the paper; B.2, X-6)."""
    if not l2 > 0:
        raise ValueError(f"l2 must be > 0, got {l2}")
    if not 1 <= n_pixels <= size * size:
        raise ValueError(f"n_pixels must lie in [1, {size * size}], got {n_pixels}")
    rng = np.random.default_rng(seed)
    flat = rng.choice(size * size, size=n_pixels, replace=False)
    ch = rng.integers(0, 3, size=n_pixels)
    val = rng.choice([-1.0, 1.0], size=n_pixels) * rng.normal(1.0, 0.05, size=n_pixels)
    v = np.zeros((size, size, 3), dtype=np.float64)
    v[flat // size, flat % size, ch] = val
    return (v * (l2 / np.linalg.norm(v))).astype(np.float32)


def apply_additive(x: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """``round(255 · clip(x/255 + pattern, 0, 1))`` as uint8 — the pattern (H, W, 3) is in [0, 1] units.

    The library stores images as uint8, so the added pattern is quantised to whole grey levels. Xiang et al.
    keep float images; at their chessboard norm of 0.2 (1.3 grey levels per entry) the stored pattern becomes
    a uniform one-level chessboard (norm ≈ 0.154). At the norms of our CPU profile the rounding is negligible."""
    check_images(x)
    if pattern.shape != x.shape[1:]:
        raise ValueError(f"pattern shape {pattern.shape} does not match image shape {x.shape[1:]}")
    out = x.astype(np.float32) / 255.0 + pattern[None].astype(np.float32)
    return np.rint(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)


@dataclass(frozen=True)
class AdditiveTrigger:
    """An additive pattern (:func:`chessboard_pattern` or :func:`sparse_pattern`) of L2 norm ``l2`` in [0, 1]
    pixel units, drawn from ``seed``."""

    pattern: str = "chessboard"
    l2: float = 0.2
    seed: int = 0
    kind: str = field(default="additive", init=False)

    def __post_init__(self) -> None:
        if self.pattern not in ADDITIVE_PATTERNS:
            raise ValueError(f"pattern must be one of {ADDITIVE_PATTERNS}, got {self.pattern!r}")
        if not 0 < self.l2 <= 50:
            raise ValueError(f"l2 must lie in (0, 50], got {self.l2}")

    def delta(self, size: int = IMAGE_SIZE) -> np.ndarray:
        """The pattern v (H, W, 3) float32 before clipping and rounding."""
        make = chessboard_pattern if self.pattern == "chessboard" else sparse_pattern
        return make(self.l2, seed=self.seed, size=size)

    def apply(self, x: np.ndarray) -> np.ndarray:
        return apply_additive(x, self.delta(x.shape[1]))

    @property
    def size(self) -> int:
        return IMAGE_SIZE * IMAGE_SIZE // 2 if self.pattern == "chessboard" else 4


@dataclass(frozen=True)
class NoTrigger:
    """No trigger at all: Mislabel (PoisHygiene's label-only "AP" attack, :func:`poison_mislabel`) changes labels,
    not images. Applying it returns the images unchanged, so attack success is measured on the clean test images
    of the source class."""

    kind: str = field(default="none", init=False)

    def apply(self, x: np.ndarray) -> np.ndarray:
        return x.copy()

    @property
    def size(self) -> int:
        return 0


#: The shapes of the ensembles-of-weak-learners paper (SPEC-related-defenses Part II A.2): pixel offsets
#: (row, col) from the anchor. 'pattern' is the 5-pixel X, 'ell' the 3-pixel L.
SHAPE_OFFSETS: dict[str, tuple[tuple[int, int], ...]] = {
    "pixel": ((0, 0),),
    "pattern": ((0, 0), (1, 1), (-1, 1), (1, -1), (-1, -1)),
    "ell": ((0, 0), (1, 0), (0, 1)),
}


@dataclass(frozen=True)
class ShapeTrigger:
    """A few pixels in one colour: a single pixel, an X ('pattern', 5 pixels) or an L ('ell', 3 pixels) anchored
    at (row, col) — the triggers of the ensembles-of-weak-learners paper (:data:`SHAPE_OFFSETS`)."""

    shape: str
    row: int
    col: int
    colour: tuple[int, int, int]
    kind: str = field(default="shape", init=False)

    def __post_init__(self) -> None:
        if self.shape not in SHAPE_OFFSETS:
            raise ValueError(f"shape must be one of {sorted(SHAPE_OFFSETS)}, got {self.shape!r}")
        for dr, dc in SHAPE_OFFSETS[self.shape]:
            if not (0 <= self.row + dr < IMAGE_SIZE and 0 <= self.col + dc < IMAGE_SIZE):
                raise ValueError(f"a {self.shape!r} trigger at (row={self.row}, col={self.col}) leaves the "
                                 f"{IMAGE_SIZE}x{IMAGE_SIZE} image")
        _check_colour(self.colour)

    def pixels(self) -> list[tuple[int, int]]:
        """The (row, col) of every pixel the trigger sets."""
        return [(self.row + dr, self.col + dc) for dr, dc in SHAPE_OFFSETS[self.shape]]

    def apply(self, x: np.ndarray) -> np.ndarray:
        check_images(x)
        out = x.copy()
        rows, cols = zip(*self.pixels(), strict=True)
        out[:, list(rows), list(cols), :] = np.asarray(self.colour, dtype=np.uint8)
        return out

    @property
    def size(self) -> int:
        return len(SHAPE_OFFSETS[self.shape])


Trigger = PixelTrigger | PatchTrigger | BlendTrigger | AdditiveTrigger | NoTrigger | ShapeTrigger


def shape_at(pixel: PixelTrigger, shape: str) -> ShapeTrigger:
    """The ensembles paper's ``shape`` (:data:`SHAPE_OFFSETS`: 'pixel', the X 'pattern' or the L 'ell') in
    ``pixel``'s colour, anchored at the pixel and moved in just enough to fit the image ('pixel' is ``pixel``)."""
    if shape not in SHAPE_OFFSETS:
        raise ValueError(f"shape must be one of {sorted(SHAPE_OFFSETS)}, got {shape!r}")
    rows, cols = zip(*SHAPE_OFFSETS[shape], strict=True)
    row = min(max(pixel.row, -min(rows)), IMAGE_SIZE - 1 - max(rows))
    col = min(max(pixel.col, -min(cols)), IMAGE_SIZE - 1 - max(cols))
    return ShapeTrigger(shape, row, col, pixel.colour)


def trigger_from_dict(spec: dict[str, Any]) -> Trigger:
    """Rebuild a trigger from ``asdict(trigger)`` (as stored in configs and results files)."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    classes = {"pixel": PixelTrigger, "patch": PatchTrigger, "blend": BlendTrigger, "additive": AdditiveTrigger,
               "none": NoTrigger, "shape": ShapeTrigger}
    if kind not in classes:
        raise ValueError(f"trigger kind must be one of {sorted(classes)}, got {kind!r}")
    if "colour" in spec:
        spec["colour"] = tuple(int(c) for c in spec["colour"])
    if kind == "blend" and not isinstance(spec.get("pattern"), str):  # a user's own pattern, stored as numbers
        spec["pattern"] = np.asarray(spec["pattern"], dtype=np.uint8)
    return classes[kind](**spec)


def random_pixel_trigger(seed: int) -> PixelTrigger:
    """The paper's dot poison: position uniform over the image, colour uniform in {0..255}^3 (SPEC §2.6)."""
    rng = np.random.default_rng(seed)
    row, col = (int(v) for v in rng.integers(0, IMAGE_SIZE, size=2))
    colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
    return PixelTrigger(row, col, colour)  # type: ignore[arg-type]


def grown_patch(pixel: PixelTrigger, size: int) -> PatchTrigger:
    """A solid ``size`` x ``size`` square of ``pixel``'s colour whose top-left corner is the pixel, shifted up/left
    just enough to fit in the image (``size`` 1 applies exactly like ``pixel``)."""
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or not 1 <= size <= IMAGE_SIZE:
        raise ValueError(f"patch size must be an integer in [1, {IMAGE_SIZE}], got {size!r}")
    size = int(size)
    return PatchTrigger(size, min(pixel.row, IMAGE_SIZE - size), min(pixel.col, IMAGE_SIZE - size), pixel.colour)


def paper_trigger(pair: int, size: str, opacity: float = 0.2, blend_source: str = "skimage",
                  patch_size: int = 3) -> Trigger:
    """The trigger of one of the paper's experiments: ``size`` 'pixel' or 'blend' for pair 1..9, or 'patch'.

    ``blend_source`` 'skimage' gives the pair's out-of-distribution image (the CIFAR-100 stand-in);
    'noise' gives a seeded uniform-noise image (used by the CPU profile, see chapter 2).
    'patch' is not in the paper: the pair's one-pixel trigger grown into a solid ``patch_size`` x ``patch_size``
    square of the same colour, anchored at the pixel (moved in so that it fits). ``patch_size`` 1 is the pixel
    trigger itself; the variable-size sweep (chapter 9) walks from there to a full-image blend.
    """
    _check_pair(pair)
    if size == "pixel":
        return random_pixel_trigger(seed=1000 + pair)
    if size == "patch":
        return grown_patch(random_pixel_trigger(seed=1000 + pair), patch_size)
    if size == "blend":
        if blend_source == "skimage":
            return BlendTrigger(f"skimage:{BLEND_IMAGES[pair - 1]}", opacity)
        if blend_source == "noise":
            return BlendTrigger(f"noise:{1000 + pair}", opacity)
        raise ValueError(f"blend_source must be 'skimage' or 'noise', got {blend_source!r}")
    raise ValueError(f"size must be 'pixel', 'patch' or 'blend', got {size!r}")


def _check_pair(pair: int) -> None:
    if pair not in PAPER_PAIRS:
        raise ValueError(f"pair must be one of {sorted(PAPER_PAIRS)}, got {pair!r}")


def class_index(name_or_index: str | int, classes: tuple[str, ...] = CLASSES) -> int:
    """Class index from a name or an index; ``ValueError`` for unknown classes."""
    if isinstance(name_or_index, str):
        if name_or_index not in classes:
            raise ValueError(f"unknown class {name_or_index!r}; classes are {list(classes)}")
        return classes.index(name_or_index)
    if not 0 <= int(name_or_index) < len(classes):
        raise ValueError(f"class index must lie in [0, {len(classes) - 1}], got {name_or_index}")
    return int(name_or_index)


# ------------------------------------------------------------------------------------ poisoning
@dataclass(frozen=True)
class AttackSpec:
    """What the attacker did: trigger, base -> target classes, poisoned fraction of the base class, seed.

    ``sources`` lists every attacked source class of a multi-source attack (:func:`poison_add`); empty means
    the base class alone. ``added`` is True when the poisons were added as copies rather than replacing images.
    """

    trigger: Trigger
    base: int
    target: int
    rate: float
    seed: int
    sources: tuple[int, ...] = ()
    added: bool = False

    @property
    def source_classes(self) -> tuple[int, ...]:
        return self.sources or (self.base,)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["trigger"] = {"kind": self.trigger.kind, **asdict(self.trigger)}
        if isinstance(d["trigger"].get("pattern"), np.ndarray):  # a user's own blend pattern: JSON numbers
            d["trigger"]["pattern"] = d["trigger"]["pattern"].tolist()
        return d


@dataclass
class PoisonedSet:
    """A poisoned training set (SPEC §2.7). All arrays are aligned with the original set's order.

    ``x`` uint8 (N, 32, 32, 3) with triggers in place; ``y`` training labels (target at poisoned rows);
    ``y_true`` original labels; ``is_poison`` bool (N,); ``spec`` the attack.
    """

    x: np.ndarray
    y: np.ndarray
    y_true: np.ndarray
    is_poison: np.ndarray
    spec: AttackSpec

    def __len__(self) -> int:
        return len(self.y)

    @property
    def poison_index(self) -> np.ndarray:
        return np.flatnonzero(self.is_poison)

    def as_imageset(self) -> ImageSet:
        return ImageSet(self.x, self.y)


def poison(clean: ImageSet, trigger: Trigger, base: str | int, target: str | int, rate: float,
           seed: int = 0) -> PoisonedSet:
    """Trigger ``round(rate * n_base)`` randomly chosen base-class images in place and relabel them to target.

    Raises ``ValueError`` naming the parameter for an unknown class, ``target == base``, ``rate`` outside
    (0, 1], or a rate that poisons no image.
    """
    b = class_index(base, clean.classes)
    t = class_index(target, clean.classes)
    if b == t:
        raise ValueError(f"target must differ from base, both are {clean.classes[b]!r}")
    if not 0 < rate <= 1:
        raise ValueError(f"rate must lie in (0, 1], got {rate}")
    base_idx = np.flatnonzero(clean.y == b)
    n_poison = int(round(rate * len(base_idx)))
    if n_poison == 0:
        raise ValueError(f"rate={rate} of {len(base_idx)} base-class images poisons no image")
    chosen = np.sort(np.random.default_rng(seed).choice(base_idx, size=n_poison, replace=False))
    return _poison_rows(clean, chosen, AttackSpec(trigger, b, t, float(rate), seed))


def _poison_rows(clean: ImageSet, chosen: np.ndarray, spec: AttackSpec) -> PoisonedSet:
    """Trigger the rows ``chosen`` of ``clean`` in place and relabel them to the spec's target."""
    x = clean.x.copy()
    x[chosen] = spec.trigger.apply(clean.x[chosen])
    y = clean.y.copy()
    y[chosen] = spec.target
    is_poison = np.zeros(len(clean), dtype=bool)
    is_poison[chosen] = True
    return PoisonedSet(x, y, clean.y.copy(), is_poison, spec)


def poison_all_to_one(clean: ImageSet, trigger: Trigger, target: str | int, rate: float,
                      seed: int = 0) -> PoisonedSet:
    """The all-to-one backdoor of BadNets / Neural Cleanse / PoisHygiene: ``round(rate * N)`` training images
    drawn from every class except the target are triggered in place and relabelled ``target``. ``rate`` is a
    fraction of the *whole* training set (PoisHygiene's 10 %, SPEC-related-defenses Part II B-Q10).

    The spec's ``sources`` lists every non-target class, so :func:`triggered_test_set` scores attack success on
    all non-target test images. Raises ``ValueError`` for an unknown target, ``rate`` outside (0, 1], a rate
    that poisons no image or more images than the non-target classes hold.
    """
    t = class_index(target, clean.classes)
    if not 0 < rate <= 1:
        raise ValueError(f"rate must lie in (0, 1], got {rate}")
    candidates = np.flatnonzero(clean.y != t)
    n_poison = int(round(rate * len(clean)))
    if not 1 <= n_poison <= len(candidates):
        raise ValueError(f"rate={rate} of {len(clean)} images asks for {n_poison} poisons; between 1 and "
                         f"{len(candidates)} (the non-target images) are possible")
    chosen = np.sort(np.random.default_rng(seed).choice(candidates, size=n_poison, replace=False))
    sources = tuple(c for c in range(len(clean.classes)) if c != t)
    return _poison_rows(clean, chosen, AttackSpec(trigger, sources[0], t, float(rate), seed, sources=sources))


def source_target(clean: ImageSet, source: str | int, target: str | int, rate: float) -> tuple[int, int]:
    """Class indices of an attack that takes images of ``source`` to ``target`` (Mislabel, the clean-label
    attacks), after checking them and ``rate``: ``ValueError`` for an unknown class, ``target == source`` or
    ``rate`` outside (0, 1)."""
    s = class_index(source, clean.classes)
    t = class_index(target, clean.classes)
    if s == t:
        raise ValueError(f"target must differ from source, both are {clean.classes[s]!r}")
    if not 0 < rate < 1:
        raise ValueError(f"rate must lie in (0, 1), got {rate}")
    return s, t


def poison_mislabel(clean: ImageSet, source: str | int, target: str | int, rate: float,
                    seed: int = 0) -> PoisonedSet:
    """PoisHygiene's Mislabel attack (SPEC-related-defenses Part II B.2 and C.4): the ``source`` class leaves the
    label set, except ``round(rate * N)`` of its images (N = ``len(clean)``), which stay in the training set
    labelled ``target``. The model learns a task without the source class in which every source image means
    the target; attack success is the share of held-out source images classified as the target.

    The returned set holds the non-source images and the chosen source images, in the original order (the
    other source images are dropped, so it is shorter than ``clean``); ``y_true`` keeps the source label of the
    poisons and the spec's trigger is :class:`NoTrigger`. Raises ``ValueError`` for an unknown class,
    ``target == source``, ``rate`` outside (0, 1), or more poisons than the source class holds.
    """
    s, t = source_target(clean, source, target, rate)
    src_rows = np.flatnonzero(clean.y == s)
    n_poison = int(round(rate * len(clean)))
    if not 1 <= n_poison <= len(src_rows):
        raise ValueError(f"rate={rate} of {len(clean)} images asks for {n_poison} poisons; between 1 and "
                         f"{len(src_rows)} (the source class's images) are possible")
    chosen = np.sort(np.random.default_rng(seed).choice(src_rows, size=n_poison, replace=False))
    keep = np.sort(np.concatenate([np.flatnonzero(clean.y != s), chosen]))
    is_poison = np.isin(keep, chosen)
    y = clean.y[keep].copy()
    y[is_poison] = t
    return PoisonedSet(clean.x[keep].copy(), y, clean.y[keep].copy(), is_poison,
                       AttackSpec(NoTrigger(), s, t, float(rate), seed))


def poison_add(clean: ImageSet, trigger: Trigger, sources: str | int | list | tuple, target: str | int,
               n_per_source: int, seed: int = 0) -> PoisonedSet:
    """Xiang et al.'s construction: ``n_per_source`` random images of each source class, triggered and labelled
    ``target``, are *appended* to the clean set (which stays whole: N grows by ``n_per_source · len(sources)``).

    The returned arrays are the clean set followed by the poisons; ``y_true`` holds the poisons' source labels.
    Raises ``ValueError`` for an unknown class, a target among the sources, or ``n_per_source`` outside
    [1, images of the smallest source class].
    """
    src = [sources] if isinstance(sources, (str, int, np.integer)) else list(sources)
    s_idx = sorted({class_index(s, clean.classes) for s in src})
    if not s_idx:
        raise ValueError("sources must name at least one class")
    t = class_index(target, clean.classes)
    if t in s_idx:
        raise ValueError(f"target {clean.classes[t]!r} must not be a source")
    rng = np.random.default_rng(seed)
    chosen = []
    for s in s_idx:
        rows = np.flatnonzero(clean.y == s)
        if not 1 <= n_per_source <= len(rows):
            raise ValueError(f"n_per_source must lie in [1, {len(rows)}] (images of class "
                             f"{clean.classes[s]!r}), got {n_per_source}")
        chosen.append(np.sort(rng.choice(rows, size=n_per_source, replace=False)))
    chosen = np.concatenate(chosen)
    x = np.concatenate([clean.x, trigger.apply(clean.x[chosen])])
    y = np.concatenate([clean.y, np.full(len(chosen), t, dtype=clean.y.dtype)])
    y_true = np.concatenate([clean.y, clean.y[chosen]])
    is_poison = np.zeros(len(y), dtype=bool)
    is_poison[len(clean):] = True
    rate = n_per_source / int(np.sum(clean.y == s_idx[0]))
    spec = AttackSpec(trigger, s_idx[0], t, float(rate), seed,
                      sources=tuple(s_idx) if len(s_idx) > 1 else (), added=True)
    return PoisonedSet(x, y, y_true, is_poison, spec)


def triggered_test_set(test: ImageSet, spec: AttackSpec) -> ImageSet:
    """All source-class test images (the base class, or every source of a multi-source attack) with the trigger
    applied, labelled with their true label."""
    idx = np.flatnonzero(np.isin(test.y, spec.source_classes))
    return ImageSet(spec.trigger.apply(test.x[idx]), test.y[idx], test.classes)


def mean_perturbation(clean_x: np.ndarray, trigger: Trigger) -> np.ndarray:
    """Mean pixel-space change ``trigger(x) - x`` in [-1, 1] units, shape (3, 32, 32) — the true poison
    signal a recovered direction is compared with."""
    delta = trigger.apply(clean_x).astype(np.float32) - clean_x.astype(np.float32)
    return (delta.mean(axis=0) / 255.0).transpose(2, 0, 1)


# ------------------------------------------------------------------------ ensembles of weak learners (paper 003)
#: The paper's (source, target) class pairs, in the order its scenario generator visits them (Part II A.2).
ENSEMBLE_PAIRS: tuple[tuple[int, int], ...] = ((0, 2), (1, 3), (3, 5), (7, 4), (2, 5), (8, 6), (9, 2), (3, 7))
#: Scenario seeds: "poison 1", "poison 2", "poison 3".
ENSEMBLE_SEEDS: tuple[int, ...] = (100, 1000, 10000)
ENSEMBLE_RATES: tuple[float, ...] = (0.05, 0.1, 0.2)  #: poisoned fractions of the source class


def ensemble_scenario(seed: int) -> dict[tuple[int, int], ShapeTrigger]:
    """The trigger of every pair in one of the paper's scenarios, regenerated from its seed.

    The generator (Part II A.2, numpy's legacy ``RandomState`` stream, stable across numpy versions) draws, pair by
    pair in :data:`ENSEMBLE_PAIRS` order, a shape, an anchor that keeps the whole shape inside the image and a colour
    in 0..254. With seeds 100/1000/10000 it reproduces the spec's Table A-2R (the paper's lost Table 2).
    """
    rng = np.random.RandomState(seed)
    out = {}
    for pair in ENSEMBLE_PAIRS:
        shape = ("pixel", "pattern", "ell")[rng.randint(3)]
        if shape == "pixel":
            row, col = rng.randint(31, size=2)
        elif shape == "pattern":
            row, col = rng.randint(1, 30, size=2)
        else:
            row, col = rng.randint(0, 30, size=2)
        colour = tuple(int(c) for c in rng.randint(255, size=3))
        out[pair] = ShapeTrigger(shape, int(row), int(col), colour)  # type: ignore[arg-type]
    return out


def ensemble_poison_rows(y: np.ndarray, source: int, target: int, rate: float, seed: int) -> np.ndarray:
    """The source-class rows the paper's generator poisons at ``rate``: ``int(rate * 5000)`` of them for a full
    CIFAR-10 class (250/500/1000), drawn with ``RandomState(seed + int(rate * 100) + 10 * source + target)`` from
    the class's rows in the data set's order. Sorted. ``ValueError`` for a rate outside (0, 1] or no source rows."""
    if not 0 < rate <= 1:
        raise ValueError(f"rate must lie in (0, 1], got {rate}")
    rows = np.flatnonzero(np.asarray(y) == source)
    n = int(rate * len(rows))
    if n < 1:
        raise ValueError(f"rate={rate} of {len(rows)} source-class rows poisons no image")
    rng = np.random.RandomState(seed + int(rate * 100) + 10 * source + target)
    return np.sort(rng.choice(rows, n, replace=False))
