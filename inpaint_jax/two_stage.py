"""Two-stage high-resolution inpainting (Moskalenko, Erofeev & Vatolin, 2021): the pipeline.

    model = two_stage.load_two_stage("/tmp/refine", coarse="/tmp/dfnet")
    result = inference.inpaint(model, image, mask)        # any size, known pixels bit-exact

A model trained at low resolution (GLCIC, PGGAN, DFNet, ...) restores the
structure of a hole; a refinement network restores its texture at the
photo's full resolution. For an image of any size:

1. Coarse stage (`coarse_complete`): image and mask are scaled down so that
   the longer side is `coarse_size` (512 by default; aspect ratio kept; the
   coarse model pads the result to its own stride by mirror reflection), a
   scaled-down pixel is a hole if it overlaps a hole at all, the coarse
   model fills the holes, the completion is scaled back up (bicubic) and the
   known pixels are replaced by the full-resolution original: the *merged*
   image. Images no larger than `coarse_size` are completed at their own
   size. This is also the "coarse model alone (upsampled)" result that
   evaluation compares against.
2. Shifted copies (`shift_offsets`, `refinement_input`): the merged image is
   shifted left, right, up and down by `shift_fraction` (20%) of the image's
   width (left, right) or height (up, down). Each copy has a mask: the main
   mask shifted with it, where pixels that shifted in from outside the frame
   are holes too (1) and their colour is 0. With the merged image and main
   mask they form the 20-channel input in `refinement.INPUT_LAYOUT` order.
   The authors' released script shifts by 100/512 of the image height in
   both directions (19.5%); here each axis uses its own side.
3. Refinement: the network sees the 20-channel input at full resolution
   (mirror-padded to its stride, 256 for the paper-sized U-Net) and predicts
   every pixel; `inference.inpaint` keeps the known pixels from the photo.

Training cuts patches out of the 20-channel tensor of whole images
(`refinement_input` with a `box`, where the hole covers 10-90% of the patch:
`sample_patch_box`); see `inpaint_jax.trainers.two_stage`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import cv2
import numpy as np

from inpaint_jax import image_io, inference
from inpaint_jax.models import refinement

logger = logging.getLogger(__name__)

DIRECTIONS = ("left", "right", "up", "down")  # order of the shifted copies in INPUT_LAYOUT
DEFAULT_COARSE_SIZE = 512  # the coarse model's working size (DFNet's training size)
DEFAULT_SHIFT_FRACTION = 0.2  # shift of the copies, as a fraction of the image side (paper)
DEFAULT_HOLE_RANGE = (0.1, 0.9)  # hole fraction of a training patch (paper: 10-90%)
OUTSIDE_COLOUR = 0.0  # colour of the pixels a shifted copy takes from outside the frame
REFINEMENT_FAMILY = "refinement"  # the model family of refinement networks

Box = tuple[int, int, int, int]  # top, left, height, width


class TwoStageError(ValueError):
    """Settings or inputs the two-stage pipeline cannot use."""


def check_shift_fraction(fraction: float) -> float:
    """Returns `fraction` if 0 < fraction < 1, else raises TwoStageError."""
    if not 0 < fraction < 1:
        raise TwoStageError(
            f"shift_fraction must lie strictly between 0 and 1 (a fraction of the image side; "
            f"the paper uses {DEFAULT_SHIFT_FRACTION}), got {fraction!r}."
        )
    return float(fraction)


def check_coarse_size(size: int) -> int:
    """Returns `size` if it is a positive number of pixels, else raises TwoStageError."""
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise TwoStageError(f"the coarse size must be a positive number of pixels (the paper: "
                            f"{DEFAULT_COARSE_SIZE}), got {size!r}.")
    return int(size)


def shift_offsets(height: int, width: int, fraction: float) -> dict[str, tuple[int, int]]:
    """{direction: (dy, dx)}: pixel (y, x) of that shifted copy shows image pixel (y + dy, x + dx).

    "left" moves the content left by round(fraction * width) pixels (at
    least 1), "right" right by as many, "up" and "down" by round(fraction *
    height).
    """
    fraction = check_shift_fraction(fraction)
    dy, dx = max(1, round(fraction * height)), max(1, round(fraction * width))
    return {"left": (0, dx), "right": (0, -dx), "up": (dy, 0), "down": (-dy, 0)}


def _window(array: np.ndarray, top: int, left: int, height: int, width: int,
            fill: float) -> np.ndarray:
    """array[top:top + height, left:left + width], with `fill` where that leaves the array."""
    out = np.full((height, width, array.shape[2]), fill, np.float32)
    rows = slice(max(top, 0), min(top + height, array.shape[0]))
    cols = slice(max(left, 0), min(left + width, array.shape[1]))
    if rows.start < rows.stop and cols.start < cols.stop:
        out[rows.start - top:rows.stop - top, cols.start - left:cols.stop - left] = array[rows, cols]
    return out


def refinement_input(merged: np.ndarray, mask: np.ndarray, offsets: dict[str, tuple[int, int]],
                     box: Box | None = None) -> np.ndarray:
    """The refinement network's (h, w, 20) float32 input for `box` of the whole image.

    Args:
      merged: (H, W, 3) the photo's known pixels with the coarse completion in
        the holes.
      mask: (H, W, 1), 1 = hole.
      offsets: `shift_offsets` of the WHOLE image (shifts are a fraction of
        the image, not of the box).
      box: (top, left, height, width) inside the image; None = the whole
        image. The result equals the whole image's input cropped to `box`.
    """
    top, left, height, width = box if box is not None else (0, 0, *merged.shape[:2])
    parts = {
        "image": _window(merged, top, left, height, width, OUTSIDE_COLOUR),
        "mask": _window(mask, top, left, height, width, 1.0),
    }
    for direction in DIRECTIONS:
        dy, dx = offsets[direction]
        parts[f"shift_{direction}"] = _window(merged, top + dy, left + dx, height, width,
                                              OUTSIDE_COLOUR)
        parts[f"mask_{direction}"] = _window(mask, top + dy, left + dx, height, width, 1.0)
    return np.concatenate([parts[name] for name in refinement.INPUT_NAMES], axis=-1)


def hole_fractions(hole: np.ndarray, side: int) -> np.ndarray:
    """(H - side + 1, W - side + 1): the hole fraction of the side x side patch at each top-left."""
    sums = cv2.integral(np.ascontiguousarray(hole, dtype=np.float64))  # (H + 1, W + 1)
    window = sums[side:, side:] - sums[:-side, side:] - sums[side:, :-side] + sums[:-side, :-side]
    return window / (side * side)


def patch_positions(hole: np.ndarray, side: int,
                    hole_range: tuple[float, float] = DEFAULT_HOLE_RANGE) -> np.ndarray:
    """(K, 2) top-left corners of the side x side patches whose hole fraction is in `hole_range`.

    `hole` is (H, W) or (H, W, 1), nonzero = hole. Empty if the image is
    smaller than the patch or no patch qualifies.
    """
    hole = np.asarray(hole).reshape(hole.shape[0], hole.shape[1]) > 0
    if min(hole.shape) < side:
        return np.zeros((0, 2), np.int64)
    low, high = hole_range
    fractions = hole_fractions(hole, side)
    # A small tolerance: the integral image's float sums are exact to ~1e-12.
    return np.argwhere((fractions >= low - 1e-9) & (fractions <= high + 1e-9))


def sample_patch_box(hole: np.ndarray, side: int, rng: np.random.Generator,
                     hole_range: tuple[float, float] = DEFAULT_HOLE_RANGE) -> Box | None:
    """A uniformly drawn side x side box whose hole fraction is in `hole_range`; None if none is."""
    positions = patch_positions(hole, side, hole_range)
    if not len(positions):
        return None
    top, left = positions[rng.integers(len(positions))]
    return int(top), int(left), side, side


def coarse_complete(coarse_model: Callable[[np.ndarray, np.ndarray], np.ndarray],
                    image: np.ndarray, mask: np.ndarray, coarse_size: int) -> np.ndarray:
    """The merged image: the coarse model's completion at `coarse_size`, scaled up, known pixels exact.

    `coarse_model` is any (image, mask) -> prediction callable (an
    `inference.InpaintingModel`); see the module docstring, step 1.
    """
    return inference.inpaint(coarse_model, image, mask, max_size=check_coarse_size(coarse_size))


class TwoStageModel:
    """Coarse model + refinement network; callable (image, mask) -> prediction like InpaintingModel.

    Attributes:
      name: "two_stage".
      coarse: the coarse model.
      refinement: the refinement network (`inference.InpaintingModel` of a
        two_stage training run).
      coarse_size, shift_fraction: see the module docstring.
      model_config, training_config, step: the refinement checkpoint's.
    """

    name = "two_stage"

    def __init__(self, coarse, refinement_model: inference.InpaintingModel, *,
                 coarse_size: int = DEFAULT_COARSE_SIZE,
                 shift_fraction: float = DEFAULT_SHIFT_FRACTION):
        self.coarse = coarse
        self.refinement = refinement_model
        self.coarse_size = check_coarse_size(coarse_size)
        self.shift_fraction = check_shift_fraction(shift_fraction)
        self.model_config = refinement_model.model_config
        self.training_config = refinement_model.training_config
        self.step = refinement_model.step

    def coarse_complete(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Step 1 alone: the coarse model's completion, scaled up and merged (see module docstring)."""
        return coarse_complete(self.coarse, image, mask, self.coarse_size)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The refined prediction (H, W, 3) float32 for every pixel; composite it with the image.

        `image` is float (H, W, 3) RGB in [0, 1] of any size, `mask` (H, W, 1)
        or (H, W) with 1 = hole.
        """
        image = inference.check_image(image)
        height, width = image.shape[:2]
        mask = image_io.validate_mask(mask, "mask", expected_shape=(height, width))
        merged = self.coarse_complete(image, mask)
        inputs = refinement_input(merged, mask, shift_offsets(height, width, self.shift_fraction))
        return self.refinement.predict(inputs)


def from_refinement(refinement_model: inference.InpaintingModel,
                    coarse: str | None = None) -> TwoStageModel:
    """The two-stage model of a loaded refinement network and a coarse model's workdir.

    `coarse` defaults to the coarse workdir the refinement network was
    trained with (its training config's `coarse_workdir`); the coarse size
    and shift fraction are the refinement network's (its model config).
    """
    if refinement_model.name != REFINEMENT_FAMILY:
        raise inference.ModelLoadError(
            f"the refinement model given is a {refinement_model.name} model, not a two-stage "
            "refinement network; pass the workdir of a configs/two_stage.py run"
        )
    trained_with = (refinement_model.training_config or {}).get("coarse_workdir")
    if not (coarse or trained_with):
        raise inference.ModelLoadError(
            "this refinement network does not say which coarse model it was trained with; "
            "pass the coarse model's workdir (--coarse)"
        )
    try:
        coarse_model = inference.load_model(coarse or trained_with)
    except FileNotFoundError as error:
        if coarse:
            raise
        raise FileNotFoundError(
            f"the refinement network was trained with the coarse model in {trained_with}, "
            f"which cannot be loaded ({error}); pass the coarse model's workdir explicitly"
        ) from error
    model = refinement_model.model_config
    logger.info("Two-stage model: the %s model of step %d at %d px, refinement of step %d.",
                coarse_model.name, coarse_model.step, model.coarse_size, refinement_model.step)
    return TwoStageModel(coarse_model, refinement_model, coarse_size=model.coarse_size,
                         shift_fraction=model.shift_fraction)


def load_two_stage(refine: str, coarse: str | None = None) -> TwoStageModel:
    """The two-stage model of a refinement workdir (or checkpoint) and a coarse one (`from_refinement`)."""
    return from_refinement(inference.load_network(refine), coarse)
