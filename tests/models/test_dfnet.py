"""DFNet network: released architecture, multi-scale outputs, fusion blocks, input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inpaint_jax.models import dfnet
from inpaint_jax.models.layers import InputShapeError, fill_holes

pytestmark = pytest.mark.fast_compile  # tiny networks: compiling dominates

# A 4-level, 1/8-width DFNet: size multiple 16, fusion blocks at levels 0-3.
TINY = dict(encoder_kernels=(7, 5, 5, 3), fusion_levels=(0, 1, 2, 3), width_multiplier=0.125)


def image_and_mask(height=32, width=48, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.uniform(size=(batch, height, width, 3)).astype(np.float32)
    mask = np.zeros((batch, height, width, 1), np.float32)
    mask[:, height // 4 : height // 2, width // 4 : width // 2] = 1.0
    return jnp.asarray(image), jnp.asarray(mask)


@pytest.fixture(scope="module")
def tiny():
    """The TINY model and a jitted init_with_output of `multiscale` (compiled once, reused)."""
    model = dfnet.DFNet(**TINY)
    run = jax.jit(
        lambda image, mask: model.init_with_output(
            jax.random.key(0, impl="rbg"), image, mask, train=False, method="multiscale"
        )
    )
    return model, run


def init_shapes(model, *inputs, **kwargs):
    """Shapes of model.init_with_output(...) without computing anything."""
    return jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), *inputs, **kwargs))


def test_released_architecture_parameter_shapes():
    model = dfnet.DFNet()
    image = jnp.zeros((1, 256, 256, 3))
    mask = jnp.zeros((1, 256, 256, 1))
    params = init_shapes(model, image, mask, train=False)[1]["params"]
    unet = params["unet"]
    kernels = [unet[f"encoder{i}"]["conv"]["kernel"].shape for i in range(1, 9)]
    assert kernels[0] == (7, 7, 4, 64)
    assert [k[0] for k in kernels] == [7, 5, 5, 3, 3, 3, 3, 3]
    assert [k[-1] for k in kernels] == [64, 128, 256, 512, 512, 512, 512, 512]
    assert "norm" not in unet["encoder1"] and "norm" in unet["encoder2"]
    # Decoder level l: up-sampled deeper features + the skip -> the skip's channels.
    assert unet["decoder7"]["conv"]["kernel"].shape == (3, 3, 512 + 512, 512)
    assert unet["decoder1"]["conv"]["kernel"].shape == (3, 3, 128 + 64, 64)
    assert unet["decoder0"]["conv"]["kernel"].shape == (3, 3, 64 + 4, 4)
    assert sorted(k for k in params if k.startswith("fusion")) == [f"fusion{i}" for i in range(6)]
    fusion = params["fusion0"]
    assert fusion["raw"]["conv"]["kernel"].shape == (1, 1, 4, 3)
    assert fusion["blend1"]["conv"]["kernel"].shape == (1, 1, 6, 32)
    assert fusion["blend2"]["conv"]["kernel"].shape == (3, 3, 32, 3)
    assert fusion["alpha"]["conv"]["kernel"].shape == (1, 1, 3, 3)
    assert model.size_multiple == 256


def test_multiscale_outputs_have_one_image_per_fusion_level(tiny):
    model, run = tiny
    image, mask = image_and_mask()
    outputs, variables = run(image, mask)
    assert outputs.levels == (0, 1, 2, 3)
    per_level = zip(outputs.levels, outputs.images, outputs.raws, outputs.alphas)
    for level, fused, raw, alpha in per_level:
        shape = (2, 32 >> level, 48 >> level)
        assert fused.shape == raw.shape == (*shape, 3)
        assert alpha.shape == (*shape, 3)
        assert fused.dtype == jnp.float32
    prediction = jax.eval_shape(lambda: model.apply(variables, image, mask, train=False))
    assert prediction.shape == outputs.images[0].shape


def test_fusion_blends_raw_output_with_the_filled_input_by_alpha(tiny):
    model, run = tiny
    image, mask = image_and_mask()
    outputs, _ = run(image, mask)
    filled = fill_holes(image, mask, model.fill_value)
    per_level = zip(outputs.levels, outputs.images, outputs.raws, outputs.alphas)
    for level, fused, raw, alpha in per_level:
        assert float(alpha.min()) >= 0.0 and float(alpha.max()) <= 1.0
        assert float(raw.min()) >= 0.0 and float(raw.max()) <= 1.0
        expected = alpha * raw + (1 - alpha) * dfnet.downscale(filled, level)
        np.testing.assert_allclose(fused, expected, atol=1e-6)


def test_fuse_formula():
    raw, image = jnp.full((1, 2, 2, 3), 0.8), jnp.full((1, 2, 2, 3), 0.2)
    alpha = jnp.array([0.0, 0.25, 1.0]).reshape(1, 1, 1, 3)
    np.testing.assert_allclose(dfnet.fuse(raw, image, alpha)[0, 0, 0], [0.2, 0.35, 0.8], rtol=1e-6)


def test_single_alpha_channel_is_shared_by_the_colours():
    model = dfnet.DFNet(**TINY, alpha_channels=1)
    image, mask = image_and_mask(batch=1)
    outputs = init_shapes(model, image, mask, train=False, method="multiscale")[0]
    assert all(alpha.shape[-1] == 1 for alpha in outputs.alphas)


def test_hole_contents_do_not_reach_the_network(tiny):
    _, run = tiny  # same key and shapes: the same parameters for both inputs
    image, mask = image_and_mask()
    scribbled = jnp.where(mask > 0, 1.0 - image, image)
    first, second = run(image, mask)[0], run(scribbled, mask)[0]
    for a, b in zip(first.images + first.alphas, second.images + second.alphas):
        np.testing.assert_array_equal(a, b)


def test_fully_convolutional_one_set_of_parameters_for_any_multiple(tiny):
    model, run = tiny
    _, variables = jax.eval_shape(run, *image_and_mask())
    for height, width in ((16, 16), (64, 80)):
        image, mask = image_and_mask(height, width, batch=1)
        shape = jax.eval_shape(
            lambda v, i, m: model.apply(v, i, m, train=False), variables, image, mask
        ).shape
        assert shape == (1, height, width, 3)


@pytest.mark.parametrize("height, width", [(24, 32), (32, 40)])
def test_sides_must_be_multiples_of_two_to_the_depth(tiny, height, width):
    _, run = tiny
    with pytest.raises(InputShapeError, match=f"multiples of 16, got {height}x{width}"):
        run(*image_and_mask(height, width, batch=1))


def test_mask_must_match_the_image(tiny):
    _, run = tiny
    image, mask = image_and_mask()
    with pytest.raises(InputShapeError, match="mask of shape"):
        run(image, mask[:, :16])


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(fusion_levels=(1, 2)), "starting with 0"),
        (dict(fusion_levels=(0, 4)), "below the depth 4"),
        (dict(fusion_levels=(0, 2, 1)), "increasing"),
        (dict(alpha_channels=2), "alpha_channels"),
        (dict(encoder_kernels=()), "encoder_kernels"),
    ],
)
def test_bad_settings_are_rejected(settings, message):
    with pytest.raises(dfnet.DFNetConfigError, match=message):
        dfnet.DFNet(**{**TINY, **settings})


def test_downscale_halves_per_level_and_keeps_constants():
    image = jnp.full((1, 16, 24, 3), 0.3)
    assert dfnet.downscale(image, 0) is image
    small = dfnet.downscale(image, 2)
    assert small.shape == (1, 4, 6, 3)
    np.testing.assert_allclose(small, 0.3, rtol=1e-6)


def test_unet_returns_decoder_features_per_level():
    unet = dfnet.UNet(encoder_kernels=(3, 3, 3), width_multiplier=0.125)
    x = jnp.zeros((1, 16, 8, 5))
    features, _ = init_shapes(unet, x, train=False)
    assert [f.shape for f in features] == [(1, 16, 8, 5), (1, 8, 4, 8), (1, 4, 2, 16)]
