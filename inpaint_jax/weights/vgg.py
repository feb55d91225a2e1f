"""ImageNet VGG-16 / VGG-19 weights from torchvision and Keras files, and their .npz cache.

No weights are downloaded. `load_vgg(path)` reads a torchvision state dict
(.pth / .pt), a Keras applications HDF5 file (.h5) or the converted cache
(.npz) that `python -m launch.convert_vgg` writes once from either, and
returns a `models.vgg.VGG` with the weights' input normalisation and its
variables.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import h5py
import jax
import jax.numpy as jnp
import numpy as np

from inpaint_jax import files
from inpaint_jax.models.vgg import (
    BLOCK_CHANNELS,
    CAFFE_NORMALIZATION,
    TORCHVISION_NORMALIZATION,
    VGG,
    Features,
    InputNormalization,
    check_depth,
    vgg_layers,
)

# Where users get the weights (nothing is downloaded at run time).
TORCHVISION_FILES = {16: "vgg16-397923af.pth", 19: "vgg19-dcbb9e9d.pth"}
TORCHVISION_URL = "https://download.pytorch.org/models/{}"
KERAS_FILES = {
    16: "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    19: "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
}
KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/vgg{}/{}"

# Version of the layout `save_converted` writes.
CONVERTED_FORMAT_VERSION = 1


class MissingWeightsError(ValueError):
    """No VGG weight file was given, or the given path does not exist."""


class VGGWeightsError(ValueError):
    """A weight file exists but is not a usable VGG-16/19 file."""


class VGGWeights(NamedTuple):
    """Imported weights: Flax variables {'params': ...} (numpy), normalisation, depth."""

    variables: dict
    normalization: InputNormalization
    depth: int


def _conv_shapes(depth: int) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """conv name -> (HWIO kernel shape, bias shape)."""
    shapes, in_channels = {}, 3
    for layer in vgg_layers(depth):
        if layer.kind == "conv":
            shapes[layer.name] = ((3, 3, in_channels, layer.features), (layer.features,))
            in_channels = layer.features
    return shapes


def _make_weights(
    arrays: Mapping[str, tuple[np.ndarray, np.ndarray]],
    depth: int,
    normalization: InputNormalization,
    describe: Mapping[str, str],
) -> VGGWeights:
    """Check every conv's (HWIO kernel, bias) shape and assemble VGGWeights.

    `describe` maps a conv name to how the source file names it, for errors.
    """
    params = {}
    for name, (kernel_shape, bias_shape) in _conv_shapes(depth).items():
        kernel, bias = arrays[name]
        if kernel.shape != kernel_shape or bias.shape != bias_shape:
            raise VGGWeightsError(
                f"{describe[name]}: expected kernel {kernel_shape} and bias {bias_shape} "
                f"(HWIO) for VGG-{depth} {name}, got {kernel.shape} and {bias.shape}."
            )
        params[name] = {
            "kernel": np.asarray(kernel, np.float32),
            "bias": np.asarray(bias, np.float32),
        }
    return VGGWeights({"params": params}, normalization, depth)


def _natural_order(name: str) -> list:
    """Sort key that puts features.5 before features.10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _list_names(names) -> str:
    """Comma-separated names in natural order, at most 12 of them."""
    names = sorted(names, key=_natural_order)
    shown = ", ".join(names[:12])
    return shown + (f", ... ({len(names) - 12} more)" if len(names) > 12 else "")


def _torchvision_conv_indices(depth: int) -> dict[str, int]:
    """conv name -> its index in torchvision's `features` Sequential."""
    return {
        layer.name: index
        for index, layer in enumerate(vgg_layers(depth))
        if layer.kind == "conv"
    }


def _load_torch_file(path) -> Mapping:
    try:
        import torch  # noqa: PLC0415  (optional dependency, only for .pth files)
    except ImportError as e:
        raise ImportError(
            f"Reading the PyTorch file {path} needs torch: `pip install torch` (the CPU "
            f"build is enough), or convert it once on a machine that has torch with "
            f"`python -m launch.convert_vgg --input={path} --output=DIR` and use DIR/vgg*.npz."
        ) from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise VGGWeightsError(
            f"{path} is not a readable PyTorch state dict ({e}). Expected torchvision's "
            f"{TORCHVISION_FILES[19]} or {TORCHVISION_FILES[16]}."
        ) from e


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, np.float32)


def from_torchvision(state_dict_or_path) -> VGGWeights:
    """Import torchvision `vgg16` / `vgg19` weights (a state dict or a .pth path).

    Reads the convolutions `features.{i}.weight` (OIHW, transposed to HWIO)
    and `features.{i}.bias` at torchvision's layer indices; `classifier.*`
    keys are ignored. The depth is detected from the keys. The result uses
    torchvision's normalisation (RGB, ImageNet mean and std).
    """
    source = state_dict_or_path
    if isinstance(source, (str, os.PathLike)):
        source = _load_torch_file(source)
    if not isinstance(source, Mapping):
        raise VGGWeightsError(
            f"Expected a torchvision VGG state dict (a mapping of 'features.N.weight' keys to "
            f"tensors), got {type(source).__name__}. Save the model with "
            f"torch.save(model.state_dict(), path)."
        )
    keys = set(source)
    indices = {int(m.group(1)) for k in keys if (m := re.fullmatch(r"features\.(\d+)\.\w+", k))}
    depth = 19 if max(indices, default=0) > max(_torchvision_conv_indices(16).values()) else 16
    conv_indices = _torchvision_conv_indices(depth)
    expected = {
        name: (f"features.{index}.weight", f"features.{index}.bias")
        for name, index in conv_indices.items()
    }
    expected_keys = {key for pair in expected.values() for key in pair}
    missing = expected_keys - keys
    unexpected = {k for k in keys - expected_keys if not k.startswith("classifier.")}
    if missing or unexpected:
        raise VGGWeightsError(
            f"Not a torchvision VGG-{depth} state dict (vgg{depth}, without batch norm): "
            + (f"missing keys {_list_names(missing)}. " if missing else "")
            + (f"unexpected keys {_list_names(unexpected)}. " if unexpected else "")
            + f"Expected features.{{i}}.weight and features.{{i}}.bias for i in "
            f"{list(conv_indices.values())}, plus optional classifier.* keys (ignored)."
        )
    arrays = {
        name: (_to_numpy(source[weight]).transpose(2, 3, 1, 0), _to_numpy(source[bias]))
        for name, (weight, bias) in expected.items()
    }
    describe = {name: f"{weight} (OIHW transposed)" for name, (weight, _) in expected.items()}
    return _make_weights(arrays, depth, TORCHVISION_NORMALIZATION, describe)


def _keras_layer_name(conv_name: str) -> str:
    """conv3_1 -> block3_conv1 (Keras applications naming)."""
    block, index = conv_name.removeprefix("conv").split("_")
    return f"block{block}_conv{index}"


def _string_list_attr(group, name: str) -> list[str]:
    values = group.attrs.get(name, [])
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _dataset_names(group) -> list[str]:
    """Paths, relative to `group`, of every dataset below it."""
    names = []

    def visit(name, item):
        if isinstance(item, h5py.Dataset):
            names.append(name)

    group.visititems(visit)
    return names


def _keras_conv_arrays(layer_group, path) -> tuple[np.ndarray, np.ndarray]:
    """(kernel, bias) of one Keras conv layer group, whatever the Keras version.

    Keras 1 stores `block1_conv1_W_1:0` / `block1_conv1_b_1:0` in the layer's
    group; Keras 2 and 3 store `block1_conv1/kernel:0` (or `kernel`) in a
    subgroup. The `weight_names` attribute lists them; the 4-d array is the
    kernel and the 1-d array the bias.
    """
    names = _string_list_attr(layer_group, "weight_names") or _dataset_names(layer_group)
    arrays = [np.asarray(layer_group[name]) for name in names]
    kernels = [a for a in arrays if a.ndim == 4]
    biases = [a for a in arrays if a.ndim == 1]
    if len(kernels) != 1 or len(biases) != 1:
        raise VGGWeightsError(
            f"{path}: layer {layer_group.name} should hold one 4-d kernel and one bias, "
            f"found datasets {names} with shapes {[a.shape for a in arrays]}."
        )
    return kernels[0], biases[0]


def from_keras_h5(path) -> VGGWeights:
    """Import Keras applications VGG16 / VGG19 weights from an HDF5 file.

    Reads `vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5` (or the VGG-16
    file, or the files with the classifier, whose fc layers are ignored) as
    written by Keras 1, 2 or 3's legacy HDF5 format: one group per layer
    (`block1_conv1`, ...) with HWIO kernels. The depth is detected from the
    layer names. The result uses Caffe normalisation (BGR, 0-255, Caffe means).
    """
    try:
        file = h5py.File(path, "r")
    except OSError as e:
        raise VGGWeightsError(f"{path} is not a readable HDF5 file ({e}).") from e
    with file:
        root = file["model_weights"] if "model_weights" in file else file
        layer_names = set(_string_list_attr(root, "layer_names")) or set(root)
        vgg19_only = set(_conv_shapes(19)) - set(_conv_shapes(16))
        depth = 19 if any(_keras_layer_name(n) in layer_names for n in vgg19_only) else 16
        expected = {name: _keras_layer_name(name) for name in _conv_shapes(depth)}
        missing = [layer for layer in expected.values() if layer not in root]
        if missing:
            raise VGGWeightsError(
                f"{path} is not a Keras VGG-{depth} weight file: missing layers "
                f"{_list_names(missing)} (the file has {_list_names(layer_names)}). Expected "
                f"Keras applications' {KERAS_FILES[depth]}, saved in the HDF5 layout with "
                f"one group per layer."
            )
        arrays = {name: _keras_conv_arrays(root[layer], path) for name, layer in expected.items()}
    describe = {
        name: f"layer {layer} of {path} (Keras files must be the tf_kernels kind)"
        for name, layer in expected.items()
    }
    return _make_weights(arrays, depth, CAFFE_NORMALIZATION, describe)


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_converted(path, weights: VGGWeights, source_path=None) -> None:
    """Write `weights` to an .npz cache atomically (temporary file + rename).

    The file holds one array per parameter ("params/conv1_1/kernel", ...)
    and a JSON "metadata" string: format version, depth, normalisation and,
    when `source_path` is given, the source file's name and SHA-256.
    """
    metadata = {
        "format_version": CONVERTED_FORMAT_VERSION,
        "depth": weights.depth,
        "normalization": weights.normalization.to_json(),
        "source_file": os.path.basename(source_path) if source_path else None,
        "source_sha256": _sha256(source_path) if source_path else None,
    }
    arrays = {
        f"params/{conv}/{kind}": value
        for conv, conv_params in weights.variables["params"].items()
        for kind, value in conv_params.items()
    }
    with files.atomic_write(path, binary=True) as file:
        np.savez(file, metadata=np.array(json.dumps(metadata)), **arrays)


def converted_metadata(path) -> dict:
    """The metadata dict `save_converted` stored in an .npz cache."""
    with np.load(path, allow_pickle=False) as data:
        if "metadata" not in data:
            raise VGGWeightsError(
                f"{path} is not a converted VGG file (no metadata). Create one with "
                f"`python -m launch.convert_vgg --input=FILE --output=DIR`."
            )
        metadata = json.loads(str(data["metadata"]))
    if metadata.get("format_version") != CONVERTED_FORMAT_VERSION:
        raise VGGWeightsError(
            f"{path} has converted-file format version {metadata.get('format_version')}, this "
            f"code reads version {CONVERTED_FORMAT_VERSION}. Convert the original file again."
        )
    return metadata


def load_converted(path) -> VGGWeights:
    """Read an .npz cache written by `save_converted`."""
    metadata = converted_metadata(path)
    depth = metadata["depth"]
    check_depth(depth)
    with np.load(path, allow_pickle=False) as data:
        missing = [
            f"params/{conv}/{kind}"
            for conv in _conv_shapes(depth)
            for kind in ("kernel", "bias")
            if f"params/{conv}/{kind}" not in data
        ]
        if missing:
            raise VGGWeightsError(
                f"{path} is incomplete: missing {_list_names(missing)}. Convert the original "
                f"file again."
            )
        arrays = {
            conv: (data[f"params/{conv}/kernel"], data[f"params/{conv}/bias"])
            for conv in _conv_shapes(depth)
        }
    describe = {conv: f"params/{conv} of {path}" for conv in arrays}
    normalization = InputNormalization.from_json(metadata["normalization"])
    return _make_weights(arrays, depth, normalization, describe)


def _weights_help(depth: int | None, config_flag: str) -> str:
    depths = [depth] if depth else sorted(BLOCK_CHANNELS, reverse=True)
    lines = ["Get one of these files (nothing is downloaded at run time):"]
    for d in depths:
        lines.append(f"  torchvision VGG-{d}: {TORCHVISION_URL.format(TORCHVISION_FILES[d])}")
        lines.append(f"  Keras VGG-{d}: {KERAS_URL.format(d, KERAS_FILES[d])}")
    example_depth = depths[0]
    lines += [
        "Convert it once:",
        f"  python -m launch.convert_vgg --input={TORCHVISION_FILES[example_depth]} "
        f"--output=DIR    (writes DIR/vgg{example_depth}.npz)",
        f"and pass {config_flag}=DIR/vgg{example_depth}.npz (a .pth or .h5 file works too, "
        f"converted at every start).",
    ]
    return "\n".join(lines)


def require_weights(path, depth: int | None = 19, config_flag: str = "--config.vgg_path") -> str:
    """Return `path` if it names an existing file, else raise MissingWeightsError.

    The error says which file to get for VGG-`depth` (both depths when None),
    how to convert it and which `config_flag` to point at it.
    """
    name = f"VGG-{depth}" if depth else "VGG"
    if not path:
        problem = f"No {name} weights: {config_flag} is not set."
    elif not os.path.isfile(path):
        problem = f"No {name} weights: {config_flag}={path} does not exist."
    else:
        return os.fspath(path)
    raise MissingWeightsError(f"{problem}\n{_weights_help(depth, config_flag)}")


def read_weights(path) -> VGGWeights:
    """Import weights from a .pth/.pt (torchvision), .h5/.hdf5 (Keras) or .npz (converted) file."""
    extension = os.path.splitext(os.fspath(path))[1].lower()
    if extension in (".pth", ".pt"):
        return from_torchvision(path)
    if extension in (".h5", ".hdf5"):
        return from_keras_h5(path)
    if extension == ".npz":
        return load_converted(path)
    raise VGGWeightsError(
        f"Cannot tell the format of {path}: use a torchvision state dict (.pth or .pt), a "
        f"Keras HDF5 file (.h5) or a file converted by launch.convert_vgg (.npz)."
    )


def load_vgg(
    path,
    depth: int | None = None,
    *,
    pool: str = "max",
    dtype: jnp.dtype = jnp.float32,
    config_flag: str = "--config.vgg_path",
) -> tuple[VGG, dict]:
    """A ready VGG module (with the weights' normalisation) and its variables on device.

    `depth`, when given, is required of the file (NPS needs VGG-19, the
    two-stage losses VGG-16). A missing or empty `path` raises
    MissingWeightsError naming the file to get and `config_flag`.
    """
    weights = read_weights(require_weights(path, depth, config_flag))
    if depth is not None and weights.depth != depth:
        raise VGGWeightsError(
            f"{path} holds VGG-{weights.depth} weights, but VGG-{depth} is needed here.\n"
            f"{_weights_help(depth, config_flag)}"
        )
    module = VGG(depth=weights.depth, normalization=weights.normalization, pool=pool, dtype=dtype)
    return module, jax.tree.map(jnp.asarray, weights.variables)


def load_features(path, depth: int, taps: Sequence[str], *,
                  config_flag: str = "--config.vgg_path") -> Features:
    """`load_vgg(path, depth)` bound to its variables, returning the activations `taps`."""
    module, variables = load_vgg(path, depth, config_flag=config_flag)
    return Features(module, variables, tuple(taps))
