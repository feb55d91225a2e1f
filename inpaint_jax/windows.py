"""Square working windows around an image's holes, and the resizing that goes with them.

Fixed-size networks (the Context Encoder takes 128x128 images and predicts
their 64x64 centre) and neural patch synthesis (`nps.py`) do not see the whole
image but a square window around the bounding box of all its holes, scaled to
a working size:

    window = windows.hole_window(hole, min_size=128)
    small = windows.resize_image(windows.crop(image, window), (128, 128))
    small_hole = windows.resize_hole(windows.crop(hole, window), (128, 128))
    ... fill the holes of `small` ...
    centre = windows.central_half(window)  # where the holes are
    small_centre = windows.crop(small, windows.central_half(windows.Window(0, 0, 128)))
    filled = windows.resize_image(small_centre, (centre.side,) * 2, upsample=cv2.INTER_CUBIC)
    result = windows.paste(image, centre, filled)

The window is centred on the holes' bounding box and at least twice its longer
side, so the box lies in the window's central half -- the region a Context
Encoder predicts -- and it stays there, to the pixel, after `resize_hole` (see
`hole_window`). Where the window leaves the image, `crop` mirrors the image
and the hole map, so the network never sees colours from under a hole. Only
the central half is scaled back: it holds every real hole pixel, while the
rest of the window may hold mirrored holes that a Context Encoder does not
predict (scaling them back too would bleed their fill colour into holes at
the image border).
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

# Window sides are multiples of this, so that the central half starts and ends on whole pixels.
SIDE_MULTIPLE = 4


class Window(NamedTuple):
    """A square region of an image: rows top..top+side, columns left..left+side.

    It may reach outside the image, where `crop` pads by mirror reflection.
    """

    top: int
    left: int
    side: int


def hole_window(hole: np.ndarray, min_size: int) -> Window:
    """The working window for a boolean (H, W) hole map with at least one hole pixel.

    The square is centred on the bounding box of all holes (an odd pixel of
    margin goes below and to the right of the box) and its side is twice the
    box's longer side, at least `min_size`, rounded up to a multiple of 4.
    The box then lies inside the window's central half, rows and columns
    [side / 4, 3 * side / 4); scaled to any size n by `resize_hole`, the holes
    stay within [n / 4, 3 n / 4) (rounded outwards).
    """
    rows, columns = np.flatnonzero(hole.any(axis=1)), np.flatnonzero(hole.any(axis=0))
    if rows.size == 0:
        raise ValueError("hole_window needs a hole map with at least one hole pixel; an image "
                         "without holes needs no inpainting, so check the mask first")
    top, left = int(rows[0]), int(columns[0])
    height, width = int(rows[-1]) + 1 - top, int(columns[-1]) + 1 - left
    side = max(2 * max(height, width), min_size)
    side = -(-side // SIDE_MULTIPLE) * SIDE_MULTIPLE
    # floor((side - extent) / 2) >= side / 4 because extent <= side / 2 and side / 2 is even.
    return Window(top - (side - height) // 2, left - (side - width) // 2, side)


def central_half(window: Window) -> Window:
    """The central half of a window with a side divisible by 4 (`hole_window` puts holes there)."""
    quarter = window.side // 4
    return Window(window.top + quarter, window.left + quarter, 2 * quarter)


def crop(array: np.ndarray, window: Window) -> np.ndarray:
    """The `window` of an (H, W, ...) array, mirror-padded where it leaves the array."""
    height, width = array.shape[:2]
    top, left, side = window
    padding = [(max(0, -top), max(0, top + side - height)),
               (max(0, -left), max(0, left + side - width))]
    padded = np.pad(array, padding + [(0, 0)] * (array.ndim - 2), mode="symmetric")
    top, left = top + padding[0][0], left + padding[1][0]
    return padded[top:top + side, left:left + side]


def paste(array: np.ndarray, window: Window, values: np.ndarray) -> np.ndarray:
    """A copy of `array` with the part of `window` inside it taken from `values`."""
    height, width = array.shape[:2]
    top, left, side = window
    rows = slice(max(0, top), min(height, top + side))
    columns = slice(max(0, left), min(width, left + side))
    result = array.copy()
    result[rows, columns] = values[rows.start - top:rows.stop - top,
                                   columns.start - left:columns.stop - left]
    return result


def resize_image(image: np.ndarray, shape: tuple[int, int], *,
                 upsample: int = cv2.INTER_LINEAR) -> np.ndarray:
    """(H, W, 3) in [0, 1] -> (height, width, 3) in [0, 1].

    Area averaging when neither side grows, else the cv2 interpolation
    `upsample` (bilinear by default; cv2.INTER_CUBIC for the sharper, clipped
    bicubic). An image already of `shape` is returned as it is.
    """
    height, width = shape
    if image.shape[:2] == (height, width):
        return image
    shrink = height <= image.shape[0] and width <= image.shape[1]
    resized = cv2.resize(image, (width, height),
                         interpolation=cv2.INTER_AREA if shrink else upsample)
    return np.clip(resized, 0, 1)


def resize_hole(hole: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean (H, W) -> (height, width): every pixel whose area overlaps a hole pixel at all.

    Output pixel (i, j) covers input rows [i H / height, (i + 1) H / height)
    and the like for columns; it is a hole if any input hole pixel meets that
    rectangle, computed exactly in integers, shrinking or enlarging. So no
    colour from under a hole reaches the known pixels of the result.
    """
    if hole.shape == tuple(shape):
        return hole
    for axis, size in enumerate(shape):
        hole = _overlaps_along(hole, size, axis)
    return hole


def _overlaps_along(hole: np.ndarray, size: int, axis: int) -> np.ndarray:
    """`resize_hole` along one axis (any over a rectangle is any over rows, then columns)."""
    length = hole.shape[axis]
    index = np.arange(size)
    starts, stops = index * length // size, -(-(index + 1) * length // size)
    counts = np.concatenate([np.zeros_like(np.take(hole, [0], axis), dtype=np.int64),
                             np.cumsum(hole, axis=axis, dtype=np.int64)], axis=axis)
    return np.take(counts, stops, axis) > np.take(counts, starts, axis)
