"""Tests for inpaint_jax.models.layers."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inpaint_jax.models import context_encoder, glcic, layers, pggan
from inpaint_jax.models.layers import ConvNormAct, InputShapeError, LayerSpec

pytestmark = pytest.mark.fast_compile  # tiny networks: compiling dominates


def _image_and_mask(seed=0, shape=(2, 8, 12)):
    rng = np.random.default_rng(seed)
    image = rng.uniform(size=(*shape, 3)).astype(np.float32)
    mask = (rng.uniform(size=(*shape, 1)) < 0.4).astype(np.float32)
    return jnp.asarray(image), jnp.asarray(mask)


def test_fill_holes_puts_the_per_channel_value_in_holes_and_keeps_known_pixels():
    image, mask = _image_and_mask()
    filled = np.asarray(layers.fill_holes(image, mask, (0.1, 0.5, 0.9)))
    hole = np.asarray(mask[..., 0]) == 1
    np.testing.assert_array_equal(filled[hole], np.broadcast_to(np.float32([0.1, 0.5, 0.9]), filled[hole].shape))
    np.testing.assert_array_equal(filled[~hole], np.asarray(image)[~hole])


def test_fill_holes_accepts_a_scalar():
    image, mask = _image_and_mask(seed=1)
    filled = np.asarray(layers.fill_holes(image, mask, 0.25))
    assert np.all(filled[np.asarray(mask[..., 0]) == 1] == np.float32(0.25))


@pytest.mark.parametrize("fill_value", [(0.1, 0.2), ((0.1, 0.2, 0.3),)])
def test_fill_holes_rejects_a_fill_value_that_does_not_match_the_channels(fill_value):
    image, mask = _image_and_mask()
    with pytest.raises(ValueError, match="one value per image channel"):
        layers.fill_holes(image, mask, fill_value)


def test_composite_keeps_known_pixels_bit_exact_and_takes_holes_from_prediction():
    image, mask = _image_and_mask(seed=2)
    prediction = jax.random.uniform(jax.random.key(3), image.shape)
    out = np.asarray(layers.composite(image, prediction, mask))
    hole = np.asarray(mask[..., 0]) == 1
    np.testing.assert_array_equal(out[~hole], np.asarray(image)[~hole])
    np.testing.assert_array_equal(out[hole], np.asarray(prediction)[hole])


@pytest.mark.parametrize(
    "image_shape, mask_shape, message",
    [
        ((1, 8, 8, 4), (1, 8, 8, 1), r"RGB image batch of shape \(N, H, W, 3\)"),
        ((8, 8, 3), (8, 8, 1), r"RGB image batch of shape \(N, H, W, 3\)"),
        ((1, 8, 8, 3), (1, 8, 8, 3), "single channel"),
        ((1, 8, 8, 3), (1, 8, 4, 1), "matching the image"),
        ((2, 8, 8, 3), (1, 8, 8, 1), "matching the image"),
        ((1, 8, 10, 3), (1, 8, 10, 1), "multiples of 4, got 8x10. Pad"),
    ],
)
def test_check_image_and_mask_explains_what_is_wrong(image_shape, mask_shape, message):
    with pytest.raises(InputShapeError, match=message):
        layers.check_image_and_mask(
            jnp.zeros(image_shape), jnp.zeros(mask_shape), size_multiple=4, model_name="Net"
        )


def test_check_rgb_batch_names_the_model_and_the_expected_shape():
    layers.check_rgb_batch(jnp.zeros((2, 5, 7, 3)), "Net")
    for shape in ((5, 7, 3), (2, 5, 7, 1), (2, 5, 7, 4)):
        with pytest.raises(InputShapeError, match=r"Net expects an RGB image batch of shape "
                                                  r"\(N, 64, 64, 3\), got \(" + str(shape[0])):
            layers.check_rgb_batch(jnp.zeros(shape), "Net", "(N, 64, 64, 3)")


def test_check_image_and_mask_accepts_valid_input():
    layers.check_image_and_mask(
        jnp.zeros((2, 8, 12, 3)), jnp.zeros((2, 8, 12, 1)), size_multiple=4, model_name="Net"
    )


def test_input_shape_error_is_a_value_error():
    assert issubclass(InputShapeError, ValueError)


def test_layer_spec_rejects_unknown_kind():
    with pytest.raises(ValueError, match="'conv' or 'deconv'"):
        LayerSpec("pool", kernel=2, stride=2, dilation=1, features=8)


def _conv(kernel, stride=1, dilation=1):
    return LayerSpec("conv", kernel=kernel, stride=stride, dilation=dilation, features=1)


def _deconv(kernel, stride):
    return LayerSpec("deconv", kernel=kernel, stride=stride, dilation=1, features=1)


@pytest.mark.parametrize(
    "table, expected",
    [
        ([_conv(3)], 3),
        ([_conv(5), _conv(3)], 7),
        ([_conv(3, dilation=4)], 9),
        # The stride-2 conv sees 3 pixels per output; the 3x3 after it spans 3 of its outputs.
        ([_conv(3, stride=2), _conv(3)], (3 - 1) * 2 + 3),
        # A 4x4 stride-2 transposed conv: each output pixel comes from 2 input pixels,
        ([_deconv(4, 2)], 2),
        # and 3 consecutive outputs from at most ceil((3 + 3) / 2) = 3 inputs.
        ([_deconv(4, 2), _conv(3)], 3),
        ([_conv(3, stride=2), _deconv(4, 2), _conv(3)], (3 - 1) * 2 + 3),
    ],
)
def test_receptive_field_of_small_tables(table, expected):
    assert layers.receptive_field(table) == expected


def test_size_multiple_counts_only_down_sampling_strides():
    assert layers.size_multiple([_conv(3, stride=2), _conv(3, stride=2), _deconv(4, 2)]) == 4


@pytest.mark.parametrize("features, multiplier, expected", [(64, 1.0, 64), (64, 0.25, 16), (3, 0.1, 1)])
def test_scaled_width(features, multiplier, expected):
    assert layers.scaled_width(features, multiplier) == expected


@pytest.mark.parametrize(
    "block, in_size, out_size",
    [
        (ConvNormAct(8, 3, stride=2), 16, 8),
        (ConvNormAct(8, 3, stride=2), 15, 8),
        (ConvNormAct(8, 5, stride=2), 9, 5),
        (ConvNormAct(8, 3, dilation=4), 10, 10),
        (ConvNormAct(8, 4, stride=2, transpose=True), 6, 12),
    ],
)
def test_conv_norm_act_output_size(block, in_size, out_size):
    x = jnp.ones((1, in_size, in_size, 3))
    out = jax.eval_shape(lambda: block.init_with_output(jax.random.key(0), x, train=False)[0])
    assert out.shape == (1, out_size, out_size, 8)


def test_conv_norm_act_has_a_bias_only_without_batch_norm():
    x = jnp.ones((1, 4, 4, 3))
    with_norm = ConvNormAct(5, 3).init(jax.random.key(0), x, train=False)
    without = ConvNormAct(5, 3, normalize=False).init(jax.random.key(0), x, train=False)
    assert set(with_norm["params"]["conv"]) == {"kernel"}
    assert set(with_norm["params"]["norm"]) == {"scale", "bias"}
    assert set(with_norm["batch_stats"]["norm"]) == {"mean", "var"}
    assert set(without["params"]) == {"conv"}
    assert set(without["params"]["conv"]) == {"kernel", "bias"}


def test_conv_norm_act_updates_batch_stats_in_train_mode_only():
    block = ConvNormAct(4, 3)
    x = jax.random.normal(jax.random.key(1), (2, 6, 6, 3)) + 3.0
    variables = block.init(jax.random.key(0), x, train=False)
    _, updated = block.apply(variables, x, train=True, mutable=["batch_stats"])
    assert not np.allclose(updated["batch_stats"]["norm"]["mean"], variables["batch_stats"]["norm"]["mean"])
    eval_out = block.apply(variables, x, train=False)
    assert np.all(np.asarray(eval_out) >= 0)  # ReLU


def test_conv_norm_act_matches_torch_padding_and_transposed_kernel_layout():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 10, 6, 3)).astype(np.float32)
    x_torch = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())

    for transpose in (False, True):
        block = ConvNormAct(5, 4 if transpose else 3, stride=2, transpose=transpose, normalize=False, activation=None)
        variables = block.init(jax.random.key(0), jnp.asarray(x), train=False)
        kernel = np.asarray(variables["params"]["conv"]["kernel"])  # (kh, kw, in, out)
        bias = torch.from_numpy(np.array(variables["params"]["conv"]["bias"]))
        ours = np.asarray(block.apply(variables, jnp.asarray(x), train=False))
        if transpose:
            weight = torch.from_numpy(kernel[::-1, ::-1].transpose(2, 3, 0, 1).copy())  # (in, out, kh, kw)
            theirs = torch.nn.functional.conv_transpose2d(x_torch, weight, bias, stride=2, padding=1)
        else:
            weight = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())  # (out, in, kh, kw)
            theirs = torch.nn.functional.conv2d(x_torch, weight, bias, stride=2, padding=1)
        np.testing.assert_allclose(ours, theirs.numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- resize conv, norms, residual


def _resize_conv(kernel, stride=2):
    return LayerSpec("resize_conv", kernel=kernel, stride=stride, dilation=1, features=1)


@pytest.mark.parametrize(
    "table, expected",
    [
        # Bilinear x2 alone: each output pixel mixes its 2 nearest input pixels.
        ([_resize_conv(1)], 2),
        # A 3x3 conv after it spans 3 up-sampled pixels, which read at most 3 inputs.
        ([_resize_conv(3)], 3),
        # 5 up-sampled pixels read at most ceil(4 / 2) + 2 = 4 inputs.
        ([_resize_conv(3), _conv(3)], 4),
        ([_conv(3, stride=2), _resize_conv(3)], (3 - 1) * 2 + 3),
    ],
)
def test_receptive_field_of_interpolated_convolutions(table, expected):
    assert layers.receptive_field(table) == expected


def test_interpolated_convolution_receptive_field_matches_gradient_support():
    kernel = 2  # an even span of up-sampled pixels: the two phases read different numbers of inputs
    x = jnp.ones((1, 16, 16, 1))

    def output_pixel(x, row):
        up = layers.bilinear_upsample(x, 2)
        out = jax.lax.conv_general_dilated(
            up,
            jnp.ones((kernel, kernel, 1, 1)),
            (1, 1),
            "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return out[0, row, 16].sum()

    extents = []
    for row in (15, 16):  # both phases of the 2x up-sampling
        rows = np.nonzero(np.asarray(jax.grad(output_pixel)(x, row))[0, :, :, 0].any(1))[0]
        extents.append(rows.max() - rows.min() + 1)
    assert max(extents) == layers.receptive_field([_resize_conv(kernel)])
    assert min(extents) < max(extents)


def test_bilinear_upsample_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype(np.float32)
    ours = np.asarray(layers.bilinear_upsample(jnp.asarray(x), 2))
    assert ours.shape == (2, 10, 14, 3)
    theirs = torch.nn.functional.interpolate(
        torch.from_numpy(x.transpose(0, 3, 1, 2)),
        scale_factor=2,
        mode="bilinear",
        align_corners=False,
    )
    np.testing.assert_allclose(ours, theirs.numpy().transpose(0, 2, 3, 1), atol=1e-6)


def test_conv_norm_act_instance_norm_normalises_each_image_and_channel_without_state():
    block = ConvNormAct(4, 3, normalization="instance", activation=None)
    x = (
        jax.random.normal(jax.random.key(1), (2, 6, 6, 3))
        * jnp.array([1.0, 5.0]).reshape(2, 1, 1, 1)
        + 3.0
    )
    variables = block.init(jax.random.key(0), x, train=False)
    assert set(variables) == {"params"}
    assert set(variables["params"]["conv"]) == {"kernel"}
    assert set(variables["params"]["norm"]) == {"scale", "bias"}
    out = np.asarray(block.apply(variables, x, train=True))
    np.testing.assert_allclose(out.mean(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2)), 1.0, atol=1e-3)
    np.testing.assert_array_equal(out, block.apply(variables, x, train=False))


def test_conv_norm_act_rejects_an_unknown_normalization():
    with pytest.raises(
        ValueError, match=r"normalization must be one of \('batch', 'instance'\), got 'layer'"
    ):
        ConvNormAct(4, 3, normalization="layer").init(
            jax.random.key(0), jnp.ones((1, 4, 4, 3)), train=False
        )


def test_residual_block_adds_the_input_to_a_two_conv_branch():
    block = layers.ResidualBlock(dilations=(2, 1), normalization="instance")
    x = jax.random.normal(jax.random.key(2), (2, 8, 10, 5))
    variables = block.init(jax.random.key(0), x, train=False)
    params = variables["params"]
    assert (
        params["conv1"]["conv"]["kernel"].shape
        == params["conv2"]["conv"]["kernel"].shape
        == (3, 3, 5, 5)
    )
    out = block.apply(variables, x, train=False)
    assert out.shape == x.shape
    assert not np.allclose(out, x)
    # Zero the branch's last normalisation: the block becomes the identity.
    silenced = jax.tree_util.tree_map_with_path(
        lambda path, leaf: (
            jnp.zeros_like(leaf) if path[0].key == "conv2" and path[1].key == "norm" else leaf
        ),
        params,
    )
    np.testing.assert_array_equal(block.apply({"params": silenced}, x, train=False), x)


@pytest.mark.parametrize("dilations", [(1, 4), (4, 1)])
def test_residual_block_dilates_the_requested_convolution(dilations):
    seen = {}

    def record_dilation(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.Conv):
            seen[context.module.path[0]] = context.module.kernel_dilation
        return next_fun(*args, **kwargs)

    block = layers.ResidualBlock(dilations=dilations, normalize=False)
    with nn.intercept_methods(record_dilation):
        jax.eval_shape(lambda: block.init(jax.random.key(0), jnp.ones((1, 12, 12, 2)), train=False))
    assert seen == {"conv1": (dilations[0],) * 2, "conv2": (dilations[1],) * 2}


# ---------------------------------------------------------------- sub-pixel transposed convolution


def _flax_conv_transpose(features, kernel_size, stride, *, use_bias, dtype, param_dtype, name):
    """The nn.ConvTranspose that SubpixelConvTranspose replaces (what older checkpoints hold)."""
    return nn.ConvTranspose(
        features,
        (kernel_size, kernel_size),
        strides=(stride, stride),
        padding="SAME",
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
    )


@pytest.mark.parametrize(
    "kernel, stride, input_shape",
    [
        (4, 2, (2, 5, 7, 3)),  # GLCIC and Context Encoder up-sampling; odd, non-square
        (4, 2, (3, 8, 6, 5)),
        (3, 2, (2, 6, 9, 4)),  # PGGAN upsampling="transposed"
        (3, 2, (2, 1, 4, 3)),  # a single input row
        (5, 2, (2, 4, 3, 2)),
        (3, 3, (2, 3, 5, 3)),
        (2, 2, (2, 4, 4, 3)),
        (6, 3, (2, 5, 4, 2)),
    ],
)
def test_subpixel_conv_transpose_equals_flax_conv_transpose_with_gradients(kernel, stride, input_shape):
    rng = np.random.default_rng(kernel * 10 + stride)
    x = jnp.asarray(rng.normal(size=input_shape), jnp.float32)
    ours = layers.SubpixelConvTranspose(6, kernel, stride, name="conv")
    theirs = _flax_conv_transpose(
        6, kernel, stride, use_bias=True, dtype=jnp.float32, param_dtype=jnp.float32, name="conv"
    )
    variables = theirs.init(jax.random.key(0), x)
    # A non-zero bias, so that its gradient and its addition are both checked.
    variables = jax.tree.map(lambda v: v + 0.1, variables)
    height, width = input_shape[1:3]
    weights = jnp.asarray(rng.normal(size=(input_shape[0], stride * height, stride * width, 6)))

    def loss(module, variables, x):
        out = module.apply(variables, x)
        return jnp.sum(out * weights), out

    def output_and_grads(module):
        """(output, (d loss / d variables, d loss / d x)) in one compiled call."""
        grad = jax.grad(functools.partial(loss, module), argnums=(0, 1), has_aux=True)
        grads, out = jax.jit(grad)(variables, x)
        return out, grads

    expected_out, expected_grads = output_and_grads(theirs)
    out, grads = output_and_grads(ours)
    assert out.shape == expected_out.shape == (input_shape[0], stride * height, stride * width, 6)
    np.testing.assert_allclose(out, expected_out, rtol=1e-5, atol=1e-5)
    for name in ("kernel", "bias"):
        np.testing.assert_allclose(
            grads[0]["params"][name], expected_grads[0]["params"][name], rtol=1e-5, atol=1e-4
        )
    np.testing.assert_allclose(grads[1], expected_grads[1], rtol=1e-5, atol=1e-5)


def test_subpixel_conv_transpose_initialises_like_flax_conv_transpose():
    x = jnp.ones((1, 3, 3, 4))
    ours = layers.SubpixelConvTranspose(5, 4, 2).init(jax.random.key(7), x)
    theirs = _flax_conv_transpose(
        5, 4, 2, use_bias=True, dtype=jnp.float32, param_dtype=jnp.float32, name=None
    ).init(jax.random.key(7), x)
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)


def test_subpixel_conv_transpose_computes_in_its_dtype_with_float32_parameters():
    x = jnp.ones((2, 3, 3, 4))
    module = layers.SubpixelConvTranspose(5, 4, 2, dtype=jnp.bfloat16)
    out, variables = module.init_with_output(jax.random.key(0), x)
    assert out.dtype == jnp.bfloat16
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize(
    "kernel, stride, input_shape, message",
    [
        (1, 2, (1, 4, 4, 3), "1 <= stride <= kernel_size"),
        (3, 0, (1, 4, 4, 3), "1 <= stride <= kernel_size"),
        (4, 2, (4, 4, 3), r"\(N, H, W, C\) input"),
    ],
)
def test_subpixel_conv_transpose_rejects_what_it_cannot_compute(kernel, stride, input_shape, message):
    with pytest.raises(ValueError, match=message):
        layers.SubpixelConvTranspose(4, kernel, stride).init(jax.random.key(0), jnp.ones(input_shape))


def test_conv_norm_act_rejects_a_dilated_transposed_convolution():
    block = ConvNormAct(4, 4, stride=2, dilation=2, transpose=True)
    with pytest.raises(ValueError, match="transposed convolution cannot be dilated"):
        block.init(jax.random.key(0), jnp.ones((1, 4, 4, 3)), train=False)


def _model_case(name):
    image16, mask16 = _image_and_mask(shape=(2, 16, 16))
    if name == "glcic":
        return glcic.CompletionNetwork(width_multiplier=0.125), image16, mask16, 2
    if name == "context_encoder":
        image, mask = _image_and_mask(shape=(2, 128, 128))
        return context_encoder.ContextEncoder(width_multiplier=0.0625), image, mask, 4
    generator = pggan.make_generator(
        "PGGAN-DRes", upsampling="transposed", num_blocks=1, width_multiplier=0.125
    )
    return generator, image16, mask16, 2


@pytest.mark.parametrize("name", ["glcic", "context_encoder", "pggan_transposed"])
def test_models_with_transposed_convolutions_keep_their_checkpoint_layout_and_outputs(name, monkeypatch):
    model, image, mask, transposed_layers = _model_case(name)

    def init_and_apply():
        """(variables, eval-mode output), each from one compiled call (traced now, not cached)."""
        variables = jax.jit(lambda key: model.init(key, image, mask, train=False))(jax.random.key(3))
        output = jax.jit(lambda v: model.apply(v, image, mask, train=False))(variables)
        return variables, output

    ours, ours_out = init_and_apply()
    calls = []

    def flax_conv_transpose(*args, **kwargs):
        calls.append((args, kwargs))
        return _flax_conv_transpose(*args, **kwargs)

    monkeypatch.setattr(layers, "SubpixelConvTranspose", flax_conv_transpose)
    theirs, theirs_out = init_and_apply()
    assert len(calls) == 2 * transposed_layers  # traced by init, then by apply
    # Same names, shapes and (same-seed) initial values: checkpoints of either load in the other.
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)
    np.testing.assert_allclose(ours_out, theirs_out, rtol=1e-5, atol=1e-5)
