"""DFNet: Hong et al., "Deep Fusion Network for Image Completion", ACM MM 2019.

A U-Net: stride-2 encoder convolutions, then a decoder that at every level
up-samples (nearest neighbour, x2), concatenates the encoder's features of
that level (the skip) and convolves. At several decoder levels a *fusion
block* turns the decoder features into a completed image at that scale:

  raw   = sigmoid(conv1x1(features))                    the network's colours
  alpha = blend([input image at this scale, raw])       in [0, 1], learned
  out   = alpha * raw + (1 - alpha) * input image at this scale

so each scale's output keeps what it can of the input and replaces the rest,
with a smooth transition at the hole's border. Every scale's output is
trained (`DFNet.multiscale`); the full-resolution output is the prediction
(`DFNet.__call__`), composited with the known pixels like any other model's.

Architecture as in the authors' released code (github.com/hughplay/DFNet,
`model.py` and `config.yaml`):
  * encoder: 8 stride-2 convolutions with kernels 7, 5, 5, 3, 3, 3, 3, 3
    (`ENCODER_KERNELS`) and 64, 128, 256, 512, 512, ... channels; the first
    has neither normalisation nor activation, the others BatchNorm + ReLU;
  * decoder level l (l = 7 .. 0; level l has 1/2**l of the input's size):
    nearest x2 up-sampling, concatenation with the encoder's input at that
    level, 3x3 convolution to the skip's channel count, BatchNorm +
    LeakyReLU(0.2). Level 0's skip is the network input, so its features
    have the input's 4 channels;
  * fusion blocks at levels 0-5 (`FUSION_LEVELS`): 1x1 convolution + sigmoid
    to the raw image; the alpha map from the input image at that scale and
    the raw image through 1x1 (32 channels), 3x3 and 1x1 convolutions, the
    first two with BatchNorm + LeakyReLU(0.2), the last with a sigmoid; 3
    alpha channels (one per colour, `ALPHA_CHANNELS`).

Design choices of this implementation:
  * The input is the project's: the image with its holes filled by
    `fill_value` (the released code fills them with 0), concatenated with
    the mask (1 = hole). The fusion blocks blend with this filled image.
  * Inputs at the lower scales are bilinear down-scalings with
    anti-aliasing (`downscale`); the released code resizes without it. The
    trainer scales the targets the same way.
  * Zero padding as `layers.ConvNormAct` does it (Torch style); the output
    sizes equal the released code's "same" convolutions.
  * `encoder_kernels` sets the depth: H and W must be multiples of
    2 ** len(encoder_kernels) (256 for the paper's network); shorter tables
    make laptop-sized networks for small crops. `width_multiplier` scales
    the hidden channels (not the skip of the input, the RGB or alpha maps).
  * `dtype` is the computation dtype; parameters are created in
    `param_dtype` and every output is float32.

`UNet` is the encoder-decoder without fusion blocks; the two-stage
refinement network (`models/refinement.py`) is built on it.
"""
from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from inpaint_jax.models.layers import (
    IMAGENET_MEAN_RGB,
    ConvNormAct,
    check_image_and_mask,
    fill_holes,
    scaled_width,
)

ENCODER_KERNELS = (7, 5, 5, 3, 3, 3, 3, 3)
BASE_FEATURES = 64  # channels of the first encoder convolution; each next one doubles them ...
MAX_FEATURES = 512  # ... up to this many.
DECODER_KERNEL = 3
FUSION_LEVELS = (0, 1, 2, 3, 4, 5)  # decoder levels with a fusion block (0 = full resolution).
ALPHA_CHANNELS = 3  # one alpha per colour channel (released config); 1 shares one alpha.
BLEND_FEATURES = 32  # channels of the alpha branch's first convolution.
LEAKY_SLOPE = 0.2


class DFNetConfigError(ValueError):
    """A DFNet (or U-Net) was asked for with settings it cannot have."""


def encoder_features(depth: int) -> tuple[int, ...]:
    """Output channels of the `depth` encoder convolutions at width multiplier 1."""
    return tuple(min(BASE_FEATURES * 2**index, MAX_FEATURES) for index in range(depth))


def downscale(images, level: int):
    """(N, H, W, C) -> (N, H / 2**level, W / 2**level, C), bilinear with anti-aliasing.

    Level 0 returns `images` unchanged. DFNet scales its input image to each
    fusion block's level with this, and its trainer scales targets and masks.
    """
    if level == 0:
        return images
    batch, height, width, channels = images.shape
    return jax.image.resize(
        images, (batch, height >> level, width >> level, channels), method="bilinear"
    )


def _upsample_nearest(x):
    """(N, H, W, C) -> (N, 2H, 2W, C), each pixel repeated 2x2."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _leaky_relu(x):
    return nn.leaky_relu(x, negative_slope=LEAKY_SLOPE)


def _check_kernels(owner: str, kernels) -> None:
    if not kernels or not all(
        isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in kernels
    ):
        raise DFNetConfigError(
            f"{owner}.encoder_kernels must be a non-empty sequence of positive kernel sizes, one "
            f"per stride-2 encoder convolution (paper: {ENCODER_KERNELS}); got {kernels!r}."
        )


class UNet(nn.Module):
    """DFNet's encoder-decoder: returns the decoder's features at every level.

    Input (N, H, W, C) with H and W multiples of 2 ** len(encoder_kernels);
    output a tuple, finest level first: entry l has shape
    (N, H / 2**l, W / 2**l, channels of the encoder's input at level l), so
    entry 0 has the input's C channels.
    """

    encoder_kernels: tuple[int, ...] = ENCODER_KERNELS
    width_multiplier: float = 1.0
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        _check_kernels(type(self).__name__, self.encoder_kernels)
        super().__post_init__()

    @nn.compact
    def __call__(self, x, *, train: bool) -> tuple[jax.Array, ...]:
        """x (N, H, W, C) -> decoder features per level, finest first (see the class docstring)."""
        settings = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        depth = len(self.encoder_kernels)
        skips = [x.astype(self.dtype)]
        for index, (kernel, features) in enumerate(
            zip(self.encoder_kernels, encoder_features(depth)), start=1
        ):
            first = index == 1
            x = ConvNormAct(
                scaled_width(features, self.width_multiplier),
                kernel,
                stride=2,
                normalize=not first,
                activation=None if first else nn.relu,
                name=f"encoder{index}",
                **settings,
            )(x, train=train)
            skips.append(x)
        decoded = []
        for level in reversed(range(depth)):
            skip = skips[level]
            x = jnp.concatenate([_upsample_nearest(x), skip], axis=-1)
            x = ConvNormAct(
                skip.shape[-1],
                DECODER_KERNEL,
                activation=_leaky_relu,
                name=f"decoder{level}",
                **settings,
            )(x, train=train)
            decoded.append(x)
        return tuple(reversed(decoded))


def fuse(raw, image, alpha):
    """The fusion block's blend: alpha * raw + (1 - alpha) * image."""
    return alpha * raw + (1 - alpha) * image


@flax.struct.dataclass
class FusionOutput:
    """What one fusion block produces, all float32 (N, h, w, .).

    image: the fused completion (3 channels); raw: the network's colours (3);
    alpha: the blending map in [0, 1] (1 or 3 channels).
    """

    image: jax.Array
    raw: jax.Array
    alpha: jax.Array


class FusionBlock(nn.Module):
    """Decoder features + the input image at their scale -> FusionOutput."""

    alpha_channels: int = ALPHA_CHANNELS
    width_multiplier: float = 1.0
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, features, image, *, train: bool) -> FusionOutput:
        """features (N, h, w, C), image (N, h, w, 3) in [0, 1] -> FusionOutput."""
        settings = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        raw = ConvNormAct(
            3, 1, normalize=False, activation=nn.sigmoid, name="raw", **settings
        )(features, train=train).astype(jnp.float32)
        x = jnp.concatenate([image, raw], axis=-1)
        x = ConvNormAct(
            scaled_width(BLEND_FEATURES, self.width_multiplier),
            1,
            activation=_leaky_relu,
            name="blend1",
            **settings,
        )(x, train=train)
        x = ConvNormAct(
            self.alpha_channels, 3, activation=_leaky_relu, name="blend2", **settings
        )(x, train=train)
        alpha = ConvNormAct(
            self.alpha_channels, 1, normalize=False, activation=nn.sigmoid, name="alpha", **settings
        )(x, train=train).astype(jnp.float32)
        return FusionOutput(image=fuse(raw, image, alpha), raw=raw, alpha=alpha)


@flax.struct.dataclass
class DFNetOutputs:
    """Every fusion block's output, finest first: `levels[i]` is the level of entry i.

    Entry i of `images`, `raws` and `alphas` has 1/2**levels[i] of the input's
    height and width; `images[0]` is the full-resolution prediction.
    """

    images: tuple[jax.Array, ...]
    raws: tuple[jax.Array, ...]
    alphas: tuple[jax.Array, ...]
    levels: tuple[int, ...] = flax.struct.field(pytree_node=False)


class DFNet(nn.Module):
    """Deep Fusion Network; the defaults are the paper's network.

    `__call__` returns the full-resolution prediction (N, H, W, 3) float32 in
    [0, 1] for every pixel; composite it with the known pixels
    (`layers.composite`). `multiscale` returns every fusion block's output,
    for training. H and W must be multiples of `size_multiple`.
    """

    encoder_kernels: tuple[int, ...] = ENCODER_KERNELS
    fusion_levels: tuple[int, ...] = FUSION_LEVELS
    alpha_channels: int = ALPHA_CHANNELS
    fill_value: tuple[float, float, float] = IMAGENET_MEAN_RGB
    width_multiplier: float = 1.0
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        _check_kernels("DFNet", self.encoder_kernels)
        depth = len(self.encoder_kernels)
        levels = tuple(self.fusion_levels)
        if (
            not levels
            or levels[0] != 0
            or list(levels) != sorted(set(levels))
            or levels[-1] >= depth
        ):
            raise DFNetConfigError(
                f"DFNet.fusion_levels must be increasing decoder levels starting with 0 (the "
                f"full-resolution output) and below the depth {depth}; got {self.fusion_levels!r} "
                f"(paper: {FUSION_LEVELS})."
            )
        if self.alpha_channels not in (1, 3):
            raise DFNetConfigError(
                f"DFNet.alpha_channels must be 1 (one alpha for all colours) or 3 (one per "
                f"colour), got {self.alpha_channels!r}."
            )
        super().__post_init__()

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this; pad to it at inference."""
        return 2 ** len(self.encoder_kernels)

    @nn.compact
    def multiscale(self, image, mask, *, train: bool) -> DFNetOutputs:
        """image (N, H, W, 3), mask (N, H, W, 1) -> DFNetOutputs of every fusion level."""
        check_image_and_mask(image, mask, size_multiple=self.size_multiple, model_name="DFNet")
        settings = {
            "width_multiplier": self.width_multiplier,
            "dtype": self.dtype,
            "param_dtype": self.param_dtype,
        }
        filled = fill_holes(image, mask, self.fill_value)
        features = UNet(tuple(self.encoder_kernels), name="unet", **settings)(
            jnp.concatenate([filled, mask], axis=-1), train=train
        )
        outputs = [
            FusionBlock(self.alpha_channels, name=f"fusion{level}", **settings)(
                features[level], downscale(filled, level), train=train
            )
            for level in self.fusion_levels
        ]
        return DFNetOutputs(
            images=tuple(output.image for output in outputs),
            raws=tuple(output.raw for output in outputs),
            alphas=tuple(output.alpha for output in outputs),
            levels=tuple(self.fusion_levels),
        )

    def __call__(self, image, mask, *, train: bool):
        """image (N, H, W, 3), mask (N, H, W, 1) -> (N, H, W, 3) full-resolution prediction."""
        return self.multiscale(image, mask, train=train).images[0]

