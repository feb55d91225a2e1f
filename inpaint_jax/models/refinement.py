"""Refinement network of two-stage high-resolution inpainting (Moskalenko et al., 2021).

Moskalenko, Erofeev & Vatolin, "Deep Two-Stage High-Resolution Image
Inpainting", 2021. A coarse model fills the holes at low resolution; its
result, scaled up and merged with the known pixels, is refined at full
resolution by this network, which also sees four shifted copies of the
merged image and their masks so that it can copy texture from nearby known
pixels. Its input has 20 channels in the order `INPUT_LAYOUT`:

  image, shift_left, shift_right, shift_up, shift_down   (3 channels each)
  mask,  mask_left,  mask_right,  mask_up,  mask_down     (1 channel each)

`image` is the merged image (known pixels from the photo, hole pixels from
the up-scaled coarse result); each `shift_*` is that image shifted in the
named direction and `mask_*` its mask, in which pixels that shifted in from
outside the frame count as holes. Masks are 1 = hole (or invalid), 0 =
known. The two-stage pipeline builds these tensors; `stack_input` puts the
parts in this order.

The paper does not give the network's layers; here it is DFNet's U-Net
(`dfnet.UNet`, 8 levels by default; the authors' released inference script
pads the refinement input to multiples of 256, which fits that depth) with a
1x1 convolution + sigmoid to RGB on its full-resolution features, and no
fusion block: it returns a prediction for every pixel, and the known pixels
are composited from the photo afterwards (`complete`), never altered.
"""
from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax.numpy as jnp

from inpaint_jax.models import dfnet
from inpaint_jax.models.layers import ConvNormAct, InputShapeError, composite

# (name, channels) of the input's parts, in channel order.
INPUT_LAYOUT = (
    ("image", 3),
    ("shift_left", 3),
    ("shift_right", 3),
    ("shift_up", 3),
    ("shift_down", 3),
    ("mask", 1),
    ("mask_left", 1),
    ("mask_right", 1),
    ("mask_up", 1),
    ("mask_down", 1),
)
INPUT_NAMES = tuple(name for name, _ in INPUT_LAYOUT)
INPUT_CHANNELS = sum(channels for _, channels in INPUT_LAYOUT)  # 20


def input_slices() -> dict[str, slice]:
    """{part name: its slice of the input's channel axis}, in INPUT_LAYOUT order."""
    slices, start = {}, 0
    for name, channels in INPUT_LAYOUT:
        slices[name] = slice(start, start + channels)
        start += channels
    return slices


def _layout_help() -> str:
    return ", ".join(f"{name} ({channels})" for name, channels in INPUT_LAYOUT)


def stack_input(parts: Mapping[str, object]):
    """Concatenates the named (N, H, W, c) parts into the (N, H, W, 20) network input.

    `parts` must hold exactly the names of INPUT_LAYOUT, each with its
    channel count; raises InputShapeError otherwise.
    """
    if set(parts) != set(INPUT_NAMES):
        missing = [name for name in INPUT_NAMES if name not in parts]
        unknown = sorted(set(parts) - set(INPUT_NAMES))
        raise InputShapeError(
            f"The refinement input needs exactly the parts {_layout_help()}; missing "
            f"{missing}, unknown {unknown}."
        )
    wrong = {
        name: parts[name].shape
        for name, channels in INPUT_LAYOUT
        if parts[name].ndim != 4 or parts[name].shape[-1] != channels
    }
    if wrong:
        raise InputShapeError(
            f"Refinement input parts have the wrong shapes {wrong}; each is (N, H, W, channels) "
            f"with channels: {_layout_help()}."
        )
    return jnp.concatenate([parts[name] for name in INPUT_NAMES], axis=-1)


def split_input(inputs) -> dict:
    """The inverse of `stack_input`: {part name: (N, H, W, c) slice of `inputs`}."""
    return {name: inputs[..., part] for name, part in input_slices().items()}


def complete(inputs, prediction):
    """The refined image: the input's known pixels, `prediction` in its main hole.

    `inputs` is the (N, H, W, 20) network input, `prediction` the network's
    (N, H, W, 3) output; computes `composite(image, prediction, mask)` with
    the input's `image` and `mask` parts.
    """
    parts = split_input(inputs)
    return composite(parts["image"], prediction, parts["mask"])


class RefinementNetwork(nn.Module):
    """The 20-channel input (`INPUT_LAYOUT`) -> RGB prediction (N, H, W, 3) float32 in [0, 1].

    H and W must be multiples of `size_multiple` (2 ** len(encoder_kernels),
    256 by default). Composite the output with `complete`.
    """

    encoder_kernels: tuple[int, ...] = dfnet.ENCODER_KERNELS
    width_multiplier: float = 1.0
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this; pad to it at inference."""
        return 2 ** len(self.encoder_kernels)

    def _check_input(self, inputs) -> None:
        if inputs.ndim != 4 or inputs.shape[-1] != INPUT_CHANNELS:
            raise InputShapeError(
                f"RefinementNetwork expects (N, H, W, {INPUT_CHANNELS}) inputs with the channels "
                f"{_layout_help()}, got shape {inputs.shape}. Build them with "
                f"refinement.stack_input."
            )
        height, width = inputs.shape[1:3]
        if height % self.size_multiple or width % self.size_multiple:
            raise InputShapeError(
                f"RefinementNetwork needs a height and width that are multiples of "
                f"{self.size_multiple}, got {height}x{width}. Pad the input to the next "
                f"multiple and crop the result."
            )

    @nn.compact
    def __call__(self, inputs, *, train: bool):
        """inputs (N, H, W, 20) -> (N, H, W, 3) prediction for every pixel."""
        self._check_input(inputs)
        settings = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        features = dfnet.UNet(
            tuple(self.encoder_kernels),
            width_multiplier=self.width_multiplier,
            name="unet",
            **settings,
        )(inputs, train=train)
        rgb = ConvNormAct(
            3, 1, normalize=False, activation=nn.sigmoid, name="to_rgb", **settings
        )(features[0], train=train)
        return rgb.astype(jnp.float32)
