"""Test helpers shared by several test files: generated photos and tiny configs."""

import importlib
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from configs import dfnet as dfnet_config
from configs import glcic as glcic_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def tiny_ce_overrides(photo_dir, data_dir):
    """Dotted overrides that shrink a Context Encoder recipe's runlocal config to seconds.

    Generated photos, 1/8-width networks, a 3-step schedule; the 128 px
    geometry stays, as the network is fixed-size.
    """
    return {
        "data.name": "image_folder",
        "data.manual_dir": photo_dir,
        "data.data_dir": data_dir,
        "model.width_multiplier": 0.125,
        "total_steps": 3,
        "log_every_steps": 1,
        "eval_every_steps": 3,
        "checkpoint_every_steps": 2,
    }


def tiny_ce_config(photo_dir, data_dir, recipe="context_encoder", **overrides):
    """configs/<recipe>.py:runlocal (context_encoder or nps_content) with `tiny_ce_overrides`."""
    config = importlib.import_module(f"configs.{recipe}").get_config("runlocal")
    return override(config, {**tiny_ce_overrides(photo_dir, data_dir), **overrides})


def launch_train_command(config_file, workdir, flags=(), devices=1):
    """(argv, environment) of `python -m launch.train --config=... --workdir=... FLAGS`.

    Run from the repository root (`REPO`) on `devices` host CPU devices.
    """
    argv = [sys.executable, "-m", "launch.train", f"--config={config_file}",
            f"--workdir={workdir}", *flags]
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return argv, env


def run_launch_train(config_file, workdir, overrides):
    """Runs `launch.train` with `--config.k=v` overrides on one CPU device, as a laptop has.

    Returns the CompletedProcess.
    """
    argv, env = launch_train_command(
        config_file, workdir, [f"--config.{key}={value}" for key, value in overrides.items()]
    )
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def override(config, overrides):
    """Sets each dotted key of `overrides` (e.g. "model.width_multiplier") in `config`."""
    for key, value in overrides.items():
        node = config
        *path, leaf = key.split(".")
        for part in path:
            node = node[part]
        node[leaf] = value
    return config


def build_recipe(trainer, config, mesh):
    """A recipe module's `loop.Training` (initial state, phase steps, schedule) for `config`."""
    return trainer.build(config, mesh)


def tiny_dfnet_config(photo_dir, data_dir, **overrides):
    """DFNet runlocal shrunk to 16 px crops of `photo_dir`, a 3-level 1/8-width network, 2 outputs."""
    settings = {
        "data.name": "image_folder",
        "data.manual_dir": photo_dir,
        "data.data_dir": data_dir,
        "data.crop_size": 16,
        "data.resize_range": (16, 20),
        "mask.local_size": 8,
        "model.encoder_kernels": (7, 5, 3),
        "model.fusion_levels": (0, 1),
        "model.width_multiplier": 0.125,
        "loss.reconstruction_levels": (0, 1),
        "loss.texture_levels": (0,),
        "total_steps": 3,
        "log_every_steps": 1,
        "eval_every_steps": 3,
        "checkpoint_every_steps": 3,
    }
    return override(dfnet_config.get_config("runlocal"), {**settings, **overrides})
