"""Tests for the GLCIC networks (inpaint_jax.models.glcic)."""
import functools
import math

import jax
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from inpaint_jax.models import glcic, layers
from inpaint_jax.models.layers import InputShapeError

pytestmark = pytest.mark.fast_compile  # tiny networks: compiling dominates

# Paper Table 1: (kind, kernel, stride, dilation, output channels).
PAPER_COMPLETION_TABLE = [
    ("conv", 5, 1, 1, 64),
    ("conv", 3, 2, 1, 128),
    ("conv", 3, 1, 1, 128),
    ("conv", 3, 2, 1, 256),
    ("conv", 3, 1, 1, 256),
    ("conv", 3, 1, 1, 256),
    ("conv", 3, 1, 2, 256),
    ("conv", 3, 1, 4, 256),
    ("conv", 3, 1, 8, 256),
    ("conv", 3, 1, 16, 256),
    ("conv", 3, 1, 1, 256),
    ("conv", 3, 1, 1, 256),
    ("deconv", 4, 2, 1, 128),
    ("conv", 3, 1, 1, 128),
    ("deconv", 4, 2, 1, 64),
    ("conv", 3, 1, 1, 32),
    ("conv", 3, 1, 1, 3),
]
LAYER_NAMES = [f"layer{index:02d}" for index in range(1, 18)]
COMPLETION_PARAMS = 6_069_155
LOCAL_PARAMS_128 = 19_251_776
GLOBAL_PARAMS_256 = 25_806_400
CONTEXT_PARAMS = 45_060_225
RECEPTIVE_FIELD = 303

# The paper's geometry at 1/16 of the channels: what the tests that compute run.
NET = glcic.CompletionNetwork(width_multiplier=1 / 16)
PAPER_NET = glcic.CompletionNetwork()  # shapes only (jax.eval_shape): nothing is computed
apply_eval = jax.jit(lambda variables, image, mask: NET.apply(variables, image, mask, train=False))
apply_train = jax.jit(
    lambda variables, image, mask: NET.apply(variables, image, mask, train=True, mutable=["batch_stats"])
)
TINY_WIDTH = 1 / 16


def _random_batch(seed, height, width, batch=1):
    rng = np.random.default_rng(seed)
    image = rng.uniform(size=(batch, height, width, 3)).astype(np.float32)
    mask = np.zeros((batch, height, width, 1), np.float32)
    mask[:, height // 4 : height // 2, width // 4 : 3 * width // 4] = 1.0
    return jnp.asarray(image), jnp.asarray(mask)


def _param_count(tree):
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def _constant_variables(module, *inputs):
    """Variables of the right shapes and dtypes, all 0.5, without compiling initialisers."""
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *inputs, train=False))
    return jax.tree.map(lambda leaf: jnp.full(leaf.shape, 0.5, leaf.dtype), shapes)


@pytest.fixture(scope="module")
def completion_variables():
    """Variables of the 1/16-width NET, initialised in one compiled call."""
    image, mask = _random_batch(0, 32, 32)
    return jax.jit(NET.init, static_argnames="train")(jax.random.key(0, impl="rbg"), image, mask, train=False)


@pytest.fixture(scope="module")
def paper_shapes():
    """Shapes of the paper-width network's variables (nothing computed)."""
    image, mask = _random_batch(0, 32, 32)
    return jax.eval_shape(lambda: PAPER_NET.init(jax.random.key(0), image, mask, train=False))


# ---------------------------------------------------------------- completion network


def test_layer_table_is_the_papers():
    table = [(l.kind, l.kernel, l.stride, l.dilation, l.features) for l in glcic.COMPLETION_LAYERS]
    assert table == PAPER_COMPLETION_TABLE
    assert glcic.COMPLETION_SIZE_MULTIPLE == 4
    # Inference pads inputs to the network's size multiple: the two strided convolutions.
    assert PAPER_NET.size_multiple == NET.size_multiple == layers.size_multiple(glcic.COMPLETION_LAYERS) == 4


def test_kernel_shapes_follow_the_table_in_order(paper_shapes):
    params = paper_shapes["params"]
    assert list(params) == LAYER_NAMES
    in_channels = 4  # RGB + mask
    for name, (_, kernel, _, _, features) in zip(LAYER_NAMES, PAPER_COMPLETION_TABLE):
        assert params[name]["conv"]["kernel"].shape == (kernel, kernel, in_channels, features), name
        in_channels = features
    assert set(params["layer17"]) == {"conv"}  # no BatchNorm on the output layer
    assert all("norm" in params[name] for name in LAYER_NAMES[:-1])


def test_layer_output_sizes_follow_the_strides(paper_shapes):
    image, mask = _random_batch(1, 32, 48)
    _, state = jax.eval_shape(
        lambda variables: PAPER_NET.apply(
            variables, image, mask, train=False, capture_intermediates=True, mutable=["intermediates"]
        ),
        paper_shapes,
    )
    height, width = 32, 48
    for name, (kind, _, stride, _, features) in zip(LAYER_NAMES, PAPER_COMPLETION_TABLE):
        if kind == "conv":
            height, width = height // stride, width // stride
        else:
            height, width = height * stride, width * stride
        assert state["intermediates"][name]["__call__"][0].shape == (1, height, width, features), name


def test_completion_parameter_count():
    total, in_channels = 0, 4
    for index, (_, kernel, _, _, features) in enumerate(PAPER_COMPLETION_TABLE):
        is_last = index == len(PAPER_COMPLETION_TABLE) - 1
        # Kernel; then conv bias (last layer) or BatchNorm scale + shift (the others).
        total += kernel * kernel * in_channels * features + (features if is_last else 2 * features)
        in_channels = features
    assert total == COMPLETION_PARAMS
    image, mask = _random_batch(0, 256, 256)
    variables = jax.eval_shape(lambda: PAPER_NET.init(jax.random.key(0), image, mask, train=False))
    assert _param_count(variables["params"]) == COMPLETION_PARAMS


@pytest.mark.parametrize("height, width", [(32, 32), (48, 32), (8, 20)])
def test_completion_output_shape_and_range(completion_variables, height, width):
    image, mask = _random_batch(2, height, width, batch=2)
    out = apply_eval(completion_variables, image, mask)
    assert out.shape == (2, height, width, 3)
    assert out.dtype == jnp.float32
    assert np.all((np.asarray(out) >= 0) & (np.asarray(out) <= 1))


@pytest.mark.parametrize(
    "image_shape, mask_shape, message",
    [
        ((1, 30, 32, 3), (1, 30, 32, 1), "multiples of 4, got 30x32"),
        ((1, 32, 34, 3), (1, 32, 34, 1), "multiples of 4, got 32x34"),
        ((1, 32, 32, 3), (1, 32, 32, 3), "single channel"),
        ((1, 32, 32, 3), (1, 32, 28, 1), "matching the image"),
        ((1, 32, 32, 1), (1, 32, 32, 1), r"\(N, H, W, 3\)"),
    ],
)
def test_completion_rejects_bad_shapes(completion_variables, image_shape, mask_shape, message):
    with pytest.raises(InputShapeError, match=message):
        NET.apply(completion_variables, jnp.zeros(image_shape), jnp.zeros(mask_shape), train=False)


def test_hole_content_is_invisible_to_the_network(completion_variables):
    image, mask = _random_batch(3, 32, 32)
    noise = jax.random.uniform(jax.random.key(4), image.shape)
    scrambled = jnp.where(mask == 1, noise, image)
    assert not np.array_equal(scrambled, image)
    np.testing.assert_array_equal(
        apply_eval(completion_variables, scrambled, mask), apply_eval(completion_variables, image, mask)
    )
    # A known pixel, by contrast, does reach the output.
    changed_known = image.at[0, 0, 0, :].set(1.0 - image[0, 0, 0, :])
    assert not np.array_equal(
        apply_eval(completion_variables, changed_known, mask), apply_eval(completion_variables, image, mask)
    )


def test_network_input_is_the_filled_image_and_the_mask(completion_variables):
    image, mask = _random_batch(5, 32, 32)
    fill_value = (0.1, 0.6, 0.3)

    @jax.jit
    def first_layer_input(variables, image, mask):
        seen = []

        def record_first_layer_input(next_fun, args, kwargs, context):
            if context.module.name == "layer01" and context.method_name == "__call__":
                seen.append(args[0])
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(record_first_layer_input):
            NET.clone(fill_value=fill_value).apply(variables, image, mask, train=False)
        return seen

    (network_input,) = first_layer_input(completion_variables, image, mask)
    assert network_input.shape == (1, 32, 32, 4)
    hole = np.asarray(mask[0, ..., 0]) == 1
    rgb = np.asarray(network_input[0, ..., :3])
    np.testing.assert_array_equal(rgb[hole], np.broadcast_to(np.float32(fill_value), rgb[hole].shape))
    np.testing.assert_array_equal(rgb[~hole], np.asarray(image[0])[~hole])
    np.testing.assert_array_equal(network_input[..., 3:], mask)
    assert PAPER_NET.fill_value == layers.IMAGENET_MEAN_RGB


def test_composite_of_a_prediction_keeps_known_pixels_bit_exact(completion_variables):
    image, mask = _random_batch(6, 32, 32)
    prediction = apply_eval(completion_variables, image, mask)
    out = np.asarray(layers.composite(image, prediction, mask))
    known = np.asarray(mask[..., 0]) == 0
    np.testing.assert_array_equal(out[known], np.asarray(image)[known])
    np.testing.assert_array_equal(out[~known], np.asarray(prediction)[~known])


def test_train_mode_updates_every_batch_norm(completion_variables):
    image, mask = _random_batch(7, 32, 32, batch=2)
    _, updated = apply_train(completion_variables, image, mask)
    assert list(updated["batch_stats"]) == LAYER_NAMES[:-1]
    for name in LAYER_NAMES[:-1]:
        old, new = completion_variables["batch_stats"][name]["norm"], updated["batch_stats"][name]["norm"]
        assert not np.allclose(new["var"], old["var"]), name


def test_bfloat16_compute_keeps_float32_params_and_output():
    net = glcic.CompletionNetwork(dtype=jnp.bfloat16, width_multiplier=1 / 16)
    image, mask = _random_batch(8, 8, 8)
    variables = _constant_variables(net, image, mask)
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    apply = jax.jit(
        lambda variables, image, mask: net.apply(
            variables, image, mask, train=False, capture_intermediates=True, mutable=["intermediates"]
        )
    )
    out, state = apply(variables, image, mask)
    assert state["intermediates"]["layer05"]["__call__"][0].dtype == jnp.bfloat16
    assert out.dtype == jnp.float32 and out.shape == (1, 8, 8, 3)


def test_width_multiplier_scales_hidden_channels_only():
    net = glcic.CompletionNetwork(width_multiplier=1 / 16)
    image, mask = _random_batch(0, 16, 16)
    params = jax.eval_shape(lambda: net.init(jax.random.key(0), image, mask, train=False))["params"]
    assert [params[name]["conv"]["kernel"].shape[-1] for name in LAYER_NAMES] == [
        4, 8, 8, 16, 16, 16, 16, 16, 16, 16, 16, 16, 8, 8, 4, 2, 3
    ]


# ---------------------------------------------------------------- receptive field


def test_theoretical_receptive_field():
    assert layers.receptive_field(glcic.COMPLETION_LAYERS) == RECEPTIVE_FIELD


def _positive_random_variables(module, *inputs):
    """Random parameters for which every activation is positive: no ReLU dies, nothing saturates.

    Kernels are positive and sum to 1 per output channel (each layer averages
    its inputs); BatchNorm scales and shifts are positive; running statistics
    are the identity (mean 0, variance 1).
    """
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *inputs, train=False))

    def make(path, leaf):
        name = path[-1].key
        if name in ("mean", "var"):
            return jnp.full(leaf.shape, 0.0 if name == "mean" else 1.0, leaf.dtype)
        values = rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        if name == "kernel":
            values /= values.sum(axis=tuple(range(values.ndim - 1)), keepdims=True)
        return jnp.asarray(values)

    return jax.tree_util.tree_map_with_path(make, shapes)


def test_gradient_support_matches_the_receptive_field():
    # Same geometry as the paper's network, 1/16 of the channels, so this runs fast on a CPU.
    net = glcic.CompletionNetwork(width_multiplier=1 / 16)
    size = 320
    image = jax.random.uniform(jax.random.key(1), (1, size, size, 3))
    mask = jnp.zeros((1, size, size, 1))
    variables = _positive_random_variables(net, image, mask)

    @jax.jit
    def input_gradient(variables, image, mask, row, col):
        def pixel(x):
            return net.apply(variables, x, mask, train=False)[0, row, col].sum()

        return jnp.abs(jax.grad(pixel)(image)[0]).sum(-1)

    extents = []
    # Output pixels (c + p, c + p), p = 0..3, cover every phase of the two 2x up-samplings.
    for phase in range(4):
        centre = size // 2 + phase
        support = np.asarray(input_gradient(variables, image, mask, centre, centre)) > 0
        rows, cols = np.nonzero(support.any(1))[0], np.nonzero(support.any(0))[0]
        extent = rows.max() - rows.min() + 1
        assert cols.max() - cols.min() + 1 == extent
        assert rows.min() > 0 and rows.max() < size - 1, "window clipped by the image border"
        assert rows.min() <= centre <= rows.max()
        assert support.sum() == extent * extent, "support is not a filled square"
        extents.append(extent)
    assert max(extents) == layers.receptive_field(glcic.COMPLETION_LAYERS)
    assert min(extents) < max(extents)  # the bound is reached only at some up-sampling phases


# ---------------------------------------------------------------- discriminators


def _discriminator_param_count(conv_features, input_size, vector_size=1024):
    total, in_channels = 0, 3
    for features in conv_features:
        total += 5 * 5 * in_channels * features + 2 * features  # kernel + BatchNorm
        in_channels = features
    final_size = input_size // 2 ** len(conv_features)
    return total + final_size * final_size * in_channels * vector_size + vector_size


def test_discriminator_parameter_counts_at_paper_sizes():
    local_features, global_features = (64, 128, 256, 512, 512), (64, 128, 256, 512, 512, 512)
    assert glcic.LOCAL_DISCRIMINATOR_FEATURES == local_features
    assert glcic.GLOBAL_DISCRIMINATOR_FEATURES == global_features
    assert _discriminator_param_count(local_features, 128) == LOCAL_PARAMS_128
    assert _discriminator_param_count(global_features, 256) == GLOBAL_PARAMS_256
    assert LOCAL_PARAMS_128 + GLOBAL_PARAMS_256 + 2 * 1024 + 1 == CONTEXT_PARAMS

    patch, image = jnp.zeros((2, 128, 128, 3)), jnp.zeros((2, 256, 256, 3))
    key = jax.random.key(0)
    local_out, local_vars = jax.eval_shape(
        lambda: glcic.LocalDiscriminator().init_with_output(key, patch, train=False)
    )
    global_out, global_vars = jax.eval_shape(
        lambda: glcic.GlobalDiscriminator().init_with_output(key, image, train=False)
    )
    context_out, context_vars = jax.eval_shape(
        lambda: glcic.ContextDiscriminator().init_with_output(key, patch, image, train=False)
    )
    assert local_out.shape == global_out.shape == (2, 1024)
    assert context_out.shape == (2,)
    assert _param_count(local_vars["params"]) == LOCAL_PARAMS_128
    assert _param_count(global_vars["params"]) == GLOBAL_PARAMS_256
    assert _param_count(context_vars["params"]) == CONTEXT_PARAMS


CONTEXT = glcic.ContextDiscriminator(width_multiplier=TINY_WIDTH)
context_eval = jax.jit(functools.partial(CONTEXT.apply, train=False))


@pytest.fixture(scope="module")
def tiny_context():
    """A 1/16-width context discriminator's variables on tiny patches and images."""
    rng = np.random.default_rng(9)
    patch = jnp.asarray(rng.uniform(size=(3, 32, 32, 3)).astype(np.float32))
    image = jnp.asarray(rng.uniform(size=(3, 64, 64, 3)).astype(np.float32))
    init = jax.jit(CONTEXT.init, static_argnames="train")
    return init(jax.random.key(0, impl="rbg"), patch, image, train=False), patch, image


@pytest.mark.parametrize(
    "branch, module",
    [("local", glcic.LocalDiscriminator(width_multiplier=TINY_WIDTH)),
     ("global", glcic.GlobalDiscriminator(width_multiplier=TINY_WIDTH))],
)
def test_discriminator_vectors_on_tiny_inputs(tiny_context, branch, module):
    context_variables, patch, image = tiny_context
    # The context discriminator's branches are plain Local/Global discriminators.
    variables = {collection: tree[branch] for collection, tree in context_variables.items()}
    out = jax.jit(functools.partial(module.apply, train=False))(
        variables, patch if branch == "local" else image
    )
    assert out.shape == (3, 1024) and out.dtype == jnp.float32
    assert np.all(np.asarray(out) >= 0)  # ReLU after the FC-1024
    assert set(variables["params"]) == {f"conv{i}" for i in range(1, len(module.conv_features) + 1)} | {"fc"}


def test_context_discriminator_gives_one_logit_per_image_from_both_inputs(tiny_context):
    variables, patch, image = tiny_context
    logits = context_eval(variables, patch, image)
    assert logits.shape == (3,) and logits.dtype == jnp.float32
    assert set(variables["params"]) == {"local", "global", "classifier"}
    other_patch = context_eval(variables, 1 - patch, image)
    other_image = context_eval(variables, patch, 1 - image)
    assert not np.allclose(other_patch, logits)
    assert not np.allclose(other_image, logits)


def test_context_discriminator_updates_batch_stats_in_train_mode(tiny_context):
    variables, patch, image = tiny_context
    _, updated = jax.jit(
        lambda variables: CONTEXT.apply(variables, patch, image, train=True, mutable=["batch_stats"])
    )(variables)
    for branch, depth in (("local", 5), ("global", 6)):
        for index in range(1, depth + 1):
            old = variables["batch_stats"][branch][f"conv{index}"]["norm"]["mean"]
            new = updated["batch_stats"][branch][f"conv{index}"]["norm"]["mean"]
            assert not np.allclose(old, new), (branch, index)


def test_context_discriminator_rejects_mismatched_batches(tiny_context):
    variables, patch, image = tiny_context
    with pytest.raises(InputShapeError, match="one local patch per global image, got 2 patches and 3"):
        CONTEXT.apply(variables, patch[:2], image, train=False)


def test_discriminator_rejects_non_rgb_input():
    with pytest.raises(InputShapeError, match=r"LocalDiscriminator expects an RGB image batch of shape \(N, H, W, 3\)"):
        glcic.LocalDiscriminator().init(jax.random.key(0), jnp.zeros((1, 32, 32, 4)), train=False)


def test_context_discriminator_bfloat16_keeps_float32_params_and_logits():
    patch, image = jnp.ones((2, 8, 8, 3)), jnp.ones((2, 8, 8, 3))
    net = glcic.ContextDiscriminator(dtype=jnp.bfloat16, width_multiplier=1 / 16)
    variables = _constant_variables(net, patch, image)
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    logits = jax.jit(lambda variables: net.apply(variables, patch, image, train=False))(variables)
    assert logits.dtype == jnp.float32 and logits.shape == (2,)
