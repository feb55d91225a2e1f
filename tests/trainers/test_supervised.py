"""Tests for inpaint_jax.trainers.supervised: the one phase step of non-adversarial recipes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from tests.helpers import tiny_dfnet_config, tree_equal

from configs import common
from inpaint_jax import models, parallel
from inpaint_jax.trainers import optimizers, phases, supervised
from inpaint_jax.trainers import state as train_state

pytestmark = pytest.mark.fast_compile  # tiny networks: compiling dominates


class Generator(nn.Module):
    """A convolution and a BatchNorm: parameters and batch statistics, like the real generators."""

    @nn.compact
    def __call__(self, image, mask, train):
        x = nn.Conv(4, (3, 3))(jnp.concatenate([image, mask], axis=-1))
        x = nn.BatchNorm(use_running_average=not train)(x)
        return nn.Conv(3, (1, 1))(x)


def loss_fn(g_params, g_stats, batch):
    """Two terms (hole and valid L1) weighted 2 and 1, as a recipe's loss returns them."""
    prediction, g_stats = train_state.apply_model(Generator(), g_params, g_stats, batch["image"],
                                                  batch["mask"], train=True)
    error = jnp.abs(prediction - batch["image"])
    terms = {"hole": jnp.mean(error * batch["mask"]), "valid": jnp.mean(error * (1 - batch["mask"]))}
    return 2.0 * terms["hole"] + terms["valid"], (g_stats, terms)


SECTION = common.adam(learning_rate=1e-2, b1=0.9, decay_every_steps=2, decay_factor=0.1)


@pytest.fixture(scope="module")
def state():
    """The initial state of the generator above, with SECTION's Adam, on one device."""
    inputs = models.ExampleInputs((np.zeros((1, 8, 8, 3), np.float32),
                                   np.zeros((1, 8, 8, 1), np.float32)), None)
    config = ml_collections.ConfigDict({"seed": 0, "rng_impl": "rbg"})
    return train_state.create(config, models.Networks(Generator(), None), inputs,
                              optimizers.create(SECTION), None,
                              parallel.create_mesh(jax.devices()[:1]))


@pytest.fixture(scope="module")
def steps():
    """phase_steps of `loss_fn` with SECTION's optimizer and decaying learning rate."""
    return supervised.phase_steps(loss_fn, optimizers.create(SECTION),
                                  optimizers.learning_rate(SECTION))


@pytest.fixture(scope="module")
def batch():
    image = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3))
    mask = jnp.zeros((2, 8, 8, 1)).at[:, 2:6, 2:6].set(1.0)
    return {"image": image, "mask": mask}


def test_build_makes_the_network_binds_it_to_the_loss_and_runs_one_phase(photo_dir, tmp_path,
                                                                         batch):
    config = tiny_dfnet_config(photo_dir, str(tmp_path), total_steps=5)
    calls = []

    def recipe_loss(generator, config, features, g_params, g_stats, batch):
        calls.append(("loss", generator, config, features))
        prediction, g_stats = train_state.apply_model(generator, g_params, g_stats,
                                                      batch["image"], batch["mask"], train=True)
        return jnp.mean(jnp.abs(prediction - batch["image"])), (g_stats, {"l1": jnp.zeros(())})

    def recipe_predict(generator, state, batch):
        calls.append(("predict", generator, state))
        return batch["image"]

    training = supervised.build(config, parallel.create_mesh(jax.devices()[:1]), recipe_loss,
                                recipe_predict)
    generator = models.build(config.model).generator
    assert training.schedule.lengths == ((phases.TRAIN, 5),)
    assert set(training.steps) == {phases.TRAIN}
    assert int(training.state.step) == 0 and training.state.d_params == {}
    assert isinstance(training.state.d_opt_state, optax.EmptyState)
    shapes = jax.eval_shape(lambda: generator.init(
        jax.random.key(0), *models.example_inputs(config.model, 16).generator, train=False))
    assert jax.tree.structure(training.state.g_params) == jax.tree.structure(shapes["params"])
    image = jnp.zeros((2, 16, 16, 3))
    dfnet_batch = {"image": image, "mask": jnp.ones((2, 16, 16, 1))}
    _, metrics = jax.eval_shape(training.steps[phases.TRAIN], training.state, dfnet_batch)
    assert set(metrics) == {"g_l1", "g_loss", "g_grad_norm", "g_learning_rate"}
    assert calls[0] == ("loss", generator, config, None)  # no VGG features: none weighted
    assert training.predict(training.state, dfnet_batch) is image
    assert calls[-1] == ("predict", generator, training.state)


def test_train_step_reports_each_term_the_loss_the_gradient_norm_and_the_rate(state, steps,
                                                                            batch):
    new, metrics = jax.jit(steps[phases.TRAIN])(state, batch)
    assert set(metrics) == {"g_hole", "g_valid", "g_loss", "g_grad_norm", "g_learning_rate"}
    np.testing.assert_allclose(metrics["g_loss"], 2 * metrics["g_hole"] + metrics["g_valid"],
                               rtol=1e-6)
    (loss, (_, terms)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.g_params, state.batch_stats["g"], batch)
    np.testing.assert_allclose(metrics["g_loss"], loss, rtol=1e-6)
    np.testing.assert_allclose(metrics["g_hole"], terms["hole"], rtol=1e-6)
    np.testing.assert_allclose(metrics["g_grad_norm"], optax.tree.norm(grads), rtol=1e-5)
    np.testing.assert_allclose(metrics["g_learning_rate"], 1e-2, rtol=1e-6)
    assert int(new.step) == 1


def test_the_reported_rate_follows_the_decaying_schedule(state, steps, batch):
    step = jax.jit(steps[phases.TRAIN])
    rates = []
    for _ in range(5):
        state, metrics = step(state, batch)
        rates.append(float(metrics["g_learning_rate"]))
    np.testing.assert_allclose(rates, [1e-2, 1e-2, 1e-3, 1e-3, 1e-4], rtol=1e-5)
    assert int(state.step) == 5


def test_a_constant_rate_is_reported_as_it_is(state, batch):
    tx = optimizers.create(SECTION)
    _, metrics = jax.jit(lambda s, b: supervised.train_step(loss_fn, tx, 1e-2, s, b))(state, batch)
    np.testing.assert_allclose(metrics["g_learning_rate"], 1e-2, rtol=1e-6)


def test_one_update_is_the_optimizer_update_of_the_loss_gradient(state, steps, batch):
    new, _ = jax.jit(steps[phases.TRAIN])(state, batch)
    (_, (g_stats, _)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.g_params, state.batch_stats["g"], batch)
    tx = optimizers.create(SECTION)
    updates, opt_state = tx.update(grads, state.g_opt_state, state.g_params)
    expected = optax.apply_updates(state.g_params, updates)
    for got, want in zip(jax.tree.leaves(new.g_params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    for got, want in zip(jax.tree.leaves(new.g_opt_state), jax.tree.leaves(opt_state)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)
    for got, want in zip(jax.tree.leaves(new.batch_stats["g"]), jax.tree.leaves(g_stats)):
        np.testing.assert_allclose(got, want, rtol=1e-5)
    assert not tree_equal(new.batch_stats["g"], state.batch_stats["g"])
    assert new.d_params == {}
