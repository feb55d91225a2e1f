"""Tests for the VGG weight import (inpaint_jax.weights.vgg): files, the .npz cache, errors.

References are independent of the code under test: a torch VGG built the way
torchvision builds it (its configuration lists, so its layer indices), and
Keras-layout HDF5 files written here with h5py. The module itself is
tests/models/test_vgg.py's subject, the converter command tests/launch/test_convert_vgg.py's.
"""
import hashlib
import os
from collections import OrderedDict

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from inpaint_jax.models import vgg as vgg_model
from inpaint_jax.weights import vgg

# torchvision's make_layers configurations ("M" = 2x2 max-pool).
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
CAFFE_BGR_MEANS = np.array([103.939, 116.779, 123.68], np.float32)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
# Height != width catches transposed axes; 40 pools to 20, 10, 5, 2 (floor).
IMAGE_SHAPE = (2, 40, 48, 3)
TOLERANCE = 1e-5


def conv_names(depth):
    """conv1_1, conv1_2, conv2_1, ... from the configuration list."""
    names, block, index = [], 1, 1
    for item in TORCHVISION_CFGS[depth]:
        if item == "M":
            block, index = block + 1, 1
        else:
            names.append(f"conv{block}_{index}")
            index += 1
    return names


def torch_features(depth, seed=0):
    """torchvision's `vgg{depth}().features`, randomly initialised to keep activations O(1)."""
    torch.manual_seed(seed)
    layers, in_channels = [], 3
    for item in TORCHVISION_CFGS[depth]:
        if item == "M":
            layers.append(torch.nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            conv = torch.nn.Conv2d(in_channels, item, kernel_size=3, padding=1)
            torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            torch.nn.init.normal_(conv.bias, std=0.1)
            layers += [conv, torch.nn.ReLU(inplace=True)]
            in_channels = item
    return torch.nn.Sequential(*layers).eval()


def torch_relu_outputs(features, network_input):
    """Outputs of every ReLU of a torch `features` Sequential, NHWC numpy, in order."""
    outputs, x = [], torch.from_numpy(network_input.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        for layer in features:
            x = layer(x)
            if isinstance(layer, torch.nn.ReLU):
                outputs.append(x.numpy().transpose(0, 2, 3, 1).copy())
    return outputs


def relative_error(actual, expected):
    return np.abs(np.asarray(actual) - expected).max() / np.abs(expected).max()


def assert_matches_at_every_relu(module, variables, images, expected_relus):
    with jax.default_matmul_precision("highest"):
        taps = module.apply(variables, images)
    assert list(taps) == list(vgg_model.relu_tap_names(module.depth))
    assert len(expected_relus) == len(taps)
    for (name, actual), expected in zip(taps.items(), expected_relus):
        assert actual.shape == expected.shape, name
        assert np.abs(expected).max() > 0, name
        assert relative_error(actual, expected) < TOLERANCE, name


def images(seed=0):
    return np.random.default_rng(seed).uniform(size=IMAGE_SHAPE).astype(np.float32)


@pytest.fixture(scope="module")
def torchvision_files(tmp_path_factory):
    """{depth: (path of a .pth state dict with features.* and classifier.* keys, features)}."""
    folder = tmp_path_factory.mktemp("torchvision")
    files = {}
    for depth in (16, 19):
        features = torch_features(depth, seed=depth)
        model = torch.nn.Sequential(
            OrderedDict(features=features, classifier=torch.nn.Sequential(torch.nn.Linear(4, 2)))
        )
        path = folder / f"vgg{depth}.pth"
        torch.save(model.state_dict(), path)
        files[depth] = (str(path), features)
    return files


def write_keras_h5(path, depth, layout, seed=0):
    """A Keras applications notop file with random HWIO weights; returns {conv: (kernel, bias)}.

    layout "keras1": `block1_conv1/block1_conv1_W_1:0`; "keras2":
    `block1_conv1/block1_conv1/kernel:0` (what later Keras versions write).
    """
    rng = np.random.default_rng(seed)
    weights, layer_names, in_channels = {}, ["input_1"], 3
    with h5py.File(path, "w") as file:
        block, index = 1, 1
        for item in TORCHVISION_CFGS[depth]:
            if item == "M":
                name = f"block{block}_pool"
                file.create_group(name).attrs["weight_names"] = np.array([], dtype="S")
                block, index = block + 1, 1
            else:
                name = f"block{block}_conv{index}"
                std = np.sqrt(2 / (9 * in_channels))
                kernel = rng.normal(0, std, (3, 3, in_channels, item)).astype(np.float32)
                bias = rng.normal(0, 0.1, item).astype(np.float32)
                weights[f"conv{block}_{index}"] = (kernel, bias)
                if layout == "keras1":
                    names = [f"{name}_W_1:0", f"{name}_b_1:0"]
                else:
                    names = [f"{name}/kernel:0", f"{name}/bias:0"]
                group = file.create_group(name)
                group.attrs["weight_names"] = np.array([n.encode() for n in names])
                group.create_dataset(names[0], data=kernel)
                group.create_dataset(names[1], data=bias)
                in_channels, index = item, index + 1
            layer_names.append(name)
        file.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S")
        file.attrs["layer_names"] = np.array([n.encode() for n in layer_names])
    return weights


def torch_features_from_hwio(depth, weights):
    """A torch `features` Sequential holding the given HWIO weights."""
    features = torch_features(depth)
    convs = [layer for layer in features if isinstance(layer, torch.nn.Conv2d)]
    with torch.no_grad():
        for conv, (kernel, bias) in zip(convs, weights.values()):
            conv.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
            conv.bias.copy_(torch.from_numpy(bias))
    return features


@pytest.mark.parametrize("depth", [16, 19])
def test_torchvision_import_matches_torch_at_every_relu(torchvision_files, depth):
    path, features = torchvision_files[depth]
    module, variables = vgg.load_vgg(path, depth)
    assert module.depth == depth
    assert module.normalization == vgg.TORCHVISION_NORMALIZATION
    assert set(variables["params"]) == set(conv_names(depth))
    x = images()
    expected = torch_relu_outputs(features, (x - IMAGENET_MEAN) / IMAGENET_STD)
    assert_matches_at_every_relu(module, variables, x, expected)


@pytest.mark.parametrize("depth,layout", [(19, "keras1"), (16, "keras2")])
def test_keras_import_matches_caffe_preprocessed_reference(tmp_path, depth, layout):
    path = tmp_path / "notop.h5"
    weights = write_keras_h5(path, depth, layout)
    module, variables = vgg.load_vgg(str(path))
    assert module.depth == depth
    assert module.normalization == vgg.CAFFE_NORMALIZATION
    for name, (kernel, bias) in weights.items():
        np.testing.assert_array_equal(variables["params"][name]["kernel"], kernel)
        np.testing.assert_array_equal(variables["params"][name]["bias"], bias)
    x = images(1)
    caffe_input = x[..., ::-1] * 255.0 - CAFFE_BGR_MEANS
    expected = torch_relu_outputs(torch_features_from_hwio(depth, weights), caffe_input)
    assert_matches_at_every_relu(module, variables, x, expected)


def test_converted_cache_round_trip(torchvision_files, tmp_path):
    path, _ = torchvision_files[16]
    original = vgg.from_torchvision(path)
    cache = tmp_path / "vgg16.npz"
    vgg.save_converted(cache, original, source_path=path)
    assert os.listdir(tmp_path) == ["vgg16.npz"]  # no temporary file left behind
    restored = vgg.load_converted(cache)
    assert restored.depth == 16
    assert restored.normalization == original.normalization
    jax.tree.map(np.testing.assert_array_equal, restored.variables, original.variables)
    metadata = vgg.converted_metadata(cache)
    with open(path, "rb") as file:
        assert metadata["source_sha256"] == hashlib.sha256(file.read()).hexdigest()
    assert metadata["source_file"] == "vgg16.pth"


def test_missing_weights_error_names_the_file_to_get_and_the_flag():
    for path in (None, ""):
        with pytest.raises(vgg.MissingWeightsError) as error:
            vgg.load_vgg(path, 19)
        message = str(error.value)
        for needle in (
            "vgg19-dcbb9e9d.pth",
            "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "--config.vgg_path=DIR/vgg19.npz",
            "python -m launch.convert_vgg",
        ):
            assert needle in message
        assert "vgg16" not in message
    with pytest.raises(vgg.MissingWeightsError, match="/no/such/vgg.pth does not exist") as error:
        vgg.require_weights("/no/such/vgg.pth", 16, config_flag="--config.loss.vgg_path")
    assert "vgg16-397923af.pth" in str(error.value)
    assert "--config.loss.vgg_path=DIR/vgg16.npz" in str(error.value)
    assert issubclass(vgg.MissingWeightsError, ValueError)


def _fake_state_dict(depth):
    """Right keys, placeholder values (key checks come before shape checks)."""
    return {
        f"features.{i}.{kind}": np.zeros(1)
        for i in TORCHVISION_CONV_INDICES[depth]
        for kind in ("weight", "bias")
    }


def test_wrong_torchvision_keys_are_named():
    state = _fake_state_dict(19)
    del state["features.34.weight"]
    state["features.1.running_mean"] = np.zeros(1)  # a batch-norm VGG
    state["classifier.0.weight"] = np.zeros(1)  # ignored
    with pytest.raises(vgg.VGGWeightsError) as error:
        vgg.from_torchvision(state)
    message = str(error.value)
    assert "VGG-19" in message
    assert "missing keys features.34.weight" in message
    assert "unexpected keys features.1.running_mean" in message
    assert "classifier" not in message.split("Expected")[0]
    with pytest.raises(vgg.VGGWeightsError, match="got list"):
        vgg.from_torchvision([1, 2])


def test_wrong_shapes_are_named(torchvision_files):
    state = torch.load(torchvision_files[16][0], weights_only=True)
    state["features.5.weight"] = state["features.5.weight"][:, :32]
    with pytest.raises(vgg.VGGWeightsError, match=r"features\.5\.weight.*conv2_1"):
        vgg.from_torchvision(state)


def test_bad_files_give_clear_errors(tmp_path, torchvision_files):
    garbage = tmp_path / "weights.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(vgg.VGGWeightsError, match="not a readable PyTorch state dict"):
        vgg.read_weights(garbage)
    garbage_h5 = tmp_path / "weights.h5"
    garbage_h5.write_bytes(b"not hdf5")
    with pytest.raises(vgg.VGGWeightsError, match="not a readable HDF5 file"):
        vgg.read_weights(garbage_h5)
    with pytest.raises(vgg.VGGWeightsError, match=r"\.pth or \.pt"):
        vgg.read_weights(tmp_path / "weights.bin")
    with pytest.raises(vgg.VGGWeightsError, match="holds VGG-16 weights, but VGG-19 is needed"):
        vgg.load_vgg(torchvision_files[16][0], 19)


def test_keras_file_with_missing_layers_is_named(tmp_path):
    path = tmp_path / "partial.h5"
    write_keras_h5(path, 19, "keras2")
    with h5py.File(path, "a") as file:
        del file["block5_conv4"]
    with pytest.raises(vgg.VGGWeightsError, match="missing layers block5_conv4 "):
        vgg.from_keras_h5(path)


def test_load_features_binds_the_file_weights_at_the_taps(torchvision_files):
    path, features = torchvision_files[16]
    extractor = vgg.load_features(path, 16, ["pool1", "relu2_2"])
    assert isinstance(extractor, vgg_model.Features)
    assert extractor.taps == ("pool1", "relu2_2")
    assert extractor.module.depth == 16
    assert extractor.module.normalization == vgg.TORCHVISION_NORMALIZATION
    x = images()
    with jax.default_matmul_precision("highest"):
        out = extractor(jnp.asarray(x))
    assert list(out) == ["pool1", "relu2_2"]
    relus = torch_relu_outputs(features, (x - IMAGENET_MEAN) / IMAGENET_STD)
    # relu2_2 is torchvision's fourth ReLU; pool1 max-pools the second.
    assert relative_error(out["relu2_2"], relus[3]) < TOLERANCE
    expected_pool1 = relus[1].reshape(2, 20, 2, 24, 2, 64).max(axis=(2, 4))
    assert relative_error(out["pool1"], expected_pool1) < TOLERANCE
    with pytest.raises(vgg.VGGWeightsError, match="holds VGG-16 weights, but VGG-19 is needed"):
        vgg.load_features(path, 19, ["pool1"])
    with pytest.raises(vgg.MissingWeightsError, match="--config.loss.vgg_path=DIR/vgg16.npz"):
        vgg.load_features("", 16, ["pool1"], config_flag="--config.loss.vgg_path")
