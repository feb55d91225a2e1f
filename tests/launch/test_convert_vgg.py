"""`python -m launch.convert_vgg`: a torchvision file becomes a loadable .npz cache.

The command's `main` runs in-process after its flags are parsed (tests/launch/conftest.py).
"""
import os

import jax
import numpy as np
import pytest
import torch
from absl import app

from inpaint_jax.weights import vgg
from tests.launch.conftest import launch_command

# Indices of the convolutions in torchvision's vgg19().features, and their channels.
VGG19_CONVS = dict(zip(
    [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34],
    [64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512],
))


@pytest.fixture(scope="module")
def torchvision_vgg19(tmp_path_factory):
    """A torchvision-layout VGG-19 state dict (.pth) with random weights and a classifier key."""
    rng = np.random.default_rng(0)
    state, in_channels = {}, 3
    for index, channels in VGG19_CONVS.items():
        weight = rng.normal(0, 0.05, (channels, in_channels, 3, 3)).astype(np.float32)
        state[f"features.{index}.weight"] = torch.from_numpy(weight)
        state[f"features.{index}.bias"] = torch.from_numpy(rng.normal(0, 0.1, channels).astype(np.float32))
        in_channels = channels
    state["classifier.0.weight"] = torch.zeros(2, 4)
    path = tmp_path_factory.mktemp("torchvision") / "vgg19-dcbb9e9d.pth"
    torch.save(state, path)
    return str(path)


@pytest.fixture(scope="module")
def convert_vgg():
    """launch.convert_vgg imported with its own flags (tests/launch/conftest.py)."""
    with launch_command("convert_vgg") as module:
        yield module


def test_writes_a_loadable_npz(convert_vgg, torchvision_vgg19, tmp_path, parsed_flags, capsys):
    output = tmp_path / "out"

    convert_vgg.main(parsed_flags("convert_vgg", f"--input={torchvision_vgg19}",
                                  f"--output={output}"))

    written = output / "vgg19.npz"
    printed = capsys.readouterr().out
    assert str(written) in printed
    assert "VGG-19 from vgg19-dcbb9e9d.pth" in printed and "torchvision" in printed
    assert sorted(os.listdir(output)) == ["vgg19.npz"]
    restored = vgg.load_converted(written)
    assert restored.depth == 19
    assert restored.normalization == vgg.TORCHVISION_NORMALIZATION
    jax.tree.map(
        np.testing.assert_array_equal,
        restored.variables,
        vgg.from_torchvision(torchvision_vgg19).variables,
    )
    module, variables = vgg.load_vgg(str(written), 19)  # what --config.vgg_path then reads
    assert module.depth == 19 and set(variables["params"]) == set(restored.variables["params"])


def test_rejects_a_missing_input(convert_vgg, tmp_path, parsed_flags):
    argv = parsed_flags("convert_vgg", f"--input={tmp_path}/nope.pth", f"--output={tmp_path}")
    # app.run prints a UsageError and exits with a non-zero status.
    with pytest.raises(app.UsageError, match="nope.pth is not a file"):
        convert_vgg.main(argv)
    assert os.listdir(tmp_path) == []


def test_refuses_positional_arguments(convert_vgg, torchvision_vgg19, tmp_path, parsed_flags):
    argv = parsed_flags("convert_vgg", f"--input={torchvision_vgg19}", f"--output={tmp_path}",
                        "extra")
    with pytest.raises(app.UsageError, match="Unexpected arguments: extra"):
        convert_vgg.main(argv)
    assert os.listdir(tmp_path) == []
