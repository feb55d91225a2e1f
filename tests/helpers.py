"""Test helpers shared by several test files: generated photos, tiny configs, launch.train runs."""

import importlib
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from clu import metric_writers
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


def launch_train_in_process(config_file, workdir, overrides=None, flags=()):
    """Runs `launch.train`'s `main` in this process, as `launch_train_command` would run it.

    The command line is `--config=REPO/CONFIG_FILE --workdir=WORKDIR`, a
    `--config.k=v` for each item of `overrides`, then `flags`. Its flags are
    parsed with absl (and reset afterwards; tests/launch/conftest.py's
    `launch_command` keeps them apart from the other commands' flags), with
    `sys.argv` set to that command line while they are: ml_collections reads
    the `--config.k=v` overrides from there. Errors of parsing and of `main`
    propagate.
    """
    from absl import flags as absl_flags  # noqa: PLC0415
    from tests.launch.conftest import launch_command  # noqa: PLC0415

    argv = ["train", f"--config={os.path.join(REPO, config_file)}", f"--workdir={workdir}",
            *(f"--config.{key}={value}" for key, value in (overrides or {}).items()), *flags]
    saved_argv = sys.argv
    with launch_command("train") as train:
        sys.argv = argv
        try:
            remaining = absl_flags.FLAGS(argv)
        finally:
            sys.argv = saved_argv
        train.main(remaining)


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


def tree_equal(a, b) -> bool:
    """Whether two pytrees have the same structure and bit-identical leaves."""
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(leaves_a) == len(leaves_b) and all(
        bool(jnp.array_equal(x, y)) for x, y in zip(leaves_a, leaves_b)
    )


class RecordingWriter(metric_writers.MetricWriter):
    """A metric writer that keeps every scalar in memory: `scalars[step][name] = value`."""

    def __init__(self):
        self.scalars = {}

    def write_summaries(self, step, values, metadata=None):
        del step, values, metadata

    def write_scalars(self, step, scalars):
        self.scalars.setdefault(int(step), {}).update(
            {name: float(value) for name, value in scalars.items()})

    def write_images(self, step, images):
        del step, images

    def write_videos(self, step, videos):
        del step, videos

    def write_audios(self, step, audios, *, sample_rate):
        del step, audios, sample_rate

    def write_texts(self, step, texts):
        del step, texts

    def write_histograms(self, step, arrays, num_buckets=None):
        del step, arrays, num_buckets

    def write_hparams(self, hparams):
        del hparams

    def flush(self):
        pass

    def close(self):
        pass


def record_metrics(monkeypatch) -> RecordingWriter:
    """Makes every training run (`loop.run`) write its metrics to one returned RecordingWriter."""
    from inpaint_jax.trainers import loop  # noqa: PLC0415

    writer = RecordingWriter()
    monkeypatch.setattr(loop, "create_writer", lambda workdir: writer)
    return writer


def convolution_input_dtypes(jaxpr) -> set:
    """dtypes of the inputs of every convolution in `jaxpr` and the jaxprs nested in it."""
    from jax.extend import core as jax_core  # noqa: PLC0415

    dtypes = set()
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            dtypes.update(var.aval.dtype for var in eqn.invars)
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                if isinstance(sub, jax_core.ClosedJaxpr):
                    dtypes |= convolution_input_dtypes(sub.jaxpr)
                elif isinstance(sub, jax_core.Jaxpr):
                    dtypes |= convolution_input_dtypes(sub)
    return dtypes


def float_leaves(tree):
    """The floating-point leaves of `tree` (not step counters, not RNG keys)."""
    return [leaf for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)]
