"""Tests for inpaint_jax.two_stage: shifted copies, the 20-channel input, patches, the pipeline.

The coarse cache is tested in tests/data/test_coarse_cache.py, the
refinement trainer in tests/trainers/test_two_stage.py, the commands in
tests/launch/. `refine_config` and `write_refinement_workdir` serve them all.
"""

from pathlib import Path

import cv2
import jax
import numpy as np
import pytest
import skimage.data

from configs import two_stage as two_stage_config
from inpaint_jax import checkpointing, inference, models, two_stage
from inpaint_jax.models import refinement
from tests.helpers import override, tiny_dfnet_config

pytestmark = pytest.mark.fast_compile  # tiny networks: compiling dominates


def refine_config(photo_dir, data_dir, coarse_workdir, **overrides):
    """configs/two_stage.py:runlocal shrunk to 16 px patches of the generated photos."""
    config = two_stage_config.get_config("runlocal")
    config.data.name = "image_folder"
    config.data.manual_dir = photo_dir
    config.data.data_dir = data_dir
    config.data.max_side = 0
    config.data.crop_size = 16
    config.coarse_workdir = coarse_workdir
    config.model.coarse_size = 16
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


def write_generator_workdir(workdir, model_config, step, config=None, seed=0):
    """A workdir whose checkpoint `step` holds a randomly initialised generator alone.

    The generator is `models.build(model_config)`'s, with its model config
    and, if given, the training config `config` (a ConfigDict) beside it:
    what a conversion or an import writes. Returns the workdir as a str.
    """
    generator = models.build(model_config).generator
    inputs = models.example_inputs(model_config, 32).generator
    variables = jax.jit(lambda rng: generator.init(rng, *inputs, train=False))(
        jax.random.key(seed))
    variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    with checkpointing.Checkpointer(Path(workdir) / "checkpoints", async_save=False) as writer:
        writer.save(step, generator=variables, model_config=model_config.to_dict(),
                    config=None if config is None else config.to_dict(), force=True)
    return str(workdir)


def write_refinement_workdir(workdir, photo_dir, coarse_workdir, step=4):
    """A refinement network (random weights) of `refine_config`, trained with `coarse_workdir`."""
    config = refine_config(photo_dir, "unused", coarse_workdir)
    return write_generator_workdir(workdir, config.model, step, config=config)


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

    model_config = two_stage_config.get_config().model
    training_config = two_stage_config.get_config()
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
    assert model.model_config is RecordingRefinement.model_config
    assert model.training_config is RecordingRefinement.training_config
    assert not hasattr(model, "config")


# --------------------------------------------------------------------------- inference


@pytest.fixture(scope="module")
def refine_workdir(photo_dir, glcic_workdir, tmp_path_factory):
    """A tiny refinement network (random weights) whose training config names the tiny GLCIC."""
    return write_refinement_workdir(tmp_path_factory.mktemp("refine") / "work", photo_dir,
                                    glcic_workdir)


def test_refinement_checkpoint_loads_as_a_two_stage_model(refine_workdir, glcic_workdir):
    model = inference.load_model(refine_workdir)
    assert isinstance(model, two_stage.TwoStageModel)
    assert model.coarse.name == "glcic" and model.coarse_size == 16
    assert model.shift_fraction == 0.2
    assert model.step == 4 and model.coarse.step == 6
    assert model.model_config.family == two_stage.REFINEMENT_FAMILY
    assert model.training_config.coarse_workdir == glcic_workdir
    network = inference.load_network(refine_workdir)
    assert network.name == "refinement" and network.size_multiple == 4
    with pytest.raises(inference.ModelLoadError, match="not a two-stage refinement network"):
        two_stage.load_two_stage(glcic_workdir)


def test_coarse_size_and_shift_come_from_the_model_config(refine_workdir, glcic_workdir):
    network = inference.load_network(refine_workdir)
    network.model_config.coarse_size = 24
    network.model_config.shift_fraction = 0.3
    model = two_stage.from_refinement(network)
    assert (model.coarse_size, model.shift_fraction) == (24, 0.3)


def test_a_refinement_without_its_coarse_workdir_needs_one(photo_dir, glcic_workdir, tmp_path):
    config = refine_config(photo_dir, "unused", glcic_workdir)
    imported = write_generator_workdir(tmp_path / "imported", config.model, 1)  # no config
    with pytest.raises(inference.ModelLoadError, match="pass the coarse model's workdir"):
        inference.load_model(imported)
    model = two_stage.load_two_stage(imported, coarse=glcic_workdir)
    assert model.coarse.name == "glcic" and model.training_config is None
    moved = write_refinement_workdir(tmp_path / "moved", photo_dir, str(tmp_path / "gone"))
    with pytest.raises(FileNotFoundError, match="trained with the coarse model in .*gone"):
        inference.load_model(moved)


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


def test_dfnet_as_the_coarse_stage(refine_workdir, tmp_path):
    dfnet_model = tiny_dfnet_config("unused", "unused").model
    dfnet_workdir = write_generator_workdir(tmp_path / "dfnet", dfnet_model, 3, seed=1)
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
