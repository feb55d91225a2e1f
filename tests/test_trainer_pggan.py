"""PGGAN trainer: paper loss weights, phase steps, ablation discriminators, resume."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage
from tests.helpers import override, recipe_steps

from configs import pggan as pggan_config
from inpaint_jax import checkpointing, evaluation, inference, parallel
from inpaint_jax.trainers import common
from inpaint_jax.trainers import pggan as trainer

pytestmark = pytest.mark.fast_compile  # tiny networks: compiling dominates


def tiny_config(photo_dir, data_dir, **overrides):
    """runlocal shrunk to 1/8-width networks with 2 residual blocks."""
    config = pggan_config.get_config("runlocal")
    config.data.name = "image_folder"
    config.data.manual_dir = photo_dir
    config.data.data_dir = data_dir
    config.data.resize_range = (128, 136)
    config.model.num_blocks = 2
    config.model.width_multiplier = 0.125
    config.completion_steps = 1
    config.total_steps = 3
    config.log_every_steps = 1
    config.eval_every_steps = 3
    config.checkpoint_every_steps = 2
    return override(config, overrides)


def test_paper_defaults():
    config = pggan_config.get_config()
    assert config.trainer == "pggan"
    assert config.loss.reconstruction == "l1"
    assert config.loss.reconstruction_weight == 0.995
    assert config.loss.global_weight == 0.0025
    assert config.loss.patch_weight == 0.0025
    assert config.model.preset == "PGGAN-DRes"
    assert config.model.upsampling == "interpolated"
    assert config.model.discriminator == "pggan"
    assert config.data.crop_size == 256
    assert config.completion_steps == 0
    assert trainer.phase_for_step(0, config) == "joint"


def test_phase_schedule_with_warm_up():
    config = pggan_config.get_config()
    config.completion_steps = 10
    assert trainer.phase_for_step(9, config) == "completion"
    assert trainer.phase_for_step(10, config) == "joint"


@pytest.fixture(scope="module")
def setup(photo_dir, tmp_path_factory):
    config = tiny_config(photo_dir, str(tmp_path_factory.mktemp("tfds")))
    mesh = parallel.create_mesh(jax.devices()[:1])
    state, steps = recipe_steps(trainer, config, mesh)
    batch = parallel.make_global_batch(next(common.create_datasets(config, mesh).train), mesh)
    return config, state, steps, batch


def changed(a, b):
    return any(
        not bool(jnp.array_equal(x, y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def test_joint_step_weights_l1_and_both_adversarial_terms_as_configured(setup):
    config, state, steps, batch = setup
    new, metrics = jax.jit(steps.joint_step)(state, batch)
    assert {"d_loss_global", "d_loss_patch", "g_adversarial_global", "g_adversarial_patch"} <= set(
        metrics
    )
    assert all(np.isfinite(float(v)) for v in metrics.values())
    expected = (
        0.995 * metrics["g_reconstruction"]
        + 0.0025 * metrics["g_adversarial_global"]
        + 0.0025 * metrics["g_adversarial_patch"]
    )
    np.testing.assert_allclose(float(metrics["g_loss"]), float(expected), rtol=1e-6)
    np.testing.assert_allclose(
        float(metrics["d_loss"]),
        float(metrics["d_loss_global"] + metrics["d_loss_patch"]),
        rtol=1e-6,
    )
    assert changed(new.g_params, state.g_params)
    assert changed(new.d_params, state.d_params)


def test_reconstruction_step_is_masked_l1_and_leaves_the_discriminator(setup):
    config, state, steps, batch = setup
    new, metrics = jax.jit(steps.reconstruction_step)(state, batch)
    train_prediction, _ = steps.complete(state, batch, train=True)
    hole = batch["mask"]
    expected = jnp.sum(jnp.abs(train_prediction - batch["image"]) * hole) / (jnp.sum(hole) * 3)
    np.testing.assert_allclose(float(metrics["g_reconstruction"]), float(expected), rtol=1e-5)
    assert changed(new.g_params, state.g_params)
    assert not changed(new.d_params, state.d_params)


@pytest.mark.parametrize("variant, head", [("global", "global"), ("patch", "patch")])
def test_single_head_discriminators_for_the_ablation(photo_dir, tmp_path, variant, head):
    config = tiny_config(photo_dir, str(tmp_path), **{"model.discriminator": variant})
    mesh = parallel.create_mesh(jax.devices()[:1])
    generator, discriminator = trainer.build_models(config)
    tx = common.create_optimizer(config.g_optimizer)
    state = trainer.create_train_state(config, generator, discriminator, tx, tx, mesh)
    steps = trainer.Steps(config, generator, discriminator, tx, tx)
    image = jnp.full((2, 128, 128, 3), 0.5)
    mask = jnp.zeros((2, 128, 128, 1)).at[:, 32:80, 32:80].set(1.0)
    loss, terms = steps.adversarial_loss(
        state.d_params, state.batch_stats["d"], image, {"image": image, "mask": mask}
    )
    assert set(terms) == {f"g_adversarial_{head}"}
    weight = config.loss.global_weight if head == "global" else config.loss.patch_weight
    np.testing.assert_allclose(float(loss), weight * float(terms[f"g_adversarial_{head}"]))


def test_unknown_discriminator_is_rejected(photo_dir, tmp_path):
    config = tiny_config(photo_dir, str(tmp_path), **{"model.discriminator": "both"})
    with pytest.raises(ValueError, match="pggan, global, patch"):
        trainer.build_models(config)


def test_trains_resumes_inpaints_and_evaluates(photo_dir, tmp_path):
    """runlocal-style train -> resume -> inpaint an odd-sized photo -> evaluate vs a baseline."""
    workdir = str(tmp_path / "work")
    config = tiny_config(photo_dir, str(tmp_path / "tfds"))
    state = trainer.train_and_evaluate(config, workdir)
    assert int(state.step) == 3
    assert checkpointing.Checkpointer(os.path.join(workdir, "checkpoints")).all_steps() == [2, 3]
    longer = tiny_config(photo_dir, str(tmp_path / "tfds"), total_steps=4)
    resumed = trainer.train_and_evaluate(longer, workdir)
    assert int(resumed.step) == 4

    model = inference.load_model(workdir)
    assert (model.name, model.step, model.size_multiple) == ("pggan", 4, 4)
    image = skimage.transform.resize(skimage.data.astronaut(), (150, 202), anti_aliasing=True)
    image = image.astype(np.float32)
    mask = np.zeros((150, 202, 1), np.float32)
    mask[40:90, 60:130] = 1.0
    inpainted = inference.inpaint(model, image, mask)
    np.testing.assert_array_equal(inpainted[mask[..., 0] == 0], image[mask[..., 0] == 0])
    assert not np.array_equal(inpainted[mask[..., 0] == 1], image[mask[..., 0] == 1])

    images = evaluation.ImageSet.from_arrays(
        {"astronaut": image, "chelsea": skimage.img_as_float32(skimage.data.chelsea())}
    )
    result = evaluation.evaluate(
        [evaluation.model_method(model), evaluation.baseline("telea")],
        images,
        evaluation.GeneratedMasks("glcic", seed=0),
        sizes=(128,),
    )
    assert {row["method"] for row in result.summary} == {"pggan", "telea"}
