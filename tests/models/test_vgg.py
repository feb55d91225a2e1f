"""Tests for the VGG module (inpaint_jax.models.vgg): layer table, taps, input normalisation, Features.

Reading weight files is tests/weights/test_vgg.py's subject.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inpaint_jax.models import vgg
from inpaint_jax.models.layers import InputShapeError

pytestmark = pytest.mark.fast_compile  # small images: compiling dominates

# torchvision's make_layers configurations ("M" = 2x2 max-pool); each number is a conv + ReLU.
TORCHVISION_CFGS = {
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M"]
    + [512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
# Indices of the convolutions in torchvision's vgg{16,19}().features.
TORCHVISION_CONV_INDICES = {
    16: [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28],
    19: [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34],
}
# Parameters of the convolutional part (Keras' notop models report these).
CONV_PARAMS = {16: 14_714_688, 19: 20_024_384}
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
CAFFE_BGR_MEANS = np.array([103.939, 116.779, 123.68], np.float32)


def images(seed=0, shape=(1, 8, 8, 3)):
    return np.random.default_rng(seed).uniform(size=shape).astype(np.float32)


def init(module, x, taps):
    """The module's variables for `taps`, initialised in one compiled call."""
    return jax.jit(lambda key: module.init(key, x, taps=taps))(jax.random.key(0))


def test_layer_table_has_torchvision_indices_and_parameter_counts():
    for depth in (16, 19):
        layers = vgg.vgg_layers(depth)
        conv_indices = [i for i, layer in enumerate(layers) if layer.kind == "conv"]
        assert conv_indices == TORCHVISION_CONV_INDICES[depth]
        # torchvision's Sequential: conv and ReLU per number, one pool per "M".
        assert len(layers) == sum(1 if item == "M" else 2 for item in TORCHVISION_CFGS[depth])
        shapes = jax.eval_shape(
            vgg.VGG(depth=depth).init, jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32)
        )
        assert sum(x.size for x in jax.tree.leaves(shapes)) == CONV_PARAMS[depth]
    assert vgg.relu_tap_names(19)[-1] == "relu5_4"
    assert vgg.relu_tap_names(16)[-1] == "relu5_3"


def test_tap_names_list_every_layer_and_depth_is_checked():
    names = vgg.tap_names(16)
    assert names[:5] == ("conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1")
    assert names[-1] == "pool5" and len(names) == len(vgg.vgg_layers(16))
    assert vgg.relu_tap_names(16) == tuple(n for n in names if n.startswith("relu"))
    assert len(vgg.relu_tap_names(19)) == 16
    vgg.check_depth(16)
    vgg.check_depth(19)
    for depth in (11, 18, "19"):
        with pytest.raises(ValueError, match=r"VGG depth must be one of \[16, 19\]"):
            vgg.check_depth(depth)
    with pytest.raises(ValueError, match="VGG depth"):
        vgg.vgg_layers(13)


def test_only_layers_up_to_the_deepest_tap_exist_and_taps_keep_their_order():
    module = vgg.VGG(depth=19)
    x = images()
    variables = init(module, x, ("relu2_1", "conv1_2"))
    assert sorted(variables["params"]) == ["conv1_1", "conv1_2", "conv2_1"]
    taps = module.apply(variables, x, taps=("relu2_1", "conv1_2"))  # (jit would sort the keys)
    assert list(taps) == ["relu2_1", "conv1_2"]
    assert taps["relu2_1"].shape == (1, 4, 4, 128)
    assert taps["conv1_2"].min() < 0 <= taps["relu2_1"].min()


def test_average_pooling_option():
    x = images()
    max_module, avg_module = vgg.VGG(depth=16), vgg.VGG(depth=16, pool="avg")
    variables = init(max_module, x, "pool1")
    relu = np.asarray(max_module.apply(variables, x, taps="relu1_2")["relu1_2"])
    blocks = relu.reshape(1, 4, 2, 4, 2, 64)
    np.testing.assert_allclose(
        avg_module.apply(variables, x, taps="pool1")["pool1"], blocks.mean(axis=(2, 4)), rtol=1e-6
    )
    np.testing.assert_array_equal(
        max_module.apply(variables, x, taps="pool1")["pool1"], blocks.max(axis=(2, 4))
    )
    with pytest.raises(ValueError, match="pool must be one of"):
        vgg.VGG(pool="median").init(jax.random.key(0), x, taps="relu1_1")


def test_bad_taps_and_inputs_are_rejected():
    module = vgg.VGG(depth=16)
    x = np.zeros((1, 16, 16, 3), np.float32)
    with pytest.raises(ValueError, match="relu5_4 unknown"):
        module.init(jax.random.key(0), x, taps=("relu1_1", "relu5_4"))
    with pytest.raises(ValueError, match="non-empty"):
        module.init(jax.random.key(0), x, taps=())
    with pytest.raises(InputShapeError, match="at least 32x32 pixels for tap pool5"):
        module.init(jax.random.key(0), x, taps="pool5")
    with pytest.raises(InputShapeError, match=r"\(N, H, W, 3\)"):
        module.init(jax.random.key(0), x[..., :1], taps="relu1_1")


# ---------------------------------------------------------------- input normalisation


def test_torchvision_and_caffe_normalizations():
    x = images(1, (2, 3, 4, 3))
    torchvision = vgg.TORCHVISION_NORMALIZATION
    np.testing.assert_allclose(torchvision.apply(x), (x - IMAGENET_MEAN) / IMAGENET_STD, rtol=1e-6)
    # Caffe: BGR order, 0-255 scale, minus the BGR channel means.
    caffe = vgg.CAFFE_NORMALIZATION
    np.testing.assert_allclose(caffe.apply(x), x[..., ::-1] * 255.0 - CAFFE_BGR_MEANS,
                               rtol=1e-5, atol=1e-3)
    for normalization in (torchvision, caffe):
        assert vgg.InputNormalization.from_json(normalization.to_json()) == normalization
    with pytest.raises(ValueError, match="channel_order must be 'RGB' or 'BGR'"):
        vgg.InputNormalization("odd", "GRB", 1.0, (0, 0, 0), (1, 1, 1))


@pytest.mark.parametrize("normalization", [vgg.TORCHVISION_NORMALIZATION,
                                           vgg.CAFFE_NORMALIZATION], ids=lambda n: n.name)
def test_the_module_normalises_its_input_before_the_first_convolution(normalization):
    x = images(2)
    module = vgg.VGG(depth=16, normalization=normalization)
    variables = init(module, x, "conv1_1")
    conv = module.apply(variables, x, taps="conv1_1")["conv1_1"]
    kernel, bias = (variables["params"]["conv1_1"][name] for name in ("kernel", "bias"))
    expected = jax.lax.conv_general_dilated(
        normalization.apply(x), kernel, (1, 1), ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=jax.lax.Precision.HIGHEST,
    ) + bias
    np.testing.assert_allclose(conv, expected, rtol=1e-4, atol=1e-4)
    # The other normalisation gives other activations.
    other = (vgg.CAFFE_NORMALIZATION if normalization is vgg.TORCHVISION_NORMALIZATION
             else vgg.TORCHVISION_NORMALIZATION)
    assert not np.allclose(
        vgg.VGG(depth=16, normalization=other).apply(variables, x, taps="conv1_1")["conv1_1"], conv
    )


def test_bfloat16_compute_keeps_float32_parameters_and_taps():
    x = jnp.zeros((1, 8, 8, 3))
    module = vgg.VGG(depth=16, dtype=jnp.bfloat16)
    taps, variables = jax.eval_shape(
        lambda: module.init_with_output(jax.random.key(0), x, taps=("conv1_1", "pool1")))
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    assert {leaf.dtype for leaf in taps.values()} == {jnp.dtype(jnp.float32)}
    jaxpr = jax.make_jaxpr(lambda v: module.apply(v, x, taps="conv1_1"))(variables)
    convs = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "conv_general_dilated"]
    assert convs and all(v.aval.dtype == jnp.bfloat16 for e in convs for v in e.invars)


# ---------------------------------------------------------------- Features


def test_features_return_the_module_taps_in_their_order():
    x = images(3, (2, 8, 8, 3))
    module = vgg.VGG(depth=16)
    taps = ("pool1", "conv1_1", "relu2_1")
    variables = init(module, x, taps)
    features = vgg.Features(module, variables, taps)
    out = features(x)  # not jitted: jit would sort the keys
    assert tuple(out) == taps
    expected = module.apply(variables, x, taps=taps)
    for name in taps:
        np.testing.assert_array_equal(out[name], expected[name])
    assert out["relu2_1"].shape == (2, 4, 4, 128)
    # Features are a function of the images: other images, other features.
    assert not np.allclose(features(1 - x)["pool1"], out["pool1"])
