"""Inpainting images of any size with a trained or imported model.

    model = inference.load_model("/tmp/glcic")           # a workdir
    result = inference.inpaint(model, image, mask)       # numpy in, numpy out

Images are float32 (H, W, 3) RGB in [0, 1] and masks float32 (H, W, 1) with
1 = hole, as `image_io` reads them (it also turns grey and RGBA files into RGB
and can take a mask from an image's alpha channel).

How an image of any size goes through a network that needs sides divisible by
its down-sampling factor:

* Both sides are padded up to a *bucket* size (`padded_shape`): a multiple of
  the network's size multiple and of 1/16 of the next power of two. A side
  grows by less than 1/8 (plus the size multiple), and there are at most 8
  bucket sizes per octave, so a folder of photos of many sizes compiles the
  network once per bucket, not once per image. Image and mask are padded by
  mirror reflection (holes are mirrored too, so the padding never shows the
  network the colours under a hole), and the prediction is cropped back.
* One `jax.jit` function per loaded model serves every bucket;
  `InpaintingModel.compiled_shapes` lists the padded shapes it was traced for.
* The result is composited in numpy on the caller's unpadded array, so known
  pixels come back bit-exact: an image read from an 8-bit file and written
  back has the same bytes outside the holes.
* With `max_size`, larger images are run at a reduced size and only the
  prediction is scaled back up; see `inpaint`.

Loading reads only the generator a checkpoint holds beside the training
state and its model config (`checkpointing`), and builds the network with
`models.build`: no optimizer, no trainer, no data pipeline.

Fixed-size generators (an `input_size` attribute: the Context Encoder and the
NPS content network take 128x128 images and predict their 64x64 centre) see a
square window around the bounding box of all holes instead, as in training:
the box fills at most the window's central half, the window is mirror-padded
where it leaves the image and scaled to the input size (area averaging; a
scaled mask pixel is a hole if it overlaps a hole at all), and the predicted
central half is scaled back (bicubic, clipped) over the window's central half
(`windows.py`). Any image size and any holes: one compiled network.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

import cv2
import jax
import ml_collections
import numpy as np

from inpaint_jax import checkpointing, image_io, models, windows
from inpaint_jax import postprocess as postprocessing
from inpaint_jax.models import layers

logger = logging.getLogger(__name__)

# Holes covering more than this fraction of the image suggest an inverted mask.
INVERTED_MASK_FRACTION = 0.5


class ModelLoadError(ValueError):
    """A checkpoint that cannot be loaded as an inpainting model."""


class InvalidImageError(ValueError):
    """An image array that is not float RGB (H, W, 3) in [0, 1]."""


def padded_shape(height: int, width: int, size_multiple: int) -> tuple[int, int]:
    """The bucket (height, width) an image is padded to before the network sees it.

    Each side n becomes the next multiple of both `size_multiple` and
    2 ** (ceil(log2(n)) - 4): at most 8 sizes per octave, less than n / 8 + size_multiple
    pixels added.
    """
    return _bucket(height, size_multiple), _bucket(width, size_multiple)


def _bucket(size: int, size_multiple: int) -> int:
    """One side of `padded_shape`."""
    # For 2**(k-1) < size <= 2**k, steps of 2**(k-4) give 8 buckets per octave.
    step = math.lcm(size_multiple, 2 ** max(0, (size - 1).bit_length() - 4))
    return -(-size // step) * step


def check_image(image) -> np.ndarray:
    """Returns `image` as float32 (H, W, 3) in [0, 1], or raises InvalidImageError."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3 or array.size == 0:
        raise InvalidImageError(
            f"expected an RGB image of shape (height, width, 3), got shape {array.shape}; "
            "image_io.read_image converts grey and RGBA files to RGB"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise InvalidImageError(
            f"expected a float image with values in [0, 1], got dtype {array.dtype}; "
            "divide 8-bit images by 255"
        )
    if not np.all((array >= 0) & (array <= 1)):
        raise InvalidImageError(
            "image values must lie in [0, 1] (and not be NaN); divide [0, 255] data by 255"
        )
    return array.astype(np.float32, copy=False)


class InpaintingModel:
    """A generator with its variables, callable on one image of any size.

    Attributes:
      name: the model family (`model_config.family`), e.g. "glcic".
      model_config: the model config the generator was built from.
      training_config: the config it was trained with, or None (a model
        imported from released weights).
      step: the training step of the checkpoint (0 for imported models).
      size_multiple: the generator's input sides must be multiples of this
        (handled here by padding); a fixed-size generator's input size.
      input_size: the side of a fixed-size generator's square input, whose
        central half it predicts (the Context Encoder's 128); None for a
        fully convolutional generator.
      variables: the generator's variables (params, batch_stats).
    """

    def __init__(self, model_config: Mapping, generator, variables, *, step: int = 0,
                 training_config: ml_collections.ConfigDict | None = None):
        self.model_config = models.as_model_config(model_config)
        self.name = models.family(self.model_config)
        self.training_config = training_config
        self.step = step
        self.input_size = getattr(generator, "input_size", None)
        if self.input_size is not None and self.input_size % windows.SIDE_MULTIPLE:
            raise ModelLoadError(
                f"the fixed-size {self.name} generator takes {self.input_size}x{self.input_size} "
                f"inputs; inference needs a multiple of {windows.SIDE_MULTIPLE} to place the "
                "holes in its central half"
            )
        self.size_multiple = self.input_size or generator.size_multiple
        self._generator = generator
        self.variables = variables
        self._compiled_shapes: list[tuple[int, int]] = []
        self._predict = jax.jit(self._traced_predict)

    @property
    def compiled_shapes(self) -> tuple[tuple[int, int], ...]:
        """The padded (height, width) shapes the network was compiled for, in order."""
        return tuple(self._compiled_shapes)

    def _traced_predict(self, variables, *inputs):
        self._compiled_shapes.append(tuple(inputs[0].shape[1:3]))  # runs once per trace
        return self._generator.apply(variables, *inputs, train=False)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The raw network prediction (H, W, 3) float32 for every pixel, not composited.

        `image` is float (H, W, 3) in [0, 1], `mask` (H, W, 1) or (H, W) with
        1 = hole, of the same size (validated like `image_io.validate_mask`).
        A fixed-size generator predicts the central half of a window around
        the holes, which holds them all; elsewhere the prediction is `image`.
        """
        image = check_image(image)
        height, width = image.shape[:2]
        mask = image_io.validate_mask(mask, "mask", expected_shape=(height, width))
        if self.input_size is not None:
            return self._predict_window(image, mask)
        return self.predict(image, mask)

    def predict(self, *inputs: np.ndarray) -> np.ndarray:
        """The network's (H, W, 3) float32 output for unbatched (H, W, C) float32 `inputs`.

        The generator's positional inputs (image and mask for completion
        networks, the 20-channel input for the two-stage refinement network),
        all of one height and width, not validated here. They are padded to
        the bucket size by mirror reflection and the output is cropped back.
        """
        height, width = inputs[0].shape[:2]
        target_height, target_width = padded_shape(height, width, self.size_multiple)
        padding = ((0, target_height - height), (0, target_width - width), (0, 0))
        prediction = self._predict(
            self.variables, *(np.pad(x, padding, mode="reflect")[None] for x in inputs)
        )
        prediction = np.asarray(prediction[0, :height, :width], dtype=np.float32)
        if not np.all(np.isfinite(prediction)):
            raise FloatingPointError(
                f"the {self.name} model from step {self.step} predicted NaN or infinite "
                "values; the checkpoint is broken (training diverged?)"
            )
        return prediction

    def _predict_window(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """A fixed-size generator's prediction around the holes, pasted on a copy of `image`."""
        hole = mask[..., 0] > 0
        if not hole.any():
            return image.copy()
        shape = (self.input_size, self.input_size)
        window = windows.hole_window(hole, self.input_size)
        small_hole = windows.resize_hole(windows.crop(hole, window), shape)
        prediction = self.predict(windows.resize_image(windows.crop(image, window), shape),
                                  small_hole[..., None].astype(np.float32))
        # Every real hole pixel is in the central half; scale back only that.
        centre = windows.central_half(window)
        predicted = windows.crop(prediction, windows.central_half(windows.Window(0, 0, shape[0])))
        filled = windows.resize_image(predicted, (centre.side, centre.side),
                                      upsample=cv2.INTER_CUBIC)
        return windows.paste(image, centre, filled)


def load_model(path):
    """Loads a workdir or checkpoint as an (image, mask) -> prediction model.

    For most families this is `load_network(path)`. A two-stage refinement
    network needs its coarse model around it: it comes back as the
    `two_stage.TwoStageModel` of the coarse model it was trained with. Raises
    what `load_network` raises.
    """
    from inpaint_jax import two_stage  # noqa: PLC0415  (two_stage builds on this module)

    network = load_network(path)
    if network.name != two_stage.REFINEMENT_FAMILY:
        return network
    return two_stage.from_refinement(network)


def load_network(path) -> InpaintingModel:
    """Loads the generator of a checkpoint for inference on the first local device.

    `path` is a workdir (its newest checkpoint is used), its ``checkpoints``
    directory, or one checkpoint step directory (``<workdir>/checkpoints/<step>``),
    of a training run or of imported weights. The checkpoint is opened
    read-only, so this is safe while training still writes to it.

    Raises:
      FileNotFoundError: `path` does not exist or holds no checkpoint; a
        `checkpointing.NoGeneratorError` (naming the conversion command) for
        checkpoints written before they held the generator alone.
      ModelLoadError: the model config cannot be built, or the saved
        variables do not fit the network it describes.
    """
    directory, step = _checkpoint_location(Path(path).expanduser())
    with checkpointing.Checkpointer(directory, read_only=True) as checkpointer:
        step = checkpointer.latest_step() if step is None else step
        if step is None:
            raise checkpointing.CheckpointNotFoundError(
                f"{path} holds no complete checkpoint; pass a training workdir, its "
                "checkpoints directory or one of its step directories"
            )
        where = f"the checkpoint for step {step} in {directory}"
        model_config = _read_json(checkpointer.read_model_config, step, where, "model config")
        training_config = _read_json(checkpointer.read_config, step, where, "config")
        generator, variables = _restore_generator(checkpointer, step, model_config, where)
    logger.info("Loaded the %s model of step %d from %s.", model_config.family, step, directory)
    return InpaintingModel(model_config, generator, variables, step=step,
                           training_config=training_config)


def _read_json(read, step: int, where: str, what: str) -> ml_collections.ConfigDict | None:
    """`read(step)` (a dict or None) as a ConfigDict; a damaged file is a ModelLoadError."""
    try:
        value = read(step)
        return None if value is None else ml_collections.ConfigDict(value)
    except (TypeError, ValueError) as error:
        raise ModelLoadError(
            f"cannot read the {what} saved with {where} ({type(error).__name__}: {error}); "
            "its JSON file is damaged"
        ) from error


def _restore_generator(checkpointer: checkpointing.Checkpointer, step: int,
                       model_config: ml_collections.ConfigDict, where: str):
    """(generator module, its variables on the first local device) of checkpoint `step`."""
    try:
        generator = models.build(model_config).generator
        multiple = getattr(generator, "size_multiple", 1)
        inputs = models.example_inputs(model_config, -(-_TEMPLATE_SIDE // multiple) * multiple)
        shapes = jax.eval_shape(lambda: generator.init(jax.random.key(0), *inputs.generator,
                                                       train=False))
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise ModelLoadError(
            f"cannot build the model that {where} describes: {type(error).__name__}: {error}. "
            "Its model_config/model_config.json may be from another version of inpaint_jax "
            "or edited by hand."
        ) from error
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    template = {
        "params": shapes["params"],
        "batch_stats": shapes.get("batch_stats", {}),
    }
    template = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                              sharding=sharding), template)
    try:
        variables = checkpointer.restore_generator(template, step)
    except checkpointing.CheckpointMismatchError as error:
        raise ModelLoadError(
            f"the generator saved in {where} does not fit the {model_config.family} model its "
            f"model config describes; the checkpoint is damaged or was written by other "
            f"code.\n{error}"
        ) from error
    return generator, variables


# About the side of the image traced (abstractly) to learn the shapes of a
# generator's variables, which do not depend on it; rounded up to the
# generator's size multiple.
_TEMPLATE_SIDE = 256


def _checkpoint_location(path: Path) -> tuple[Path, int | None]:
    """(checkpoints directory, step or None for the newest) for a user-given path."""
    if not path.exists():
        raise FileNotFoundError(
            f"no such workdir or checkpoint: {path}; pass a training workdir, its "
            "checkpoints directory or one of its step directories"
        )
    if (path / "checkpoints").is_dir():
        return path / "checkpoints", None
    if path.name.isdigit() and any((path / item).is_dir() for item in ("state", "generator")):
        return path.parent, int(path.name)
    return path, None


def inpaint(model, image: np.ndarray, mask: np.ndarray, *, postprocess: bool = False,
            max_size: int | None = None) -> np.ndarray:
    """Fills the holes of `image`; returns float32 (H, W, 3) with known pixels unchanged.

    Args:
      model: an `InpaintingModel`, or any callable (image, mask) -> raw
        prediction with the same contract.
      image: float (H, W, 3) RGB in [0, 1], any size.
      mask: (H, W, 1) or (H, W), 1 (or True) = hole, any number of holes;
        validated like `image_io.validate_mask`.
      postprocess: blend each filled hole into its surroundings as GLCIC does
        (`postprocess.postprocess`: fast marching, then Poisson blending).
      max_size: if the longer side exceeds this, the network runs on the image
        scaled down (area averaging) so that the longer side is `max_size`, and
        its filled image is scaled back up (bicubic). The scaled-down mask
        marks every pixel that overlaps a hole at all, so no colour from under a
        hole reaches the result. Known pixels still come from `image`.

    A mask without holes returns a copy of `image` (`validate_mask` logs a
    warning); a mask that is all hole raises `image_io.MaskError`, as does a
    mask of another size (naming both sizes). A hole covering more than half of
    the image logs a warning that the mask may be inverted.
    """
    if max_size is not None and max_size < 1:
        raise ValueError(f"max_size must be a positive number of pixels, got {max_size}")
    image = check_image(image)
    height, width = image.shape[:2]
    mask = image_io.validate_mask(mask, "mask", expected_shape=(height, width))
    hole_fraction = float(mask.mean())
    if hole_fraction == 0:
        return image.copy()
    if hole_fraction > INVERTED_MASK_FRACTION:
        logger.warning(
            "the holes cover %.0f%% of the image; if the mask marks the pixels to keep "
            "instead of the ones to fill, invert it (white = hole)", 100 * hole_fraction)
    if max_size is not None and max(height, width) > max_size:
        prediction = _predict_downscaled(model, image, mask, max_size)
    else:
        prediction = model(image, mask)
    completed = layers.composite(image, np.asarray(prediction, np.float32), mask)
    if postprocess:
        completed = postprocessing.postprocess(completed, mask)
    return completed


def _predict_downscaled(model, image: np.ndarray, mask: np.ndarray, max_size: int) -> np.ndarray:
    """The filled image at `image`'s size, computed with the longer side scaled to `max_size`."""
    height, width = image.shape[:2]
    scale = max_size / max(height, width)
    small_shape = (max(1, round(height * scale)), max(1, round(width * scale)))
    small_image = windows.resize_image(image, small_shape)
    small_mask = windows.resize_hole(mask[..., 0] > 0, small_shape)
    if small_mask.all():
        raise image_io.MaskError(
            f"scaled down to {small_shape[0]}x{small_shape[1]} for max_size={max_size}, every "
            "pixel touches a hole; pass a larger max_size, or none"
        )
    small_mask = small_mask.astype(np.float32)[..., None]
    small_completed = layers.composite(small_image, model(small_image, small_mask), small_mask)
    return windows.resize_image(small_completed, (height, width), upsample=cv2.INTER_CUBIC)
