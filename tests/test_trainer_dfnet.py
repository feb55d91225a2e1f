"""DFNet trainer: released loss weights, multi-scale loss, VGG weights, train step, resume."""

import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tests.helpers import tiny_dfnet_config as tiny_config

from configs import dfnet as dfnet_config
from inpaint_jax import checkpointing, inference, losses, parallel
from inpaint_jax.models import dfnet, vgg
from inpaint_jax.trainers import common
from inpaint_jax.trainers import dfnet as trainer

pytestmark = pytest.mark.fast_compile  # tiny networks: compiling dominates


@pytest.fixture(scope="module")
def random_vgg16(tmp_path_factory):
    """A converted VGG-16 file with random weights: the real loading path, nothing downloaded."""
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(
        lambda: vgg.VGG(depth=16).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), "pool5")
    )

    def he_normal(leaf):
        if leaf.ndim == 1:  # biases
            return np.zeros(leaf.shape, np.float32)
        return (rng.normal(size=leaf.shape) * np.sqrt(2 / np.prod(leaf.shape[:-1]))).astype(
            np.float32
        )

    variables = jax.tree.map(he_normal, shapes)
    path = str(tmp_path_factory.mktemp("vgg") / "vgg16.npz")
    vgg.save_converted(path, vgg.VGGWeights(variables, vgg.TORCHVISION_NORMALIZATION, 16))
    return path


def smooth_batch(batch=2, size=32, seed=0):
    """Smooth random images with a rectangular hole each."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(size=(batch, 4, 4, 3)).astype(np.float32)
    image = np.asarray(jax.image.resize(coarse, (batch, size, size, 3), "bilinear"))
    mask = np.zeros((batch, size, size, 1), np.float32)
    mask[:, 8:20, 10:24] = 1.0
    return {"image": jnp.asarray(np.clip(image, 0, 1)), "mask": jnp.asarray(mask)}


def test_released_defaults():
    config = dfnet_config.get_config()
    assert config.trainer == "dfnet"
    loss = config.loss
    assert (loss.l1_hole_weight, loss.l1_valid_weight) == (6.0, 6.0)
    assert (loss.perceptual_weight, loss.style_weight, loss.tv_weight) == (0.1, 240.0, 0.1)
    assert tuple(loss.vgg_taps) == ("pool1", "pool2", "pool3")
    assert tuple(loss.reconstruction_levels) == (0, 1, 2, 3, 4, 5)
    assert tuple(loss.texture_levels) == (0, 1, 2)
    assert tuple(config.model.encoder_kernels) == dfnet.ENCODER_KERNELS
    assert (config.g_optimizer.name, config.g_optimizer.learning_rate) == ("adam", 2e-4)
    assert config.data.crop_size == 512
    generator, discriminator = trainer.build_models(config)
    assert generator.size_multiple == 256 and discriminator is None


def test_runlocal_needs_no_vgg_weights():
    config = dfnet_config.get_config("runlocal")
    assert config.vgg_path == ""
    assert trainer.load_feature_extractor(config) is None
    generator, _ = trainer.build_models(config)
    assert config.data.crop_size % generator.size_multiple == 0


def test_perceptual_terms_without_vgg_weights_stop_the_run_before_any_work(photo_dir, tmp_path):
    config = tiny_config(photo_dir, str(tmp_path / "tfds"), **{"loss.perceptual_weight": 0.1})
    workdir = tmp_path / "work"
    with pytest.raises(vgg.MissingWeightsError, match=r"--config.vgg_path is not set(.|\n)*vgg16"):
        trainer.train_and_evaluate(config, str(workdir))
    assert not workdir.exists()


def test_feature_extractor_reads_vgg16_at_the_configured_taps(photo_dir, tmp_path, random_vgg16):
    config = tiny_config(
        photo_dir, str(tmp_path), **{"vgg_path": random_vgg16, "loss.style_weight": 240.0}
    )
    features = trainer.load_feature_extractor(config)
    assert features.module.depth == 16 and features.taps == ("pool1", "pool2", "pool3")
    taps = jax.eval_shape(features, jnp.zeros((1, 32, 32, 3)))
    assert [taps[name].shape for name in features.taps] == [
        (1, 16, 16, 64),
        (1, 8, 8, 128),
        (1, 4, 4, 256),
    ]


def test_loss_levels_need_fusion_blocks(photo_dir, tmp_path):
    config = tiny_config(photo_dir, str(tmp_path), **{"loss.texture_levels": (0, 2)})
    with pytest.raises(dfnet.DFNetConfigError, match=r"texture_levels=\(0, 2\)"):
        trainer.check_config(config)


def test_learning_rate_decays_stepwise_as_configured(photo_dir, tmp_path):
    config = tiny_config(
        photo_dir, str(tmp_path), lr_decay_every_steps=10, lr_decay_factor=0.1
    )
    factors = [float(trainer.learning_rate_factor(jnp.int32(s), config)) for s in (0, 9, 10, 25)]
    np.testing.assert_allclose(factors, [1.0, 1.0, 0.1, 0.01], rtol=1e-6)
    config.lr_decay_every_steps = 0
    assert trainer.learning_rate_factor(jnp.int32(10**6), config) == 1.0


def test_multiscale_terms_average_each_term_over_its_levels(photo_dir, tmp_path):
    config = tiny_config(
        photo_dir,
        str(tmp_path),
        **{"loss.reconstruction_levels": (0, 1, 2), "loss.texture_levels": (0,)},
    )
    batch = smooth_batch()
    offsets = (0.1, 0.2, 0.3)
    images = tuple(
        dfnet.downscale(batch["image"], level) + offset for level, offset in enumerate(offsets)
    )
    outputs = dfnet.DFNetOutputs(images=images, raws=images, alphas=images, levels=(0, 1, 2))
    terms = jax.jit(lambda o, i, m: trainer.multiscale_terms(o, i, m, config.loss, None))(
        outputs, batch["image"], batch["mask"]
    )
    assert set(terms) == {"l1_hole", "l1_valid", "tv"}
    np.testing.assert_allclose(terms["l1_hole"] + terms["l1_valid"], np.mean(offsets), rtol=1e-5)
    expected_tv = losses.total_variation(batch["image"], batch["mask"])  # level 0 only
    np.testing.assert_allclose(terms["tv"], expected_tv, rtol=1e-5)


def test_texture_terms_of_a_perfect_output_leave_only_tv(photo_dir, tmp_path, random_vgg16):
    config = tiny_config(photo_dir, str(tmp_path), vgg_path=random_vgg16)
    config.loss.perceptual_weight = 0.1
    features = trainer.load_feature_extractor(config)
    batch = smooth_batch()
    terms = trainer.texture_terms(batch["image"], batch["image"], batch["mask"], features)
    assert float(terms["perceptual"]) == 0.0 and float(terms["style"]) == 0.0
    assert float(terms["tv"]) > 0.0
    shifted = trainer.texture_terms(batch["image"] * 0.5, batch["image"], batch["mask"], features)
    assert float(shifted["perceptual"]) > 0.0 and float(shifted["style"]) > 0.0


@pytest.fixture(scope="module")
def with_vgg(photo_dir, tmp_path_factory, random_vgg16):
    """Steps and state of the tiny config with all five loss terms (random VGG-16), Adam 1e-3."""
    config = tiny_config(
        photo_dir,
        str(tmp_path_factory.mktemp("tfds")),
        **{
            "vgg_path": random_vgg16,
            "loss.perceptual_weight": 0.1,
            "loss.style_weight": 240.0,
            "g_optimizer.learning_rate": 1e-3,
        },
    )
    mesh = parallel.create_mesh(jax.devices()[:1])
    generator, _ = trainer.build_models(config)
    g_tx = common.create_optimizer(config.g_optimizer)
    state = trainer.create_train_state(config, generator, None, g_tx, None, mesh)
    steps = trainer.Steps(config, generator, g_tx, trainer.load_feature_extractor(config))
    return config, state, steps


def test_train_step_weights_every_term_and_lowers_the_loss(with_vgg):
    config, state, steps = with_vgg
    batch = smooth_batch()
    train_step = jax.jit(steps.train_step)
    new_state, metrics = train_step(state, batch)
    terms = {"l1_hole", "l1_valid", "perceptual", "style", "tv"}
    assert {f"g_{name}" for name in terms} <= set(metrics)
    expected = sum(
        config.loss[trainer.TERM_WEIGHTS[name]] * float(metrics[f"g_{name}"]) for name in terms
    )
    np.testing.assert_allclose(float(metrics["g_loss"]), expected, rtol=1e-5)
    assert int(new_state.step) == 1
    assert new_state.d_params == {}
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(state.g_params), jax.tree.leaves(new_state.g_params))
    ]
    assert all(changed)
    for _ in range(5):
        new_state, last = train_step(new_state, batch)
    # Each step reports the loss of the parameters it started from.
    assert float(last["g_loss"]) < float(metrics["g_loss"])


def saved_steps(workdir):
    with checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True) as saved:
        return saved.all_steps()


def test_trains_evaluates_and_resumes(photo_dir, tmp_path, caplog):
    workdir = str(tmp_path / "work")
    config = tiny_config(photo_dir, str(tmp_path / "tfds"))
    state = trainer.train_and_evaluate(config, workdir)
    assert int(state.step) == 3 and state.d_params == {}
    assert saved_steps(workdir) == [3]
    with open(os.path.join(workdir, "eval_metrics.json")) as f:
        assert [entry["step"] for entry in json.load(f)] == [3]

    longer = tiny_config(photo_dir, str(tmp_path / "tfds"), total_steps=4)
    with caplog.at_level(logging.INFO):
        resumed = trainer.train_and_evaluate(longer, workdir)
    assert "Resumed from step 3." in caplog.text
    assert int(resumed.step) == 4
    assert saved_steps(workdir) == [3, 4]
    moved = [
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(state.g_params), jax.tree.leaves(resumed.g_params))
    ]
    assert any(moved)

    model = inference.load_model(workdir)  # a recipe without a discriminator loads too.
    image = np.random.default_rng(0).uniform(size=(70, 90, 3)).astype(np.float32)
    mask = np.zeros((70, 90, 1), np.float32)
    mask[20:40, 30:60] = 1.0
    filled = inference.inpaint(model, image, mask)
    np.testing.assert_array_equal(filled[mask[..., 0] == 0], image[mask[..., 0] == 0])
