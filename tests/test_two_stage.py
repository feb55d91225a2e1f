"""Tests for two-stage high-resolution inpainting: pipeline, coarse cache, trainer and commands."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
from tests.helpers import override, tiny_dfnet_config
from PIL import Image

from configs import two_stage as two_stage_config
from inpaint_jax import inference, parallel, two_stage
from inpaint_jax.data import coarse_cache
from inpaint_jax.models import refinement, vgg
from inpaint_jax.trainers import common
from inpaint_jax.trainers import dfnet as dfnet_trainer
from inpaint_jax.trainers import two_stage as trainer

pytestmark = pytest.mark.fast_compile  # tiny networks: compiling dominates

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- shifted copies


def _numbered_image(height, width):
    """An image whose every value is distinct, so that any misplaced pixel shows."""
    return np.arange(height * width * 3, dtype=np.float32).reshape(height, width, 3) + 1


def test_shift_offsets_are_a_fraction_of_each_side():
    assert two_stage.shift_offsets(100, 50, 0.2) == {
        "left": (0, 10), "right": (0, -10), "up": (20, 0), "down": (-20, 0)}
    assert two_stage.shift_offsets(3, 3, 0.01) == {  # at least one pixel
        "left": (0, 1), "right": (0, -1), "up": (1, 0), "down": (-1, 0)}


def test_shifted_copies_values_and_invalid_regions_are_exact():
    merged = _numbered_image(5, 10)
    mask = np.zeros((5, 10, 1), np.float32)
    mask[1:3, 4:6] = 1
    offsets = two_stage.shift_offsets(5, 10, 0.2)  # dy = 1, dx = 2
    inputs = two_stage.refinement_input(merged, mask, offsets)

    # The layout, pinned by channel index: 5 RGB images, then 5 masks.
    image, left, right, up, down = (inputs[..., 3 * i:3 * i + 3] for i in range(5))
    mask_main, mask_left, mask_right, mask_up, mask_down = (inputs[..., 15 + i:16 + i]
                                                            for i in range(5))
    assert inputs.shape == (5, 10, 20) and inputs.dtype == np.float32
    np.testing.assert_array_equal(image, merged)
    np.testing.assert_array_equal(mask_main, mask)

    # Content moves left by 2: column x shows column x + 2; the last 2 columns came from outside.
    np.testing.assert_array_equal(left[:, :8], merged[:, 2:])
    np.testing.assert_array_equal(left[:, 8:], 0)
    np.testing.assert_array_equal(mask_left[:, :8], mask[:, 2:])
    np.testing.assert_array_equal(mask_left[:, 8:], 1)
    np.testing.assert_array_equal(right[:, 2:], merged[:, :8])
    np.testing.assert_array_equal(right[:, :2], 0)
    np.testing.assert_array_equal(mask_right[:, 2:], mask[:, :8])
    np.testing.assert_array_equal(mask_right[:, :2], 1)
    np.testing.assert_array_equal(up[:4], merged[1:])
    np.testing.assert_array_equal(up[4:], 0)
    np.testing.assert_array_equal(mask_up[:4], mask[1:])
    np.testing.assert_array_equal(mask_up[4:], 1)
    np.testing.assert_array_equal(down[1:], merged[:4])
    np.testing.assert_array_equal(down[:1], 0)
    np.testing.assert_array_equal(mask_down[1:], mask[:4])
    np.testing.assert_array_equal(mask_down[:1], 1)
    # The hole moved with its copy: in the left-shifted mask it sits at columns 2-3.
    assert mask_left[1:3, 2:4].all() and mask_left[:, :8].sum() == 4

    # The network's own split agrees with this layout.
    parts = refinement.split_input(inputs[None])
    np.testing.assert_array_equal(parts["shift_up"][0], up)
    np.testing.assert_array_equal(parts["mask_right"][0], mask_right)


@pytest.mark.parametrize("box", [(0, 0, 4, 4), (3, 5, 4, 4), (9, 14, 3, 2), (0, 0, 12, 16)])
def test_input_of_a_box_is_the_crop_of_the_whole_input(box):
    rng = np.random.default_rng(0)
    merged = rng.uniform(size=(12, 16, 3)).astype(np.float32)
    mask = (rng.uniform(size=(12, 16, 1)) > 0.6).astype(np.float32)
    offsets = two_stage.shift_offsets(12, 16, 0.2)
    whole = two_stage.refinement_input(merged, mask, offsets)
    top, left, height, width = box
    np.testing.assert_array_equal(two_stage.refinement_input(merged, mask, offsets, box),
                                  whole[top:top + height, left:left + width])


@pytest.mark.parametrize("fraction", [0, 1, -0.2, 1.5])
def test_bad_shift_fraction_is_a_clear_error(fraction):
    with pytest.raises(two_stage.TwoStageError, match="shift_fraction must lie strictly"):
        two_stage.shift_offsets(10, 10, fraction)


# --------------------------------------------------------------------------- patch sampling


def test_patch_positions_are_exactly_those_with_10_to_90_percent_hole():
    rng = np.random.default_rng(3)
    hole = cv2.resize((rng.uniform(size=(6, 7)) > 0.5).astype(np.uint8), (35, 30),
                      interpolation=cv2.INTER_NEAREST)
    side = 8
    expected = {
        (top, left)
        for top in range(30 - side + 1) for left in range(35 - side + 1)
        if 0.1 <= hole[top:top + side, left:left + side].mean() <= 0.9
    }
    positions = two_stage.patch_positions(hole, side)
    assert {tuple(p) for p in positions} == expected
    assert 0 < len(expected) < 28 * 23  # the rule excludes some positions and keeps others

    for seed in range(20):
        top, left, height, width = two_stage.sample_patch_box(
            hole[..., None], side, np.random.default_rng(seed))
        assert (height, width) == (side, side)
        assert 0.1 <= hole[top:top + side, left:left + side].mean() <= 0.9


def test_no_qualifying_patch_gives_none():
    tiny_hole = np.zeros((20, 20), bool)
    tiny_hole[0, 0] = True  # 1/64 of any 8 px patch: below 10%
    assert two_stage.sample_patch_box(tiny_hole, 8, np.random.default_rng(0)) is None
    assert two_stage.sample_patch_box(np.ones((20, 20)), 8, np.random.default_rng(0)) is None
    assert two_stage.sample_patch_box(np.ones((6, 20)), 8, np.random.default_rng(0)) is None


# --------------------------------------------------------------------------- the pipeline


class FlatColourModel:
    """A stand-in coarse model: predicts one colour everywhere and records what it saw."""

    def __init__(self, colour=(0.2, 0.6, 0.4)):
        self.colour = np.asarray(colour, np.float32)
        self.shapes = []

    def __call__(self, image, mask):
        self.shapes.append(image.shape[:2])
        return np.broadcast_to(self.colour, image.shape).copy()


class RecordingRefinement:
    """A stand-in refinement network: returns the shifted-left copy and records its input."""

    config = two_stage_config.get_config()
    step = 7

    def predict(self, inputs):
        self.inputs = inputs
        return refinement.split_input(inputs[None])["shift_left"][0]


def test_coarse_stage_runs_at_the_coarse_size_and_keeps_known_pixels():
    image = np.random.default_rng(0).uniform(size=(300, 200, 3)).astype(np.float32)
    mask = np.zeros((300, 200, 1), np.float32)
    mask[100:180, 50:120] = 1
    coarse = FlatColourModel()
    merged = two_stage.coarse_complete(coarse, image, mask, coarse_size=60)
    assert coarse.shapes == [(60, 40)]  # aspect ratio kept, longer side 60
    known = mask[..., 0] == 0
    np.testing.assert_array_equal(merged[known], image[known])
    np.testing.assert_allclose(merged[110:170, 60:110], np.broadcast_to(coarse.colour, (60, 50, 3)),
                               atol=1e-5)
    small_image, small_mask = image[80:130, 30:70], mask[80:130, 30:70]
    small = two_stage.coarse_complete(coarse, small_image, small_mask, coarse_size=60)
    assert coarse.shapes[-1] == (50, 40)  # no larger than the coarse size: its own size
    np.testing.assert_array_equal(small[20:, 20:], np.broadcast_to(coarse.colour, (30, 20, 3)))
    np.testing.assert_array_equal(small[:20], small_image[:20])
    with pytest.raises(two_stage.TwoStageError, match="positive number of pixels"):
        two_stage.coarse_complete(coarse, image, mask, coarse_size=0)


def test_two_stage_model_feeds_the_refinement_network_and_keeps_known_pixels():
    rng = np.random.default_rng(1)
    image = rng.uniform(size=(50, 80, 3)).astype(np.float32)
    mask = np.zeros((50, 80, 1), np.float32)
    mask[10:30, 20:50] = 1
    model = two_stage.TwoStageModel(FlatColourModel(), RecordingRefinement(), coarse_size=20,
                                    shift_fraction=0.25)
    result = inference.inpaint(model, image, mask)
    merged = model.coarse_complete(image, mask)
    expected_input = two_stage.refinement_input(merged, mask,
                                                two_stage.shift_offsets(50, 80, 0.25))
    np.testing.assert_array_equal(model.refinement.inputs, expected_input)
    known = mask[..., 0] == 0
    np.testing.assert_array_equal(result[known], image[known])
    # The hole holds the refinement's prediction: the image shifted left by 20 px.
    np.testing.assert_array_equal(result[10:30, 20:50], merged[10:30, 40:70])
    assert model.name == "two_stage" and model.step == 7


# --------------------------------------------------------------------------- training


def refine_config(photo_dir, data_dir, coarse_workdir, **overrides):
    """configs/two_stage.py:runlocal shrunk to 16 px patches of the generated photos."""
    config = two_stage_config.get_config("runlocal")
    config.data.name = "image_folder"
    config.data.manual_dir = photo_dir
    config.data.data_dir = data_dir
    config.data.max_side = 0
    config.data.crop_size = 16
    config.coarse.workdir = coarse_workdir
    config.coarse.size = 16
    config.mask.kind = "glcic"
    config.mask.local_size = 8
    config.masks_per_image = 2
    config.model.encoder_kernels = (3, 3)
    config.model.width_multiplier = 0.125
    config.total_steps = 4
    config.log_every_steps = 1
    config.eval_every_steps = 2
    config.checkpoint_every_steps = 2
    return override(config, overrides)


@pytest.fixture(scope="module")
def refine_workdir(photo_dir, glcic_workdir, tmp_path_factory):
    """A tiny refinement network trained for 4 steps on the tiny GLCIC's completions."""
    root = tmp_path_factory.mktemp("refine")
    config = refine_config(photo_dir, str(Path(glcic_workdir).parent / "tfds"), glcic_workdir)
    trainer.train_and_evaluate(config, str(root / "work"))
    return str(root / "work")


def test_default_config_pins_the_papers_settings():
    config = two_stage_config.get_config()
    assert config.trainer == "two_stage"
    assert config.coarse.size == 512
    assert config.shift_fraction == 0.2
    assert tuple(config.patch_hole_range) == (0.1, 0.9)
    assert config.loss.perceptual_weight > 0 and config.loss.style_weight > 0
    assert config.loss.tv_weight > 0 and config.loss.l1_hole_weight > 0
    assert config.g_optimizer.name == "adam"
    assert len(config.model.encoder_kernels) == 8  # 256 px stride, as the released script pads


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


def test_cache_is_reused_when_training_resumes(refine_workdir, photo_dir, glcic_workdir,
                                               monkeypatch, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(refine_workdir, work)

    def no_coarse_model(*args, **kwargs):
        raise AssertionError("the coarse model ran again although its completions are cached")

    monkeypatch.setattr(two_stage, "coarse_complete", no_coarse_model)
    config = refine_config(photo_dir, str(Path(glcic_workdir).parent / "tfds"), glcic_workdir,
                           total_steps=6, cache_dir=str(work / "coarse_cache"))
    state = trainer.train_and_evaluate(config, str(work))
    assert int(state.step) == 6


def test_patches_from_the_cache_follow_the_rules(refine_workdir):
    (cache_dir,) = (Path(refine_workdir) / "coarse_cache").iterdir()
    names = sorted(p.stem for p in (cache_dir / "train").glob("*.npz"))
    cache = coarse_cache.CacheSource(cache_dir / "train", names)
    batches = coarse_cache.create_train_iterator(cache, batch_size=4, patch_size=16,
                                                 shift_fraction=0.2, hole_range=(0.1, 0.9),
                                                 seed=0)
    batch = next(batches)
    assert batch["inputs"].shape == (4, 16, 16, 20)
    fractions = batch["mask"].mean(axis=(1, 2, 3))
    assert np.all((fractions >= 0.1) & (fractions <= 0.9))
    hole = batch["mask"] > 0
    # Known pixels of the merged image are the ground truth; the main mask is channel 15.
    np.testing.assert_array_equal(np.where(hole, 0, batch["inputs"][..., :3]),
                                  np.where(hole, 0, batch["image"]))
    np.testing.assert_array_equal(batch["inputs"][..., 15:16], batch["mask"])

    evals = [next(coarse_cache.create_eval_iterator(cache, batch_size=4, patch_size=16,
                                                    shift_fraction=0.2, hole_range=(0.1, 0.9),
                                                    seed=5)) for _ in range(2)]
    np.testing.assert_array_equal(evals[0]["inputs"], evals[1]["inputs"])  # fixed patches
    assert evals[0]["valid"].all()


def test_config_errors_name_the_field(photo_dir, glcic_workdir, tmp_path):
    data_dir = str(Path(glcic_workdir).parent / "tfds")
    cases = [
        ({"coarse.workdir": ""}, "config.coarse.workdir is empty"),
        ({"data.crop_size": 18}, "must be a multiple of 4"),
        ({"patch_hole_range": (0.9, 0.1)}, "patch_hole_range"),
        ({"masks_per_image": 0}, "masks_per_image"),
    ]
    for overrides, message in cases:
        config = refine_config(photo_dir, data_dir, glcic_workdir, **overrides)
        with pytest.raises(trainer.TwoStageConfigError, match=message):
            trainer.train_and_evaluate(config, str(tmp_path / "work"))
    assert not (tmp_path / "work").exists()


def test_no_usable_patch_is_a_clear_error(photo_dir, glcic_workdir, tmp_path):
    config = refine_config(photo_dir, str(Path(glcic_workdir).parent / "tfds"), glcic_workdir,
                           patch_hole_range=(0.99, 1.0), masks_per_image=1)
    with pytest.raises(coarse_cache.CoarseCacheError, match="smaller config.data.crop_size"):
        trainer.train_and_evaluate(config, str(tmp_path / "work"))
    assert not (tmp_path / "work" / "checkpoints").exists()


def test_train_step_weights_every_loss_term(photo_dir, glcic_workdir):
    config = refine_config(photo_dir, "unused", glcic_workdir,
                           **{"loss.perceptual_weight": 0.1, "loss.style_weight": 240.0})
    module = vgg.VGG(depth=16)
    features = dfnet_trainer.FeatureExtractor(
        module, module.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), "pool3"),
        tuple(config.loss.vgg_taps))
    generator, _ = trainer.build_models(config)
    g_tx = common.create_optimizer(config.g_optimizer)
    state = trainer.create_train_state(config, generator, None, g_tx, None,
                                       parallel.create_mesh(jax.devices()[:1]))
    rng = np.random.default_rng(0)
    mask = np.zeros((2, 16, 16, 1), np.float32)
    mask[:, 4:12, 3:10] = 1
    image = rng.uniform(size=(2, 16, 16, 3)).astype(np.float32)
    merged = np.where(mask > 0, 0.5, image)
    inputs = np.stack([two_stage.refinement_input(m, k, two_stage.shift_offsets(16, 16, 0.2))
                       for m, k in zip(merged, mask)])
    batch = {"image": image, "mask": mask, "inputs": inputs}

    new_state, metrics = jax.jit(trainer.Steps(config, generator, g_tx, features).train_step)(
        state, batch)
    terms = ("l1_hole", "l1_valid", "perceptual", "style", "tv")
    assert all(float(metrics[f"g_{name}"]) > 0 for name in terms)
    expected = sum(config.loss[dfnet_trainer.TERM_WEIGHTS[name]] * float(metrics[f"g_{name}"])
                   for name in terms)
    np.testing.assert_allclose(float(metrics["g_loss"]), expected, rtol=1e-5)
    assert int(new_state.step) == 1 and new_state.d_params == {}
    assert all(not np.array_equal(a, b) for a, b in
               zip(jax.tree.leaves(state.g_params), jax.tree.leaves(new_state.g_params)))


# --------------------------------------------------------------------------- inference


def test_refinement_checkpoint_loads_as_a_two_stage_model(refine_workdir, glcic_workdir):
    model = inference.load_model(refine_workdir)
    assert isinstance(model, two_stage.TwoStageModel)
    assert model.coarse.name == "glcic" and model.coarse_size == 16
    assert model.step == 4
    network = inference.load_network(refine_workdir)
    assert network.name == "two_stage" and network.size_multiple == 4
    with pytest.raises(inference.ModelLoadError, match="not a two-stage refinement network"):
        two_stage.load_two_stage(glcic_workdir)


def test_inpaints_a_photo_over_1000_px_at_full_resolution(refine_workdir):
    photo = cv2.resize(skimage.data.astronaut(), (1100, 1030), interpolation=cv2.INTER_CUBIC)
    image = photo.astype(np.float32) / 255
    mask = np.zeros((1030, 1100, 1), np.float32)
    mask[300:520, 400:700] = 1
    mask[900:1000, 50:90] = 1
    model = inference.load_model(refine_workdir)
    result = inference.inpaint(model, image, mask)
    assert result.shape == image.shape and np.isfinite(result).all()
    known = mask[..., 0] == 0
    np.testing.assert_array_equal(result[known], image[known])
    coarse_only = model.coarse_complete(image, mask)
    hole = ~known
    assert np.abs(result[hole] - coarse_only[hole]).mean() > 1e-3  # the refinement changed it
    assert model.refinement.compiled_shapes == ((1152, 1152),)  # one full-resolution pass


def test_dfnet_as_the_coarse_stage(refine_workdir, photo_dir, tmp_path):
    dfnet_workdir = str(tmp_path / "dfnet")
    dfnet_trainer.train_and_evaluate(tiny_dfnet_config(photo_dir, str(tmp_path / "tfds")),
                                     dfnet_workdir)
    model = two_stage.load_two_stage(refine_workdir, coarse=dfnet_workdir)
    assert model.coarse.name == "dfnet"
    image = np.random.default_rng(2).uniform(size=(90, 70, 3)).astype(np.float32)
    mask = np.zeros((90, 70, 1), np.float32)
    mask[30:60, 20:45] = 1
    result = inference.inpaint(model, image, mask)
    known = mask[..., 0] == 0
    np.testing.assert_array_equal(result[known], image[known])
    assert np.isfinite(result).all()
    assert np.abs(result[~known] - image[~known]).mean() > 1e-3


def _run(module, *arguments):
    return subprocess.run([sys.executable, "-m", module, *arguments], cwd=REPO, check=False,
                          capture_output=True, text=True, timeout=600)


def test_inpaint_command_with_two_stage(refine_workdir, glcic_workdir, tmp_path):
    photo = cv2.resize(skimage.data.chelsea(), (120, 90), interpolation=cv2.INTER_AREA)
    hole = np.zeros((90, 120), bool)
    hole[20:50, 30:80] = True
    Image.fromarray(photo).save(tmp_path / "cat.png")
    Image.fromarray(np.where(hole, 255, 0).astype(np.uint8)).save(tmp_path / "mask.png")
    output = tmp_path / "filled.png"
    run = _run("launch.inpaint", "--method=two_stage", f"--refine={refine_workdir}",
               f"--coarse={glcic_workdir}", f"--image={tmp_path / 'cat.png'}",
               f"--mask={tmp_path / 'mask.png'}", f"--output={output}")
    assert run.returncode == 0, run.stderr[-3000:]
    with Image.open(output) as written:
        filled = np.asarray(written)
    np.testing.assert_array_equal(filled[~hole], photo[~hole])
    assert np.abs(filled[hole].astype(int) - photo[hole]).mean() > 1

    missing = _run("launch.inpaint", "--method=two_stage", f"--image={tmp_path / 'cat.png'}",
                   f"--output={tmp_path / 'other.png'}")
    assert missing.returncode != 0 and "--method=two_stage needs --refine" in missing.stderr
    assert not (tmp_path / "other.png").exists()


def test_evaluate_at_several_resolutions_with_the_coarse_row(refine_workdir, photo_dir, tmp_path):
    output = tmp_path / "eval"
    run = _run("launch.evaluate", f"--workdir={refine_workdir}", f"--images={photo_dir}",
               "--num_images=2", "--masks=glcic", "--resolution=32,48", f"--output={output}")
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((output / "results.json").read_text())
    assert results["methods"] == ["two_stage", "glcic_upsampled"]
    assert results["sizes"] == [32, 48]
    overall = {(row["method"], row["size"]) for row in results["summary"] if row["bin"] == "all"}
    assert overall == {(m, s) for m in ("two_stage", "glcic_upsampled") for s in (32, 48)}
