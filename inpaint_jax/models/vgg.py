"""VGG-16 / VGG-19 convolutional feature extractors.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015: 3x3 convolutions (stride 1, padding 1, with bias)
and ReLUs in five blocks, each block followed by a 2x2 stride-2 pooling.
Only the convolutional part exists here; NPS (texture loss) and the two-stage
method (perceptual and style losses) read intermediate activations ("taps")
named like the papers do: conv3_1, relu3_1, pool3, relu4_2, ...

Images come in as float32 RGB in [0, 1] (the project convention); the module
applies the input normalisation that belongs to its weights
(`InputNormalization`): torchvision's weights expect RGB standardised with
the ImageNet mean and std, Keras' (ported from Caffe) expect BGR on a 0-255
scale minus the Caffe channel means. Reading weight files is
`inpaint_jax.weights.vgg`'s job.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from inpaint_jax.models.layers import InputShapeError, check_rgb_batch

# Output channels of the 3x3 convolutions of each block; every block ends
# with a 2x2 stride-2 pooling.
BLOCK_CHANNELS = {
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    19: ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}
POOL_KINDS = ("max", "avg")


@dataclasses.dataclass(frozen=True)
class InputNormalization:
    """The preprocessing the weights were trained with, applied to [0, 1] RGB images.

    Computes `(image[..., channels] * scale - mean) / std` where `channels`
    is RGB or BGR order; `mean` and `std` are given in that channel order.
    """

    name: str
    channel_order: str
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self):
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}.")

    def apply(self, images):
        """[0, 1] RGB images (..., 3) -> the network's input."""
        if self.channel_order == "BGR":
            images = images[..., ::-1]
        mean = jnp.asarray(self.mean, images.dtype)
        std = jnp.asarray(self.std, images.dtype)
        return (images * self.scale - mean) / std

    def to_json(self) -> dict:
        """Plain-JSON form, as stored in converted files."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping) -> InputNormalization:
        """Inverse of `to_json`."""
        return cls(
            name=data["name"],
            channel_order=data["channel_order"],
            scale=float(data["scale"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
        )


TORCHVISION_NORMALIZATION = InputNormalization(
    name="torchvision",
    channel_order="RGB",
    scale=1.0,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
)
CAFFE_NORMALIZATION = InputNormalization(
    name="caffe",
    channel_order="BGR",
    scale=255.0,
    mean=(103.939, 116.779, 123.68),
    std=(1.0, 1.0, 1.0),
)


@dataclasses.dataclass(frozen=True)
class VGGLayer:
    """One step of the network: kind is "conv", "relu" or "pool".

    `features` is the number of output channels (of the convolution, or of
    the convolution the layer follows).
    """

    kind: str
    name: str
    features: int


def check_depth(depth: int) -> None:
    """Raises ValueError unless `depth` is 16 or 19."""
    if depth not in BLOCK_CHANNELS:
        raise ValueError(f"VGG depth must be one of {sorted(BLOCK_CHANNELS)}, got {depth!r}.")


def vgg_layers(depth: int) -> tuple[VGGLayer, ...]:
    """The network's layers in order: conv1_1, relu1_1, conv1_2, relu1_2, pool1, conv2_1, ...

    The position of a layer in this tuple is its index in torchvision's
    `vgg{depth}().features` Sequential.
    """
    check_depth(depth)
    layers = []
    for block, channels in enumerate(BLOCK_CHANNELS[depth], start=1):
        for index, features in enumerate(channels, start=1):
            layers.append(VGGLayer("conv", f"conv{block}_{index}", features))
            layers.append(VGGLayer("relu", f"relu{block}_{index}", features))
        layers.append(VGGLayer("pool", f"pool{block}", channels[-1]))
    return tuple(layers)


def tap_names(depth: int) -> tuple[str, ...]:
    """Every name `VGG.__call__` accepts as a tap, shallowest first."""
    return tuple(layer.name for layer in vgg_layers(depth))


def relu_tap_names(depth: int) -> tuple[str, ...]:
    """relu1_1 ... relu5_3 (VGG-16) or relu5_4 (VGG-19): the default taps."""
    return tuple(layer.name for layer in vgg_layers(depth) if layer.kind == "relu")


class VGG(nn.Module):
    """VGG-16/19 feature extractor returning the activations named in `taps`.

    Parameters are named after the convolutions: params/conv1_1/kernel
    (3, 3, in, out) and params/conv1_1/bias. Use `weights.vgg.load_vgg` for ImageNet
    weights; the module then carries the weights' `normalization`. `pool`
    chooses max pooling (the original) or average pooling (often preferred
    for texture synthesis). `dtype` is the computation dtype; taps come back
    float32.
    """

    depth: int = 19
    normalization: InputNormalization = TORCHVISION_NORMALIZATION
    pool: str = "max"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, images, taps: Sequence[str] | None = None) -> dict:
        """images (N, H, W, 3) RGB in [0, 1] -> {tap name: (N, h, w, C) float32}.

        `taps` is a layer name or a sequence of them (see `tap_names`),
        returned in the order given; it defaults to every ReLU output.
        Layers deeper than the deepest requested tap are not computed. H and
        W must be at least 2**k for a tap after k poolings.
        """
        if self.pool not in POOL_KINDS:
            raise ValueError(f"VGG pool must be one of {POOL_KINDS}, got {self.pool!r}.")
        taps = self._checked_taps(taps)
        deepest = max(tap_names(self.depth).index(name) for name in taps)
        layers = vgg_layers(self.depth)[: deepest + 1]
        self._check_images(images, layers)
        x = self.normalization.apply(images.astype(jnp.float32)).astype(self.dtype)
        outputs = {}
        for layer in layers:
            if layer.kind == "conv":
                x = nn.Conv(
                    layer.features,
                    (3, 3),
                    padding=((1, 1), (1, 1)),
                    dtype=self.dtype,
                    param_dtype=self.param_dtype,
                    name=layer.name,
                )(x)
            elif layer.kind == "relu":
                x = nn.relu(x)
            elif self.pool == "max":
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            else:
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
            if layer.name in taps:
                outputs[layer.name] = x.astype(jnp.float32)
        return {name: outputs[name] for name in taps}

    def _checked_taps(self, taps: Sequence[str] | None) -> tuple[str, ...]:
        valid = tap_names(self.depth)
        if taps is None:
            return relu_tap_names(self.depth)
        if isinstance(taps, str):
            taps = (taps,)
        taps = tuple(taps)
        unknown = [name for name in taps if name not in valid]
        if unknown or not taps:
            raise ValueError(
                f"VGG-{self.depth} taps must be a non-empty sequence of layer names from "
                f"{', '.join(valid)}; got {list(taps)}"
                + (f" ({', '.join(unknown)} unknown)." if unknown else ".")
            )
        return taps

    def _check_images(self, images, layers: Sequence[VGGLayer]) -> None:
        check_rgb_batch(images, "VGG")
        min_size = 2 ** sum(layer.kind == "pool" for layer in layers)
        if min(images.shape[1:3]) < min_size:
            raise InputShapeError(
                f"VGG-{self.depth} needs images of at least {min_size}x{min_size} pixels for "
                f"tap {layers[-1].name}, got {images.shape[1]}x{images.shape[2]}."
            )




@dataclasses.dataclass(frozen=True)
class Features:
    """A VGG with its weights; called on (N, H, W, 3) images it returns {tap: features}."""

    module: VGG
    variables: Mapping
    taps: tuple[str, ...]

    def __call__(self, images) -> dict[str, jax.Array]:
        """The `taps` of `images` (RGB in [0, 1])."""
        return self.module.apply(self.variables, images, self.taps)
