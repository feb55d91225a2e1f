"""Context Encoder / NPS content network: shapes, bottleneck sizes, activations, input checks."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inpaint_jax.models import context_encoder as ce
from inpaint_jax.models.layers import InputShapeError

pytestmark = pytest.mark.fast_compile  # tiny networks: compiling dominates

NPS_OPTIONS = {"bottleneck": "dense", "encoder_activation": "elu", "decoder_activation": "elu"}


def centre_hole(batch=2, size=128, start=36, side=56):
    """A batch of masks with the CE input hole (the 64 px centre less a 4 px border)."""
    mask = np.zeros((batch, size, size, 1), np.float32)
    mask[:, start : start + side, start : start + side] = 1.0
    return jnp.asarray(mask)


def random_images(batch=2, size=128, seed=0):
    return jax.random.uniform(jax.random.key(seed), (batch, size, size, 3))


def init(module, *inputs, seed=0):
    """The module's variables, initialised in one compiled call (rbg keys compile fast on CPU)."""
    key = jax.random.key(seed, impl="rbg")
    return jax.jit(lambda key: module.init(key, *inputs, train=False))(key)


def param_shapes(module, *inputs):
    """{path: shape} of the parameters, computed without running the network."""
    variables = jax.eval_shape(lambda: module.init(jax.random.key(0), *inputs, train=False))
    flat = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
    return {"/".join(key.key for key in path): leaf.shape for path, leaf in flat}


@pytest.fixture(scope="module", params=[{}, NPS_OPTIONS], ids=["ce", "nps"])
def tiny_model(request):
    """A 1/8-width network of each variant with its variables."""
    model = ce.ContextEncoder(width_multiplier=0.125, **request.param)
    return model, init(model, random_images(), centre_hole(), seed=1)


def test_output_is_the_filled_input_with_a_predicted_centre(tiny_model):
    model, variables = tiny_model
    image, mask = random_images(seed=2), centre_hole()
    output = jax.jit(functools.partial(model.apply, train=False))(variables, image, mask)
    assert output.shape == (2, 128, 128, 3) and output.dtype == jnp.float32
    outside = np.ones((128, 128), bool)
    outside[32:96, 32:96] = False
    np.testing.assert_array_equal(np.asarray(output)[:, outside], np.asarray(image)[:, outside])
    patch = np.asarray(ce.center_region(output))
    assert patch.shape == (2, 64, 64, 3)
    assert (patch > 0).all() and (patch < 1).all()  # sigmoid output
    assert not np.allclose(patch, np.asarray(ce.center_region(image)))


def test_prediction_does_not_see_the_pixels_under_the_hole(tiny_model):
    model, variables = tiny_model
    mask = centre_hole()
    image = random_images(seed=3)
    changed = image.at[:, 40:90, 40:90].set(1.0 - image[:, 40:90, 40:90])
    apply = jax.jit(functools.partial(model.apply, train=False))
    np.testing.assert_array_equal(apply(variables, image, mask), apply(variables, changed, mask))


def test_channelwise_bottleneck_has_the_papers_m_n4_weights():
    shapes = param_shapes(ce.ContextEncoder(), random_images(1), centre_hole(1))
    bottleneck = {k: v for k, v in shapes.items() if k.startswith("channelwise_fc")}
    # 512 feature maps of 4x4: one 16x16 matrix each, no bias.
    assert bottleneck == {"channelwise_fc/kernel": (512, 16, 16)}
    assert np.prod(bottleneck["channelwise_fc/kernel"]) == 131_072
    assert shapes["channel_mixing/conv/kernel"] == (1, 1, 512, 512)


def test_nps_bottleneck_is_one_standard_fully_connected_layer():
    shapes = param_shapes(ce.ContextEncoder(**NPS_OPTIONS), random_images(1), centre_hole(1))
    fc = {k: v for k, v in shapes.items() if k.startswith("fc/")}
    # flattened 4x4x512 -> 4x4x512 (as a 1x1 convolution), no bias; BatchNorm's scale and shift.
    assert fc == {
        "fc/conv/kernel": (1, 1, 8192, 8192),
        "fc/norm/scale": (8192,),
        "fc/norm/bias": (8192,),
    }
    assert np.prod(fc["fc/conv/kernel"]) == 67_108_864
    assert not any(k.startswith(("channelwise_fc", "channel_mixing")) for k in shapes)


def test_channelwise_dense_mixes_positions_but_not_channels():
    layer = ce.ChannelwiseDense()
    x = jax.random.normal(jax.random.key(0), (1, 4, 4, 3))
    variables = jax.jit(layer.init)(jax.random.key(1, impl="rbg"), x)
    poked = x.at[0, 1, 2, 1].add(1.0)
    apply = jax.jit(layer.apply)
    difference = np.abs(np.asarray(apply(variables, poked) - apply(variables, x)))
    assert (difference[..., 1] > 0).all()  # every position of channel 1 sees the change
    np.testing.assert_array_equal(difference[..., [0, 2]], 0.0)  # other channels do not


# Reference activations, written out independently of the module's table.
REFERENCE_ACTIVATIONS = {
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, 0.2),
    "relu": jax.nn.relu,
    "elu": jax.nn.elu,
}


def test_activations(tiny_model):
    model, variables = tiny_model
    apply = functools.partial(model.apply, train=False, capture_intermediates=True)
    _, state = jax.jit(apply)(variables, random_images(), centre_hole())
    captured = state["intermediates"]
    for block, before_activation, activation in [
        (("encoder", "conv1"), "conv", model.encoder_activation),
        (("encoder", "conv3"), "norm", model.encoder_activation),
        (("decoder2",), "norm", model.decoder_activation),
    ]:
        layer = functools.reduce(lambda tree, name: tree[name], block, captured)
        before = np.asarray(layer[before_activation]["__call__"][0])
        after = np.asarray(layer["__call__"][0])
        assert (before < 0).any()
        np.testing.assert_allclose(
            after, REFERENCE_ACTIVATIONS[activation](before), rtol=1e-6, atol=1e-6
        )
    if model.decoder_activation == "elu":  # negative values pass, where ReLU would give 0
        assert -1 < np.asarray(captured["decoder3"]["__call__"][0]).min() < 0


def test_discriminator_gives_one_logit_per_patch():
    discriminator = ce.ContextEncoderDiscriminator(width_multiplier=0.125)
    logits, _ = jax.eval_shape(
        lambda: discriminator.init_with_output(
            jax.random.key(0), random_images(3, 64), train=False
        )
    )
    assert logits.shape == (3,) and logits.dtype == jnp.float32


def test_both_variants_declare_their_fixed_input_size_for_inference():
    assert ce.ContextEncoder().input_size == ce.ContextEncoder(**NPS_OPTIONS).input_size == 128


@pytest.mark.parametrize("size", [64, 256])
def test_other_image_sizes_are_refused_clearly(size):
    with pytest.raises(InputShapeError, match=r"fixed-size: it takes 128x128 .*got \d+x\d+"):
        param_shapes(ce.ContextEncoder(), random_images(1, size), centre_hole(1, size))


def test_discriminator_refuses_whole_images():
    with pytest.raises(InputShapeError, match="fixed-size: it takes 64x64 inputs.*got 128x128"):
        param_shapes(ce.ContextEncoderDiscriminator(), random_images(1))


@pytest.mark.parametrize(
    "option", [{"bottleneck": "conv"}, {"encoder_activation": "gelu"}, {"decoder_activation": ""}]
)
def test_unknown_options_are_refused(option):
    with pytest.raises(ce.ContextEncoderConfigError, match="must be one of"):
        ce.ContextEncoder(**option)
