"""Tests for inpaint_jax.trainers.two_stage: the refinement network's config, loss, step and training."""

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import two_stage as two_stage_config
from inpaint_jax import checkpointing, inference, parallel, two_stage
from inpaint_jax.data import coarse_cache
from inpaint_jax.models import vgg
from inpaint_jax.trainers import phases
from inpaint_jax.trainers import two_stage as trainer
from inpaint_jax.weights import vgg as vgg_weights
from tests.test_two_stage import refine_config

pytestmark = pytest.mark.fast_compile  # tiny networks: compiling dominates


def _data_dir(glcic_workdir) -> str:
    """The TFDS folder the tiny GLCIC built the generated photos in (reused, not rebuilt)."""
    return str(Path(glcic_workdir).parent / "tfds")


@pytest.fixture(scope="module")
def refine_workdir(photo_dir, glcic_workdir, tmp_path_factory):
    """A tiny refinement network trained for 4 steps on the tiny GLCIC's completions."""
    root = tmp_path_factory.mktemp("refine")
    config = refine_config(photo_dir, _data_dir(glcic_workdir), glcic_workdir)
    trainer.train_and_evaluate(config, str(root / "work"))
    return str(root / "work")


def test_default_config_pins_the_papers_settings():
    config = two_stage_config.get_config()
    assert config.trainer == "two_stage"
    assert config.model.family == "refinement"
    assert config.model.coarse_size == 512
    assert config.model.shift_fraction == 0.2
    assert config.coarse_workdir == ""  # required: no default coarse model
    assert tuple(config.patch_hole_range) == (0.1, 0.9)
    assert config.loss.perceptual_weight > 0 and config.loss.style_weight > 0
    assert config.loss.tv_weight > 0 and config.loss.l1_hole_weight > 0
    assert config.g_optimizer.name == "adam"
    assert len(config.model.encoder_kernels) == 8  # 256 px stride, as the released script pads
    runlocal = two_stage_config.get_config("runlocal")
    assert runlocal.coarse_workdir == "/tmp/inpaint_jax_demo" and runlocal.model.coarse_size == 64


def test_training_caches_coarse_completions_and_trains(refine_workdir):
    work = Path(refine_workdir)
    assert sorted(p.name for p in (work / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]
    history = json.loads((work / "eval_metrics.json").read_text())
    assert [entry["step"] for entry in history] == [2, 4]
    assert all(np.isfinite(entry["hole_l1"]) for entry in history)
    (cache,) = (work / "coarse_cache").iterdir()
    entries = sorted((cache / "train").glob("*.npz"))
    assert len(entries) == 2 * 15  # 15 training photos x masks_per_image 2
    with np.load(entries[0]) as entry:
        image, mask, merged = entry["image"], entry["mask"], entry["merged"]
    assert image.dtype == mask.dtype == merged.dtype == np.uint8
    assert image.shape[:2] == mask.shape[:2] == merged.shape[:2]
    assert mask.any()
    np.testing.assert_array_equal(merged[mask[..., 0] == 0], image[mask[..., 0] == 0])
    assert (merged[mask[..., 0] == 1] != image[mask[..., 0] == 1]).any()
    usable = json.loads(next((cache / "train").glob("usable-16px-0.1-0.9-0-of-1.json")).read_text())
    assert len(usable["usable"]) + len(usable["skipped"]) == 30


def test_checkpoints_hold_the_refinement_generator_and_load_as_two_stage(refine_workdir,
                                                                         glcic_workdir):
    with checkpointing.Checkpointer(Path(refine_workdir) / "checkpoints",
                                    read_only=True) as reader:
        model_config = reader.read_model_config(4)
        config = reader.read_config(4)
    assert model_config["family"] == "refinement"
    assert (model_config["coarse_size"], model_config["shift_fraction"]) == (16, 0.2)
    assert config["coarse_workdir"] == glcic_workdir and config["trainer"] == "two_stage"
    model = inference.load_model(refine_workdir)
    assert isinstance(model, two_stage.TwoStageModel)
    assert (model.coarse.name, model.coarse_size, model.step) == ("glcic", 16, 4)
    assert model.refinement.name == "refinement" and model.refinement.size_multiple == 4


def test_cache_is_reused_when_training_resumes(refine_workdir, photo_dir, glcic_workdir,
                                               monkeypatch, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(refine_workdir, work)

    def no_coarse_model(*args, **kwargs):
        raise AssertionError("the coarse model ran again although its completions are cached")

    monkeypatch.setattr(two_stage, "coarse_complete", no_coarse_model)
    config = refine_config(photo_dir, _data_dir(glcic_workdir), glcic_workdir,
                           total_steps=6, cache_dir=str(work / "coarse_cache"))
    state = trainer.train_and_evaluate(config, str(work))
    assert int(state.step) == 6


def test_config_errors_name_the_field(photo_dir, glcic_workdir, tmp_path):
    cases = [
        ({"coarse_workdir": ""}, "config.coarse_workdir is empty.*--config.coarse_workdir="),
        ({"data.crop_size": 18}, "must be a multiple of 4"),
        ({"patch_hole_range": (0.9, 0.1)}, "patch_hole_range"),
        ({"masks_per_image": 0}, "masks_per_image"),
    ]
    for overrides, message in cases:
        settings = {"coarse_workdir": glcic_workdir, **overrides}
        config = refine_config(photo_dir, _data_dir(glcic_workdir), **settings)
        with pytest.raises(trainer.TwoStageConfigError, match=message):
            trainer.check_config(config)
        with pytest.raises(trainer.TwoStageConfigError, match=message):
            trainer.train_and_evaluate(config, str(tmp_path / "work"))
    assert not (tmp_path / "work").exists()


def test_no_usable_patch_is_a_clear_error(photo_dir, glcic_workdir, tmp_path):
    config = refine_config(photo_dir, _data_dir(glcic_workdir), glcic_workdir,
                           patch_hole_range=(0.99, 1.0), masks_per_image=1)
    with pytest.raises(coarse_cache.CoarseCacheError, match="smaller config.data.crop_size"):
        trainer.train_and_evaluate(config, str(tmp_path / "work"))
    assert not (tmp_path / "work" / "checkpoints").exists()


def _patch_batch(seed=0):
    """Two 16 px patches: image, a hole, and the 20-channel input of a grey coarse completion."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((2, 16, 16, 1), np.float32)
    mask[:, 4:12, 3:10] = 1
    image = rng.uniform(size=(2, 16, 16, 3)).astype(np.float32)
    merged = np.where(mask > 0, 0.5, image)
    inputs = np.stack([two_stage.refinement_input(m, k, two_stage.shift_offsets(16, 16, 0.2))
                       for m, k in zip(merged, mask)])
    return {"image": image, "mask": mask, "inputs": inputs}


@pytest.fixture(scope="module")
def random_vgg16(tmp_path_factory):
    """A VGG-16 weight file (.npz, as launch.convert_vgg writes) with random weights."""
    module = vgg.VGG(depth=16)
    variables = jax.jit(module.init, static_argnames="taps")(
        jax.random.key(0), jnp.zeros((1, 16, 16, 3)), taps=(vgg.relu_tap_names(16)[-1],))
    path = tmp_path_factory.mktemp("vgg") / "vgg16.npz"
    vgg_weights.save_converted(path, vgg_weights.VGGWeights(
        jax.tree.map(np.asarray, variables), vgg.TORCHVISION_NORMALIZATION, 16))
    return str(path)


def test_train_step_weights_every_loss_term(photo_dir, glcic_workdir, random_vgg16):
    config = refine_config(photo_dir, "unused", glcic_workdir, vgg_path=random_vgg16,
                           **{"loss.perceptual_weight": 0.1, "loss.style_weight": 240.0})
    training = trainer.build(config, parallel.create_mesh(jax.devices()[:1]))
    assert training.schedule.phases == (phases.TRAIN,)
    state = training.state

    new_state, metrics = jax.jit(training.steps[phases.TRAIN])(state, _patch_batch())
    terms = ("l1_hole", "l1_valid", "perceptual", "style", "tv")
    assert all(float(metrics[f"g_{name}"]) > 0 for name in terms)
    expected = sum(config.loss[f"{name}_weight"] * float(metrics[f"g_{name}"]) for name in terms)
    np.testing.assert_allclose(float(metrics["g_loss"]), expected, rtol=1e-5)
    assert int(new_state.step) == 1 and new_state.d_params == {}
    assert all(not np.array_equal(a, b) for a, b in
               zip(jax.tree.leaves(state.g_params), jax.tree.leaves(new_state.g_params)))


def test_feature_terms_without_vgg_weights_stop_before_any_work(photo_dir, glcic_workdir,
                                                                 tmp_path):
    config = refine_config(photo_dir, _data_dir(glcic_workdir), glcic_workdir,
                           **{"loss.perceptual_weight": 0.1})
    with pytest.raises(vgg_weights.MissingWeightsError, match="vgg16-397923af.pth"):
        trainer.train_and_evaluate(config, str(tmp_path / "work"))
    assert not (tmp_path / "work").exists()


def test_loss_without_feature_weights_needs_no_vgg(photo_dir, glcic_workdir):
    config = refine_config(photo_dir, "unused", glcic_workdir)  # runlocal: L1 + TV only
    assert config.loss.perceptual_weight == 0 and config.loss.style_weight == 0
    training = trainer.build(config, parallel.create_mesh(jax.devices()[:1]))
    _, metrics = jax.jit(training.steps[phases.TRAIN])(training.state, _patch_batch(1))
    terms = ("l1_hole", "l1_valid", "tv")
    assert "g_perceptual" not in metrics and "g_style" not in metrics
    expected = sum(config.loss[f"{name}_weight"] * float(metrics[f"g_{name}"]) for name in terms)
    np.testing.assert_allclose(float(metrics["g_loss"]), expected, rtol=1e-5)
    prediction = training.predict(training.state, _patch_batch(1))
    assert prediction.shape == (2, 16, 16, 3)
