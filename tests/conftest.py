"""Test-wide settings: 8 fake CPU devices for sharding tests, quiet TensorFlow, fast compiles.

Compiled programs are shared through a JAX persistent compilation cache in a
fresh temporary folder for the run (the pytest-xdist workers and the
subprocesses the tests start inherit it; the process that made it deletes it
at the end): many tests build the same tiny networks, and every build would
otherwise compile its programs again. Set JAX_COMPILATION_CACHE_DIR yourself
to use another folder (kept), or INPAINT_JAX_TEST_COMPILATION_CACHE=0 for none.
"""

import contextlib
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

_CACHE_OWNER = "INPAINT_JAX_TEST_COMPILATION_CACHE_OWNER"  # pid of the process that made it.
if (os.environ.get("INPAINT_JAX_TEST_COMPILATION_CACHE", "1") != "0"
        and "JAX_COMPILATION_CACHE_DIR" not in os.environ):
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="inpaint_jax_tests_xla_")
    os.environ[_CACHE_OWNER] = str(os.getpid())
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")


import pytest  # noqa: E402  (after the environment above is set)


def _compile_fast_programs_with_the_classic_cpu_emitters():
    """Under `jax_disable_most_optimizations`, also compile with xla_cpu_use_fusion_emitters=False.

    XLA's newer CPU fusion emitters take most of the compile time of the
    tiny, unoptimised training steps; the classic emitters compile them 2-3x
    faster, with the same results. (Optimised compiles keep the default: there
    the new emitters are the faster ones.) JAX offers no global setting for
    one XLA option, so this wraps its compile-options builder; if that ever
    moves, the tests only compile slower.
    """
    import jax  # noqa: PLC0415  (after the environment above is set)

    try:
        from jax._src import compiler  # noqa: PLC0415
        original = compiler.get_compile_options
    except (ImportError, AttributeError):
        return

    def get_compile_options(*args, **kwargs):
        options = original(*args, **kwargs)
        if jax.config.values["jax_disable_most_optimizations"]:
            overrides = dict(options.env_option_overrides)
            overrides.setdefault("xla_cpu_use_fusion_emitters", False)
            options.env_option_overrides = list(overrides.items())
        return options

    compiler.get_compile_options = get_compile_options


_compile_fast_programs_with_the_classic_cpu_emitters()


def pytest_unconfigure(config):
    """Deletes the run's compilation cache in the process that made it (not in xdist workers)."""
    del config
    if os.environ.get(_CACHE_OWNER) == str(os.getpid()):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@contextlib.contextmanager
def fast_compile():
    """Compiles without most XLA optimisations inside the block (see `_fast_compile`)."""
    import jax  # noqa: PLC0415  (after the environment above is set)

    flag = "jax_disable_most_optimizations"
    previous = jax.config.values[flag]
    jax.config.update(flag, True)
    try:
        yield
    finally:
        jax.config.update(flag, previous)


@pytest.fixture(autouse=True)
def _fast_compile(request):
    """Tests marked `fast_compile` compile without most XLA optimisations.

    Their tiny networks run a few steps, so compiling dominates and XLA's
    optimisation passes cost more than they save. Tests that run long
    computations (NPS, many steps in subprocesses) keep them. (See also
    `_compile_fast_programs_with_the_classic_cpu_emitters`.)
    """
    if request.node.get_closest_marker("fast_compile") is None:
        yield
        return
    with fast_compile():
        yield


@pytest.fixture(scope="module", autouse=True)
def _fast_compile_module(request):
    """Module-scoped fixtures of a module marked `fast_compile` compile the same way as its tests.

    (Programs compiled with and without the optimisations may differ in the
    last bits, so a fixture's and a test's results compare exactly only if
    both compile alike.)
    """
    if request.node.get_closest_marker("fast_compile") is None:
        yield
        return
    with fast_compile():
        yield


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory):
    """16 small generated photos (PNG) in a folder."""
    from tests.helpers import write_photos  # noqa: PLC0415

    return write_photos(str(tmp_path_factory.mktemp("photos")), 16)


@pytest.fixture(scope="session")
def glcic_workdir(photo_dir, tmp_path_factory):
    """Workdir of a tiny GLCIC trained through all three phases (6 steps, checkpoints 3 and 6).

    Like the two fixtures below, it trains with `fast_compile`: tiny networks, few steps.
    """
    from tests.helpers import tiny_config  # noqa: PLC0415

    from inpaint_jax.trainers import glcic  # noqa: PLC0415

    root = tmp_path_factory.mktemp("glcic")
    workdir = str(root / "work")
    with fast_compile():
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
    with fast_compile():
        context_encoder.train_and_evaluate(config, workdir)
    return workdir


@pytest.fixture(scope="session")
def nps_content_workdir(photo_dir, tmp_path_factory):
    """Workdir of a tiny NPS content network trained for 2 steps by launch.train's `main`.

    The command runs in this process (its flags parsed from a command line
    of `--config.k=v` overrides), on the test process's 8 CPU devices.
    """
    from tests.helpers import launch_train_in_process, tiny_ce_overrides  # noqa: PLC0415

    root = tmp_path_factory.mktemp("nps_content")
    workdir = root / "work"
    overrides = {**tiny_ce_overrides(photo_dir, str(root / "tfds")), "total_steps": 2}
    with fast_compile():
        launch_train_in_process("configs/nps_content.py:runlocal", workdir, overrides)
    return str(workdir)
