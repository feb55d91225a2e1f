"""Building blocks shared by several inpainting model families.

Conventions (see DESIGN.md): images are float NHWC in [0, 1]; masks are
(N, H, W, 1) with 1 = hole and 0 = known.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import dtypes

# Per-channel RGB mean of ImageNet, in [0, 1]. The default hole filling for
# completion networks: close to the mean of Places2 / Paris StreetView photos,
# so a filled hole looks like "average image" rather than black.
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)

# Normalisations ConvNormAct offers: "batch" keeps running statistics in the
# 'batch_stats' collection; "instance" normalises each image and channel over
# its own height and width and has no state.
NORMALIZATIONS = ("batch", "instance")


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


def check_rgb_batch(images, model_name: str, expected: str = "(N, H, W, 3)") -> None:
    """Raise InputShapeError unless `images` is a 4-d batch of RGB images (shape `expected`)."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InputShapeError(
            f"{model_name} expects an RGB image batch of shape {expected}, got {images.shape}."
        )


def check_image_and_mask(image, mask, *, size_multiple: int, model_name: str) -> None:
    """Raise InputShapeError unless image is (N, H, W, 3) and mask (N, H, W, 1).

    H and W must also be multiples of `size_multiple` (the model's total
    down-sampling factor), so that the output has the input's size.
    """
    check_rgb_batch(image, model_name)
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

    kind is "conv", "deconv" (transposed convolution, which up-samples by
    `stride`) or "resize_conv" (bilinear up-sampling by `stride`, then a
    stride-1 convolution: an "interpolated convolution"); `dilation` spaces
    the kernel taps (atrous convolution).
    """

    kind: str
    kernel: int
    stride: int
    dilation: int
    features: int

    def __post_init__(self):
        if self.kind not in ("conv", "deconv", "resize_conv"):
            raise ValueError(
                f"LayerSpec.kind must be 'conv' or 'deconv' or 'resize_conv', got {self.kind!r}."
            )


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
        returned is the maximum over phases;
      * an interpolated convolution first widens the span like a stride-1
        convolution, then bilinear up-sampling by s (half-pixel centres) reads,
        for m consecutive outputs, input positions spread over (m - 1) / s
        pixels plus the two neighbours of each: at most ceil((m - 1) / s) + 2
        pixels, again reached only at some phases.
    """
    span = 1
    for layer in reversed(layers):
        if layer.kind == "conv":
            span = (span - 1) * layer.stride + layer.dilation * (layer.kernel - 1) + 1
        elif layer.kind == "deconv":
            span = -(-(span + layer.dilation * (layer.kernel - 1)) // layer.stride)
        else:
            span += layer.dilation * (layer.kernel - 1)
            span = -(-(span - 1) // layer.stride) + 2
    return span


def size_multiple(layers: Sequence[LayerSpec]) -> int:
    """Total down-sampling factor of the strided (non-transposed) convolutions."""
    return math.prod(layer.stride for layer in layers if layer.kind == "conv")


def bilinear_upsample(x, factor: int):
    """Enlarge (N, H, W, C) to (N, factor * H, factor * W, C) by bilinear interpolation.

    Pixel centres are aligned as in Torch's `interpolate(..., mode="bilinear",
    align_corners=False)`: output pixel i samples input position
    (i + 0.5) / factor - 0.5, clamped to the image at the borders.
    """
    batch, height, width, channels = x.shape
    return jax.image.resize(
        x, (batch, factor * height, factor * width, channels), method="bilinear"
    )


def scaled_width(features: int, width_multiplier: float) -> int:
    """`features * width_multiplier`, rounded, and at least 1 channel."""
    return max(1, round(features * width_multiplier))


def _transposed_same_phase(kernel_size: int, stride: int, phase: int) -> tuple[int, int, int]:
    """(first kernel tap, padding before, padding after) of one sub-pixel phase, along one axis.

    nn.ConvTranspose with padding "SAME" (lax.conv_transpose) is a stride-1
    correlation of the input dilated by `stride` and padded by
    pad = ceil((kernel_size + stride - 2) / 2) before (kernel_size - 1 when
    stride > kernel_size - 1): output o = stride * q + phase sums
    x[(o + t - pad) / stride] * k[t] over the taps t that make the index whole,
    t = first, first + stride, ... with first = (pad - phase) mod stride. That
    is a stride-1 correlation of the undilated input with k[first::stride],
    shifted so that output q starts at input q - (pad - phase - first) / stride.
    """
    total = kernel_size + stride - 2
    pad = kernel_size - 1 if stride > kernel_size - 1 else -(-total // 2)
    first = (pad - phase) % stride
    taps = -(-(kernel_size - first) // stride)
    before = (pad - phase - first) // stride
    return first, before, taps - 1 - before


class SubpixelConvTranspose(nn.Module):
    """nn.ConvTranspose(padding="SAME") computed as stride**2 stride-1 convolutions.

    Output pixel (stride * i + a, stride * j + b) depends only on the kernel
    taps k[a'::stride, b'::stride] of its phase (a, b); each phase is one
    ordinary convolution of the input, and the phases are interleaved
    (depth-to-space) into the (N, stride * H, stride * W, features) result.
    The output and every gradient equal nn.ConvTranspose's up to float
    rounding, and the parameters are the same ("kernel" (k, k, in, features),
    "bias" (features,), same initialisers), so either module loads the
    other's weights. Why: XLA:CPU lowers the dilated convolution of
    nn.ConvTranspose, and above all its kernel gradient, to a slow generic
    loop (7-8 s for one GLCIC up-sampling layer's gradient at 256 px, batch
    2, against 0.35 s this way). Needs kernel_size >= stride, so that every
    phase has at least one tap.
    """

    features: int
    kernel_size: int
    stride: int
    use_bias: bool = True
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        """x (N, H, W, C) -> (N, stride * H, stride * W, features)."""
        size, stride = self.kernel_size, self.stride
        if stride < 1 or size < stride:
            raise ValueError(
                f"SubpixelConvTranspose needs 1 <= stride <= kernel_size, got kernel_size={size}, "
                f"stride={stride}: with a kernel smaller than the stride some output pixels "
                f"would see no kernel tap."
            )
        if x.ndim != 4:
            raise ValueError(
                f"SubpixelConvTranspose expects an (N, H, W, C) input, got shape {x.shape}."
            )
        kernel = self.param(
            "kernel",
            nn.initializers.lecun_normal(),
            (size, size, x.shape[-1], self.features),
            self.param_dtype,
        )
        bias = (
            self.param("bias", nn.initializers.zeros_init(), (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        x, kernel, bias = dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        phases = [_transposed_same_phase(size, stride, phase) for phase in range(stride)]
        rows = []
        for first_h, *pad_h in phases:
            row = [
                jax.lax.conv_general_dilated(
                    x,
                    kernel[first_h::stride, first_w::stride],
                    window_strides=(1, 1),
                    padding=(tuple(pad_h), tuple(pad_w)),
                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                )
                for first_w, *pad_w in phases
            ]
            rows.append(jnp.stack(row, axis=3))  # (N, H, W, phase_w, C)
        y = jnp.stack(rows, axis=2)  # (N, H, phase_h, W, phase_w, C)
        batch, height, _, width, _, channels = y.shape
        y = y.reshape(batch, height * stride, width * stride, channels)
        if bias is not None:
            y = y + bias
        return y


class ConvNormAct(nn.Module):
    """Convolution (or transposed convolution), then normalisation, then activation.

    Padding follows Torch: a convolution pads `dilation * (kernel - 1) // 2`
    pixels on every side, so with an odd kernel it divides H and W by its
    stride, rounding up, and output pixel i is centred on input pixel
    stride * i. A transposed convolution (`SubpixelConvTranspose`, i.e.
    nn.ConvTranspose "SAME"; kernel >= stride, no dilation) multiplies H and
    W by its stride (for kernel 4, stride 2 this matches Torch's
    ConvTranspose2d with padding=1, kernel flipped). The convolution
    has a bias only when `normalize` is False: the normalisation's shift makes
    a bias redundant. `normalization` is "batch" (BatchNorm, momentum 0.9 --
    Torch's 0.1 --, statistics in the 'batch_stats' collection) or "instance"
    (InstanceNorm with a learned scale and shift, no state; `train` has no
    effect on it).
    """

    features: int
    kernel_size: int
    stride: int = 1
    dilation: int = 1
    transpose: bool = False
    normalize: bool = True
    normalization: str = "batch"
    activation: Callable | None = nn.relu
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """Apply the block; `train` selects batch (True) or running statistics."""
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"ConvNormAct.normalization must be one of {NORMALIZATIONS}, "
                f"got {self.normalization!r}."
            )
        if self.transpose and self.dilation != 1:
            raise ValueError(
                f"ConvNormAct: a transposed convolution cannot be dilated, got "
                f"dilation={self.dilation}."
            )
        if self.transpose:
            x = SubpixelConvTranspose(
                self.features,
                self.kernel_size,
                self.stride,
                use_bias=not self.normalize,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name="conv",
            )(x)
        else:
            pad = self.dilation * (self.kernel_size - 1) // 2
            x = nn.Conv(
                self.features,
                (self.kernel_size, self.kernel_size),
                strides=(self.stride, self.stride),
                kernel_dilation=(self.dilation, self.dilation),
                padding=((pad, pad), (pad, pad)),
                use_bias=not self.normalize,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name="conv",
            )(x)
        if self.normalize and self.normalization == "instance":
            x = nn.InstanceNorm(
                epsilon=1e-5, dtype=self.dtype, param_dtype=self.param_dtype, name="norm"
            )(x)
        elif self.normalize:
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


class ResidualBlock(nn.Module):
    """y = x + F(x) with F = conv-norm-ReLU-conv-norm (no activation after the sum).

    Both convolutions are `kernel_size` x `kernel_size`, stride 1, keep the
    input's channel count and height and width; `dilations` gives the
    dilation of the first and of the second. With `normalize` False the
    convolutions have biases instead of a normalisation.
    """

    dilations: tuple[int, int] = (1, 1)
    kernel_size: int = 3
    normalize: bool = True
    normalization: str = "batch"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x (N, H, W, C) -> (N, H, W, C)."""
        settings = {
            "normalize": self.normalize,
            "normalization": self.normalization,
            "dtype": self.dtype,
            "param_dtype": self.param_dtype,
        }
        first, second = self.dilations
        features = x.shape[-1]
        residual = ConvNormAct(
            features, self.kernel_size, dilation=first, name="conv1", **settings
        )(x, train=train)
        residual = ConvNormAct(
            features, self.kernel_size, dilation=second, activation=None, name="conv2", **settings
        )(residual, train=train)
        return x + residual
