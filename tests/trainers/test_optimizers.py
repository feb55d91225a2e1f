"""Tests for inpaint_jax.trainers.optimizers: optax optimizers from a config's optimizer section."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import common
from inpaint_jax.trainers import optimizers

PARAMS = {"w": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array(0.5)}
GRADS = {"w": jnp.array([0.3, -0.1, 0.2]), "b": jnp.array(-0.4)}


def updates(tx, steps=1):
    """(last update, state) after `steps` steps on gradients that change from step to step."""
    state = tx.init(PARAMS)
    for step in range(steps):
        grads = jax.tree.map(lambda g, step=step: g * (1.0 + step) * (-1.0) ** step, GRADS)
        update, state = tx.update(grads, state, PARAMS)
    return update, state


def assert_same_updates(a, b, steps=3):
    for x, y in zip(jax.tree.leaves(updates(a, steps)[0]), jax.tree.leaves(updates(b, steps)[0])):
        np.testing.assert_allclose(x, y, rtol=1e-6)


def test_adadelta_reads_rho_and_eps():
    section = common.adadelta(learning_rate=0.7, rho=0.8, eps=1e-3)
    assert (section.name, section.rho, section.eps, section.decay_every_steps) == (
        "adadelta", 0.8, 1e-3, 0)
    assert_same_updates(optimizers.create(section), optax.adadelta(0.7, rho=0.8, eps=1e-3))
    # and really uses them: another rho or eps moves the parameters differently.
    for other in (optax.adadelta(0.7, rho=0.95, eps=1e-3), optax.adadelta(0.7, rho=0.8, eps=1e-6)):
        with pytest.raises(AssertionError):
            assert_same_updates(optimizers.create(section), other)


def test_adam_reads_b1_b2_and_eps():
    section = common.adam(learning_rate=1e-2, b1=0.5, b2=0.9, eps=1e-4)
    assert (section.name, section.b1, section.b2, section.eps) == ("adam", 0.5, 0.9, 1e-4)
    assert_same_updates(optimizers.create(section), optax.adam(1e-2, b1=0.5, b2=0.9, eps=1e-4))
    for other in (optax.adam(1e-2, b1=0.9, b2=0.9, eps=1e-4),
                  optax.adam(1e-2, b1=0.5, b2=0.999, eps=1e-4),
                  optax.adam(1e-2, b1=0.5, b2=0.9, eps=1e-8)):
        with pytest.raises(AssertionError):
            assert_same_updates(optimizers.create(section), other)


def test_adam_defaults():
    section = common.adam(learning_rate=2e-4, b1=0.9)
    assert (section.b2, section.eps, section.decay_every_steps, section.decay_factor) == (
        0.999, 1e-8, 0, 0.1)


def integer_leaves(tree):
    return [leaf for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.integer)]


def test_a_constant_rate_stays_a_number_so_the_optimizer_state_has_no_step_count():
    section = common.adadelta(learning_rate=1.0, rho=0.9, eps=1e-6)
    rate = optimizers.learning_rate(section)
    assert isinstance(rate, float) and rate == 1.0
    assert integer_leaves(optimizers.create(section).init(PARAMS)) == []
    section.decay_every_steps = 10
    assert len(integer_leaves(optimizers.create(section).init(PARAMS))) == 1  # the step count
    adam = common.adam(learning_rate=2e-4, b1=0.9)
    assert isinstance(optimizers.learning_rate(adam), float)
    constant_leaves = len(jax.tree.leaves(optimizers.create(adam).init(PARAMS)))
    adam.decay_every_steps = 10  # a schedule adds its own count to Adam's
    assert len(jax.tree.leaves(optimizers.create(adam).init(PARAMS))) == constant_leaves + 1


def test_the_learning_rate_decays_in_a_staircase():
    section = common.adam(learning_rate=2e-4, b1=0.9, decay_every_steps=10, decay_factor=0.1)
    rate = optimizers.learning_rate(section)
    assert callable(rate)
    got = [float(rate(jnp.int32(step))) for step in (0, 9, 10, 19, 20, 25)]
    np.testing.assert_allclose(got, [2e-4, 2e-4, 2e-5, 2e-5, 2e-6, 2e-6], rtol=1e-6)


def test_the_decaying_rate_scales_the_updates():
    constant = common.adam(learning_rate=1e-2, b1=0.9)
    decaying = common.adam(learning_rate=1e-2, b1=0.9, decay_every_steps=2, decay_factor=0.5)
    first_constant, _ = updates(optimizers.create(constant), 1)
    first_decaying, _ = updates(optimizers.create(decaying), 1)
    np.testing.assert_allclose(first_decaying["w"], first_constant["w"], rtol=1e-6)
    third_constant, _ = updates(optimizers.create(constant), 3)
    third_decaying, _ = updates(optimizers.create(decaying), 3)  # step index 2: rate halved
    np.testing.assert_allclose(third_decaying["w"], 0.5 * third_constant["w"], rtol=1e-5)


def test_a_negative_decay_interval_is_refused():
    with pytest.raises(ValueError, match="decay_every_steps must be >= 0"):
        optimizers.learning_rate(common.adam(learning_rate=1e-3, b1=0.9, decay_every_steps=-1))


@pytest.mark.parametrize("name", ["sgd", "Adam", ""])
def test_an_unknown_optimizer_is_refused_with_the_choices(name):
    section = common.adam(learning_rate=1e-3, b1=0.9)
    section.name = name
    with pytest.raises(ValueError, match=f"Unknown optimizer {name!r}; choose one of 'adadelta', "
                                         "'adam'"):
        optimizers.create(section)
