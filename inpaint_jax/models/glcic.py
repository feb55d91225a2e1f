"""GLCIC: Iizuka et al., "Globally and Locally Consistent Image Completion", SIGGRAPH 2017.

The completion network (paper Table 1) is fully convolutional: two stride-2
down-samplings, a stack of dilated convolutions that widens the receptive
field to 303x303 input pixels (`layers.receptive_field(COMPLETION_LAYERS)`;
299x299 for output pixels at some sub-pixel phases of the up-samplings),
then two transposed-convolution up-samplings.
The discriminators (paper Section 3.2) each map their input to a 1024-d
vector; the context discriminator joins both and outputs one logit.

Design choices beyond the paper:
  * Convolutions followed by BatchNorm have no bias (BatchNorm's shift
    replaces it); only the last completion layer and the dense layers have
    biases.
  * The 1024-d FC layer of each discriminator is followed by a ReLU (as in
    public reimplementations). Without it the FC-1024 and the final FC-1
    would compose into a single linear map.
  * The context discriminator returns logits; the sigmoid lives in the loss.
  * `dtype` is the computation dtype (e.g. bfloat16); parameters are created
    in `param_dtype` (float32) and every module returns float32.
  * `width_multiplier` scales the number of channels of every hidden
    convolution (not the geometry, the RGB output or the 1024-d vectors); the
    paper's network is width_multiplier=1. Smaller values give laptop-sized
    models for smoke runs and tests.
"""
from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from inpaint_jax.models.layers import (
    IMAGENET_MEAN_RGB,
    ConvNormAct,
    InputShapeError,
    LayerSpec,
    check_image_and_mask,
    check_rgb_batch,
    fill_holes,
    scaled_width,
    size_multiple,
)

# Completion network, paper Table 1, in order. The last layer is followed by
# a sigmoid; all others by BatchNorm + ReLU.
COMPLETION_LAYERS = (
    LayerSpec("conv", kernel=5, stride=1, dilation=1, features=64),
    LayerSpec("conv", kernel=3, stride=2, dilation=1, features=128),
    LayerSpec("conv", kernel=3, stride=1, dilation=1, features=128),
    LayerSpec("conv", kernel=3, stride=2, dilation=1, features=256),
    LayerSpec("conv", kernel=3, stride=1, dilation=1, features=256),
    LayerSpec("conv", kernel=3, stride=1, dilation=1, features=256),
    LayerSpec("conv", kernel=3, stride=1, dilation=2, features=256),
    LayerSpec("conv", kernel=3, stride=1, dilation=4, features=256),
    LayerSpec("conv", kernel=3, stride=1, dilation=8, features=256),
    LayerSpec("conv", kernel=3, stride=1, dilation=16, features=256),
    LayerSpec("conv", kernel=3, stride=1, dilation=1, features=256),
    LayerSpec("conv", kernel=3, stride=1, dilation=1, features=256),
    LayerSpec("deconv", kernel=4, stride=2, dilation=1, features=128),
    LayerSpec("conv", kernel=3, stride=1, dilation=1, features=128),
    LayerSpec("deconv", kernel=4, stride=2, dilation=1, features=64),
    LayerSpec("conv", kernel=3, stride=1, dilation=1, features=32),
    LayerSpec("conv", kernel=3, stride=1, dilation=1, features=3),
)

# Height and width of completion-network inputs must be multiples of this.
COMPLETION_SIZE_MULTIPLE = size_multiple(COMPLETION_LAYERS)

# Channels of the stride-2 5x5 convolutions of the discriminators.
LOCAL_DISCRIMINATOR_FEATURES = (64, 128, 256, 512, 512)
GLOBAL_DISCRIMINATOR_FEATURES = (64, 128, 256, 512, 512, 512)
DISCRIMINATOR_VECTOR_SIZE = 1024


class CompletionNetwork(nn.Module):
    """Fills the holes of an image; built from COMPLETION_LAYERS.

    The network sees the image with its holes filled by `fill_value`
    (default: the ImageNet mean colour), concatenated with the mask (4
    channels). It returns the raw prediction for every pixel, float32 in
    [0, 1]; composite it with the known pixels (`layers.composite`).
    """

    fill_value: tuple[float, float, float] = IMAGENET_MEAN_RGB
    width_multiplier: float = 1.0
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this; pad to it at inference."""
        return COMPLETION_SIZE_MULTIPLE

    @nn.compact
    def __call__(self, image, mask, *, train: bool):
        """image (N, H, W, 3), mask (N, H, W, 1) with H, W multiples of 4 -> (N, H, W, 3)."""
        check_image_and_mask(
            image, mask, size_multiple=COMPLETION_SIZE_MULTIPLE, model_name="CompletionNetwork"
        )
        x = jnp.concatenate([fill_holes(image, mask, self.fill_value), mask], axis=-1)
        for index, layer in enumerate(COMPLETION_LAYERS, start=1):
            is_last = index == len(COMPLETION_LAYERS)
            x = ConvNormAct(
                layer.features if is_last else scaled_width(layer.features, self.width_multiplier),
                layer.kernel,
                stride=layer.stride,
                dilation=layer.dilation,
                transpose=layer.kind == "deconv",
                normalize=not is_last,
                activation=nn.sigmoid if is_last else nn.relu,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"layer{index:02d}",
            )(x, train=train)
        return x.astype(jnp.float32)


class _ConvDiscriminator(nn.Module):
    """5x5 stride-2 convolutions with BatchNorm + ReLU, flatten, FC-1024 + ReLU.

    Subclasses set `conv_features`. The FC layer's size depends on the input
    size, so apply the discriminator to inputs of the size it was
    initialised with.
    """

    conv_features: ClassVar[tuple[int, ...]] = ()
    width_multiplier: float = 1.0
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x (N, H, W, 3) -> (N, 1024) float32."""
        check_rgb_batch(x, type(self).__name__)
        for index, features in enumerate(self.conv_features, start=1):
            x = ConvNormAct(
                scaled_width(features, self.width_multiplier),
                5,
                stride=2,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"conv{index}",
            )(x, train=train)
        x = x.reshape(x.shape[0], -1)
        x = nn.Dense(
            DISCRIMINATOR_VECTOR_SIZE, dtype=self.dtype, param_dtype=self.param_dtype, name="fc"
        )(x)
        return nn.relu(x).astype(jnp.float32)


class LocalDiscriminator(_ConvDiscriminator):
    """Judges the window around the hole (paper: 128x128) -> (N, 1024)."""

    conv_features: ClassVar[tuple[int, ...]] = LOCAL_DISCRIMINATOR_FEATURES


class GlobalDiscriminator(_ConvDiscriminator):
    """Judges the whole image (paper: 256x256) -> (N, 1024)."""

    conv_features: ClassVar[tuple[int, ...]] = GLOBAL_DISCRIMINATOR_FEATURES


class ContextDiscriminator(nn.Module):
    """Local and global discriminators joined by one FC layer -> (N,) real/fake logits."""

    width_multiplier: float = 1.0
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, local_patch, global_image, *, train: bool):
        """local_patch (N, h, w, 3), global_image (N, H, W, 3) -> (N,) float32 logits."""
        if local_patch.shape[0] != global_image.shape[0]:
            raise InputShapeError(
                f"ContextDiscriminator needs one local patch per global image, got "
                f"{local_patch.shape[0]} patches and {global_image.shape[0]} images."
            )
        settings = dict(
            width_multiplier=self.width_multiplier, dtype=self.dtype, param_dtype=self.param_dtype
        )
        local_vector = LocalDiscriminator(**settings, name="local")(local_patch, train=train)
        global_vector = GlobalDiscriminator(**settings, name="global")(global_image, train=train)
        joint = jnp.concatenate([local_vector, global_vector], axis=-1)
        logits = nn.Dense(1, dtype=self.dtype, param_dtype=self.param_dtype, name="classifier")(joint)
        return logits[:, 0].astype(jnp.float32)
