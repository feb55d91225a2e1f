"""Tests for inpaint_jax.trainers.state: the train-state pytree, how it is made and applied."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from tests.helpers import tree_equal

from inpaint_jax import models, parallel
from inpaint_jax.trainers import state as train_state

pytestmark = pytest.mark.fast_compile  # tiny networks: compiling dominates


class Generator(nn.Module):
    """A convolution and a BatchNorm: parameters and batch statistics, like the real generators."""

    @nn.compact
    def __call__(self, image, mask, train):
        x = nn.Conv(4, (3, 3))(jnp.concatenate([image, mask], axis=-1))
        x = nn.BatchNorm(use_running_average=not train)(x)
        return nn.Conv(3, (1, 1))(x)

    def features(self, image, mask, train):
        return self(image, mask, train).mean(axis=(1, 2))


class Discriminator(nn.Module):
    """A dense layer on the flattened image, no batch statistics."""

    @nn.compact
    def __call__(self, image, train):
        del train
        return nn.Dense(1)(image.reshape(image.shape[0], -1))[:, 0]


INPUTS = models.ExampleInputs(
    generator=(np.zeros((1, 8, 8, 3), np.float32), np.zeros((1, 8, 8, 1), np.float32)),
    discriminator=(np.zeros((1, 8, 8, 3), np.float32),),
)
CONFIG = ml_collections.ConfigDict({"seed": 0, "rng_impl": "rbg"})


@pytest.fixture(scope="module")
def mesh():
    return parallel.create_mesh()


@pytest.fixture(scope="module")
def adversarial(mesh):
    """(state, g_tx, d_tx) of the generator and discriminator above on all 8 devices."""
    g_tx, d_tx = optax.sgd(0.1), optax.adam(1e-2)
    networks = models.Networks(Generator(), Discriminator())
    return train_state.create(CONFIG, networks, INPUTS, g_tx, d_tx, mesh), g_tx, d_tx


def test_create_initialises_both_networks_and_their_optimizers(adversarial):
    state, g_tx, d_tx = adversarial
    assert int(state.step) == 0
    g_vars = Generator().init(jax.random.key(1), *INPUTS.generator, train=False)
    assert jax.tree.structure(state.g_params) == jax.tree.structure(g_vars["params"])
    assert jax.tree.structure(state.batch_stats["g"]) == jax.tree.structure(g_vars["batch_stats"])
    assert state.d_params["Dense_0"]["kernel"].shape == (8 * 8 * 3, 1)
    assert state.batch_stats["d"] == {}
    assert jax.tree.structure(state.g_opt_state) == jax.tree.structure(g_tx.init(state.g_params))
    assert jax.tree.structure(state.d_opt_state) == jax.tree.structure(d_tx.init(state.d_params))
    assert jnp.issubdtype(state.rng.dtype, jax.dtypes.prng_key)


def test_create_without_a_discriminator_leaves_its_part_empty(mesh):
    g_tx = optax.sgd(0.1)
    networks = models.Networks(Generator(), None)
    inputs = models.ExampleInputs(INPUTS.generator, None)
    state = train_state.create(CONFIG, networks, inputs, g_tx, None, mesh)
    assert state.d_params == {} and state.batch_stats["d"] == {}
    assert isinstance(state.d_opt_state, optax.EmptyState)
    assert state.g_params["Conv_0"]["kernel"].shape == (3, 3, 4, 4)


def test_a_discriminator_without_example_inputs_is_refused(mesh):
    networks = models.Networks(Generator(), Discriminator())
    inputs = models.ExampleInputs(INPUTS.generator, None)
    with pytest.raises(ValueError, match="discriminator has no example inputs"):
        train_state.create(CONFIG, networks, inputs, optax.sgd(0.1), optax.sgd(0.1), mesh)


def test_the_state_is_replicated_over_the_mesh(adversarial, mesh):
    state, _, _ = adversarial
    assert mesh.devices.size == 8
    for leaf in jax.tree.leaves(state):
        assert leaf.sharding.is_fully_replicated
        assert leaf.sharding.device_set == set(mesh.devices.flat)


def test_the_seed_decides_the_initial_parameters(adversarial, mesh):
    state, g_tx, d_tx = adversarial
    networks = models.Networks(Generator(), Discriminator())
    again = train_state.create(CONFIG, networks, INPUTS, g_tx, d_tx, mesh)
    assert tree_equal(again.g_params, state.g_params) and tree_equal(again.d_params, state.d_params)
    other = ml_collections.ConfigDict({"seed": 1, "rng_impl": "rbg"})
    reseeded = train_state.create(other, networks, INPUTS, g_tx, d_tx, mesh)
    assert not tree_equal(reseeded.g_params, state.g_params)


def test_generator_variables_are_its_params_and_batch_stats(adversarial):
    state, _, _ = adversarial
    variables = train_state.generator_variables(state)
    assert set(variables) == {"params", "batch_stats"}
    assert variables["params"] is state.g_params
    assert variables["batch_stats"] is state.batch_stats["g"]
    output = Generator().apply(variables, *INPUTS.generator, train=False)
    assert output.shape == (1, 8, 8, 3)


def test_apply_model_in_training_returns_the_new_batch_stats(adversarial):
    state, _, _ = adversarial
    image = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3))
    mask = jnp.ones((2, 8, 8, 1))
    stats = state.batch_stats["g"]
    output, new_stats = train_state.apply_model(Generator(), state.g_params, stats, image, mask,
                                                train=True)
    expected, updates = Generator().apply({"params": state.g_params, "batch_stats": stats}, image,
                                          mask, train=True, mutable=["batch_stats"])
    np.testing.assert_array_equal(output, expected)
    assert tree_equal(new_stats, updates["batch_stats"]) and not tree_equal(new_stats, stats)


def test_apply_model_in_eval_mode_keeps_the_batch_stats(adversarial):
    state, _, _ = adversarial
    image = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3))
    mask = jnp.zeros((2, 8, 8, 1))
    stats = state.batch_stats["g"]
    output, same = train_state.apply_model(Generator(), state.g_params, stats, image, mask,
                                           train=False)
    assert same is stats
    expected = Generator().apply({"params": state.g_params, "batch_stats": stats}, image, mask,
                                 train=False)
    np.testing.assert_array_equal(output, expected)
    features, _ = train_state.apply_model(Generator(), state.g_params, stats, image, mask,
                                          train=False, method="features")
    np.testing.assert_allclose(features, expected.mean(axis=(1, 2)), rtol=1e-6)


def test_apply_model_of_a_module_without_batch_norm_gives_back_its_empty_stats(adversarial):
    state, _, _ = adversarial
    image = jnp.ones((2, 8, 8, 3))
    logits, stats = train_state.apply_model(Discriminator(), state.d_params, {}, image, train=True)
    assert logits.shape == (2,) and stats == {}


def test_updates_change_one_network_and_take_its_batch_stats(adversarial):
    state, g_tx, d_tx = adversarial
    g_grads = jax.tree.map(jnp.ones_like, state.g_params)
    g_stats = jax.tree.map(lambda x: x + 1.0, state.batch_stats["g"])
    updated = state.update_generator(g_tx, g_grads, g_stats)
    expected = jax.tree.map(lambda p: p - 0.1, state.g_params)  # sgd(0.1) on gradients of 1
    for got, want in zip(jax.tree.leaves(updated.g_params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert tree_equal(updated.batch_stats["g"], g_stats)
    assert tree_equal(updated.d_params, state.d_params)
    assert tree_equal(updated.d_opt_state, state.d_opt_state)
    assert int(updated.step) == int(state.step)  # the phase steps count steps

    d_grads = jax.tree.map(jnp.ones_like, state.d_params)
    updated = state.update_discriminator(d_tx, d_grads, {})
    assert not tree_equal(updated.d_params, state.d_params)
    assert not tree_equal(updated.d_opt_state, state.d_opt_state)
    assert tree_equal(updated.g_params, state.g_params)
    assert tree_equal(updated.batch_stats["g"], state.batch_stats["g"])
