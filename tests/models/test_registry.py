"""inpaint_jax.models (registry): every shipped model config builds; example inputs; compute dtype.

Networks are traced (`jax.eval_shape`, `jax.make_jaxpr`), never run: the
family modules' own tests compute with them.
"""

import importlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.extend import core as jax_core

from inpaint_jax import models
from inpaint_jax.models import context_encoder, dfnet, glcic, pggan, refinement

pytestmark = pytest.mark.fast_compile

# Recipe config (configs/<name>.py) -> the model family its config.model names.
RECIPE_FAMILIES = {
    "glcic": "glcic",
    "pggan": "pggan",
    "context_encoder": "context_encoder",
    "nps_content": "context_encoder",
    "dfnet": "dfnet",
    "two_stage": "refinement",
}
VARIANTS = (None, "runlocal")
SHIPPED = [(recipe, variant) for recipe in RECIPE_FAMILIES for variant in VARIANTS]
# family -> (generator class, discriminator class or None) for the shipped defaults.
CLASSES = {
    "glcic": (glcic.CompletionNetwork, glcic.ContextDiscriminator),
    "pggan": (pggan.PGGANGenerator, pggan.PGGANDiscriminator),
    "context_encoder": (context_encoder.ContextEncoder, context_encoder.ContextEncoderDiscriminator),
    "dfnet": (dfnet.DFNet, None),
    "refinement": (refinement.RefinementNetwork, None),
}
# Model-config fields that are no generator attribute of the same name.
NOT_ATTRIBUTES = {"family", "compute_dtype", "preset", "discriminator", "coarse_size",
                  "shift_fraction"}


def _config(recipe, variant=None):
    return importlib.import_module(f"configs.{recipe}").get_config(variant)


def _model(recipe, variant=None, **changes):
    """A copy of the recipe's config.model with `changes`."""
    model = _config(recipe, variant).model.copy_and_resolve_references()
    for key, value in changes.items():
        model[key] = value
    return model


def _init_shapes(module, inputs):
    """(output, variables) of `module.init_with_output` on `inputs`, as shapes."""
    return jax.eval_shape(
        lambda: module.init_with_output(jax.random.key(0), *inputs, train=False)
    )


def _ids(case):
    recipe, variant = case
    return f"{recipe}:{variant}" if variant else recipe


# ---------------------------------------------------------------- shipped configs


def test_the_shipped_recipes_cover_every_family():
    assert set(RECIPE_FAMILIES.values()) == set(models.FAMILIES) == set(CLASSES)


@pytest.mark.parametrize("case", SHIPPED, ids=_ids)
def test_every_shipped_model_config_builds_and_initialises(case):
    recipe, variant = case
    config = _config(recipe, variant)
    model = config.model
    family = RECIPE_FAMILIES[recipe]
    assert model.family == family and models.family(model) == family
    assert model.compute_dtype == "auto"

    networks = models.build(model)

    generator_class, discriminator_class = CLASSES[family]
    assert type(networks.generator) is generator_class
    if discriminator_class is None:
        assert networks.discriminator is None
    else:
        assert type(networks.discriminator) is discriminator_class
        assert networks.discriminator.width_multiplier == model.width_multiplier
    # The generator carries every setting of the model config.
    for field, value in model.items():
        if field not in NOT_ATTRIBUTES:
            expected = tuple(value) if isinstance(value, (list, tuple)) else value
            assert getattr(networks.generator, field) == expected, field
    if family == "pggan":
        preset = pggan.GENERATOR_PRESETS[model.preset]
        assert networks.generator.num_downsamplings == preset["num_downsamplings"]
        assert networks.generator.dilated == preset["dilated"]
    assert networks.generator.dtype == jnp.float32  # "auto" on the CPU

    # Initialise at the size the recipe trains at (traced: the width costs nothing).
    size = config.data.crop_size
    inputs = models.example_inputs(model, size, local_size=config.mask.get("local_size"))
    output, variables = _init_shapes(networks.generator, inputs.generator)
    output_size = context_encoder.INPUT_SIZE if family == "context_encoder" else size
    assert output.shape == (1, output_size, output_size, 3) and output.dtype == jnp.float32
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    if networks.discriminator is not None:
        assert inputs.discriminator is not None
        logits, variables = _init_shapes(networks.discriminator, inputs.discriminator)
        assert jax.tree.leaves(logits) and jax.tree.leaves(variables)
    else:
        assert inputs.discriminator is None


@pytest.mark.parametrize("choice, expected", [
    ("pggan", pggan.PGGANDiscriminator),
    ("global", pggan.GlobalOnlyDiscriminator),
    ("patch", pggan.PatchOnlyDiscriminator),
])
def test_pggan_discriminator_choice(choice, expected):
    model = _model("pggan", "runlocal", discriminator=choice, norm="batch")
    discriminator = models.build(model).discriminator
    assert type(discriminator) is expected
    assert discriminator.norm == "batch"
    assert models.registry.PGGAN_DISCRIMINATORS[choice] is expected


def test_the_nps_content_network_is_the_dense_elu_context_encoder():
    generator = models.build(_config("nps_content").model).generator
    assert (generator.bottleneck, generator.encoder_activation, generator.decoder_activation) == (
        "dense", "elu", "elu")
    paper = models.build(_config("context_encoder").model).generator
    assert (paper.bottleneck, paper.encoder_activation, paper.decoder_activation) == (
        "channelwise", "leaky_relu", "relu")


def test_a_plain_dict_builds_like_the_config_dict():
    """Checkpoints store the model config as JSON: a plain dict."""
    model = _model("pggan", "runlocal")
    as_dict = model.to_dict()
    assert not isinstance(as_dict, ml_collections.ConfigDict)
    assert isinstance(models.as_model_config(as_dict), ml_collections.ConfigDict)
    assert models.as_model_config(model) is model
    assert models.build(as_dict) == models.build(model)
    assert models.family(as_dict) == "pggan"
    # JSON turns tuples into lists: the networks still get tuples.
    as_json = {**as_dict, "fill_value": list(model.fill_value)}
    assert models.build(as_json).generator.fill_value == tuple(model.fill_value)


# ---------------------------------------------------------------- example inputs


def _shapes(arrays):
    return None if arrays is None else tuple(array.shape for array in arrays)


def test_example_inputs_per_family():
    glcic_model = _model("glcic")
    with_local = models.example_inputs(glcic_model, 48, local_size=24)
    assert _shapes(with_local.generator) == ((1, 48, 48, 3), (1, 48, 48, 1))
    # The context discriminator takes the local window, then the whole image.
    assert _shapes(with_local.discriminator) == ((1, 24, 24, 3), (1, 48, 48, 3))
    assert models.example_inputs(glcic_model, 48).discriminator is None  # needs local_size

    pggan_inputs = models.example_inputs(_model("pggan"), 64)
    assert _shapes(pggan_inputs.generator) == ((1, 64, 64, 3), (1, 64, 64, 1))
    assert _shapes(pggan_inputs.discriminator) == ((1, 64, 64, 3),)

    for recipe in ("context_encoder", "nps_content"):  # fixed size, whatever the size asked
        for size in (64, 128, 256):
            inputs = models.example_inputs(_model(recipe), size, local_size=32)
            assert _shapes(inputs.generator) == ((1, 128, 128, 3), (1, 128, 128, 1))
            assert _shapes(inputs.discriminator) == ((1, 64, 64, 3),)

    dfnet_inputs = models.example_inputs(_model("dfnet"), 32)
    assert _shapes(dfnet_inputs.generator) == ((1, 32, 32, 3), (1, 32, 32, 1))
    assert dfnet_inputs.discriminator is None

    refinement_inputs = models.example_inputs(_model("two_stage"), 40)
    assert _shapes(refinement_inputs.generator) == ((1, 40, 40, 20),)
    assert refinement.INPUT_CHANNELS == 20
    assert refinement_inputs.discriminator is None

    for inputs in (with_local, pggan_inputs, dfnet_inputs, refinement_inputs):
        for array in (*inputs.generator, *(inputs.discriminator or ())):
            assert array.dtype == np.float32 and not array.any()


# ---------------------------------------------------------------- compute dtype


def test_auto_is_float32_on_cpu_and_bfloat16_on_accelerators():
    model = ml_collections.ConfigDict({"family": "glcic", "compute_dtype": "auto"})
    assert jax.default_backend() == "cpu"  # conftest: tests run on CPU.
    assert models.compute_dtype(model) == jnp.float32
    assert models.compute_dtype(model, backend="cpu") == jnp.float32
    assert models.compute_dtype(model, backend="gpu") == jnp.bfloat16
    assert models.compute_dtype(model, backend="tpu") == jnp.bfloat16
    assert models.COMPUTE_DTYPES == ("auto", "float32", "bfloat16")


@pytest.mark.parametrize("name, dtype", [("float32", jnp.float32), ("bfloat16", jnp.bfloat16)])
@pytest.mark.parametrize("backend", ["cpu", "gpu", "tpu"])
def test_an_explicit_dtype_holds_on_every_backend(name, dtype, backend):
    model = ml_collections.ConfigDict({"compute_dtype": name})
    assert models.compute_dtype(model, backend=backend) == dtype


def test_a_model_config_without_the_field_means_auto():
    model = ml_collections.ConfigDict({"family": "glcic"})
    assert models.compute_dtype(model, backend="cpu") == jnp.float32
    assert models.compute_dtype(model, backend="gpu") == jnp.bfloat16
    assert models.compute_dtype({"family": "dfnet"}, backend="tpu") == jnp.bfloat16


@pytest.mark.parametrize("value", ["float16", "bf16", "Float32", "", None])
def test_an_unknown_dtype_is_rejected_with_the_allowed_values(value):
    model = ml_collections.ConfigDict({"compute_dtype": value})
    with pytest.raises(models.ModelConfigError,
                       match="one of 'auto', 'float32', 'bfloat16', got") as error:
        models.compute_dtype(model)
    assert repr(value) in str(error.value)
    assert issubclass(models.ModelConfigError, ValueError)


@pytest.mark.parametrize("recipe", RECIPE_FAMILIES)
def test_build_rejects_an_unknown_dtype(recipe):
    with pytest.raises(models.ModelConfigError, match="compute_dtype must be one of"):
        models.build(_model(recipe, compute_dtype="half"))


def _convolution_input_dtypes(jaxpr) -> set:
    """dtypes of the inputs of every convolution in `jaxpr` and the jaxprs nested in it."""
    dtypes = set()
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            dtypes.update(var.aval.dtype for var in eqn.invars)
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                if isinstance(sub, jax_core.ClosedJaxpr):
                    dtypes |= _convolution_input_dtypes(sub.jaxpr)
                elif isinstance(sub, jax_core.Jaxpr):
                    dtypes |= _convolution_input_dtypes(sub)
    return dtypes


@pytest.mark.parametrize("compute_dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("recipe", RECIPE_FAMILIES)
def test_networks_compute_in_the_configured_dtype_with_float32_parameters_and_outputs(
    recipe, compute_dtype
):
    config = _config(recipe, "runlocal")
    model = _model(recipe, "runlocal", compute_dtype=compute_dtype, width_multiplier=0.125)
    networks = models.build(model)
    size = config.data.crop_size
    inputs = models.example_inputs(model, size, local_size=config.mask.get("local_size"))
    pairs = [(networks.generator, inputs.generator)]
    if networks.discriminator is not None:
        pairs.append((networks.discriminator, inputs.discriminator))
    for module, module_inputs in pairs:
        assert module.dtype == jnp.dtype(compute_dtype), module
        _, variables = _init_shapes(module, module_inputs)
        assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}

        def apply(variables, module=module, module_inputs=module_inputs):
            return module.apply(variables, *module_inputs, train=False)

        closed = jax.make_jaxpr(apply)(variables)
        assert _convolution_input_dtypes(closed.jaxpr) == {jnp.dtype(compute_dtype)}, module
        outputs = jax.tree.leaves(jax.eval_shape(apply, variables))
        assert outputs and {leaf.dtype for leaf in outputs} == {jnp.dtype(jnp.float32)}, module


# ---------------------------------------------------------------- bad model configs


@pytest.mark.parametrize("model", [{"family": "lama"}, {"width_multiplier": 1.0}, {}],
                         ids=["unknown", "no-family", "empty"])
def test_an_unknown_or_missing_family_is_named(model):
    for call in (models.build, models.family, lambda m: models.example_inputs(m, 16)):
        with pytest.raises(models.ModelConfigError, match="is not one of glcic, pggan") as error:
            call(model)
        assert repr(model.get("family")) in str(error.value)
        assert "`family` field" in str(error.value)


@pytest.mark.parametrize("recipe, field", [
    ("glcic", "width_multiplier"),
    ("pggan", "norm"),
    ("context_encoder", "bottleneck"),
    ("dfnet", "encoder_kernels"),
    ("two_stage", "encoder_kernels"),
])
def test_a_missing_field_is_named_with_the_family(recipe, field):
    model = _model(recipe)
    del model[field]
    with pytest.raises(models.ModelConfigError, match=field) as error:
        models.build(model)
    assert f"the {RECIPE_FAMILIES[recipe]} model config lacks a field" in str(error.value)


def test_an_unknown_pggan_discriminator_names_the_choices():
    with pytest.raises(models.ModelConfigError,
                       match="pggan discriminator 'both'; choose one of pggan, global, patch"):
        models.build(_model("pggan", discriminator="both"))
