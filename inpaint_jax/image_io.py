"""Reading and writing images and masks, with validation.

Images come back as float32 (H, W, 3) RGB arrays in [0, 1]; masks as float32
(H, W, 1) arrays with 1 = hole (missing) and 0 = known. In mask files white is
a hole and black is known.

Decoding policy, shared by every reader here:

* The whole file is decoded up front, so truncated or corrupt files raise
  `ImageFileError` naming the file, even when some other library (TFDS does)
  has switched Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` on: readers here
  switch it off while they decode and restore it afterwards.
* EXIF orientation is applied, so photos come out the way viewers show them.
* Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) is kept.
  Images above the limit are decoded with a logged warning naming the file;
  images above twice the limit raise `ImageFileError` that says how to raise
  the limit for files you trust.
* Multi-frame files (GIF, multi-page TIFF) give their first frame. Colour
  profiles are not applied. Pillow reads 16-bit RGB PNGs as 8-bit.
* A missing file raises the built-in `FileNotFoundError`, which names the path.
"""

import contextlib
import io
import logging
import os
import struct
import threading
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from inpaint_jax import files

logger = logging.getLogger(__name__)


class ImageFileError(ValueError):
    """An image file that cannot be decoded: truncated, corrupt or not an image."""


class MaskError(ValueError):
    """A mask that cannot be used: wrong size, wrong values, or all hole."""


# Output formats by file extension, and the options they are saved with.
_OUTPUT_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}
_SAVE_OPTIONS = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}

# Pillow modes holding one high-bit-depth grey channel, with the value that means white.
_HIGH_DEPTH_WHITE = {
    "I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1.0
}

# ITU-R BT.601 luma weights, the ones Pillow uses for RGB -> L.
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])

# Mask values within this distance of 0 or 1 count as binary.
_BINARY_TOLERANCE = 1e-6

# Float images to write may overshoot [0, 1] by this much and are clipped;
# larger excursions mean a wrong scale ([0, 255] or [-1, 1]) and are refused.
_CLIP_MARGIN = 0.5

# Pillow errors that mean "these bytes are not a decodable image".
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)

_truncation_lock = threading.Lock()
_strict_decoders = 0
_saved_load_truncated = False


@contextlib.contextmanager
def _refuse_truncated_files():
    """Switches Pillow's LOAD_TRUNCATED_IMAGES off while any reader here decodes.

    Reference-counted so that concurrent readers in several threads share one
    switch, and the flag's previous value is restored when the last one ends.
    """
    global _strict_decoders, _saved_load_truncated
    with _truncation_lock:
        if _strict_decoders == 0:
            _saved_load_truncated = ImageFile.LOAD_TRUNCATED_IMAGES
            ImageFile.LOAD_TRUNCATED_IMAGES = False
        _strict_decoders += 1
    try:
        yield
    finally:
        with _truncation_lock:
            _strict_decoders -= 1
            if _strict_decoders == 0:
                ImageFile.LOAD_TRUNCATED_IMAGES = _saved_load_truncated


def _warn_if_huge(image: Image.Image, name: str) -> None:
    """Logs, naming the file, what Pillow's DecompressionBombWarning only hints at."""
    limit = Image.MAX_IMAGE_PIXELS
    pixels = image.width * image.height
    if limit is not None and pixels > limit:
        logger.warning(
            "image %r has %d pixels, more than PIL.Image.MAX_IMAGE_PIXELS = %d; "
            "decoding it anyway (it needs a lot of memory)",
            name, pixels, limit,
        )


def _open_decoded(data: bytes, name: str) -> Image.Image:
    """Fully decodes encoded image bytes into an upright Pillow image."""
    try:
        with _refuse_truncated_files():
            image = Image.open(io.BytesIO(data))
            _warn_if_huge(image, name)
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
    except Image.DecompressionBombError as error:
        raise ImageFileError(
            f"refusing to decode image {name!r}: {error} If you trust this file, "
            "raise PIL.Image.MAX_IMAGE_PIXELS (or set it to None) before reading it."
        ) from error
    except Image.UnidentifiedImageError as error:
        raise ImageFileError(
            f"cannot decode image {name!r}: it is not in any image format Pillow can read"
        ) from error
    except _DECODE_ERRORS as error:
        raise ImageFileError(
            f"cannot decode image {name!r}: file is truncated or corrupt ({error})"
        ) from error
    return image


def _high_depth_gray(image: Image.Image, name: str) -> np.ndarray:
    """Grey values in [0, 1] of a 16-bit integer or float image."""
    white = _HIGH_DEPTH_WHITE[image.mode]
    gray = np.asarray(image, dtype=np.float64) / white
    if not np.all((gray >= 0) & (gray <= 1)):
        raise ImageFileError(
            f"cannot use image {name!r}: its mode {image.mode} pixel values do not all lie "
            f"in [0, {white}], the range read as black to white"
        )
    return gray


def _rgb_array(image: Image.Image, name: str) -> np.ndarray:
    """Float32 (H, W, 3) RGB in [0, 1] of any image; alpha is dropped, not composited."""
    if image.mode in _HIGH_DEPTH_WHITE:
        gray = _high_depth_gray(image, name).astype(np.float32)
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")  # palette transparency would otherwise warn
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255


def _alpha_array(image: Image.Image) -> np.ndarray | None:
    """Opacity in [0, 1] (1 = opaque), or None for images without transparency data."""
    if not image.has_transparency_data:
        return None
    return np.asarray(image.convert("RGBA").getchannel("A"), dtype=np.float64) / 255


def _read_bytes(path) -> tuple[bytes, str]:
    """The contents of a file and the name to report it by."""
    return Path(path).read_bytes(), os.fspath(path)


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decodes encoded image bytes to float32 (H, W, 3) RGB in [0, 1].

    Accepts anything Pillow reads: RGB, grey (8-bit, 1-bit, 16-bit, float),
    palette, CMYK and images with alpha (the alpha channel is dropped: the
    colour of transparent pixels is returned as stored). Grey is replicated to
    three channels. Raises `ImageFileError` mentioning `name` for bytes that
    cannot be decoded.
    """
    return _rgb_array(_open_decoded(data, name), name)


def read_image(path) -> np.ndarray:
    """Reads an image file as float32 (H, W, 3) RGB in [0, 1]; see `decode_image`.

    Raises `FileNotFoundError` if the file does not exist and `ImageFileError`
    if it is truncated, corrupt or not an image.
    """
    data, name = _read_bytes(path)
    return decode_image(data, name)


def validate_mask(
    mask, name: str = "mask", expected_shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Checks an in-memory mask and returns it binary, as float32 (H, W, 1).

    `mask` is a bool or float array of shape (H, W) or (H, W, 1) with values in
    [0, 1], 1 = hole. Values >= 0.5 become holes; if any value is not 0 or 1
    the mask is thresholded and a warning names `name` and the fraction of such
    pixels. Raises `MaskError` for a wrong shape or dtype, values outside
    [0, 1], a size other than `expected_shape` (height, width), or a mask that
    is all hole (nothing to inpaint from). A mask with no hole is allowed: it
    is logged as a no-op, since inpainting then returns the image unchanged.
    """
    values = np.asarray(mask)
    if values.ndim == 3 and values.shape[-1] == 1:
        values = values[..., 0]
    if values.ndim != 2 or values.size == 0:
        raise MaskError(
            f"mask {name!r} has shape {np.shape(mask)}; expected a non-empty "
            "(height, width) or (height, width, 1) array"
        )
    if values.dtype == bool:
        values = values.astype(np.float32)
    elif not np.issubdtype(values.dtype, np.floating):
        raise MaskError(
            f"mask {name!r} has dtype {values.dtype}; pass bool or float values in [0, 1] "
            "(1 = hole), e.g. uint8_mask / 255"
        )
    if expected_shape is not None:
        expected_shape = tuple(expected_shape)
        if len(expected_shape) != 2:
            raise ValueError(f"expected_shape must be (height, width), got {expected_shape}")
        if values.shape != expected_shape:
            (height, width), (image_height, image_width) = values.shape, expected_shape
            raise MaskError(
                f"mask {name!r} is {height}x{width} (height x width) but the image is "
                f"{image_height}x{image_width}; resize the mask to {image_height}x{image_width} "
                "with nearest-neighbour interpolation so that it stays binary"
            )
    if not np.all((values >= 0) & (values <= 1)):
        raise MaskError(
            f"mask {name!r} has values outside [0, 1] (or NaN); holes are 1, known pixels 0"
        )
    non_binary = np.mean((values > _BINARY_TOLERANCE) & (values < 1 - _BINARY_TOLERANCE))
    if non_binary > 0:
        logger.warning(
            "mask %r is not binary: %.2f%% of its pixels are neither black nor white; "
            "thresholded at 0.5 (>= 0.5 is a hole)",
            name, 100 * non_binary,
        )
    hole = values >= 0.5
    if hole.all():
        raise MaskError(
            f"mask {name!r} marks every pixel as a hole, leaving nothing to inpaint from; "
            "holes are white (1) and known pixels black (0): if the mask is inverted, invert it"
        )
    if not hole.any():
        logger.warning("mask %r has no hole pixels; inpainting leaves the image unchanged", name)
    return hole.astype(np.float32)[..., None]


def _reject_ambiguous_alpha(luminance: np.ndarray, alpha: np.ndarray, name: str) -> None:
    """Refuses mask files whose alpha and colour describe opposite holes.

    White strokes painted on a transparent layer would read as "everything but
    the strokes is a hole" under the transparent = hole rule.
    """
    opaque = alpha >= 0.5
    if opaque.any() and np.all(luminance[opaque] >= 0.5):
        raise MaskError(
            f"mask file {name!r} is ambiguous: it has transparent pixels and all its opaque "
            "pixels are white, so 'transparent = hole' and 'white = hole' disagree; save it "
            "without an alpha channel, white where the holes are and black elsewhere"
        )


def read_mask(path, expected_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Reads a mask file as float32 (H, W, 1), 1 = hole; see `validate_mask`.

    Without transparency (grey, RGB, or RGBA that is fully opaque) white is a
    hole: the luminance is thresholded at 0.5. If the file has any transparent
    pixels its alpha channel decides instead: transparent pixels are the holes
    and colour is ignored (the convention of "erase what should be filled").
    A file whose opaque pixels are all white is refused as ambiguous (`MaskError`),
    because it could equally mean white strokes on a transparent layer.
    """
    data, name = _read_bytes(path)
    image = _open_decoded(data, name)
    luminance = _rgb_array(image, name).astype(np.float64) @ _LUMA_WEIGHTS
    alpha = _alpha_array(image)
    if alpha is not None and alpha.min() < 1:
        _reject_ambiguous_alpha(luminance, alpha, name)
        return validate_mask(1 - alpha, name, expected_shape)
    return validate_mask(luminance, name, expected_shape)


def read_alpha_mask(path) -> np.ndarray:
    """Takes a mask from an image's own alpha channel: transparent = hole.

    Returns float32 (H, W, 1), 1 = hole, validated like `validate_mask`
    (partly transparent pixels are thresholded at half opacity). Raises
    `MaskError` if the image has no alpha channel or transparency.
    """
    data, name = _read_bytes(path)
    alpha = _alpha_array(_open_decoded(data, name))
    if alpha is None:
        raise MaskError(
            f"image {name!r} has no alpha channel to take a mask from; make the region to "
            "fill transparent, or give a separate mask file (white = hole)"
        )
    return validate_mask(1 - alpha, name)


def _output_format(path: Path) -> str:
    """The Pillow format name for an output file's extension."""
    suffix = path.suffix.lower()
    if suffix not in _OUTPUT_FORMATS:
        raise ValueError(
            f"cannot write {os.fspath(path)!r}: unsupported extension {suffix!r}; "
            f"use one of {', '.join(sorted(_OUTPUT_FORMATS))}"
        )
    return _OUTPUT_FORMATS[suffix]


def _to_uint8(image) -> np.ndarray:
    """Checks an image to write and converts it to uint8 (H, W) or (H, W, 3)."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3)) or array.size == 0:
        raise ValueError(
            f"cannot write an image of shape {np.shape(image)}; expected a non-empty "
            "(H, W), (H, W, 1) or (H, W, 3) array"
        )
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"cannot write an image of dtype {array.dtype}; pass uint8, or float values in [0, 1]"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError("cannot write an image containing NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low < -_CLIP_MARGIN or high > 1 + _CLIP_MARGIN:
        raise ValueError(
            f"cannot write a float image with values in [{low:g}, {high:g}]: float images must "
            "lie in [0, 1]; divide [0, 255] data by 255, or map [-1, 1] data with (x + 1) / 2"
        )
    return np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)


def _save_atomically(image: Image.Image, path: Path, image_format: str) -> None:
    """Saves to a temporary file beside `path`, then renames it over `path`."""
    with files.atomic_write(path, binary=True) as file:
        image.save(file, format=image_format, **_SAVE_OPTIONS.get(image_format, {}))


def write_image(path, image: np.ndarray) -> None:
    """Writes an image atomically: the file at `path` is either complete or untouched.

    `image` is uint8, or float in [0, 1] (small overshoots are clipped; values
    are rounded to uint8), of shape (H, W), (H, W, 1) or (H, W, 3); one-channel
    arrays are written as greyscale, so a (H, W, 1) mask becomes a mask file
    (white = hole). The format follows the extension: .png, .jpg/.jpeg, .bmp,
    .tif/.tiff or .webp (JPEG and WebP at quality 95). Bad arrays, unknown
    extensions and missing directories raise before anything is written.
    """
    path = Path(path)
    image_format = _output_format(path)
    pixels = _to_uint8(image)
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"cannot write {os.fspath(path)!r}: directory {os.fspath(path.parent)!r} does not exist"
        )
    _save_atomically(Image.fromarray(pixels), path, image_format)
