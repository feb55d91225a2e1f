"""Context Encoder (Pathak et al., CVPR 2016) and the NPS content network (Yang et al., CVPR 2017).

The Context Encoder sees a 128x128 image whose centre is missing and predicts
the 64x64 centre patch: an encoder of 4x4 stride-2 convolutions down to a
4x4x512 feature map, a bottleneck that connects every position of that map
with every other, and a decoder of 4x4 stride-2 transposed convolutions up to
the 64x64 RGB patch. It is fixed-size by construction: other image sizes or
hole positions need another network, or the window that
`inference.InpaintingModel` crops around the holes (see `input_size`).

Layers (at width multiplier 1), as in the released code's `train.lua`
(DCGAN-style), which produced the paper's inpainting results:
  encoder      conv4x4 s2: 64 (no norm), 64, 128, 256, 512; BatchNorm +
               LeakyReLU(0.2) (128 -> 4 px);
  bottleneck   "channelwise" (default, the paper's Section 3.1): each of the C
               feature maps gets its own fully connected layer over its HxW
               positions (C * (HW)^2 weights, no bias: the paper's m n^4
               parameters), followed by a 1x1 convolution that mixes the
               channels, BatchNorm and the encoder's activation. The released
               code instead squeezes the map into a 4000-d vector with a 4x4
               convolution and expands it back with a 4x4 transposed one.
               "dense" (the NPS content network): one standard fully connected
               layer from the flattened map to a map of the same size
               ((HWC)^2 weights, no bias; computed as a 1x1 convolution of
               the flattened map), BatchNorm over its HWC features and the
               encoder's activation;
  decoder      transposed conv4x4 s2: 256, 128, 64 with BatchNorm + ReLU, then
               3 channels + sigmoid (4 -> 64 px).
The NPS content network is the same module with ELU activations everywhere
(`encoder_activation="elu"`, `decoder_activation="elu"`) and the "dense"
bottleneck.

Conventions of this library, and choices beyond the papers:
  * Images live in [0, 1], so the output layer is a sigmoid; sigmoid(2z) =
    (tanh(z) + 1) / 2, the released code's tanh output rescaled.
  * The network sees only the RGB image with its holes filled by
    `fill_value` (the released code's mean colour (117, 104, 123) / 255 by
    default), not the mask: the hole is always the same centre square, so a
    mask channel would be constant.
  * The output has the input's size, so the shared training, evaluation and
    inference code can composite it: the hole-filled input with its 64x64
    centre replaced by the predicted patch. Only the centre is predicted;
    composite the output with the known pixels (`layers.composite`).
  * Convolutions followed by BatchNorm have no bias; the first encoder and
    discriminator convolutions and the output layer have one (the released
    code zeroes every convolution bias before each step).
  * Flax's default initialisers (the released code draws N(0, 0.02)).
  * `width_multiplier` scales the hidden channels (not the RGB output);
    `dtype` is the computation dtype, parameters are `param_dtype` and every
    module returns float32.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from inpaint_jax.models.layers import (
    ConvNormAct,
    InputShapeError,
    check_image_and_mask,
    check_rgb_batch,
    fill_holes,
    scaled_width,
)

INPUT_SIZE = 128  # side of the images the network takes
PATCH_SIZE = 64  # side of the centre patch it predicts
PATCH_START = (INPUT_SIZE - PATCH_SIZE) // 2  # first row and column of the centre patch
KERNEL = 4  # every encoder, decoder and discriminator convolution is 4x4, stride 2
ENCODER_FEATURES = (64, 64, 128, 256, 512)  # 128 -> 4 px
DECODER_FEATURES = (256, 128, 64)  # 4 -> 32 px, then the RGB layer to 64 px
DISCRIMINATOR_FEATURES = (64, 128, 256, 512)  # 64 -> 4 px, then one logit
LEAKY_SLOPE = 0.2
# The released code's hole colour: mean RGB (117, 104, 123) of its training images.
CE_MEAN_RGB = (117 / 255, 104 / 255, 123 / 255)

ACTIVATIONS = {
    "leaky_relu": lambda x: nn.leaky_relu(x, negative_slope=LEAKY_SLOPE),
    "relu": nn.relu,
    "elu": nn.elu,
}
BOTTLENECKS = ("channelwise", "dense")


class ContextEncoderConfigError(ValueError):
    """A Context Encoder was asked for with settings it does not have."""


def check_input_size(model_name: str, height_width: tuple[int, int], size: int) -> None:
    """Raises InputShapeError unless the input is size x size: these networks are fixed-size."""
    if tuple(height_width) != (size, size):
        height, width = height_width
        raise InputShapeError(
            f"{model_name} is fixed-size: it takes {size}x{size} inputs (a {INPUT_SIZE}x"
            f"{INPUT_SIZE} image whose {PATCH_SIZE}x{PATCH_SIZE} centre it predicts), got "
            f"{height}x{width}. Resize or crop the image to {INPUT_SIZE}x{INPUT_SIZE} with the "
            f"hole in its centre, or use a fully convolutional model (GLCIC, PGGAN) for other "
            f"sizes."
        )


def center_region(images):
    """The PATCH_SIZE x PATCH_SIZE centre of (N, INPUT_SIZE, INPUT_SIZE, C) images."""
    end = PATCH_START + PATCH_SIZE
    return images[:, PATCH_START:end, PATCH_START:end]


class ChannelwiseDense(nn.Module):
    """The paper's channel-wise fully connected layer.

    (N, H, W, C) -> (N, H, W, C): each channel's H x W map is mapped by its
    own (HW x HW) matrix, so every output position sees every input position
    of the same channel, and channels stay separate. C * (HW)^2 weights, no
    bias.
    """

    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        """x (N, H, W, C) -> (N, H, W, C)."""
        batch, height, width, channels = x.shape
        positions = height * width
        kernel = self.param(
            "kernel",
            nn.initializers.lecun_normal(in_axis=1, out_axis=2, batch_axis=(0,)),
            (channels, positions, positions),
            self.param_dtype,
        )
        flat = x.reshape(batch, positions, channels).astype(self.dtype)
        mixed = jnp.einsum("npc,cpq->nqc", flat, kernel.astype(self.dtype))
        return mixed.reshape(batch, height, width, channels)


class _DownConvs(nn.Module):
    """4x4 stride-2 convolutions with `features` channels (scaled), each halving H and W.

    The first has no normalisation (and so a bias), the others BatchNorm;
    each is followed by `activation`. Layers are named conv1, conv2, ...
    """

    features: tuple[int, ...]
    activation: str
    width_multiplier: float = 1.0
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x (N, H, W, C) -> (N, H / 2^k, W / 2^k, scaled last features) for k layers."""
        for index, features in enumerate(self.features, start=1):
            x = ConvNormAct(
                scaled_width(features, self.width_multiplier),
                KERNEL,
                stride=2,
                normalize=index > 1,
                activation=ACTIVATIONS[self.activation],
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"conv{index}",
            )(x, train=train)
        return x


class ContextEncoder(nn.Module):
    """Predicts the 64x64 centre of a 128x128 image; see the module docstring.

    Call with image (N, 128, 128, 3) and mask (N, 128, 128, 1), 1 = hole
    (the centre square, or the centre square less an overlap border); returns
    (N, 128, 128, 3) float32 in [0, 1]: the hole-filled input with its centre
    replaced by the predicted patch.
    """

    bottleneck: str = "channelwise"
    encoder_activation: str = "leaky_relu"
    decoder_activation: str = "relu"
    fill_value: tuple[float, float, float] = CE_MEAN_RGB
    width_multiplier: float = 1.0
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        options = {
            "bottleneck": BOTTLENECKS,
            "encoder_activation": tuple(ACTIVATIONS),
            "decoder_activation": tuple(ACTIVATIONS),
        }
        for name, choices in options.items():
            if getattr(self, name) not in choices:
                raise ContextEncoderConfigError(
                    f"ContextEncoder.{name} must be one of {choices}, got {getattr(self, name)!r}."
                )
        super().__post_init__()

    @property
    def input_size(self) -> int:
        """Side of the square images the network takes (inference crops a window to it)."""
        return INPUT_SIZE

    @nn.compact
    def __call__(self, image, mask, *, train: bool):
        """image (N, 128, 128, 3), mask (N, 128, 128, 1) -> (N, 128, 128, 3)."""
        check_image_and_mask(image, mask, size_multiple=1, model_name="ContextEncoder")
        check_input_size("ContextEncoder", image.shape[1:3], INPUT_SIZE)
        settings = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        encoder_activation = ACTIVATIONS[self.encoder_activation]
        decoder_activation = ACTIVATIONS[self.decoder_activation]
        filled = fill_holes(image, mask, self.fill_value)

        x = _DownConvs(
            ENCODER_FEATURES,
            self.encoder_activation,
            width_multiplier=self.width_multiplier,
            name="encoder",
            **settings,
        )(filled, train=train)

        if self.bottleneck == "channelwise":
            x = ChannelwiseDense(name="channelwise_fc", **settings)(x)
            x = ConvNormAct(
                x.shape[-1], 1, activation=encoder_activation, name="channel_mixing", **settings
            )(x, train=train)
        else:  # a fully connected layer is a 1x1 convolution of the flattened map.
            flat = x.reshape(x.shape[0], 1, 1, -1)
            flat = ConvNormAct(
                flat.shape[-1], 1, activation=encoder_activation, name="fc", **settings
            )(flat, train=train)
            x = flat.reshape(x.shape)

        for index, features in enumerate(DECODER_FEATURES, start=1):
            x = ConvNormAct(
                scaled_width(features, self.width_multiplier),
                KERNEL,
                stride=2,
                transpose=True,
                activation=decoder_activation,
                name=f"decoder{index}",
                **settings,
            )(x, train=train)
        patch = ConvNormAct(
            3,
            KERNEL,
            stride=2,
            transpose=True,
            normalize=False,
            activation=nn.sigmoid,
            name="output",
            **settings,
        )(x, train=train)

        end = PATCH_START + PATCH_SIZE
        canvas = filled.astype(jnp.float32)
        return canvas.at[:, PATCH_START:end, PATCH_START:end].set(patch.astype(jnp.float32))


class ContextEncoderDiscriminator(nn.Module):
    """DCGAN discriminator of 64x64 centre patches -> (N,) real/fake logits.

    conv4x4 s2 64 (no norm), 128, 256, 512 with BatchNorm + LeakyReLU(0.2),
    then one logit from the 4x4x512 map (the released code's 4x4 valid
    convolution, written as a dense layer). Returns logits; the sigmoid lives
    in the loss.
    """

    width_multiplier: float = 1.0
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, patch, *, train: bool):
        """patch (N, 64, 64, 3) -> (N,) float32 logits."""
        check_rgb_batch(patch, "ContextEncoderDiscriminator", f"(N, {PATCH_SIZE}, {PATCH_SIZE}, 3)")
        check_input_size("ContextEncoderDiscriminator", patch.shape[1:3], PATCH_SIZE)
        x = _DownConvs(
            DISCRIMINATOR_FEATURES,
            "leaky_relu",
            width_multiplier=self.width_multiplier,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="convs",
        )(patch, train=train)
        logits = nn.Dense(1, dtype=self.dtype, param_dtype=self.param_dtype, name="classifier")(
            x.reshape(x.shape[0], -1)
        )
        return logits[:, 0].astype(jnp.float32)
