"""Building blocks shared by several inpainting model families.

Conventions (see DESIGN.md): images are float NHWC in [0, 1]; masks are
(N, H, W, 1) with 1 = hole and 0 = known.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

# Per-channel RGB mean of ImageNet, in [0, 1]. The default hole filling for
# completion networks: close to the mean of Places2 / Paris StreetView photos,
# so a filled hole looks like "average image" rather than black.
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)


class InputShapeError(ValueError):
    """An image or mask given to a model has the wrong shape."""


def fill_holes(image, mask, fill_value):
    """Return `image` with its hole pixels (mask == 1) replaced by `fill_value`.

    Args:
      image: (..., H, W, C) array.
      mask: (..., H, W, 1) array, 1 = hole, 0 = known; broadcast over channels.
      fill_value: a scalar, or one value per channel (length C).
    """
    fill = jnp.asarray(fill_value, dtype=image.dtype)
    if fill.ndim > 1 or (fill.ndim == 1 and fill.shape[0] != image.shape[-1]):
        raise ValueError(
            f"fill_value must be a scalar or have one value per image channel "
            f"({image.shape[-1]}), got shape {fill.shape}."
        )
    return image * (1 - mask) + fill * mask


def composite(image, prediction, mask):
    """Keep the known pixels of `image` and take the holes from `prediction`.

    Computes `image * (1 - mask) + prediction * mask`; `mask` (..., H, W, 1)
    broadcasts over the channel axis. Where mask == 0 the result equals `image`
    exactly (for a finite prediction).
    """
    return image * (1 - mask) + prediction * mask


def check_image_and_mask(image, mask, *, size_multiple: int, model_name: str) -> None:
    """Raise InputShapeError unless image is (N, H, W, 3) and mask (N, H, W, 1).

    H and W must also be multiples of `size_multiple` (the model's total
    down-sampling factor), so that the output has the input's size.
    """
    if image.ndim != 4 or image.shape[-1] != 3:
        raise InputShapeError(
            f"{model_name} expects an RGB image batch of shape (N, H, W, 3), got {image.shape}."
        )
    if mask.shape != (*image.shape[:3], 1):
        raise InputShapeError(
            f"{model_name} expects a mask of shape (N, H, W, 1) = {(*image.shape[:3], 1)} "
            f"matching the image, got {mask.shape}. Masks have a single channel "
            f"(1 = hole, 0 = known) and the image's batch size, height and width."
        )
    height, width = image.shape[1:3]
    if height % size_multiple or width % size_multiple:
        raise InputShapeError(
            f"{model_name} needs a height and width that are multiples of {size_multiple}, "
            f"got {height}x{width}. Pad the image and mask to the next multiple "
            f"(the inference helpers do this) and crop the result."
        )


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One convolution of a plain feed-forward network.

    kind is "conv" or "deconv" (transposed convolution, which up-samples by
    `stride`); `dilation` spaces the kernel taps (atrous convolution).
    """

    kind: str
    kernel: int
    stride: int
    dilation: int
    features: int

    def __post_init__(self):
        if self.kind not in ("conv", "deconv"):
            raise ValueError(f"LayerSpec.kind must be 'conv' or 'deconv', got {self.kind!r}.")


def receptive_field(layers: Sequence[LayerSpec]) -> int:
    """Side length, in input pixels, of the window one output pixel depends on.

    Walks the table backwards from a single output pixel, tracking how many
    consecutive pixels of each layer's input are involved:
      * a convolution maps m outputs to (m - 1) * stride + dilation * (kernel - 1) + 1 inputs;
      * a transposed convolution (stride s, kernel k) is a convolution over its
        input dilated by s, so m consecutive outputs see the input pixels whose
        dilated positions fall in a span of m + k - 1 positions: at most
        ceil((m + k - 1) / s) of them. Whether the bound is reached depends on
        the output pixel's position modulo s (its sub-pixel phase); the value
        returned is the maximum over phases.
    """
    span = 1
    for layer in reversed(layers):
        if layer.kind == "conv":
            span = (span - 1) * layer.stride + layer.dilation * (layer.kernel - 1) + 1
        else:
            span = -(-(span + layer.dilation * (layer.kernel - 1)) // layer.stride)
    return span


def size_multiple(layers: Sequence[LayerSpec]) -> int:
    """Total down-sampling factor of the strided (non-transposed) convolutions."""
    return math.prod(layer.stride for layer in layers if layer.kind == "conv")


def scaled_width(features: int, width_multiplier: float) -> int:
    """`features * width_multiplier`, rounded, and at least 1 channel."""
    return max(1, round(features * width_multiplier))


class ConvNormAct(nn.Module):
    """Convolution (or transposed convolution), then BatchNorm, then activation.

    Padding follows Torch: a convolution pads `dilation * (kernel - 1) // 2`
    pixels on every side, so with an odd kernel it divides H and W by its
    stride, rounding up, and output pixel i is centred on input pixel
    stride * i. A transposed convolution
    multiplies H and W by its stride (for kernel 4, stride 2 this matches
    Torch's ConvTranspose2d with padding=1, kernel flipped). The convolution
    has a bias only when there is no BatchNorm, whose shift makes a bias
    redundant. BatchNorm uses momentum 0.9 (Torch's 0.1) and keeps its
    statistics in the 'batch_stats' collection.
    """

    features: int
    kernel_size: int
    stride: int = 1
    dilation: int = 1
    transpose: bool = False
    normalize: bool = True
    activation: Callable | None = nn.relu
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """Apply the block; `train` selects batch (True) or running statistics."""
        if self.transpose:
            conv_type, padding = nn.ConvTranspose, "SAME"
        else:
            pad = self.dilation * (self.kernel_size - 1) // 2
            conv_type, padding = nn.Conv, ((pad, pad), (pad, pad))
        x = conv_type(
            self.features,
            (self.kernel_size, self.kernel_size),
            strides=(self.stride, self.stride),
            kernel_dilation=(self.dilation, self.dilation),
            padding=padding,
            use_bias=not self.normalize,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv",
        )(x)
        if self.normalize:
            x = nn.BatchNorm(
                use_running_average=not train,
                momentum=0.9,
                epsilon=1e-5,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name="norm",
            )(x)
        if self.activation is not None:
            x = self.activation(x)
        return x
