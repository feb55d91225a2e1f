"""Test-wide settings: 8 fake CPU devices for sharding tests, quiet TensorFlow, fast compiles."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


import pytest  # noqa: E402  (after the environment above is set)


@pytest.fixture(autouse=True)
def _fast_compile(request):
    """Tests marked `fast_compile` compile without most XLA optimisations.

    Their tiny networks run a few steps, so compiling dominates and XLA's
    optimisation passes cost more than they save. Tests that run long
    computations (NPS, thousands of steps in subprocesses) keep them.
    """
    if request.node.get_closest_marker("fast_compile") is None:
        yield
        return
    import jax  # noqa: PLC0415  (after the environment above is set)

    flag = "jax_disable_most_optimizations"
    previous = jax.config.values[flag]
    jax.config.update(flag, True)
    try:
        yield
    finally:
        jax.config.update(flag, previous)


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory):
    """16 small generated photos (PNG) in a folder."""
    from tests.helpers import write_photos  # noqa: PLC0415

    return write_photos(str(tmp_path_factory.mktemp("photos")), 16)


@pytest.fixture(scope="session")
def glcic_workdir(photo_dir, tmp_path_factory):
    """Workdir of a tiny GLCIC trained through all three phases (6 steps, checkpoint at 6)."""
    from tests.helpers import tiny_config  # noqa: PLC0415

    from inpaint_jax.trainers import glcic  # noqa: PLC0415

    root = tmp_path_factory.mktemp("glcic")
    workdir = str(root / "work")
    glcic.train_and_evaluate(tiny_config(photo_dir, str(root / "tfds")), workdir)
    return workdir


@pytest.fixture(scope="session")
def ce_workdir(photo_dir, tmp_path_factory):
    """Workdir of a tiny Context Encoder (1/8 width, 128 px) trained for 2 steps (checkpoint 2)."""
    from tests.helpers import tiny_ce_config  # noqa: PLC0415

    from inpaint_jax.trainers import context_encoder  # noqa: PLC0415

    root = tmp_path_factory.mktemp("context_encoder")
    workdir = str(root / "work")
    config = tiny_ce_config(photo_dir, str(root / "tfds"), total_steps=2)
    context_encoder.train_and_evaluate(config, workdir)
    return workdir


@pytest.fixture(scope="session")
def nps_content_workdir(photo_dir, tmp_path_factory):
    """Workdir of a tiny NPS content network trained for 2 steps by `python -m launch.train`."""
    from tests.helpers import run_launch_train, tiny_ce_overrides  # noqa: PLC0415

    root = tmp_path_factory.mktemp("nps_content")
    workdir = root / "work"
    overrides = {**tiny_ce_overrides(photo_dir, str(root / "tfds")), "total_steps": 2}
    result = run_launch_train("configs/nps_content.py:runlocal", workdir, overrides)
    assert result.returncode == 0, result.stdout + result.stderr
    return str(workdir)
