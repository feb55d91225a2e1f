"""Tests for inpaint_jax.nps: settings, geometry, one level, the whole method.

The patch matching and the texture term itself are losses.extract_patches,
nearest_neighbours and patch_texture_loss (tests/test_losses.py).
"""

import dataclasses
import functools
import os

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data

from inpaint_jax import image_io, inference, nps, windows
from inpaint_jax.models import vgg
from inpaint_jax.weights import vgg as vgg_weights


@pytest.fixture(scope="module")
def texture_net():
    """A random-weight VGG-19 (layers up to relu4_1) and its variables.

    He-normal kernels and zero biases drawn with numpy from the parameter
    shapes: no initialiser to compile.
    """
    module = vgg.VGG(depth=19)
    shapes = jax.eval_shape(
        lambda: module.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), taps=("relu4_1",)))
    rng = np.random.default_rng(0)

    def draw(leaf):
        if leaf.ndim == 1:  # biases
            return jnp.zeros(leaf.shape, leaf.dtype)
        scale = np.sqrt(2 / np.prod(leaf.shape[:-1]))
        return jnp.asarray(rng.normal(size=leaf.shape) * scale, leaf.dtype)

    return module, jax.tree.map(draw, shapes)


def astronaut(height, width):
    """scikit-image's astronaut, resized, float32 in [0, 1]."""
    pixels = cv2.resize(skimage.data.astronaut(), (width, height), interpolation=cv2.INTER_AREA)
    return pixels.astype(np.float32) / 255


class MeanColour:
    """A content model that fills everything with the known pixels' mean colour; records calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, image, mask):
        self.calls.append((image.copy(), mask.copy()))
        return np.broadcast_to(image[mask[..., 0] == 0].mean(axis=0), image.shape)


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("changes, message", [
    ({"num_scales": 0}, "num_scales must be an integer >= 1"),
    ({"iterations": -1}, "iterations must be"),
    ({"iterations": (10, 10)}, "tuple of num_scales"),
    ({"texture_weight": -1.0}, "texture_weight must be a finite number >= 0"),
    ({"tv_weight": float("nan")}, "tv_weight must be"),
    ({"learning_rate": -0.1}, "learning_rate must be a finite number >= 0"),
    ({"source_stride": 0}, "source_stride must be"),
    ({"min_size": 8}, "min_size must be an integer >= 12"),
    ({"max_working_size": 32}, "max_working_size must be an integer >= min_size"),
    ({"texture_layers": "relu3_1"}, "texture_layers must be a non-empty tuple"),
])
def test_bad_settings_are_refused(changes, message):
    with pytest.raises(nps.NPSSettingsError, match=message):
        nps.NPSSettings(**changes)


def test_texture_layers_must_be_taps_of_the_network(texture_net):
    settings = nps.NPSSettings(texture_layers=("relu3_1", "relu9_1"))
    with pytest.raises(nps.NPSSettingsError, match=r"\['relu9_1'\] are not VGG-19 taps"):
        nps.NeuralPatchSynthesis(MeanColour(), *texture_net, settings)


def test_iterations_per_level():
    assert nps.NPSSettings(iterations=7).iterations_per_level() == (7, 7, 7)
    settings = nps.NPSSettings(num_scales=2, iterations=(5, 9))
    assert settings.iterations_per_level() == (5, 9)


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("side, expected", [(512, [128, 256, 512]), (300, [75, 150, 300]),
                                            (160, [80, 160]), (64, [64])])
def test_pyramid_levels_double_up_to_the_window_and_skip_small_ones(side, expected):
    assert nps.pyramid_sizes(side, nps.NPSSettings()) == expected


def test_pooled_hole_marks_every_feature_position_a_hole_pixel_reaches(texture_net):
    hole = np.zeros((32, 40), bool)
    hole[9, 17] = True
    module, _ = texture_net
    assert np.array_equal(np.argwhere(nps.pooled_hole(hole, module, "relu1_1")), [[9, 17]])
    assert np.array_equal(np.argwhere(nps.pooled_hole(hole, module, "relu3_1")), [[2, 4]])
    pooled = nps.pooled_hole(hole, module, "relu4_1")
    assert pooled.shape == (4, 5) and np.array_equal(np.argwhere(pooled), [[1, 2]])


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_patch_positions_agree_with_loops(stride):
    rng = np.random.default_rng(stride)
    hole = np.zeros((12, 15), bool)
    hole[4:7, 5:9] = True
    hole[rng.integers(0, 12, 3), rng.integers(0, 15, 3)] = True
    hole_positions, source_positions = nps.patch_positions(hole, stride)
    expected_sources = [
        y * 15 + x for y in range(1, 11) for x in range(1, 14)
        if (y - 1) % stride == 0 and (x - 1) % stride == 0
        and not hole[y - 1:y + 2, x - 1:x + 2].any()
    ]
    np.testing.assert_array_equal(hole_positions, np.flatnonzero(hole))
    np.testing.assert_array_equal(source_positions, expected_sources)


# --------------------------------------------------------------------------- one level


def test_a_few_iterations_lower_the_energy_towards_the_known_texture(texture_net):
    module, variables = texture_net
    rng = np.random.default_rng(5)
    tile = cv2.resize(rng.uniform(size=(4, 4, 3)).astype(np.float32), (16, 16),
                      interpolation=cv2.INTER_CUBIC).clip(0, 1)
    known = np.tile(tile, (4, 4, 1))  # 64 px, period 16: the hole's truth recurs outside it
    hole = np.zeros((64, 64), bool)
    hole[16:48, 16:48] = True
    noisy = known.copy()
    noisy[hole] = np.clip(known[hole] + rng.normal(scale=0.1, size=known[hole].shape), 0, 1)
    problem = nps.build_scale_problem(known, hole, noisy, module, nps.NPSSettings(source_stride=1))
    assert problem.taps == ("relu3_1",)  # relu4_1 is 8x8 here: no patch outside the hole
    init = jnp.asarray(noisy[None])
    scales = nps.texture_scales(init, problem, module, variables)
    # The content target is the noisy image: only the texture term knows better.
    weights = {"texture_weight": 1.0, "tv_weight": 0.0}
    energy = jax.jit(functools.partial(nps.scale_energy, texture_net=module, variables=variables,
                                       scales=scales, **weights))

    result = nps.optimise_scale(problem, init, module, variables, learning_rate=0.01,
                                iterations=10, **weights)

    before, after = energy(init, problem), energy(result.image, problem)
    assert float(after.total) < float(before.total)
    assert float(after.texture) < float(before.texture)
    np.testing.assert_allclose(float(result.energy.total), float(after.total), rtol=1e-4)
    image = np.asarray(result.image[0])
    np.testing.assert_array_equal(image[~hole], known[~hole])
    error_before = np.sqrt(np.mean((noisy[hole] - known[hole]) ** 2))
    assert np.sqrt(np.mean((image[hole] - known[hole]) ** 2)) < 0.95 * error_before


# --------------------------------------------------------------------------- the method


def test_multi_scale_run_on_a_photo(texture_net):
    image = astronaut(128, 128)
    mask = np.zeros((128, 128, 1), np.float32)
    mask[32:96, 32:96] = 1
    content = MeanColour()
    settings = nps.NPSSettings(num_scales=3, iterations=3, min_size=32)  # 32 -> 64 -> 128 px
    model = nps.NeuralPatchSynthesis(content, *texture_net, settings)

    result = inference.inpaint(model, image, mask)

    (content_image, content_mask), = content.calls
    assert content_image.shape == (128, 128, 3)
    np.testing.assert_array_equal(content_mask, mask)  # the window is the image here
    hole = mask[..., 0] > 0
    np.testing.assert_array_equal(result[~hole], image[~hole])
    filled = result[hole]
    assert np.all(np.isfinite(filled)) and filled.min() >= 0 and filled.max() <= 1
    synthesis = model.synthesise(image, mask)  # the same, with a report of each level
    # inpaint composites model(image, mask), which is synthesise's image: the run is repeatable.
    np.testing.assert_array_equal(synthesis.image[~hole], image[~hole])
    np.testing.assert_array_equal(synthesis.image, result)
    assert synthesis.window == windows.Window(0, 0, 128)
    assert [(level.size, level.iterations) for level in synthesis.levels] == [
        (32, 3), (64, 3), (128, 3)]
    assert all(level.seconds > 0 and np.isfinite(level.energy.total) for level in synthesis.levels)
    assert synthesis.levels[-1].taps == ("relu3_1", "relu4_1")
    # The content model gave one flat colour; the texture term adds structure.
    model.settings = dataclasses.replace(settings, texture_weight=0.0)
    untextured = inference.inpaint(model, image, mask)[hole]
    assert filled.std(axis=0).mean() > 1.5 * untextured.std(axis=0).mean()


def test_irregular_holes_at_the_border_with_a_capped_working_size(texture_net):
    image = astronaut(80, 96)
    mask = np.zeros((80, 96, 1), np.float32)
    mask[30:50, 0:12] = 1  # touches the left border
    mask[20:28, 30:40] = 1
    mask[24, 35] = 0
    image[mask[..., 0] > 0] = 0  # what is under the hole must not matter
    content = MeanColour()
    settings = nps.NPSSettings(num_scales=2, iterations=2, content_size=32, min_size=32,
                               max_working_size=48)  # window 80 px: one level at 48 px
    model = nps.NeuralPatchSynthesis(content, *texture_net, settings)

    result = inference.inpaint(model, image, mask)

    (content_image, content_mask), = content.calls
    assert content_image.shape == (32, 32, 3)
    rows, columns = np.nonzero(content_mask[..., 0])
    # The holes' box maps to the central half (the mirrored hole left of the image aside).
    assert rows.min() >= 8 and rows.max() < 24 and columns.max() < 24
    hole = mask[..., 0] > 0
    np.testing.assert_array_equal(result[~hole], image[~hole])
    known_mean = image[~hole].mean(axis=0)
    assert np.abs(result[hole].mean(axis=0) - known_mean).max() < 0.15


def test_without_holes_the_image_comes_back_and_no_model_runs(texture_net):
    content = MeanColour()
    image = astronaut(40, 40)
    result = nps.NeuralPatchSynthesis(content, *texture_net)(image, np.zeros((40, 40, 1)))
    np.testing.assert_array_equal(result, image)
    assert not content.calls


def test_bad_inputs_give_clear_errors(texture_net):
    image, mask = astronaut(40, 40), np.zeros((40, 40, 1), np.float32)
    mask[10:20, 10:20] = 1
    model = nps.NeuralPatchSynthesis(lambda image, mask: image[:10], *texture_net)
    with pytest.raises(nps.ContentPredictionError, match=r"must return a finite \(128, 128, 3\)"):
        model(image, mask)
    with pytest.raises(image_io.MaskError, match="every pixel as a hole"):
        model(image, np.ones((40, 40, 1)))
    with pytest.raises(image_io.MaskError, match="is 30x40"):
        model(image, np.zeros((30, 40, 1)))


@pytest.mark.skipif(not os.environ.get("INPAINT_JAX_VGG19"),
                    reason="set INPAINT_JAX_VGG19 to a VGG-19 weight file (.pth, .h5 or .npz)")
def test_real_vgg19_weights_fill_a_photo():
    module, variables = vgg_weights.load_vgg(os.environ["INPAINT_JAX_VGG19"], depth=19)
    image = astronaut(256, 256)
    mask = np.zeros((256, 256, 1), np.float32)
    mask[64:192, 64:192] = 1
    settings = nps.NPSSettings(iterations=10)
    result = inference.inpaint(nps.NeuralPatchSynthesis(MeanColour(), module, variables, settings),
                               image, mask)
    hole = mask[..., 0] > 0
    np.testing.assert_array_equal(result[~hole], image[~hole])
    assert np.all(np.isfinite(result)) and result[hole].std(axis=0).mean() > 0.01
