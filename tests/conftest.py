"""Test-wide settings: 8 fake CPU devices for sharding tests, quiet TensorFlow."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


import pytest  # noqa: E402  (after the environment above is set)


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory):
    """16 small generated photos (PNG) in a folder."""
    from helpers import write_photos  # noqa: PLC0415

    return write_photos(str(tmp_path_factory.mktemp("photos")), 16)


@pytest.fixture(scope="session")
def glcic_workdir(photo_dir, tmp_path_factory):
    """Workdir of a tiny GLCIC trained through all three phases (6 steps, checkpoint at 6)."""
    from helpers import tiny_config  # noqa: PLC0415

    from inpaint_jax.trainers import glcic  # noqa: PLC0415

    root = tmp_path_factory.mktemp("glcic")
    workdir = str(root / "work")
    glcic.train_and_evaluate(tiny_config(photo_dir, str(root / "tfds")), workdir)
    return workdir
