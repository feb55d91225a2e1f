"""Tests for inpaint_jax.trainers.gan: the three adversarial phase steps, through GLCIC's build.

One tiny GLCIC (16 px crops, 1/8-width networks) and one real batch; each
phase step is compiled once per mesh and compute dtype and its result
shared by the tests that look at it.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tests.helpers import (convolution_input_dtypes, float_leaves, override, tiny_config,
                           tree_equal)

from inpaint_jax import losses, models, parallel
from inpaint_jax.data import datasets
from inpaint_jax.models import layers
from inpaint_jax.trainers import gan, glcic, phases
from inpaint_jax.trainers import state as train_state

pytestmark = pytest.mark.fast_compile  # tiny networks: compiling dominates

PHASES = (phases.COMPLETION, phases.DISCRIMINATOR, phases.JOINT)


class Phases:
    """A recipe's `loop.Training` on a mesh, and each phase's first step from its initial state."""

    def __init__(self, config, mesh, local_batch):
        self.config = config
        self.mesh = mesh
        self.training = glcic.build(config, mesh)
        self.batch = parallel.make_global_batch(local_batch, mesh)
        self._results = {}

    @property
    def state(self):
        return self.training.state

    def step(self, phase):
        """(state, metrics) after one `phase` step from the initial state; compiled once."""
        if phase not in self._results:
            step = jax.jit(self.training.steps[phase])
            self._results[phase] = jax.device_get(step(self.state, self.batch))
        return self._results[phase]


@pytest.fixture(scope="module")
def config(photo_dir, tmp_path_factory):
    return tiny_config(photo_dir, str(tmp_path_factory.mktemp("tfds")))


@pytest.fixture(scope="module")
def local_batch(config):
    """One training batch as the data pipeline gives it (8 examples)."""
    return next(datasets.create(config, parallel.create_mesh(jax.devices()[:1])).train)


@pytest.fixture(scope="module")
def one_device(config, local_batch):
    return Phases(config, parallel.create_mesh(jax.devices()[:1]), local_batch)


@pytest.fixture(scope="module")
def bfloat16(config, local_batch):
    """The same recipe with model.compute_dtype="bfloat16", on one device."""
    config = override(config.copy_and_resolve_references(), {"model.compute_dtype": "bfloat16"})
    return Phases(config, parallel.create_mesh(jax.devices()[:1]), local_batch)


def all_finite(metrics):
    return all(np.isfinite(float(value)) for value in metrics.values())


def test_phase_steps_are_the_three_phases():
    assert set(gan.phase_steps(None)) == set(PHASES)


def test_reconstruction_losses_by_name():
    assert gan.reconstruction_loss("mse") is losses.masked_mse
    assert gan.reconstruction_loss("l1") is losses.masked_l1
    with pytest.raises(ValueError, match="Unknown reconstruction loss 'l2'; choose one of mse, l1"):
        gan.reconstruction_loss("l2")


def test_build_follows_the_recipe_schedule_and_predicts_in_eval_mode(one_device):
    training = one_device.training
    assert training.schedule == glcic.schedule(one_device.config)
    assert set(training.steps) == set(PHASES)
    networks = models.build(one_device.config.model)
    batch = one_device.batch
    expected = networks.generator.apply(train_state.generator_variables(one_device.state),
                                        batch["image"], batch["mask"], train=False)
    np.testing.assert_allclose(training.predict(one_device.state, batch), expected, rtol=1e-5,
                               atol=1e-6)


def test_completion_step_updates_only_the_generator(one_device):
    state = one_device.state
    new, metrics = one_device.step(phases.COMPLETION)
    assert int(new.step) == 1
    assert set(metrics) == {"g_reconstruction", "g_grad_norm"}
    assert all_finite(metrics)
    assert not tree_equal(new.g_params, state.g_params)
    assert not tree_equal(new.batch_stats["g"], state.batch_stats["g"])
    assert tree_equal(new.d_params, state.d_params)
    assert tree_equal(new.batch_stats["d"], state.batch_stats["d"])


def test_discriminator_step_freezes_the_generator(one_device):
    state = one_device.state
    new, metrics = one_device.step(phases.DISCRIMINATOR)
    assert int(new.step) == 1
    assert set(metrics) == {"d_loss", "d_grad_norm", "d_acc_real", "d_acc_fake"}
    assert all_finite(metrics)
    assert tree_equal(new.g_params, state.g_params)
    assert tree_equal(new.batch_stats["g"], state.batch_stats["g"])
    assert tree_equal(new.g_opt_state, state.g_opt_state)
    assert not tree_equal(new.d_params, state.d_params)


def test_joint_step_updates_both_on_the_weighted_joint_loss(one_device):
    config, state = one_device.config, one_device.state
    new, metrics = one_device.step(phases.JOINT)
    assert int(new.step) == 1
    assert {"g_loss", "g_reconstruction", "g_adversarial", "d_loss"} <= set(metrics)
    assert all_finite(metrics)
    assert not tree_equal(new.g_params, state.g_params)
    assert not tree_equal(new.d_params, state.d_params)
    expected = (config.loss.reconstruction_weight * float(metrics["g_reconstruction"])
                + config.loss.adversarial_weight * float(metrics["g_adversarial"]))
    np.testing.assert_allclose(float(metrics["g_loss"]), expected, rtol=1e-6)


def test_joint_step_gradient_matches_direct_differentiation(one_device):
    """The single-forward VJP gives the gradient of differentiating end to end."""
    config, batch = one_device.config, one_device.batch
    networks = models.build(config.model)
    sgd = optax.sgd(1.0)  # the update is minus the gradient
    recipe = gan.GAN(
        generator=networks.generator,
        discriminator=networks.discriminator,
        g_tx=sgd,
        d_tx=sgd,
        reconstruction=gan.reconstruction_loss(config.loss.reconstruction),
        reconstruction_weight=config.loss.reconstruction_weight,
        discriminator_loss=functools.partial(glcic.discriminator_loss, config,
                                             networks.discriminator),
        adversarial_loss=functools.partial(glcic.adversarial_loss, config, networks.discriminator),
    )
    state = one_device.state.replace(g_opt_state=sgd.init(one_device.state.g_params),
                                     d_opt_state=sgd.init(one_device.state.d_params))
    new, _ = jax.jit(functools.partial(gan.joint_step, recipe))(state, batch)

    def direct(g_params):
        # The generator's loss against the discriminator the step updated first.
        prediction, _ = gan.complete(recipe, state.replace(g_params=g_params), batch, train=True)
        completion = layers.composite(batch["image"], prediction, batch["mask"])
        adversarial, _ = recipe.adversarial_loss(new.d_params, new.batch_stats["d"], completion,
                                                 batch)
        reconstruction = recipe.reconstruction(prediction, batch["image"], batch["mask"])
        return recipe.reconstruction_weight * reconstruction + adversarial

    expected = jax.jit(jax.grad(direct))(state.g_params)
    got = jax.tree.map(lambda old, new: old - new, state.g_params, new.g_params)
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        scale = float(jnp.max(jnp.abs(e)))
        np.testing.assert_allclose(g, e, atol=1e-4 * scale + 1e-8)


@pytest.mark.parametrize("phase", PHASES)
def test_one_device_and_eight_devices_agree(config, local_batch, one_device, phase):
    eight = Phases(config, parallel.create_mesh(jax.devices()[:8]), local_batch)
    assert eight.batch["image"].sharding.num_devices == 8
    assert one_device.batch["image"].sharding.num_devices == 1
    (one_state, one_metrics), (eight_state, eight_metrics) = one_device.step(phase), eight.step(phase)
    assert set(one_metrics) == set(eight_metrics)
    for key in one_metrics:
        np.testing.assert_allclose(one_metrics[key], eight_metrics[key], rtol=1e-4, atol=1e-6)
    for a, b in zip(jax.tree.leaves(one_state), jax.tree.leaves(eight_state)):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_bfloat16_models_keep_float32_parameters_and_optimizer_state(one_device, bfloat16):
    assert {leaf.dtype for leaf in float_leaves(bfloat16.state)} == {jnp.dtype(jnp.float32)}
    # The same parameters as the float32 recipe's: checkpoints move between the two.
    assert tree_equal(bfloat16.state.g_params, one_device.state.g_params)
    assert tree_equal(bfloat16.state.d_params, one_device.state.d_params)
    for phase in (phases.COMPLETION, phases.DISCRIMINATOR):  # generator, then discriminator
        jaxpr = jax.make_jaxpr(bfloat16.training.steps[phase])(bfloat16.state, bfloat16.batch)
        assert convolution_input_dtypes(jaxpr.jaxpr) == {jnp.dtype(jnp.bfloat16)}, phase


def update_cosine(before, after_a, after_b):
    """Cosine between the parameter changes before -> after_a and before -> after_b."""

    def change(after):
        return np.concatenate(
            [np.ravel(a - b) for a, b in zip(float_leaves(after), float_leaves(before))]
        )

    delta_a, delta_b = change(after_a), change(after_b)
    return delta_a @ delta_b / (np.linalg.norm(delta_a) * np.linalg.norm(delta_b))


@pytest.mark.parametrize("phase", PHASES)
def test_bfloat16_step_stays_finite_and_close_to_the_float32_step(one_device, bfloat16, phase):
    state = one_device.state
    want, want_metrics = one_device.step(phase)
    got, got_metrics = bfloat16.step(phase)

    assert set(got_metrics) == set(want_metrics)
    for name, value in got_metrics.items():
        assert value.dtype == np.float32 and np.isfinite(float(value)), name  # float32 losses
        if name.endswith(("loss", "reconstruction", "adversarial")):
            np.testing.assert_allclose(value, want_metrics[name], rtol=3e-2, err_msg=name)
        elif name.endswith("grad_norm"):
            np.testing.assert_allclose(value, want_metrics[name], rtol=0.2, err_msg=name)
    leaves = float_leaves(got)
    assert {leaf.dtype for leaf in leaves} == {np.dtype(np.float32)}
    assert all(np.isfinite(leaf).all() for leaf in leaves)
    for got_stats, want_stats in zip(float_leaves(got.batch_stats), float_leaves(want.batch_stats)):
        np.testing.assert_allclose(got_stats, want_stats, rtol=1e-2, atol=2e-3)
    trained = {"completion": ["g"], "discriminator": ["d"], "joint": ["g", "d"]}[phase]
    for prefix in trained:
        params = f"{prefix}_params"
        before, f32, bf16 = (jax.device_get(getattr(s, params)) for s in (state, want, got))
        assert not tree_equal(bf16, f32)  # bfloat16 arithmetic really happened,
        assert update_cosine(before, f32, bf16) > 0.8, params  # yet the update points the same way.
