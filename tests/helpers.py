"""Test helpers shared by several test files: generated photos and tiny configs."""

import os

import numpy as np
from PIL import Image

from configs import glcic as glcic_config


def write_photos(folder, count, seed=0):
    """Smooth random colour images of assorted small sizes, as PNG files."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for i in range(count):
        h, w = rng.integers(24, 40, size=2)
        coarse = rng.uniform(0, 255, size=(4, 4, 3)).astype(np.uint8)
        image = Image.fromarray(coarse).resize((int(w), int(h)), Image.BILINEAR)
        image.save(os.path.join(folder, f"photo_{i:03d}.png"))
    return folder


def tiny_config(photo_dir, data_dir, **overrides):
    """runlocal shrunk to 16 px crops and 1/8-width networks."""
    config = glcic_config.get_config("runlocal")
    config.data.name = "image_folder"
    config.data.manual_dir = photo_dir
    config.data.data_dir = data_dir
    config.data.crop_size = 16
    config.data.resize_range = (16, 20)
    config.mask.local_size = 8
    config.model.width_multiplier = 0.125
    config.global_batch_size = 8
    config.eval.global_batch_size = 8
    config.completion_steps = 2
    config.discriminator_steps = 2
    config.total_steps = 6
    config.log_every_steps = 1
    config.eval_every_steps = 3
    config.checkpoint_every_steps = 3
    return override(config, overrides)


def override(config, overrides):
    """Sets each dotted key of `overrides` (e.g. "model.width_multiplier") in `config`."""
    for key, value in overrides.items():
        node = config
        *path, leaf = key.split(".")
        for part in path:
            node = node[part]
        node[leaf] = value
    return config


def recipe_steps(trainer, config, mesh):
    """(initial state, phase steps) of a trainer module's recipe for `config` on `mesh`."""
    from inpaint_jax.trainers import gan  # noqa: PLC0415  (keeps this module light to import)

    return gan.init_recipe(config, mesh, trainer)
