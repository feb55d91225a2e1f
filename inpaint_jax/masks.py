"""Hole-mask generators for training and evaluation (numpy only).

Every generator is a picklable callable ``mask_fn(rng, height, width)`` that
returns a :class:`MaskSample`: a float32 ``(H, W, 1)`` mask (1 = hole, 0 =
known) and the square window the GLCIC local discriminator looks at. All
randomness comes from the ``np.random.Generator`` passed in; build it with
:func:`mask_rng` so that ``(seed, process_index, example_index)`` gives
independent, reproducible streams.

Kinds (see the class of each for its parameters):

- ``glcic``      :class:`GlcicHoles`, one rectangle (Iizuka et al. 2017).
- ``center``     :class:`CenterHole`, the centred square (Pathak et al. 2016).
- ``ce_random``  :class:`RandomRegions`, smooth random blobs (Pathak et al.).
- ``free_form``  :class:`FreeFormStrokes`, brush strokes (Yu et al. 2019).
- ``mixed``      :class:`MixedHoles`, LaMa-style strokes and boxes
  (Suvorov et al. 2022).

Sizes are given as fractions of the shorter image side (or as pixels at a
reference size that are scaled with it), so one configuration works at any
resolution. Every mask has at least one hole pixel and at least one known
pixel.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import operator
from typing import Callable

import cv2
import numpy as np

MIN_IMAGE_SIDE = 8  # smallest image side any generator accepts, in pixels
_MAX_DRAWS = 100  # attempts to meet a coverage cap before giving up


class MaskConfigError(ValueError):
    """A mask generator was configured or called with impossible arguments."""


@dataclasses.dataclass(frozen=True)
class MaskSample:
    """One generated hole mask and the local-discriminator window around it.

    Attributes:
      mask: float32 (H, W, 1), 1 = hole, 0 = known.
      local_box: int32 (4,): top, left, height, width of a square window that
        lies inside the image.
    """

    mask: np.ndarray
    local_box: np.ndarray


MaskFn = Callable[[np.random.Generator, int, int], MaskSample]


def mask_rng(seed: int, *keys: int) -> np.random.Generator:
    """Returns the generator for ``seed`` and ``keys`` (e.g. process, example).

    Different keys give statistically independent streams. Numpy's
    ``SeedSequence`` pads entropy with zeros, so ``mask_rng(s, k)`` equals
    ``mask_rng(s, k, 0)``: use the same number of keys for one purpose.
    """
    entropy = [_non_negative_int("seed", seed)]
    entropy += [_non_negative_int(f"mask_rng key {i}", key) for i, key in enumerate(keys)]
    return np.random.default_rng(np.random.SeedSequence(entropy))


@dataclasses.dataclass(frozen=True)
class GlcicHoles:
    """GLCIC training holes: one axis-aligned rectangle placed uniformly.

    Its height and width are drawn independently and uniformly (whole
    pixels) between ``hole_min`` and ``hole_max`` times the shorter image
    side. The defaults give sides in [96, 128] px on a 256 px crop, as in the
    paper, and [48, 64] px on a 128 px crop.
    """

    hole_min: float = 96 / 256  # smallest hole side, fraction of the shorter image side
    hole_max: float = 128 / 256  # largest hole side, fraction of the shorter image side

    def __post_init__(self):
        _check_fraction("glcic", "hole_min", self.hole_min)
        _check_fraction("glcic", "hole_max", self.hole_max)
        _check_ordered("glcic", "hole_min", self.hole_min, "hole_max", self.hole_max)

    def draw(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """Returns a bool (height, width) hole map."""
        low, high = _side_range(self.hole_min, self.hole_max, min(height, width))
        hole_height, hole_width = rng.integers(low, high + 1, size=2)
        top = rng.integers(0, height - hole_height + 1)
        left = rng.integers(0, width - hole_width + 1)
        hole = np.zeros((height, width), bool)
        hole[top : top + hole_height, left : left + hole_width] = True
        return hole


@dataclasses.dataclass(frozen=True)
class CenterHole:
    """Context Encoder's centred square hole (64 px in a 128 px image)."""

    hole_size: float = 0.5  # side of the square, fraction of the shorter image side

    def __post_init__(self):
        _check_fraction("center", "hole_size", self.hole_size)

    def draw(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """Returns a bool (height, width) hole map (``rng`` is not used)."""
        side, _ = _side_range(self.hole_size, self.hole_size, min(height, width))
        top, left = (height - side) // 2, (width - side) // 2
        hole = np.zeros((height, width), bool)
        hole[top : top + side, left : left + side] = True
        return hole


@dataclasses.dataclass(frozen=True)
class RandomRegions:
    """Context Encoder's "random region" holes: smooth random blobs.

    The paper pastes rescaled PASCAL VOC segmentation shapes; its released
    code (``train.lua``) instead thresholds bicubically upsampled uniform
    noise (one noise sample every 1/0.06 ~ 16.7 px of a 128 px image) and
    keeps crops whose hole covers 20-30 % of the image. This follows the
    released code, with the noise spacing scaled to the image size. Instead
    of rejecting crops, the coverage is drawn uniformly from
    [min_coverage, max_coverage] and the noise is thresholded at the
    matching quantile, so every draw succeeds.
    """

    min_coverage: float = 0.2  # smallest fraction of the image in the hole
    max_coverage: float = 0.3  # largest fraction of the image in the hole
    blob_size: float = 1 / (0.06 * 128)  # noise sample spacing, fraction of the shorter side

    def __post_init__(self):
        for name in ("min_coverage", "max_coverage", "blob_size"):
            _check_fraction("ce_random", name, getattr(self, name))
        _check_ordered("ce_random", "min_coverage", self.min_coverage, "max_coverage", self.max_coverage)

    def draw(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """Returns a bool (height, width) hole map."""
        spacing = max(self.blob_size * min(height, width), 1.0)
        rows, cols = math.ceil(height / spacing) + 2, math.ceil(width / spacing) + 2
        noise = rng.random((rows, cols), dtype=np.float32)
        field = cv2.resize(noise, (round(cols * spacing), round(rows * spacing)), interpolation=cv2.INTER_CUBIC)
        top = rng.integers(0, field.shape[0] - height + 1)
        left = rng.integers(0, field.shape[1] - width + 1)
        field = field[top : top + height, left : left + width].ravel()
        count = int(round(rng.uniform(self.min_coverage, self.max_coverage) * field.size))
        count = min(max(count, 1), field.size - 1)
        hole = np.zeros(field.size, bool)
        hole[np.argpartition(field, count - 1)[:count]] = True
        return hole.reshape(height, width)


@dataclasses.dataclass(frozen=True)
class FreeFormStrokes:
    """DeepFill v2 free-form holes: one to three random zig-zag brush strokes.

    Each stroke has 4-11 vertices; segments alternate direction around a
    mean angle of 2*pi/5, their lengths are normal around 1/8 of the image
    diagonal, and the brush is 12-40 px wide at 512 px (scaled with the
    shorter side). The mask is randomly mirrored. Draws whose hole covers
    more than ``max_coverage`` of the image are redrawn.
    """

    max_coverage: float = 0.5  # largest fraction of the image in the hole

    def __post_init__(self):
        _check_fraction("free_form", "max_coverage", self.max_coverage)

    def draw(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """Returns a bool (height, width) hole map."""
        return _draw_capped(rng, height, width, self._draw_once, self.max_coverage, "free_form")

    @staticmethod
    def _draw_once(rng: np.random.Generator, canvas: np.ndarray) -> None:
        height, width = canvas.shape
        scale = min(height, width) / 512
        mean_length = math.hypot(height, width) / 8
        for _ in range(rng.integers(1, 4)):
            spread = rng.uniform(0, 2 * math.pi / 15, size=2)
            angles = rng.uniform(2 * math.pi / 5 - spread[0], 2 * math.pi / 5 + spread[1], size=rng.integers(4, 12))
            angles[::2] = 2 * math.pi - angles[::2]
            lengths = np.clip(rng.normal(mean_length, mean_length / 2, size=angles.size), 0, 2 * mean_length)
            start = rng.uniform((0, 0), (width - 1, height - 1))
            _draw_walk(canvas, start, angles, lengths, _scaled_px(rng.uniform(12, 40), scale))
        if rng.random() < 0.5:
            canvas[:] = canvas[:, ::-1]
        if rng.random() < 0.5:
            canvas[:] = canvas[::-1, :]


@dataclasses.dataclass(frozen=True)
class _StrokeStyle:
    """LaMa irregular-mask settings, in pixels at a 256 px image."""

    min_strokes: int
    max_strokes: int
    max_length: float
    max_width: float


@dataclasses.dataclass(frozen=True)
class _BoxStyle:
    """LaMa box-mask settings, in pixels at a 256 px image."""

    min_boxes: int
    max_boxes: int
    margin: float
    min_side: float
    max_side: float


_THICK_STROKES = _StrokeStyle(min_strokes=1, max_strokes=5, max_length=200, max_width=100)
_MEDIUM_STROKES = _StrokeStyle(min_strokes=4, max_strokes=5, max_length=100, max_width=50)
_BOXES = _BoxStyle(min_boxes=1, max_boxes=3, margin=10, min_side=30, max_side=150)


@dataclasses.dataclass(frozen=True)
class MixedHoles:
    """LaMa-style mixture: each mask is one of four families.

    Families, picked with probabilities proportional to the weights: thick
    strokes (LaMa ``thick_256``: 1-5 strokes, up to 105 px wide), medium
    strokes (``medium_256``: 4-5 strokes, up to 55 px wide), 1-3 boxes with
    sides of 30-150 px, or medium strokes plus boxes. Pixel settings are for a
    256 px image and scale with the shorter side. Masks covering more than
    ``max_coverage`` (LaMa: 0.7) are redrawn.
    """

    thick_weight: float = 0.4  # relative probability of thick strokes
    medium_weight: float = 0.3  # relative probability of medium strokes
    box_weight: float = 0.2  # relative probability of boxes only
    combined_weight: float = 0.1  # relative probability of medium strokes plus boxes
    max_coverage: float = 0.7  # largest fraction of the image in the hole

    def __post_init__(self):
        weights = self._weights()
        for name, weight in zip(("thick_weight", "medium_weight", "box_weight", "combined_weight"), weights):
            if not (isinstance(weight, numbers.Real) and not isinstance(weight, bool) and 0 <= weight < math.inf):
                raise MaskConfigError(f"mixed: {name}={weight!r} must be a finite number >= 0")
        if sum(weights) <= 0:
            raise MaskConfigError("mixed: all family weights are 0; give at least one a positive weight")
        _check_fraction("mixed", "max_coverage", self.max_coverage)

    def _weights(self) -> tuple[float, float, float, float]:
        return (self.thick_weight, self.medium_weight, self.box_weight, self.combined_weight)

    def draw(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """Returns a bool (height, width) hole map."""
        return _draw_capped(rng, height, width, self._draw_once, self.max_coverage, "mixed")

    def _draw_once(self, rng: np.random.Generator, canvas: np.ndarray) -> None:
        weights = np.asarray(self._weights(), float)
        family = rng.choice(weights.size, p=weights / weights.sum())
        if family == 0:
            _draw_lama_strokes(rng, canvas, _THICK_STROKES)
        if family in (1, 3):
            _draw_lama_strokes(rng, canvas, _MEDIUM_STROKES)
        if family in (2, 3):
            _draw_boxes(rng, canvas, _BOXES)


_GENERATORS = {
    "glcic": GlcicHoles,
    "center": CenterHole,
    "ce_random": RandomRegions,
    "free_form": FreeFormStrokes,
    "mixed": MixedHoles,
}
MASK_KINDS = tuple(_GENERATORS)


@dataclasses.dataclass(frozen=True)
class _MaskGenerator:
    """Picklable ``MaskFn``: a hole generator plus the local-window size."""

    holes: GlcicHoles | CenterHole | RandomRegions | FreeFormStrokes | MixedHoles
    local_size: int | None

    def __call__(self, rng: np.random.Generator, height: int, width: int) -> MaskSample:
        """Draws one mask for a ``height`` x ``width`` image."""
        height = _image_side("height", height)
        width = _image_side("width", width)
        side = self._local_side(height, width)
        hole = self.holes.draw(rng, height, width)
        return MaskSample(mask=hole.astype(np.float32)[..., None], local_box=_local_box(rng, hole, side))

    def _local_side(self, height: int, width: int) -> int:
        if self.local_size is None:
            return min(height, width) // 2
        if self.local_size > min(height, width):
            raise MaskConfigError(
                f"local_size={self.local_size} does not fit in a {height}x{width} image; pass "
                f"local_size <= {min(height, width)}, or None for half the shorter side"
            )
        return self.local_size


def make_mask_fn(kind: str, *, local_size: int | None = None, **params) -> MaskFn:
    """Returns a seeded hole generator ``mask_fn(rng, height, width)``.

    Args:
      kind: one of ``MASK_KINDS``.
      local_size: side in pixels of the square local-discriminator window;
        None means half the shorter image side (128 for 256 px crops).
      **params: the parameters of the kind's class (e.g. ``hole_min`` for
        ``glcic``, see :class:`GlcicHoles`); omitted ones take the paper's
        values.

    The window lies inside the image and contains the hole's bounding box
    (placed uniformly among such windows); along an axis where the box is
    longer than the window, the window is centred on the box instead.

    Raises:
      MaskConfigError: unknown kind or parameter, or an impossible value.
    """
    if kind not in _GENERATORS:
        raise MaskConfigError(f"unknown mask kind {kind!r}; valid kinds: {', '.join(MASK_KINDS)}")
    generator_class = _GENERATORS[kind]
    accepted = [field.name for field in dataclasses.fields(generator_class)]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise MaskConfigError(
            f"mask kind {kind!r} has no parameter(s) {', '.join(unknown)}; "
            f"it accepts local_size, {', '.join(accepted)}"
        )
    if local_size is not None:
        local_size = _positive_int("local_size", local_size)
    return _MaskGenerator(holes=generator_class(**params), local_size=local_size)


def _local_box(rng: np.random.Generator, hole: np.ndarray, side: int) -> np.ndarray:
    """Square window of ``side`` px inside the image around the hole's bounding box."""
    rows = np.flatnonzero(hole.any(axis=1))
    cols = np.flatnonzero(hole.any(axis=0))
    top = _window_start(rng, rows[0], rows[-1] + 1, hole.shape[0], side)
    left = _window_start(rng, cols[0], cols[-1] + 1, hole.shape[1], side)
    return np.array([top, left, side, side], np.int32)


def _window_start(rng: np.random.Generator, begin: int, end: int, extent: int, side: int) -> int:
    """Start of a ``side`` window in [0, extent) covering [begin, end), else centred on it."""
    if end - begin <= side:
        return int(rng.integers(max(0, end - side), min(begin, extent - side) + 1))
    return min(max(int(round((begin + end - side) / 2)), 0), extent - side)


def _draw_capped(
    rng: np.random.Generator,
    height: int,
    width: int,
    draw_once: Callable[[np.random.Generator, np.ndarray], None],
    max_coverage: float,
    kind: str,
) -> np.ndarray:
    """Calls ``draw_once(rng, canvas)`` on fresh canvases until coverage <= max_coverage."""
    for _ in range(_MAX_DRAWS):
        canvas = np.zeros((height, width), np.uint8)
        draw_once(rng, canvas)
        if canvas.mean() <= max_coverage:
            return canvas.astype(bool)
    raise MaskConfigError(
        f"{kind}: no mask with coverage <= max_coverage={max_coverage} in {_MAX_DRAWS} draws on a "
        f"{height}x{width} image; raise max_coverage"
    )


def _draw_lama_strokes(rng: np.random.Generator, canvas: np.ndarray, style: _StrokeStyle) -> None:
    """Draws LaMa irregular strokes: chains of 1-5 straight segments of random angle."""
    height, width = canvas.shape
    scale = min(height, width) / 256
    for _ in range(rng.integers(style.min_strokes, style.max_strokes + 1)):
        segments = rng.integers(1, 6)
        angles = rng.uniform(0, 2 * math.pi, size=segments)
        lengths = (10 + rng.uniform(0, style.max_length, size=segments)) * scale
        start = rng.uniform((0, 0), (width - 1, height - 1))
        _draw_walk(canvas, start, angles, lengths, _scaled_px(5 + rng.uniform(0, style.max_width), scale))


def _draw_boxes(rng: np.random.Generator, canvas: np.ndarray, style: _BoxStyle) -> None:
    """Draws LaMa random boxes, kept ``margin`` px away from the border."""
    height, width = canvas.shape
    scale = min(height, width) / 256
    margin = int(style.margin * scale)
    max_side = min(_scaled_px(style.max_side, scale), min(height, width) - 2 * margin)
    min_side = min(_scaled_px(style.min_side, scale), max_side)
    for _ in range(rng.integers(style.min_boxes, style.max_boxes + 1)):
        box_height, box_width = rng.integers(min_side, max_side + 1, size=2)
        top = rng.integers(margin, height - margin - box_height + 1)
        left = rng.integers(margin, width - margin - box_width + 1)
        canvas[top : top + box_height, left : left + box_width] = 1


def _draw_walk(canvas: np.ndarray, start: np.ndarray, angles: np.ndarray, lengths: np.ndarray, brush: int) -> None:
    """Draws a brush stroke from (x, y) ``start`` along steps of ``angles`` and ``lengths``.

    Each vertex is clipped into the canvas before the next step is taken (as
    DeepFill v2 and LaMa do); segments are round-capped ``brush`` px lines.
    """
    height, width = canvas.shape
    point = start
    for angle, length in zip(angles, lengths):
        target = np.clip(point + length * np.array([math.cos(angle), math.sin(angle)]), 0, (width - 1, height - 1))
        cv2.line(canvas, _pixel(point), _pixel(target), 1, brush)
        point = target


def _pixel(point: np.ndarray) -> tuple[int, int]:
    return int(round(point[0])), int(round(point[1]))


def _scaled_px(pixels: float, scale: float) -> int:
    """Rounds ``pixels * scale`` to a whole pixel count of at least 1."""
    return max(1, int(round(pixels * scale)))


def _side_range(low_fraction: float, high_fraction: float, short_side: int) -> tuple[int, int]:
    """Whole-pixel hole sides for fractions of ``short_side``, in [1, short_side - 1]."""
    high = min(_scaled_px(high_fraction, short_side), short_side - 1)
    low = min(_scaled_px(low_fraction, short_side), high)
    return low, high


def _check_fraction(kind: str, name: str, value) -> None:
    if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 < value < 1):
        raise MaskConfigError(
            f"{kind}: {name}={value!r} must be a number strictly between 0 and 1 "
            "(a fraction of the image; 1 would leave no known pixels)"
        )


def _check_ordered(kind: str, low_name: str, low: float, high_name: str, high: float) -> None:
    if low > high:
        raise MaskConfigError(f"{kind}: {low_name}={low} is larger than {high_name}={high}; swap or fix them")


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise MaskConfigError(f"{name}={value!r} must be a positive whole number of pixels")
    return int(value)


def _image_side(name: str, value) -> int:
    value = _positive_int(f"image {name}", value)
    if value < MIN_IMAGE_SIDE:
        raise MaskConfigError(f"image {name}={value} is too small for hole masks; use at least {MIN_IMAGE_SIDE} px")
    return value


def _non_negative_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise MaskConfigError(f"{name}={value!r} must be a non-negative integer")
    return operator.index(value)
