"""The one place that turns a model config into networks.

A model config (`config.model` of every recipe, stored with every
checkpoint beside the generator's variables) is a flat ConfigDict whose
`family` names one of FAMILIES; the other fields are that family's module
attributes, plus `compute_dtype` (COMPUTE_DTYPES). `build(model_config)`
gives the generator and, for adversarial families, the discriminator;
`example_inputs` gives zero inputs of the right shapes to initialise them
(or to trace them with `jax.eval_shape`).

Families and their fields:
  glcic            fill_value, width_multiplier
  pggan            preset, num_blocks, dilation_position, upsampling, norm,
                   discriminator (pggan | global | patch), fill_value,
                   width_multiplier
  context_encoder  bottleneck (channelwise | dense), encoder_activation,
                   decoder_activation, fill_value, width_multiplier (the NPS
                   content network is this family with bottleneck "dense"
                   and ELU activations: configs/nps_content.py)
  dfnet            encoder_kernels, fusion_levels, alpha_channels,
                   fill_value, width_multiplier
  refinement       encoder_kernels, width_multiplier, and the two-stage
                   pipeline settings the network was trained with:
                   coarse_size, shift_fraction (read by two_stage.py)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from inpaint_jax.models import context_encoder, dfnet, glcic, pggan, refinement

# Values of model_config.compute_dtype: "auto" is bfloat16 on GPU and TPU, float32 on CPU.
COMPUTE_DTYPES = ("auto", "float32", "bfloat16")


class ModelConfigError(ValueError):
    """A model config that names no known family or lacks a field its family needs."""


@dataclasses.dataclass(frozen=True)
class Networks:
    """The networks of one model config; `discriminator` is None for non-adversarial families."""

    generator: nn.Module
    discriminator: nn.Module | None


@dataclasses.dataclass(frozen=True)
class ExampleInputs:
    """Zero batch-1 inputs of each network, in call order.

    `discriminator` is None for families without one, and for glcic when no
    `local_size` was given (its discriminator's shapes depend on it).
    """

    generator: tuple[np.ndarray, ...]
    discriminator: tuple[np.ndarray, ...] | None


def compute_dtype(model_config: Mapping, backend: str | None = None) -> jnp.dtype:
    """The dtype the networks compute in, from `model_config.compute_dtype`.

    "auto" (also a config without the field) means bfloat16 on GPU and TPU
    and float32 on CPU, for `backend` (default: `jax.default_backend()`).
    Parameters, optimizer states and losses stay float32 whatever this
    returns. Raises ModelConfigError for any other value.
    """
    name = model_config.get("compute_dtype", "auto")
    if name not in COMPUTE_DTYPES:
        raise ModelConfigError(
            f"model compute_dtype must be one of {', '.join(map(repr, COMPUTE_DTYPES))}, "
            f"got {name!r}."
        )
    if name == "auto":
        name = "float32" if (backend or jax.default_backend()) == "cpu" else "bfloat16"
    return jnp.dtype(name)


def _glcic(model, dtype) -> Networks:
    return Networks(
        glcic.CompletionNetwork(fill_value=tuple(model.fill_value),
                                width_multiplier=model.width_multiplier, dtype=dtype),
        glcic.ContextDiscriminator(width_multiplier=model.width_multiplier, dtype=dtype),
    )


PGGAN_DISCRIMINATORS = {
    "pggan": pggan.PGGANDiscriminator,
    "global": pggan.GlobalOnlyDiscriminator,
    "patch": pggan.PatchOnlyDiscriminator,
}


def _pggan(model, dtype) -> Networks:
    if model.discriminator not in PGGAN_DISCRIMINATORS:
        raise ModelConfigError(
            f"Unknown pggan discriminator {model.discriminator!r}; choose one of "
            f"{', '.join(PGGAN_DISCRIMINATORS)}."
        )
    generator = pggan.make_generator(
        model.preset,
        num_blocks=model.num_blocks,
        dilation_position=model.dilation_position,
        upsampling=model.upsampling,
        norm=model.norm,
        fill_value=tuple(model.fill_value),
        width_multiplier=model.width_multiplier,
        dtype=dtype,
    )
    discriminator = PGGAN_DISCRIMINATORS[model.discriminator](
        norm=model.norm, width_multiplier=model.width_multiplier, dtype=dtype
    )
    return Networks(generator, discriminator)


def _context_encoder(model, dtype) -> Networks:
    generator = context_encoder.ContextEncoder(
        bottleneck=model.bottleneck,
        encoder_activation=model.encoder_activation,
        decoder_activation=model.decoder_activation,
        fill_value=tuple(model.fill_value),
        width_multiplier=model.width_multiplier,
        dtype=dtype,
    )
    discriminator = context_encoder.ContextEncoderDiscriminator(
        width_multiplier=model.width_multiplier, dtype=dtype
    )
    return Networks(generator, discriminator)


def _dfnet(model, dtype) -> Networks:
    generator = dfnet.DFNet(
        encoder_kernels=tuple(model.encoder_kernels),
        fusion_levels=tuple(model.fusion_levels),
        alpha_channels=model.alpha_channels,
        fill_value=tuple(model.fill_value),
        width_multiplier=model.width_multiplier,
        dtype=dtype,
    )
    return Networks(generator, None)


def _refinement(model, dtype) -> Networks:
    generator = refinement.RefinementNetwork(
        encoder_kernels=tuple(model.encoder_kernels),
        width_multiplier=model.width_multiplier,
        dtype=dtype,
    )
    return Networks(generator, None)


def as_model_config(model_config: Mapping) -> ml_collections.ConfigDict:
    """`model_config` (a ConfigDict or the plain dict a checkpoint stores) as a ConfigDict."""
    if isinstance(model_config, ml_collections.ConfigDict):
        return model_config
    return ml_collections.ConfigDict(dict(model_config))


def family(model_config: Mapping) -> str:
    """`model_config.family`, checked against FAMILIES."""
    name = model_config.get("family")
    if name not in _FAMILIES:
        raise ModelConfigError(
            f"model family {name!r} is not one of {', '.join(FAMILIES)}; the model config "
            "(config.model, saved with every checkpoint) must name one in its `family` field."
        )
    return name


def build(model_config: Mapping) -> Networks:
    """The networks `model_config` describes (see the module docstring), in its compute dtype.

    Raises ModelConfigError naming the family and the field when the config
    lacks one, and the model modules' own errors for values they reject.
    """
    name = family(model_config)
    model = as_model_config(model_config)
    try:
        return _FAMILIES[name].build(model, compute_dtype(model))
    except AttributeError as error:  # ConfigDict's missing field
        raise ModelConfigError(
            f"the {name} model config lacks a field: {error}. Fields of {name}: see "
            "inpaint_jax/models/registry.py."
        ) from error


def _zeros(*shape: int) -> np.ndarray:
    return np.zeros(shape, np.float32)


def _image_and_mask(size: int) -> tuple[np.ndarray, np.ndarray]:
    return _zeros(1, size, size, 3), _zeros(1, size, size, 1)


def _glcic_inputs(size: int, local_size: int | None) -> ExampleInputs:
    image, mask = _image_and_mask(size)
    if local_size is None:
        return ExampleInputs((image, mask), None)
    return ExampleInputs((image, mask), (_zeros(1, local_size, local_size, 3), image))


def _pggan_inputs(size: int, local_size: int | None) -> ExampleInputs:
    image, mask = _image_and_mask(size)
    return ExampleInputs((image, mask), (image,))


def _context_encoder_inputs(size: int, local_size: int | None) -> ExampleInputs:
    patch = context_encoder.PATCH_SIZE
    return ExampleInputs(_image_and_mask(context_encoder.INPUT_SIZE), (_zeros(1, patch, patch, 3),))


def _dfnet_inputs(size: int, local_size: int | None) -> ExampleInputs:
    return ExampleInputs(_image_and_mask(size), None)


def _refinement_inputs(size: int, local_size: int | None) -> ExampleInputs:
    return ExampleInputs((_zeros(1, size, size, refinement.INPUT_CHANNELS),), None)


@dataclasses.dataclass(frozen=True)
class _Family:
    build: Callable[[ml_collections.ConfigDict, jnp.dtype], Networks]
    inputs: Callable[[int, int | None], ExampleInputs]


_FAMILIES = {
    "glcic": _Family(_glcic, _glcic_inputs),
    "pggan": _Family(_pggan, _pggan_inputs),
    "context_encoder": _Family(_context_encoder, _context_encoder_inputs),
    "dfnet": _Family(_dfnet, _dfnet_inputs),
    "refinement": _Family(_refinement, _refinement_inputs),
}
FAMILIES = tuple(_FAMILIES)


def example_inputs(model_config: Mapping, size: int, *,
                   local_size: int | None = None) -> ExampleInputs:
    """Zero inputs of `size` x `size` images for the networks of `model_config`.

    Fixed-size generators (the Context Encoder family) get their own input
    size whatever `size` is. `local_size` is the side of GLCIC's local
    discriminator window, needed for its discriminator's inputs (the fully
    connected layers depend on it), not for the generator's.
    """
    return _FAMILIES[family(model_config)].inputs(size, local_size)
