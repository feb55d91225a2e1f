"""Converts VGG weights once: `python -m launch.convert_vgg --input=FILE --output=DIR`.

Reads a torchvision state dict (.pth/.pt, e.g. vgg19-dcbb9e9d.pth), a Keras
applications HDF5 file (.h5) or an earlier conversion (.npz) and writes
DIR/vgg19.npz (or DIR/vgg16.npz) atomically. Point configs at the result, e.g.
`--config.vgg_path=DIR/vgg19.npz`.
"""

import os

from absl import app, flags

from inpaint_jax.weights import vgg

_INPUT = flags.DEFINE_string(
    "input", None, "Weight file: .pth/.pt (torchvision), .h5 (Keras) or .npz (converted)."
)
_OUTPUT = flags.DEFINE_string("output", None, "Directory for vgg16.npz / vgg19.npz.")
flags.mark_flags_as_required(["input", "output"])


def main(argv):
    """Converts the --input VGG weight file into the --output cache."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if not os.path.isfile(_INPUT.value):
        raise app.UsageError(f"--input={_INPUT.value} is not a file.")
    weights = vgg.read_weights(_INPUT.value)
    os.makedirs(_OUTPUT.value, exist_ok=True)
    output = os.path.join(_OUTPUT.value, f"vgg{weights.depth}.npz")
    vgg.save_converted(output, weights, source_path=_INPUT.value)
    metadata = vgg.converted_metadata(output)
    normalization = weights.normalization
    print(
        f"Wrote {output}: VGG-{metadata['depth']} from {metadata['source_file']} "
        f"(sha256 {metadata['source_sha256']}); input normalisation {normalization.name}: "
        f"{normalization.channel_order} channels, (x * {normalization.scale:g} - mean "
        f"{normalization.mean}) / std {normalization.std}."
    )


if __name__ == "__main__":
    app.run(main)
