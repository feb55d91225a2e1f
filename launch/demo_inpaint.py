"""Inpaints a held-out sample photo with a trained checkpoint and writes a before/after image.

`python -m launch.demo_inpaint --workdir=DIR` (the last step of `make demo`):
takes scikit-image's `chelsea` photo (held out of sample_photos' training
split), cuts seeded holes into it, fills them with the workdir's newest
checkpoint and writes DIR/demo/{input,mask,inpainted,before_after}.png.
"""

import os

import numpy as np
from absl import app, flags, logging

from inpaint_jax import image_io, inference, masks
from inpaint_jax.data.builders import sample_photos

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir with a checkpoint.")
_PHOTO = flags.DEFINE_string("photo", "skimage/chelsea", "Id of the sample photo to inpaint.")
_MASK_KIND = flags.DEFINE_string("mask_kind", "glcic", f"Hole generator: {masks.MASK_KINDS}.")
_MAX_SIZE = flags.DEFINE_integer(
    "max_size",
    128,
    "Run the network at this longer side (runlocal trains on 64 px crops); 0 = full size.",
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the holes.")
flags.mark_flag_as_required("workdir")


def main(argv):
    """Inpaints the held-out demo photo with the --workdir checkpoint."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    photos = sample_photos.find_sample_photos()
    if _PHOTO.value not in photos:
        raise app.UsageError(f"--photo must be one of {sorted(photos)}, got {_PHOTO.value!r}.")
    image = image_io.read_image(photos[_PHOTO.value])
    height, width = image.shape[:2]
    mask = masks.make_mask_fn(_MASK_KIND.value)(masks.mask_rng(_SEED.value), height, width).mask
    model = inference.load_model(_WORKDIR.value)
    inpainted = inference.inpaint(model, image, mask, max_size=_MAX_SIZE.value or None)

    out_dir = os.path.join(_WORKDIR.value, "demo")
    os.makedirs(out_dir, exist_ok=True)
    masked_input = image * (1.0 - mask) + mask  # holes shown in white.
    outputs = {
        "input.png": masked_input,
        "mask.png": mask,
        "inpainted.png": inpainted,
        "before_after.png": np.concatenate([masked_input, inpainted, image], axis=1),
    }
    for name, array in outputs.items():
        image_io.write_image(os.path.join(out_dir, name), array)
    logging.info(
        "Inpainted %s (%dx%d, %.0f%% holes) with %s step %d: %s (masked | inpainted | original).",
        _PHOTO.value,
        height,
        width,
        100 * mask.mean(),
        model.name,
        model.step,
        os.path.join(out_dir, "before_after.png"),
    )


if __name__ == "__main__":
    app.run(main)
