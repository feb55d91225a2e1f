"""inpaint_jax.trainers.common: the compute-dtype switch every recipe shares."""

import importlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.extend import core as jax_core

from inpaint_jax import inference
from inpaint_jax.models import refinement
from inpaint_jax.trainers import common

pytestmark = pytest.mark.fast_compile  # tiny networks: compiling dominates

# Recipes whose build_models reads config.compute_dtype.
RECIPES = ("glcic", "pggan", "context_encoder", "dfnet", "two_stage")


def _config(recipe, compute_dtype=None):
    config = importlib.import_module(f"configs.{recipe}").get_config("runlocal")
    if compute_dtype is not None:
        config.compute_dtype = compute_dtype
    return config


@pytest.mark.parametrize("recipe", [*RECIPES, "nps_content"])
def test_every_recipe_config_defaults_to_auto(recipe):
    assert _config(recipe).compute_dtype == "auto"


def test_auto_is_float32_on_cpu_and_bfloat16_on_accelerators():
    config = ml_collections.ConfigDict({"compute_dtype": "auto"})
    assert jax.default_backend() == "cpu"  # conftest: tests run on CPU.
    assert common.resolve_compute_dtype(config) == jnp.float32
    assert common.resolve_compute_dtype(config, backend="cpu") == jnp.float32
    assert common.resolve_compute_dtype(config, backend="gpu") == jnp.bfloat16
    assert common.resolve_compute_dtype(config, backend="tpu") == jnp.bfloat16


@pytest.mark.parametrize("name, dtype", [("float32", jnp.float32), ("bfloat16", jnp.bfloat16)])
@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_an_explicit_dtype_holds_on_every_backend(name, dtype, backend):
    config = ml_collections.ConfigDict({"compute_dtype": name})
    assert common.resolve_compute_dtype(config, backend=backend) == dtype


def test_a_config_without_the_field_means_auto():
    """Checkpoints saved before compute_dtype existed carry configs without it."""
    config = ml_collections.ConfigDict({"trainer": "glcic"})
    assert common.resolve_compute_dtype(config, backend="cpu") == jnp.float32
    assert common.resolve_compute_dtype(config, backend="gpu") == jnp.bfloat16


@pytest.mark.parametrize("value", ["float16", "bf16", "Float32", ""])
def test_an_unknown_dtype_is_rejected_with_the_allowed_values(value):
    config = ml_collections.ConfigDict({"compute_dtype": value})
    with pytest.raises(ValueError, match="one of 'auto', 'float32', 'bfloat16', got") as error:
        common.resolve_compute_dtype(config)
    assert repr(value) in str(error.value)


@pytest.mark.parametrize("recipe", RECIPES)
def test_build_models_rejects_an_unknown_dtype(recipe):
    trainer = importlib.import_module(f"inpaint_jax.trainers.{recipe}")
    with pytest.raises(ValueError, match="config.compute_dtype must be one of"):
        trainer.build_models(_config(recipe, "half"))


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


def _model_inputs(recipe, config):
    """(generator inputs, discriminator inputs or None) as zeros of the recipe's sizes."""
    size = config.data.crop_size
    if recipe == "two_stage":  # the refinement network's 20-channel input, no discriminator.
        return (jnp.zeros((1, size, size, refinement.INPUT_CHANNELS)),), None
    image, mask = jnp.zeros((1, size, size, 3)), jnp.zeros((1, size, size, 1))
    local = config.mask.local_size
    discriminator = {
        "glcic": (jnp.zeros((1, local, local, 3)), image),
        "pggan": (image,),
        "context_encoder": (jnp.zeros((1, 64, 64, 3)),),
        "dfnet": None,
    }[recipe]
    return (image, mask), discriminator


@pytest.mark.parametrize("compute_dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("recipe", RECIPES)
def test_build_models_computes_in_the_configured_dtype_with_float32_parameters_and_outputs(
    recipe, compute_dtype
):
    trainer = importlib.import_module(f"inpaint_jax.trainers.{recipe}")
    config = _config(recipe, compute_dtype)
    config.model.width_multiplier = 0.125
    generator, discriminator = trainer.build_models(config)
    generator_inputs, discriminator_inputs = _model_inputs(recipe, config)
    models = [(generator, generator_inputs)]
    if discriminator is not None:
        models.append((discriminator, discriminator_inputs))
    for module, inputs in models:
        variables = jax.eval_shape(
            lambda module=module, inputs=inputs: module.init(jax.random.key(0), *inputs, train=False)
        )
        assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}

        def apply(variables, module=module, inputs=inputs):
            return module.apply(variables, *inputs, train=False)

        closed = jax.make_jaxpr(apply)(variables)
        assert _convolution_input_dtypes(closed.jaxpr) == {jnp.dtype(compute_dtype)}, module
        outputs = jax.tree.leaves(jax.eval_shape(apply, variables))
        assert outputs and {leaf.dtype for leaf in outputs} == {jnp.dtype(jnp.float32)}, module


def test_a_checkpoint_saved_with_auto_loads_in_float32_on_cpu(glcic_workdir):
    model = inference.load_model(glcic_workdir)
    assert model.config.compute_dtype == "auto"
    assert model._generator.dtype == jnp.float32  # noqa: SLF001  (the module load_model built)
    image = np.random.default_rng(0).uniform(size=(16, 16, 3)).astype(np.float32)
    mask = np.zeros((16, 16, 1), np.float32)
    mask[4:12, 4:12] = 1
    assert model(image, mask).dtype == np.float32
