"""Context Encoder trainer (also the NPS content net): overlap-weighted L2, loss weights, resume."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tests.helpers import recipe_steps, run_launch_train, tiny_ce_config, tiny_ce_overrides

from configs import context_encoder as ce_config
from configs import nps_content as nps_config
from inpaint_jax import checkpointing, inference, parallel
from inpaint_jax.models import context_encoder as ce
from inpaint_jax.trainers import context_encoder as trainer

pytestmark = pytest.mark.fast_compile  # tiny networks: compiling dominates


def test_paper_defaults():
    config = ce_config.get_config()
    assert config.trainer == "context_encoder"
    assert (config.loss.reconstruction_weight, config.loss.adversarial_weight) == (0.999, 0.001)
    assert (config.loss.overlap, config.loss.overlap_weight) == (4, 10.0)
    assert config.model.bottleneck == "channelwise"
    assert config.data.crop_size == 128 and config.mask.kind == "center"
    assert (config.g_optimizer.b1, config.d_optimizer.learning_rate) == (0.5, 2e-4)
    assert trainer.phase_for_step(0, config) == "joint"


def test_nps_content_config_is_the_ce_recipe_with_elu_and_a_dense_bottleneck():
    config = nps_config.get_config()
    assert config.trainer == "context_encoder"
    assert config.model.bottleneck == "dense"
    assert config.model.encoder_activation == config.model.decoder_activation == "elu"
    generator, _ = trainer.build_models(config)
    assert (generator.bottleneck, generator.encoder_activation) == ("dense", "elu")
    with pytest.raises(ValueError, match="Unknown config variant"):
        nps_config.get_config("fast")


def test_mask_and_overlap_of_the_configs_agree():
    for config in (ce_config.get_config(), nps_config.get_config("runlocal")):
        trainer.check_config(config)  # raises if the mask is not the overlap-shrunk centre


def test_overlap_border_error_counts_ten_times_an_interior_error():
    target = jnp.zeros((1, 128, 128, 3))
    border = target.at[0, 32 + 1, 32 + 30, 0].set(0.5)  # row 1 of the patch: in the 4 px border
    interior = target.at[0, 32 + 30, 32 + 30, 0].set(0.5)
    outside = target.at[0, 10, 10, 0].set(0.5)  # outside the 64x64 centre
    loss = lambda p: float(trainer.overlap_weighted_mse(p, target, overlap=4, overlap_weight=10.0))
    np.testing.assert_allclose(loss(interior), 0.25 / (64 * 64 * 3), rtol=1e-6)
    np.testing.assert_allclose(loss(border), 10 * loss(interior), rtol=1e-6)
    assert loss(outside) == 0.0
    weights = np.asarray(trainer.overlap_weights(4, 10.0))[..., 0]
    assert (weights == 10).sum() == 64 * 64 - 56 * 56 and (weights == 1).sum() == 56 * 56


@pytest.fixture(scope="module")
def setup(photo_dir, tmp_path_factory):
    """Tiny networks with unusual loss weights, their state and a batch of noise images."""
    config = tiny_ce_config(
        photo_dir,
        str(tmp_path_factory.mktemp("tfds")),
        **{"loss.reconstruction_weight": 0.75, "loss.adversarial_weight": 0.25},
    )
    mesh = parallel.create_mesh(jax.devices()[:1])
    state, steps = recipe_steps(trainer, config, mesh)
    images = jax.random.uniform(jax.random.key(0, impl="rbg"), (8, 128, 128, 3))
    holes = jnp.broadcast_to(jnp.asarray(trainer.expected_hole(4), jnp.float32), (8, 128, 128))
    return config, state, steps, {"image": images, "mask": holes[..., None]}


def test_joint_step_weights_the_losses_as_configured_and_updates_both(setup):
    config, state, steps, batch = setup
    new, metrics = jax.jit(steps.joint_step)(state, batch)
    assert all(np.isfinite(float(v)) for v in metrics.values())
    expected = 0.75 * metrics["g_reconstruction"] + 0.25 * metrics["g_adversarial"]
    np.testing.assert_allclose(float(metrics["g_loss"]), float(expected), rtol=1e-6)
    for new_params, old_params in [(new.g_params, state.g_params), (new.d_params, state.d_params)]:
        assert not jax.tree.all(jax.tree.map(jnp.array_equal, new_params, old_params))


def test_reconstruction_is_the_overlap_weighted_l2(setup):
    _, _, steps, batch = setup
    prediction = jax.random.uniform(jax.random.key(0), batch["image"].shape)
    np.testing.assert_allclose(
        float(steps.reconstruction(prediction, batch["image"], batch["mask"])),
        float(trainer.overlap_weighted_mse(prediction, batch["image"], 4, 10.0)),
        rtol=1e-6,
    )


def test_discriminator_judges_only_the_centre_patch(setup):
    config, state, steps, batch = setup
    completion = batch["image"]
    elsewhere = completion.at[:, :20].set(0.0)
    at_centre = completion.at[:, 60:70, 60:70].set(0.0)
    loss = jax.jit(
        lambda images: steps.adversarial_loss(state.d_params, state.batch_stats["d"], images, batch)
    )
    assert float(loss(elsewhere)[0]) == float(loss(completion)[0])
    assert float(loss(at_centre)[0]) != float(loss(completion)[0])


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"data.crop_size": 64, "data.resize_range": (64, 80)}, "crop_size must be 128"),
        ({"mask.kind": "glcic", "mask.params": {}}, "hole_size=56/128"),
        ({"loss.overlap": 0}, "hole_size=64/128"),
        ({"loss.overlap": 40}, r"overlap must be .* \[0, 32\)"),
    ],
)
def test_configs_that_do_not_fit_the_fixed_geometry_are_refused(
    photo_dir, tmp_path, overrides, message
):
    config = tiny_ce_config(photo_dir, str(tmp_path), **overrides)
    with pytest.raises(ce.ContextEncoderConfigError, match=message):
        trainer.train_and_evaluate(config, str(tmp_path / "work"))


def test_cli_run_with_overrides_then_resume_in_process(photo_dir, tmp_path):
    workdir = tmp_path / "work"
    overrides = {**tiny_ce_overrides(photo_dir, str(tmp_path / "tfds")), "total_steps": 2}
    result = run_launch_train("configs/context_encoder.py:runlocal", workdir, overrides)
    assert result.returncode == 0, result.stdout + result.stderr
    checkpoints = checkpointing.Checkpointer(str(workdir / "checkpoints"))
    assert checkpoints.all_steps() == [2]
    assert checkpoints.read_config(2)["model"]["width_multiplier"] == 0.125

    longer = tiny_ce_config(photo_dir, str(tmp_path / "tfds"), total_steps=3)
    assert int(trainer.train_and_evaluate(longer, str(workdir)).step) == 3
    assert checkpointing.Checkpointer(str(workdir / "checkpoints")).all_steps() == [2, 3]


def test_nps_content_net_trains_through_launch_train_and_loads(nps_content_workdir):
    checkpoints = checkpointing.Checkpointer(str(Path(nps_content_workdir) / "checkpoints"))
    assert checkpoints.all_steps() == [2]
    model = checkpoints.read_config(2)["model"]
    assert (model["bottleneck"], model["encoder_activation"]) == ("dense", "elu")
    loaded = inference.load_model(nps_content_workdir)
    assert (loaded.name, loaded.step, loaded.input_size) == ("context_encoder", 2, 128)
