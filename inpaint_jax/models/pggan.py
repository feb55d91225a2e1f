"""PGGAN: Demir & Unal, "Patch-Based Image Inpainting with Generative Adversarial Networks".

arXiv 1803.07422, 2018.

Generator: a ResNet-style encoder/decoder (after the CycleGAN / Johnson et
al. ResNet generator the paper builds on): a 7x7 convolution, stride-2
3x3 down-samplings that double the channels, residual blocks
y = x + F(x) with F = conv-norm-ReLU-conv-norm, up-samplings that halve the
channels, and a 7x7 convolution to RGB. Two paper presets
(`GENERATOR_PRESETS`):
  * PGGAN-DRes: 2 down-samplings, dilated residual blocks whose dilation
    doubles from 1 (1, 2, 4, 8, ...), the dilated convolution first or second
    inside F (`dilation_position`);
  * PGGAN-Res: 3 down-samplings, plain residual blocks.
Up-sampling is the paper's interpolated convolution (bilinear resize x2,
then a 3x3 convolution); `upsampling="transposed"` swaps in a 3x3 stride-2
transposed convolution with the same parameter shapes, for the ablation.

Discriminator: shared PatchGAN-style 4x4 stride-2 convolutions with
LeakyReLU(0.2), then two heads: the G-GAN head (three more stride-2
convolutions, flatten, FC -> one logit per image) and the PatchGAN head (one
more stride-2 convolution, then a 3x3 convolution -> one logit per 16x16
block of input: a 16x16 map for a 256x256 image). Each patch logit depends on
a `PATCH_RECEPTIVE_FIELD` x `PATCH_RECEPTIVE_FIELD` input window.
`GlobalOnlyDiscriminator` and `PatchOnlyDiscriminator` are the same network
with one head, for the paper's ablation. Every discriminator returns a
`DiscriminatorLogits`, with None for a head it lacks.

Design choices where the paper leaves room (all documented defaults):
  * 9 residual blocks in both presets, as in the CycleGAN ResNet generator
    (`NUM_RESIDUAL_BLOCKS`). With dilation doubling from 1, PGGAN-DRes's
    last blocks have dilations 64, 128, 256: on the 64x64 feature maps of a
    256x256 input their off-centre taps only read zero padding. Set
    `num_blocks` to shorten the schedule. Receptive fields (convolutions
    only): PGGAN-DRes 4193 pixels, PGGAN-Res 349.
  * The dilated convolution comes first in F by default
    (`dilation_position="first"`).
  * Channels double with every down-sampling (64, 128, 256, and 512 for
    PGGAN-Res), so a residual block costs the same FLOPs in both presets
    (a quarter of the pixels, four times the kernel); PGGAN-Res has 45.6M
    parameters, PGGAN-DRes 11.4M.
  * 3x3 stride-2 down-sampling convolutions, as in the CycleGAN generator.
  * Instance normalisation (as in CycleGAN) in generator and discriminator
    by default; `norm="batch"` (state in 'batch_stats') or `"none"`
    (convolution biases instead) are options. Instance norm has no state,
    so with it `init` returns only 'params'. Its statistics span the whole
    image, so every output then depends, weakly, on every input pixel; the
    receptive fields given here count the convolutions only. Instance norm
    of a 1x1 feature map outputs a constant, so with it the networks refuse
    inputs whose smallest feature map would be narrower than 2 pixels
    (generator: 2 * size_multiple; full discriminator: 128).
  * Zero padding everywhere (as in the rest of this library), not reflect
    padding, so each convolution keeps H and W (or divides them by its
    stride) exactly as `layers.ConvNormAct` documents.
  * Images live in [0, 1], so the last layer is a sigmoid; sigmoid(2z) =
    (tanh(z) + 1) / 2, so this is the paper's tanh output rescaled.
  * The PatchGAN head ends in a 3x3 stride-1 convolution (instead of
    pix2pix's 4x4 with padding 1, which shrinks the map by one pixel) so the
    map is exactly H/16 x W/16; its receptive field is 78 pixels, close to
    pix2pix's 70x70 PatchGAN.
  * The G-GAN head's FC layer sees the flattened final feature map, so a
    discriminator with that head must be applied to inputs of the size it
    was initialised with (the paper trains on 256x256 crops).
  * Discriminators return logits; sigmoids live in the losses.
  * `dtype` is the computation dtype (e.g. bfloat16); parameters are created
    in `param_dtype` and every module returns float32. `width_multiplier`
    scales the hidden channels (not the RGB output, not the logits).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from inpaint_jax.models.layers import (
    IMAGENET_MEAN_RGB,
    ConvNormAct,
    InputShapeError,
    LayerSpec,
    ResidualBlock,
    bilinear_upsample,
    check_image_and_mask,
    check_rgb_batch,
    fill_holes,
    receptive_field,
    scaled_width,
    size_multiple,
)

# Channels after the first 7x7 convolution; each down-sampling doubles them.
BASE_FEATURES = 64
NUM_RESIDUAL_BLOCKS = 9
OUTER_KERNEL = 7  # first and last generator convolution
INNER_KERNEL = 3  # down-/up-sampling and residual convolutions

GENERATOR_PRESETS = {
    "PGGAN-DRes": {"num_downsamplings": 2, "dilated": True},
    "PGGAN-Res": {"num_downsamplings": 3, "dilated": False},
}
DILATION_POSITIONS = ("first", "second")
UPSAMPLINGS = ("interpolated", "transposed")
NORMS = ("instance", "batch", "none")

# Discriminator tables. The trunk's first layer has no normalisation (as in
# pix2pix); every layer but the outputs is followed by LeakyReLU(0.2).
TRUNK_LAYERS = (
    LayerSpec("conv", kernel=4, stride=2, dilation=1, features=64),
    LayerSpec("conv", kernel=4, stride=2, dilation=1, features=128),
    LayerSpec("conv", kernel=4, stride=2, dilation=1, features=256),
)
GLOBAL_HEAD_LAYERS = (LayerSpec("conv", kernel=4, stride=2, dilation=1, features=512),) * 3
PATCH_HEAD_LAYERS = (
    LayerSpec("conv", kernel=4, stride=2, dilation=1, features=512),
    LayerSpec("conv", kernel=3, stride=1, dilation=1, features=1),  # the logit map
)
PATCH_STRIDE = size_multiple(TRUNK_LAYERS + PATCH_HEAD_LAYERS)
GLOBAL_STRIDE = size_multiple(TRUNK_LAYERS + GLOBAL_HEAD_LAYERS)
PATCH_RECEPTIVE_FIELD = receptive_field(TRUNK_LAYERS + PATCH_HEAD_LAYERS)
LEAKY_SLOPE = 0.2


class PGGANConfigError(ValueError):
    """A PGGAN network was asked for with settings it does not have."""


def _check_choice(owner: str, name: str, value, choices) -> None:
    if value not in choices:
        raise PGGANConfigError(f"{owner}.{name} must be one of {choices}, got {value!r}.")


def _check_count(owner: str, name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PGGANConfigError(f"{owner}.{name} must be a non-negative integer, got {value!r}.")


def _check_instance_norm_input(model_name: str, norm: str, image, stride: int) -> None:
    """Instance norm turns a 1-pixel-wide feature map into a constant: refuse inputs that small."""
    height, width = image.shape[1:3]
    if norm == "instance" and min(height, width) < 2 * stride:
        raise InputShapeError(
            f"{model_name} with norm='instance' needs its smallest feature map (1/{stride} of the "
            f"input) to be at least 2x2 -- instance normalisation of a single pixel erases it -- "
            f"so inputs of at least {2 * stride}x{2 * stride}; got {height}x{width}. Use larger "
            f"images or norm='batch'."
        )


def _normalization_settings(norm: str) -> dict:
    """ConvNormAct / ResidualBlock arguments for a PGGAN `norm` setting."""
    if norm == "none":
        return {"normalize": False}
    return {"normalize": True, "normalization": norm}


@dataclasses.dataclass(frozen=True)
class GeneratorStage:
    """One named step of the generator: a single layer, or a residual block.

    A residual block's `layers` are the two convolutions of F; the identity
    path adds nothing to the receptive field (it reads the centre of F's
    window), so the generator's receptive field is that of all stages'
    layers in order.
    """

    name: str
    layers: tuple[LayerSpec, ...]
    residual: bool = False


def generator_stages(
    *,
    num_downsamplings: int,
    num_blocks: int,
    dilated: bool,
    dilation_position: str = "first",
    upsampling: str = "interpolated",
) -> tuple[GeneratorStage, ...]:
    """The generator's stages in order, at the paper's widths (width multiplier 1).

    Names: "stem", "down1".., "block1".., then "up1".. (interpolated
    convolutions) or "deconv1".. (transposed convolutions), then "head".
    """
    owner = "PGGANGenerator"
    _check_count(owner, "num_downsamplings", num_downsamplings)
    _check_count(owner, "num_blocks", num_blocks)
    _check_choice(owner, "dilation_position", dilation_position, DILATION_POSITIONS)
    _check_choice(owner, "upsampling", upsampling, UPSAMPLINGS)

    features = BASE_FEATURES
    stages = [GeneratorStage("stem", (LayerSpec("conv", OUTER_KERNEL, 1, 1, features),))]
    for index in range(1, num_downsamplings + 1):
        features *= 2
        stages.append(
            GeneratorStage(f"down{index}", (LayerSpec("conv", INNER_KERNEL, 2, 1, features),))
        )
    for index in range(1, num_blocks + 1):
        dilation = 2 ** (index - 1) if dilated else 1
        first, second = (dilation, 1) if dilation_position == "first" else (1, dilation)
        convs = tuple(LayerSpec("conv", INNER_KERNEL, 1, d, features) for d in (first, second))
        stages.append(GeneratorStage(f"block{index}", convs, residual=True))
    kind, prefix = ("resize_conv", "up") if upsampling == "interpolated" else ("deconv", "deconv")
    for index in range(1, num_downsamplings + 1):
        features //= 2
        stages.append(
            GeneratorStage(f"{prefix}{index}", (LayerSpec(kind, INNER_KERNEL, 2, 1, features),))
        )
    stages.append(GeneratorStage("head", (LayerSpec("conv", OUTER_KERNEL, 1, 1, 3),)))
    return tuple(stages)


class PGGANGenerator(nn.Module):
    """Fills the holes of an image; the defaults are the PGGAN-DRes preset.

    The network sees the image with its holes filled by `fill_value`
    (default: the ImageNet mean colour), concatenated with the mask (4
    channels). It returns the raw prediction for every pixel, float32 in
    [0, 1]; composite it with the known pixels (`layers.composite`). H and W
    must be multiples of `size_multiple` (2 ** num_downsamplings) and, with
    instance norm, at least twice that.
    """

    num_downsamplings: int = 2
    num_blocks: int = NUM_RESIDUAL_BLOCKS
    dilated: bool = True
    dilation_position: str = "first"
    upsampling: str = "interpolated"
    norm: str = "instance"
    fill_value: tuple[float, float, float] = IMAGENET_MEAN_RGB
    width_multiplier: float = 1.0
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        _check_choice("PGGANGenerator", "norm", self.norm, NORMS)
        generator_stages(**self._geometry)  # raises PGGANConfigError for bad settings
        super().__post_init__()

    @property
    def _geometry(self) -> dict:
        return {
            "num_downsamplings": self.num_downsamplings,
            "num_blocks": self.num_blocks,
            "dilated": self.dilated,
            "dilation_position": self.dilation_position,
            "upsampling": self.upsampling,
        }

    @property
    def stages(self) -> tuple[GeneratorStage, ...]:
        """The stage table this generator is built from."""
        return generator_stages(**self._geometry)

    @property
    def layers(self) -> tuple[LayerSpec, ...]:
        """Every convolution of the stage table, in order."""
        return tuple(layer for stage in self.stages for layer in stage.layers)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this; pad to it at inference."""
        return size_multiple(self.layers)

    @property
    def receptive_field(self) -> int:
        """Side of the input window one output pixel depends on through the convolutions."""
        return receptive_field(self.layers)

    @nn.compact
    def __call__(self, image, mask, *, train: bool):
        """image (N, H, W, 3), mask (N, H, W, 1) -> (N, H, W, 3); see the class docstring."""
        check_image_and_mask(
            image, mask, size_multiple=self.size_multiple, model_name="PGGANGenerator"
        )
        _check_instance_norm_input("PGGANGenerator", self.norm, image, self.size_multiple)
        x = jnp.concatenate([fill_holes(image, mask, self.fill_value), mask], axis=-1)
        settings = {
            "dtype": self.dtype,
            "param_dtype": self.param_dtype,
            **_normalization_settings(self.norm),
        }
        head_settings = {**settings, "normalize": False}
        for stage in self.stages:
            if stage.residual:
                x = ResidualBlock(
                    dilations=tuple(layer.dilation for layer in stage.layers),
                    kernel_size=stage.layers[0].kernel,
                    name=stage.name,
                    **settings,
                )(x, train=train)
                continue
            (layer,) = stage.layers
            if layer.kind == "resize_conv":
                x = bilinear_upsample(x, layer.stride)
            is_head = stage.name == "head"
            x = ConvNormAct(
                layer.features if is_head else scaled_width(layer.features, self.width_multiplier),
                layer.kernel,
                stride=1 if layer.kind == "resize_conv" else layer.stride,
                dilation=layer.dilation,
                transpose=layer.kind == "deconv",
                activation=nn.sigmoid if is_head else nn.relu,
                name=stage.name,
                **(head_settings if is_head else settings),
            )(x, train=train)
        return x.astype(jnp.float32)


def make_generator(preset: str = "PGGAN-DRes", **settings) -> PGGANGenerator:
    """The generator of a paper preset ("PGGAN-DRes" or "PGGAN-Res").

    `settings` are further PGGANGenerator attributes (num_blocks,
    dilation_position, upsampling, norm, fill_value, width_multiplier,
    dtype, param_dtype); the preset fixes num_downsamplings and dilated.
    """
    if preset not in GENERATOR_PRESETS:
        raise PGGANConfigError(
            f"Unknown PGGAN generator preset {preset!r}; choose one of {tuple(GENERATOR_PRESETS)}."
        )
    fixed = sorted(set(settings) & set(GENERATOR_PRESETS[preset]))
    if fixed:
        raise PGGANConfigError(
            f"Preset {preset!r} fixes {fixed}; build PGGANGenerator(...) directly for "
            f"another geometry."
        )
    return PGGANGenerator(**GENERATOR_PRESETS[preset], **settings)


def _leaky_relu(x):
    return nn.leaky_relu(x, negative_slope=LEAKY_SLOPE)


class _ConvStack(nn.Module):
    """ConvNormAct + LeakyReLU(0.2) for each LayerSpec of `layers`, named conv1, conv2, ..."""

    layers: tuple[LayerSpec, ...]
    norm: str
    normalize_first: bool = True
    width_multiplier: float = 1.0
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x (N, H, W, C) -> (N, H / stride, W / stride, last layer's scaled features)."""
        for index, layer in enumerate(self.layers, start=1):
            norm = self.norm if index > 1 or self.normalize_first else "none"
            x = ConvNormAct(
                scaled_width(layer.features, self.width_multiplier),
                layer.kernel,
                stride=layer.stride,
                dilation=layer.dilation,
                activation=_leaky_relu,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"conv{index}",
                **_normalization_settings(norm),
            )(x, train=train)
        return x


@flax.struct.dataclass
class DiscriminatorLogits:
    """What a PGGAN discriminator says about a batch of N images of size H x W.

    global_logits: (N,) float32, one real/fake logit per image (G-GAN head),
      or None for a discriminator without that head.
    patch_logits: (N, H / 16, W / 16) float32, one logit per local window of
      PATCH_RECEPTIVE_FIELD pixels (PatchGAN head), or None.
    """

    global_logits: jax.Array | None = None
    patch_logits: jax.Array | None = None


class PGGANDiscriminator(nn.Module):
    """Shared trunk, then a G-GAN head and a PatchGAN head -> DiscriminatorLogits.

    Input: (N, H, W, 3) images, H and W multiples of `size_multiple` (64
    with the G-GAN head, 16 without) and, with instance norm, at least twice
    that. Subclasses keep only one head.
    """

    heads: ClassVar[tuple[str, ...]] = ("global", "patch")
    norm: str = "instance"
    width_multiplier: float = 1.0
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        _check_choice(type(self).__name__, "norm", self.norm, NORMS)
        super().__post_init__()

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return GLOBAL_STRIDE if "global" in self.heads else PATCH_STRIDE

    @nn.compact
    def __call__(self, image, *, train: bool) -> DiscriminatorLogits:
        """image (N, H, W, 3) -> DiscriminatorLogits of the heads this discriminator has."""
        name = type(self).__name__
        check_rgb_batch(image, name)
        height, width = image.shape[1:3]
        if height % self.size_multiple or width % self.size_multiple:
            raise InputShapeError(
                f"{name} needs a height and width that are multiples of {self.size_multiple}, "
                f"got {height}x{width}. Crop or resize the images to such a size."
            )
        _check_instance_norm_input(name, self.norm, image, self.size_multiple)
        settings = {
            "norm": self.norm,
            "width_multiplier": self.width_multiplier,
            "dtype": self.dtype,
            "param_dtype": self.param_dtype,
        }
        features = _ConvStack(TRUNK_LAYERS, normalize_first=False, name="trunk", **settings)(
            image, train=train
        )
        logits = {}
        if "global" in self.heads:
            x = _ConvStack(GLOBAL_HEAD_LAYERS, name="global_head", **settings)(
                features, train=train
            )
            x = nn.Dense(1, dtype=self.dtype, param_dtype=self.param_dtype, name="global_logits")(
                x.reshape(x.shape[0], -1)
            )
            logits["global_logits"] = x[:, 0].astype(jnp.float32)
        if "patch" in self.heads:
            *hidden, output = PATCH_HEAD_LAYERS
            x = _ConvStack(tuple(hidden), name="patch_head", **settings)(features, train=train)
            x = ConvNormAct(
                output.features,
                output.kernel,
                stride=output.stride,
                dilation=output.dilation,
                normalize=False,
                activation=None,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name="patch_logits",
            )(x, train=train)
            logits["patch_logits"] = x[..., 0].astype(jnp.float32)
        return DiscriminatorLogits(**logits)


class GlobalOnlyDiscriminator(PGGANDiscriminator):
    """The trunk and the G-GAN head only (ablation): patch_logits is None."""

    heads: ClassVar[tuple[str, ...]] = ("global",)


class PatchOnlyDiscriminator(PGGANDiscriminator):
    """The trunk and the PatchGAN head only (ablation): global_logits is None."""

    heads: ClassVar[tuple[str, ...]] = ("patch",)
