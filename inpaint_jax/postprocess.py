"""GLCIC post-processing: fast-marching fill, then Poisson blending, per hole.

Iizuka et al. (SIGGRAPH 2017, Sec. 3.4) hide small colour mismatches between a
filled hole and its surroundings with the fast marching method (Telea 2004)
followed by Poisson image blending (Perez et al. 2003). Their released code,
on the 8-bit completed image, (1) fills the hole of the completion with
OpenCV's `inpaint` (TELEA, radius 1), then (2) calls `seamlessClone` with the
completion as source, that fill as destination and the hole as mask
(NORMAL_CLONE, placed where it came from).

What OpenCV's `seamlessClone` computes: on the bounding box of the mask, the
solution of a Poisson equation whose guidance field is the source's gradient
inside the mask eroded by 3 pixels and the destination's gradient elsewhere,
with the destination's values on the box's border. So the interior of a hole
keeps the network's texture, its 3-pixel rim follows the smooth fast-marching
fill, and its colour level is set by the pixels around it.

`postprocess` does exactly this, with these choices:

* One call per connected hole region (8-connectivity), on a window around
  that region, with a mask of that region only: separate holes are blended
  independently, each against its own surroundings (a single call would
  solve one Poisson problem over the box spanning all holes).
* The fast-marching fill is computed once for the whole image.
* Holes at the image border: all arrays are first padded by 2 pixels of
  mirror reflection (`BORDER_REFLECT_101`; the hole is mirrored too), so the
  box's border on that side lies on mirrored pixels and the hole's edge pixels
  are blended like interior ones. The padding is cropped off afterwards.
* Regions less than 3 pixels high or wide leave the Poisson solver nothing to
  solve (OpenCV rejects them); they keep the fast-marching fill. Because of the
  3-pixel erosion, regions narrower than about 7 pixels come out close to the
  fast-marching fill anyway.
* Only hole pixels are replaced. Every known pixel is returned bit-exact
  (OpenCV also alters known pixels inside an irregular hole's box; those
  values are discarded).
* OpenCV blends 8-bit images, so hole pixels come back as multiples of 1/255.
"""

from __future__ import annotations

import cv2
import numpy as np

from inpaint_jax import image_io

# Neighbourhood radius of the fast-marching fill (GLCIC's code uses 1).
FMM_RADIUS = 1

# Mirror padding around the image; 2 pixels put the Poisson boundary of a hole
# touching the border on mirrored pixels (see the module docstring).
_BORDER = 2

# OpenCV's Poisson solver needs a region box at least this many pixels high and wide.
_MIN_POISSON_SIDE = 3


def postprocess(completed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Blends each filled hole of `completed` into its surroundings, as GLCIC does.

    Args:
      completed: float (H, W, 3) RGB in [0, 1], the composited completion
        (known pixels from the photo, holes from the network).
      mask: (H, W, 1) or (H, W), 1 = hole; validated like `image_io.validate_mask`.

    Returns:
      float32 (H, W, 3): hole pixels blended (quantised to 1/255), known
      pixels exactly those of `completed`. Without holes, a copy of `completed`.
    """
    completed = np.asarray(completed)
    if completed.ndim != 3 or completed.shape[-1] != 3 or not np.issubdtype(
            completed.dtype, np.floating):
        raise ValueError(f"completed must be a float RGB image (H, W, 3) in [0, 1]; got "
                         f"shape {completed.shape} and dtype {completed.dtype}")
    completed = completed.astype(np.float32, copy=False)
    hole = image_io.validate_mask(mask, "mask", expected_shape=completed.shape[:2])[..., 0] > 0
    if not hole.any():
        return completed.copy()
    pixels = np.round(np.clip(completed, 0, 1) * 255).astype(np.uint8)
    hole_pixels = hole.astype(np.uint8)
    filled = cv2.inpaint(pixels, hole_pixels * 255, FMM_RADIUS, cv2.INPAINT_TELEA)
    count, labels, boxes, _ = cv2.connectedComponentsWithStats(hole_pixels, connectivity=8)

    def pad(array):
        return cv2.copyMakeBorder(array, *[_BORDER] * 4, cv2.BORDER_REFLECT_101)

    source, blended, labels = pad(pixels), pad(filled), pad(labels)
    for label in range(1, count):
        left, top, width, height = boxes[label, :4]
        if min(width, height) < _MIN_POISSON_SIDE:
            continue
        # The region's box grown by _BORDER on each side, in padded coordinates.
        window = (slice(top, top + height + 2 * _BORDER), slice(left, left + width + 2 * _BORDER))
        region = labels[window] == label
        blended[window] = np.where(
            region[..., None], _blend_region(source[window], blended[window], region),
            blended[window])
    blended = blended[_BORDER:-_BORDER, _BORDER:-_BORDER]
    return np.where(hole[..., None], blended.astype(np.float32) / 255, completed)


def _blend_region(source: np.ndarray, destination: np.ndarray, region: np.ndarray) -> np.ndarray:
    """`seamlessClone` of `source` into `destination` over `region`, placed where it came from."""
    region_mask = region.astype(np.uint8) * 255
    # OpenCV clears the mask's outermost pixels and centres the clone on the box of
    # the rest; doing the same here places the clone exactly where it came from.
    region_mask[[0, -1], :] = 0
    region_mask[:, [0, -1]] = 0
    left, top, width, height = cv2.boundingRect(region_mask)
    centre = (left + width // 2, top + height // 2)
    return cv2.seamlessClone(source, destination, region_mask, centre, cv2.NORMAL_CLONE)
