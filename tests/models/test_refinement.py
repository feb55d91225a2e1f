"""Two-stage refinement network: 20-channel layout, shapes, input checks, compositing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inpaint_jax.models import refinement
from inpaint_jax.models.layers import InputShapeError

pytestmark = pytest.mark.fast_compile  # tiny networks: compiling dominates

TINY = dict(encoder_kernels=(3, 3, 3), width_multiplier=0.125)  # size multiple 8


def parts(height=16, width=24, batch=2, seed=0):
    """Named input parts: random images, binary masks with a hole in the main mask."""
    rng = np.random.default_rng(seed)
    named = {}
    for name, channels in refinement.INPUT_LAYOUT:
        if channels == 3:
            named[name] = rng.uniform(size=(batch, height, width, 3)).astype(np.float32)
        else:
            named[name] = (rng.uniform(size=(batch, height, width, 1)) > 0.7).astype(np.float32)
    named["mask"][:, 4:10, 6:14] = 1.0
    return named


def test_channel_layout_is_image_then_four_shifts_then_the_five_masks():
    assert refinement.INPUT_NAMES == (
        "image",
        "shift_left",
        "shift_right",
        "shift_up",
        "shift_down",
        "mask",
        "mask_left",
        "mask_right",
        "mask_up",
        "mask_down",
    )
    assert refinement.INPUT_CHANNELS == 20
    slices = refinement.input_slices()
    assert slices["image"] == slice(0, 3)
    assert slices["shift_down"] == slice(12, 15)
    assert slices["mask"] == slice(15, 16)
    assert slices["mask_down"] == slice(19, 20)


def test_stack_input_puts_each_part_at_its_channels_and_split_inverts_it():
    named = {
        name: jnp.full((1, 2, 2, channels), float(index))
        for index, (name, channels) in enumerate(refinement.INPUT_LAYOUT)
    }
    stacked = refinement.stack_input(named)
    assert stacked.shape == (1, 2, 2, 20)
    expected = [0.0] * 3 + [1.0] * 3 + [2.0] * 3 + [3.0] * 3 + [4.0] * 3 + [5, 6, 7, 8, 9]
    np.testing.assert_array_equal(stacked[0, 0, 0], expected)
    for name, part in refinement.split_input(stacked).items():
        np.testing.assert_array_equal(part, named[name])


def test_stack_input_names_missing_unknown_and_misshapen_parts():
    named = parts()
    renamed = {("mask_top" if name == "mask_up" else name): part for name, part in named.items()}
    with pytest.raises(InputShapeError, match=r"missing \['mask_up'\], unknown \['mask_top'\]"):
        refinement.stack_input(renamed)
    with pytest.raises(InputShapeError, match="shift_left"):
        refinement.stack_input({**named, "shift_left": named["mask"]})


@pytest.fixture(scope="module")
def network():
    """The tiny network, its variables and its prediction for `parts()` (one compilation)."""
    model = refinement.RefinementNetwork(**TINY)
    inputs = refinement.stack_input(parts())
    prediction, variables = jax.jit(
        lambda x: model.init_with_output(jax.random.key(0, impl="rbg"), x, train=False)
    )(inputs)
    return model, variables, prediction


def test_prediction_is_rgb_at_full_resolution(network):
    model, variables, prediction = network
    assert prediction.shape == (2, 16, 24, 3) and prediction.dtype == jnp.float32
    assert float(prediction.min()) >= 0.0 and float(prediction.max()) <= 1.0
    assert model.size_multiple == 8
    assert not any("fusion" in name for name in variables["params"]["unet"])


def test_any_multiple_of_the_size_multiple_fits_the_same_parameters(network):
    model, variables, _ = network
    inputs = refinement.stack_input(parts(height=40, width=8, batch=1))
    shape = jax.eval_shape(lambda: model.apply(variables, inputs, train=False)).shape
    assert shape == (1, 40, 8, 3)


def test_completion_keeps_known_pixels_and_takes_the_hole_from_the_prediction(network):
    _, _, prediction = network
    named = parts()
    inputs = refinement.stack_input(named)
    completed = np.asarray(refinement.complete(inputs, prediction))
    known = named["mask"][..., 0] == 0
    np.testing.assert_array_equal(completed[known], named["image"][known])
    np.testing.assert_array_equal(completed[~known], np.asarray(prediction)[~known])
    # The network alone does alter known pixels: compositing is what keeps them.
    assert not np.allclose(np.asarray(prediction)[known], named["image"][known])


@pytest.mark.parametrize("channels", [4, 19, 21])
def test_wrong_channel_count_is_rejected_with_the_layout(network, channels):
    model, variables, _ = network
    with pytest.raises(InputShapeError, match=r"\(N, H, W, 20\).*image \(3\), shift_left \(3\)"):
        model.apply(variables, jnp.zeros((1, 16, 16, channels)), train=False)


def test_sides_must_be_multiples_of_the_size_multiple(network):
    model, variables, _ = network
    with pytest.raises(InputShapeError, match="multiples of 8, got 12x16"):
        model.apply(variables, jnp.zeros((1, 12, 16, 20)), train=False)
