"""Tests for the PGGAN networks (inpaint_jax.models.pggan)."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inpaint_jax.models import layers, pggan
from inpaint_jax.models.layers import InputShapeError
from inpaint_jax.models.pggan import PGGANConfigError

pytestmark = pytest.mark.fast_compile  # tiny networks: compiling dominates

DRES_DILATIONS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DRES_PARAMS = 11_386_563
RES_PARAMS = 45_607_107
DRES_RECEPTIVE_FIELD = 4193
RES_RECEPTIVE_FIELD = 349
PATCH_RECEPTIVE_FIELD = 78
DISCRIMINATOR_PARAMS_256 = 13_259_074
GLOBAL_ONLY_PARAMS_256 = 11_156_289
PATCH_ONLY_PARAMS = 2_762_049

KEY = jax.random.key(0)


def _generator_table(down_features, dilations, up_kind):
    """(stage, kind, kernel, stride, dilation, features) rows, from the paper's description."""
    rows = [("stem", "conv", 7, 1, 1, 64)]
    rows += [(f"down{i}", "conv", 3, 2, 1, f) for i, f in enumerate(down_features, start=1)]
    width = down_features[-1]
    for i, (first, second) in enumerate(dilations, start=1):
        rows += [
            (f"block{i}", "conv", 3, 1, first, width),
            (f"block{i}", "conv", 3, 1, second, width),
        ]
    prefix = "up" if up_kind == "resize_conv" else "deconv"
    up_features = [64, 128, 256][: len(down_features)][::-1]
    rows += [(f"{prefix}{i}", up_kind, 3, 2, 1, f) for i, f in enumerate(up_features, start=1)]
    return rows + [("head", "conv", 7, 1, 1, 3)]


DRES_TABLE = _generator_table((128, 256), [(d, 1) for d in DRES_DILATIONS], "resize_conv")
RES_TABLE = _generator_table((128, 256, 512), [(1, 1)] * 9, "resize_conv")


def _rows(generator):
    return [
        (s.name, l.kind, l.kernel, l.stride, l.dilation, l.features)
        for s in generator.stages
        for l in s.layers
    ]


def _param_count(tree):
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def _init_shapes(module, *inputs):
    return jax.eval_shape(lambda: module.init_with_output(KEY, *inputs, train=False))


def _batch(seed, height, width, batch=1):
    rng = np.random.default_rng(seed)
    image = rng.uniform(size=(batch, height, width, 3)).astype(np.float32)
    mask = np.zeros((batch, height, width, 1), np.float32)
    mask[:, height // 4 : height // 2, width // 4 : 3 * width // 4] = 1.0
    return jnp.asarray(image), jnp.asarray(mask)


def _tiny(preset="PGGAN-DRes", **settings):
    """A preset's geometry with 1/16 of the channels and few residual blocks: fast on a CPU."""
    return pggan.make_generator(preset, **{"width_multiplier": 1 / 16, "num_blocks": 2, **settings})


def _variables(module, *inputs, positive=False):
    """Variables of the module's shapes and dtypes, drawn with numpy: no initialiser to compile.

    By default kernels are He-scaled normals, normalisation scales near 1,
    biases small, running statistics the identity (mean 0, variance 1).
    With `positive`, every parameter is positive and each kernel sums to 1
    per output channel: every activation is then positive (no ReLU dies, no
    LeakyReLU changes slope), so an input pixel's gradient is non-zero
    exactly when the output depends on it; biases stay small so that the
    output sigmoid does not saturate.
    """
    rng = np.random.default_rng(0)
    _, shapes = _init_shapes(module, *inputs)

    def make(path, leaf):
        name = path[-1].key
        if name in ("mean", "var"):
            values = np.full(leaf.shape, 0.0 if name == "mean" else 1.0)
        elif name == "kernel" and positive:
            values = rng.uniform(0.5, 1.5, leaf.shape)
            values /= values.sum(axis=tuple(range(values.ndim - 1)), keepdims=True)
        elif name == "kernel":
            values = rng.normal(size=leaf.shape) * np.sqrt(2 / math.prod(leaf.shape[:-1]))
        elif name == "scale":
            values = rng.uniform(0.5, 1.5, leaf.shape)
        else:
            values = rng.uniform(*((0.01, 0.1) if positive else (-0.1, 0.1)), leaf.shape)
        return jnp.asarray(values, leaf.dtype)

    return jax.tree_util.tree_map_with_path(make, shapes)


def _support_box(gradient):
    """(first row, last row, first col, last col) of the non-zero pixels, which must fill it."""
    support = np.abs(np.asarray(gradient)).sum(-1) > 0
    rows, cols = np.nonzero(support.any(1))[0], np.nonzero(support.any(0))[0]
    box = rows.min(), rows.max(), cols.min(), cols.max()
    assert support.sum() == (box[1] - box[0] + 1) * (box[3] - box[2] + 1), (
        "support is not a filled box"
    )
    return box


# ---------------------------------------------------------------- generator tables


def test_presets_follow_the_paper():
    assert pggan.GENERATOR_PRESETS == {
        "PGGAN-DRes": {"num_downsamplings": 2, "dilated": True},
        "PGGAN-Res": {"num_downsamplings": 3, "dilated": False},
    }
    dres, res = pggan.make_generator("PGGAN-DRes"), pggan.make_generator("PGGAN-Res")
    assert _rows(dres) == DRES_TABLE
    assert _rows(res) == RES_TABLE
    assert (dres.size_multiple, res.size_multiple) == (4, 8)
    assert pggan.PGGANGenerator() == dres  # the module's defaults are PGGAN-DRes
    assert [s.name for s in dres.stages if s.residual] == [f"block{i}" for i in range(1, 10)]


@pytest.mark.parametrize("position", ["first", "second"])
def test_dilation_doubles_from_one_in_the_chosen_convolution(position):
    generator = pggan.make_generator("PGGAN-DRes", dilation_position=position)
    schedule = [tuple(l.dilation for l in s.layers) for s in generator.stages if s.residual]
    expected = [(d, 1) if position == "first" else (1, d) for d in DRES_DILATIONS]
    assert schedule == expected

    # The built network uses those dilations, in those convolutions.
    built = {}

    def record_dilation(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.Conv):
            built[context.module.path[:2]] = context.module.kernel_dilation[0]
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record_dilation):
        _init_shapes(generator.clone(width_multiplier=1 / 16), *_batch(0, 16, 16))
    for index, (first, second) in enumerate(expected, start=1):
        assert (built[(f"block{index}", "conv1")], built[(f"block{index}", "conv2")]) == (
            first,
            second,
        )
    assert {d for path, d in built.items() if not path[0].startswith("block")} == {1}


def test_plain_residual_blocks_are_not_dilated():
    res = pggan.make_generator("PGGAN-Res")
    assert {l.dilation for l in res.layers} == {1}


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"upsampling": "nearest"}, r"upsampling must be one of \('interpolated', 'transposed'\)"),
        (
            {"dilation_position": "middle"},
            r"dilation_position must be one of \('first', 'second'\)",
        ),
        ({"norm": "group"}, r"norm must be one of \('instance', 'batch', 'none'\), got 'group'"),
        ({"num_blocks": -1}, "num_blocks must be a non-negative integer, got -1"),
        ({"num_downsamplings": 2.0}, "num_downsamplings must be a non-negative integer, got 2.0"),
    ],
)
def test_generator_rejects_bad_settings(settings, message):
    with pytest.raises(PGGANConfigError, match=message):
        pggan.PGGANGenerator(**settings)


def test_make_generator_explains_bad_presets():
    with pytest.raises(
        PGGANConfigError, match=r"'PGGAN-XL'; choose one of \('PGGAN-DRes', 'PGGAN-Res'\)"
    ):
        pggan.make_generator("PGGAN-XL")
    with pytest.raises(PGGANConfigError, match=r"'PGGAN-Res' fixes \['dilated'\]"):
        pggan.make_generator("PGGAN-Res", dilated=True)
    assert issubclass(PGGANConfigError, ValueError)


# ---------------------------------------------------------------- generator shapes and parameters


def _table_param_count(table):
    total, in_channels = 0, 4  # RGB + mask
    for name, _, kernel, _, _, features in table:
        # Kernel, then a bias (head) or a normalisation's scale and shift (all others).
        total += kernel * kernel * in_channels * features + (
            features if name == "head" else 2 * features
        )
        in_channels = features
    return total


@pytest.mark.parametrize(
    "preset, table, expected",
    [("PGGAN-DRes", DRES_TABLE, DRES_PARAMS), ("PGGAN-Res", RES_TABLE, RES_PARAMS)],
)
def test_generator_parameter_counts(preset, table, expected):
    assert _table_param_count(table) == expected
    for upsampling in ("interpolated", "transposed"):
        _, variables = _init_shapes(
            pggan.make_generator(preset, upsampling=upsampling), *_batch(0, 64, 64)
        )
        assert set(variables) == {"params"}  # instance norm keeps no statistics
        assert _param_count(variables["params"]) == expected


@pytest.mark.parametrize("preset", ["PGGAN-DRes", "PGGAN-Res"])
@pytest.mark.parametrize("height, width", [(256, 256), (64, 96), (128, 40)])
def test_generator_output_shape_on_multiples_of_its_stride(preset, height, width):
    out, _ = _init_shapes(pggan.make_generator(preset), *_batch(0, height, width, batch=2))
    assert out.shape == (2, height, width, 3) and out.dtype == jnp.float32


@pytest.mark.parametrize(
    "preset, shape, message",
    [
        (
            "PGGAN-DRes",
            (30, 32),
            "PGGANGenerator needs a height and width that are multiples of 4, got 30x32",
        ),
        ("PGGAN-Res", (36, 32), "multiples of 8, got 36x32. Pad"),
    ],
)
def test_generator_rejects_sizes_that_are_not_multiples_of_its_stride(preset, shape, message):
    with pytest.raises(InputShapeError, match=message):
        _init_shapes(pggan.make_generator(preset), *_batch(0, *shape))


def test_generator_rejects_a_mask_with_channels():
    image, _ = _batch(0, 16, 16)
    with pytest.raises(InputShapeError, match="single channel"):
        _init_shapes(pggan.make_generator(), image, jnp.zeros((1, 16, 16, 3)))


def test_dres_geometry_accepts_sizes_res_cannot_take():
    out, _ = _init_shapes(pggan.make_generator("PGGAN-DRes"), *_batch(0, 36, 44))
    assert out.shape == (1, 36, 44, 3)


@pytest.mark.parametrize("preset, height, width", [("PGGAN-DRes", 20, 28), ("PGGAN-Res", 16, 40)])
def test_generator_prediction_is_float32_in_unit_range(preset, height, width):
    generator = _tiny(preset)
    image, mask = _batch(1, height, width, batch=2)
    variables = _variables(generator, image, mask)
    out = jax.jit(lambda v: generator.apply(v, image, mask, train=False))(variables)
    assert out.shape == (2, height, width, 3) and out.dtype == jnp.float32
    assert np.all((np.asarray(out) > 0) & (np.asarray(out) < 1))


def test_hole_content_is_invisible_to_the_generator():
    generator = _tiny(fill_value=(0.2, 0.7, 0.1))
    image, mask = _batch(3, 16, 16)
    variables = _variables(generator, image, mask)
    apply = jax.jit(lambda image: generator.apply(variables, image, mask, train=False))
    scrambled = jnp.where(mask == 1, jax.random.uniform(jax.random.key(4), image.shape), image)
    assert not np.array_equal(scrambled, image)
    np.testing.assert_array_equal(apply(scrambled), apply(image))
    changed_known = image.at[0, 0, 0, :].set(1.0 - image[0, 0, 0, :])
    assert not np.array_equal(apply(changed_known), apply(image))


# ---------------------------------------------------------------- normalisation options


def _normalised_layers(tree):
    return {
        name
        for name, sub in tree.items()
        if "norm" in sub or any("norm" in v for v in sub.values())
    }


def test_norm_options_change_parameters_and_state():
    image, mask = _batch(0, 16, 16)
    hidden = {s.name for s in pggan.make_generator().stages} - {"head"}
    for norm, collections in (
        ("instance", {"params"}),
        ("batch", {"params", "batch_stats"}),
        ("none", {"params"}),
    ):
        _, variables = _init_shapes(pggan.make_generator(norm=norm), image, mask)
        params = variables["params"]
        assert set(variables) == collections, norm
        assert _normalised_layers(params) == (set() if norm == "none" else hidden), norm
        assert ("bias" in params["stem"]["conv"]) == (norm == "none"), norm
        assert set(params["head"]) == {"conv"} and "bias" in params["head"]["conv"]
    assert set(variables["params"]["block1"]) == {"conv1", "conv2"}


def test_batch_norm_generator_updates_every_statistic_in_train_mode():
    generator = _tiny(norm="batch")
    image, mask = _batch(5, 16, 16, batch=2)
    variables = _variables(generator, image, mask)
    _, updated = jax.jit(
        lambda v: generator.apply(v, image, mask, train=True, mutable=["batch_stats"])
    )(variables)
    old, new = jax.tree.leaves(variables["batch_stats"]), jax.tree.leaves(updated["batch_stats"])
    assert (
        len(old) == len(new) == 2 * (1 + 2 + 2 * 2 + 2)
    )  # mean and var of stem, downs, block convs, ups
    assert not any(np.allclose(a, b) for a, b in zip(old, new))


def test_instance_norm_makes_every_output_depend_on_the_whole_image():
    # The receptive field counts convolutions only; instance-norm statistics span the image.
    image, mask = _batch(6, 64, 64)
    for norm, far_pixel_matters in (("instance", True), ("batch", False)):
        generator = _tiny(norm=norm, num_blocks=1)
        assert generator.receptive_field < 64
        variables = _variables(generator, image, mask)
        corner = jax.jit(lambda v, x, g=generator: g.apply(v, x, mask, train=False)[0, 0, 0].sum())
        gradient = jax.grad(corner, argnums=1)(variables, image)
        assert bool(np.any(np.asarray(gradient[0, -1, -1]) != 0)) == far_pixel_matters, norm


# ---------------------------------------------------------------- up-sampling


def test_interpolated_and_transposed_upsampling():
    image, mask = _batch(7, 16, 16)
    module_types, stage_io = set(), {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module_types.add(type(context.module))
        if len(context.module.path) == 1:  # a stage of the generator
            stage_io[context.module.path[0]] = (args[0], out)
        return out

    outputs, names = {}, {}
    for upsampling in ("interpolated", "transposed"):
        generator = _tiny(num_blocks=1, upsampling=upsampling)
        variables = _variables(generator, image, mask)
        module_types.clear()

        @jax.jit
        def forward(variables, generator=generator):
            """The output and every stage's (input, output), from one compiled call."""
            stage_io.clear()
            with nn.intercept_methods(record):
                output = generator.apply(variables, image, mask, train=False)
            return output, dict(stage_io)

        outputs[upsampling], traced_io = forward(variables)
        stage_io.update(traced_io)
        names[upsampling] = set(variables["params"])
        assert (layers.SubpixelConvTranspose in module_types) == (upsampling == "transposed")
        block_output = stage_io["block1"][1]
        if upsampling == "interpolated":
            # Bilinear resize first, then a stride-1 convolution.
            up_input, up_output = stage_io["up1"]
            np.testing.assert_array_equal(up_input, layers.bilinear_upsample(block_output, 2))
            assert up_output.shape[1:3] == up_input.shape[1:3] == (8, 8)
        else:
            deconv_input, deconv_output = stage_io["deconv1"]
            np.testing.assert_array_equal(deconv_input, block_output)
            assert deconv_output.shape[1:3] == (8, 8)
    assert names["interpolated"] - names["transposed"] == {"up1", "up2"}
    assert names["transposed"] - names["interpolated"] == {"deconv1", "deconv2"}
    assert outputs["interpolated"].shape == outputs["transposed"].shape == (1, 16, 16, 3)
    assert not np.allclose(outputs["interpolated"], outputs["transposed"])


def test_upsampling_variants_have_the_same_parameter_shapes():
    # Both use 3x3 kernels with the same channels: the ablation changes the operator only.
    shapes = {}
    for upsampling in ("interpolated", "transposed"):
        _, variables = _init_shapes(pggan.make_generator(upsampling=upsampling), *_batch(0, 16, 16))
        params = variables["params"]
        prefix = "up" if upsampling == "interpolated" else "deconv"
        shapes[upsampling] = [
            jax.tree.map(lambda a: a.shape, params[f"{prefix}{i}"]) for i in (1, 2)
        ]
    assert shapes["interpolated"] == shapes["transposed"]
    assert shapes["interpolated"][0]["conv"]["kernel"] == (3, 3, 256, 128)


# ---------------------------------------------------------------- receptive fields


def test_theoretical_receptive_fields():
    assert pggan.make_generator("PGGAN-DRes").receptive_field == DRES_RECEPTIVE_FIELD
    assert pggan.make_generator("PGGAN-Res").receptive_field == RES_RECEPTIVE_FIELD
    assert pggan.PATCH_RECEPTIVE_FIELD == PATCH_RECEPTIVE_FIELD
    # By hand for PGGAN-DRes: the head and two interpolated convolutions give a 6-pixel
    # window at 1/4 resolution, each block adds 2 * dilation + 2, then two stride-2
    # 3x3 convolutions (w -> 2w + 1) and the 7x7 stem (+6).
    quarter = 6 + sum(2 * d + 2 for d in DRES_DILATIONS)
    assert 2 * (2 * quarter + 1) + 1 + 6 == DRES_RECEPTIVE_FIELD


@pytest.mark.parametrize(
    "preset, num_blocks, size", [("PGGAN-DRes", 3, 144), ("PGGAN-Res", 2, 160)]
)
def test_gradient_support_matches_the_generator_receptive_field(preset, num_blocks, size):
    # The preset's geometry with fewer blocks and 1/16 of the channels, so this runs fast on a CPU;
    # batch norm in inference mode, since instance norm is not local.
    generator = _tiny(preset, num_blocks=num_blocks, norm="batch")
    image = jax.random.uniform(jax.random.key(1), (1, size, size, 3))
    mask = jnp.zeros((1, size, size, 1))
    variables = _variables(generator, image, mask, positive=True)

    @jax.jit
    def input_gradient(row, col):
        return jax.grad(
            lambda x: generator.apply(variables, x, mask, train=False)[0, row, col].sum()
        )(image)[0]

    extents = []
    for phase in range(generator.size_multiple):  # every phase of the up-samplings
        centre = size // 2 + phase
        top, bottom, left, right = _support_box(input_gradient(centre, centre))
        assert bottom - top == right - left
        assert top > 0 and bottom < size - 1, "window clipped by the image border"
        assert top <= centre <= bottom
        extents.append(bottom - top + 1)
    assert max(extents) == generator.receptive_field
    assert min(extents) < max(extents)  # the bound is reached only at some up-sampling phases


# ---------------------------------------------------------------- discriminators

DISCRIMINATORS = [
    pggan.PGGANDiscriminator,
    pggan.GlobalOnlyDiscriminator,
    pggan.PatchOnlyDiscriminator,
]


def _conv_params(kernel, in_channels, features, normalized=True):
    return kernel * kernel * in_channels * features + (2 * features if normalized else features)


def test_discriminator_parameter_counts_at_256():
    trunk = (
        _conv_params(4, 3, 64, normalized=False)
        + _conv_params(4, 64, 128)
        + _conv_params(4, 128, 256)
    )
    global_head = _conv_params(4, 256, 512) + 2 * _conv_params(4, 512, 512) + (4 * 4 * 512 + 1)
    patch_head = _conv_params(4, 256, 512) + _conv_params(3, 512, 1, normalized=False)
    assert trunk + global_head + patch_head == DISCRIMINATOR_PARAMS_256
    assert trunk + global_head == GLOBAL_ONLY_PARAMS_256
    assert trunk + patch_head == PATCH_ONLY_PARAMS
    expected = [DISCRIMINATOR_PARAMS_256, GLOBAL_ONLY_PARAMS_256, PATCH_ONLY_PARAMS]
    for module, count in zip(DISCRIMINATORS, expected):
        _, variables = _init_shapes(module(), jnp.zeros((1, 256, 256, 3)))
        assert _param_count(variables["params"]) == count, module.__name__


@pytest.mark.parametrize("size, map_size", [(256, 16), (512, 32)])
def test_patch_map_is_one_logit_per_16_pixels(size, map_size):
    logits, _ = _init_shapes(pggan.PGGANDiscriminator(), jnp.zeros((2, size, size, 3)))
    assert logits.patch_logits.shape == (2, map_size, map_size)
    assert logits.global_logits.shape == (2,)
    assert logits.patch_logits.dtype == logits.global_logits.dtype == jnp.float32


def test_discriminator_variants_return_their_heads_only():
    image = jnp.zeros((2, 128, 192, 3))
    expected_modules = {
        pggan.PGGANDiscriminator: {
            "trunk",
            "global_head",
            "global_logits",
            "patch_head",
            "patch_logits",
        },
        pggan.GlobalOnlyDiscriminator: {"trunk", "global_head", "global_logits"},
        pggan.PatchOnlyDiscriminator: {"trunk", "patch_head", "patch_logits"},
    }
    for module, modules in expected_modules.items():
        logits, variables = _init_shapes(module(), image)
        assert set(variables["params"]) == modules, module.__name__
        assert (logits.global_logits is None) == ("global_logits" not in modules)
        assert (logits.patch_logits is None) == ("patch_logits" not in modules)
        if logits.patch_logits is not None:
            assert logits.patch_logits.shape == (2, 8, 12)
        if logits.global_logits is not None:
            assert logits.global_logits.shape == (2,)
    assert [m().size_multiple for m in DISCRIMINATORS] == [64, 64, 16]


def test_single_head_discriminators_are_the_full_network_minus_a_head():
    image = jax.random.uniform(jax.random.key(2), (3, 128, 128, 3))
    full = pggan.PGGANDiscriminator(width_multiplier=1 / 16)
    variables = _variables(full, image)
    logits = jax.jit(lambda x: full.apply(variables, x, train=False))(image)
    for module, field in (
        (pggan.GlobalOnlyDiscriminator, "global_logits"),
        (pggan.PatchOnlyDiscriminator, "patch_logits"),
    ):
        single = module(width_multiplier=1 / 16)
        _, shapes = _init_shapes(single, image)
        subset = {name: variables["params"][name] for name in shapes["params"]}
        assert jax.tree.map(lambda a: a.shape, subset) == jax.tree.map(
            lambda a: a.shape, shapes["params"]
        )
        single_logits = jax.jit(single.apply, static_argnames="train")(
            {"params": subset}, image, train=False
        )
        np.testing.assert_allclose(
            getattr(single_logits, field), getattr(logits, field), rtol=1e-5, atol=1e-6
        )
    # Both heads judge the image: each logit moves when the image does.
    other = jax.jit(lambda x: full.apply(variables, x, train=False))(1 - image)
    assert not np.allclose(other.global_logits, logits.global_logits)
    assert not np.allclose(other.patch_logits, logits.patch_logits)


def test_trunk_first_layer_is_not_normalised_and_the_rest_are():
    for norm in ("instance", "batch"):
        _, variables = _init_shapes(
            pggan.PGGANDiscriminator(norm=norm), jnp.zeros((1, 128, 128, 3))
        )
        params = variables["params"]
        assert (
            set(params["trunk"]["conv1"]) == {"conv"} and "bias" in params["trunk"]["conv1"]["conv"]
        )
        for stack, depth in (("trunk", 3), ("global_head", 3), ("patch_head", 1)):
            first = 2 if stack == "trunk" else 1
            assert all("norm" in params[stack][f"conv{i}"] for i in range(first, depth + 1)), (
                norm,
                stack,
            )
        assert ("batch_stats" in variables) == (norm == "batch")


def test_patch_logit_receptive_field_by_gradient_support():
    size = 160
    discriminator = pggan.PatchOnlyDiscriminator(norm="none", width_multiplier=1 / 16)
    image = jax.random.uniform(jax.random.key(3), (1, size, size, 3))
    variables = _variables(discriminator, image, positive=True)

    @jax.jit
    def input_gradient(row, col):
        return jax.grad(
            lambda x: discriminator.apply(variables, x, train=False).patch_logits[0, row, col]
        )(image)[0]

    top, bottom, left, right = _support_box(input_gradient(5, 5))
    assert bottom - top + 1 == right - left + 1 == PATCH_RECEPTIVE_FIELD
    assert top > 0 and bottom < size - 1
    # The next logit judges the window shifted by the stride, 16 pixels.
    assert _support_box(input_gradient(5, 6)) == (top, bottom, left + 16, right + 16)


@pytest.mark.parametrize(
    "module, shape, message",
    [
        (
            pggan.PGGANDiscriminator,
            (1, 64, 64, 4),
            r"PGGANDiscriminator expects an RGB image batch of shape \(N, H, W, 3\)",
        ),
        (pggan.PGGANDiscriminator, (1, 96, 96, 3), "multiples of 64, got 96x96"),
        (
            pggan.GlobalOnlyDiscriminator,
            (1, 64, 32, 3),
            "GlobalOnlyDiscriminator needs .* multiples of 64, got 64x32",
        ),
        (pggan.PatchOnlyDiscriminator, (1, 40, 48, 3), "multiples of 16, got 40x48"),
    ],
)
def test_discriminator_rejects_bad_inputs(module, shape, message):
    with pytest.raises(InputShapeError, match=message):
        _init_shapes(module(), jnp.zeros(shape))


def test_patch_only_discriminator_takes_multiples_of_16():
    logits, _ = _init_shapes(pggan.PatchOnlyDiscriminator(), jnp.zeros((1, 96, 48, 3)))
    assert logits.patch_logits.shape == (1, 6, 3)


@pytest.mark.parametrize(
    "module, shape, message",
    [
        (
            pggan.make_generator("PGGAN-Res"),
            (8, 16),
            "PGGANGenerator with norm='instance' .* at least 16x16; got 8x16",
        ),
        (
            pggan.PGGANDiscriminator(),
            (64, 128),
            "PGGANDiscriminator with norm='instance' .* at least 128x128; got 64x128",
        ),
        (
            pggan.PatchOnlyDiscriminator(),
            (16, 32),
            "at least 32x32; got 16x32. Use larger images or norm='batch'",
        ),
    ],
)
def test_instance_norm_refuses_inputs_whose_smallest_feature_map_is_one_pixel(
    module, shape, message
):
    inputs = (
        _batch(0, *shape)
        if isinstance(module, pggan.PGGANGenerator)
        else (jnp.zeros((1, *shape, 3)),)
    )
    with pytest.raises(InputShapeError, match=message):
        _init_shapes(module, *inputs)
    out, _ = _init_shapes(module.clone(norm="batch"), *inputs)
    assert out is not None


def test_discriminator_rejects_an_unknown_norm():
    with pytest.raises(PGGANConfigError, match=r"PatchOnlyDiscriminator.norm must be one of"):
        pggan.PatchOnlyDiscriminator(norm="batchnorm")


# ---------------------------------------------------------------- compute dtype


def test_bfloat16_compute_keeps_float32_params_and_outputs():
    image, mask = _batch(8, 128, 128)
    generator = _tiny(dtype=jnp.bfloat16, num_blocks=1)
    discriminator = pggan.PGGANDiscriminator(dtype=jnp.bfloat16, width_multiplier=1 / 16)
    g_vars, d_vars = _variables(generator, image, mask), _variables(discriminator, image)
    assert {leaf.dtype for leaf in jax.tree.leaves((g_vars, d_vars))} == {jnp.dtype(jnp.float32)}

    @jax.jit
    def forward(g_vars, d_vars):
        prediction, state = generator.apply(
            g_vars, image, mask, train=False, capture_intermediates=True, mutable=["intermediates"]
        )
        return (
            prediction,
            state["intermediates"]["block1"]["__call__"][0],
            discriminator.apply(d_vars, prediction, train=False),
        )

    prediction, block_output, logits = forward(g_vars, d_vars)
    assert block_output.dtype == jnp.bfloat16
    assert prediction.dtype == jnp.float32
    assert logits.global_logits.dtype == logits.patch_logits.dtype == jnp.float32
