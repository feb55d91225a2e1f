"""Fixtures of the inpaint_jax.benchmarking tests: tiny networks, the Torch reference, data.

Tiny sizes and 1/8-width networks only; nothing here asserts a timing.
"""

import json

import jax
import numpy as np
import pytest

from configs import glcic as glcic_config
from inpaint_jax.benchmarking import configs, inference, tables
from tests.conftest import fast_compile

WIDTH = 0.125  # channel multiplier of every network the benchmark tests build


def tiny_glcic(size=32, batch_per_device=1, **overrides):
    """GLCIC's runlocal config with the benchmark's settings at `size` px and 1/8 width."""
    return configs.benchmark_config(glcic_config.get_config("runlocal"), size=size,
                                    batch_per_device=batch_per_device, width_multiplier=WIDTH,
                                    **overrides)


def check_report(report, tmp_path, name):
    """Writes `report` as JSON, reads it back and checks what every report holds; returns it."""
    path = tables.write_report(report, tmp_path / f"{name}.json")
    loaded = json.loads(path.read_text())
    assert loaded == json.loads(json.dumps(report))
    assert loaded["benchmark"] == name
    assert {"device_kind", "jax_version", "cpu_count", "load_average"} <= set(loaded["environment"])
    assert len(loaded["load_average_after"]) == 3
    return loaded


@pytest.fixture(scope="session")
def calibrated_generator():
    """A tiny GLCIC completion network as `random_generator` makes it."""
    with fast_compile():
        return inference.random_generator(tiny_glcic().model)


@pytest.fixture(scope="session")
def glcic_generator(calibrated_generator):
    """The tiny GLCIC network with its BatchNorm scales and shifts randomly perturbed."""
    rng = np.random.default_rng(1)

    def perturb(path, leaf):
        if path[-2].key != "norm":
            return leaf
        return leaf * rng.uniform(0.5, 1.5, leaf.shape) + rng.normal(0, 0.1, leaf.shape)

    params = jax.tree_util.tree_map_with_path(perturb, calibrated_generator.variables["params"])
    variables = {**calibrated_generator.variables, "params": params}
    return inference.Generator(calibrated_generator.model_config, calibrated_generator.module,
                               variables)


@pytest.fixture(scope="session")
def reference():
    """The PyTorch reference (skips the test without torch, a test extra)."""
    pytest.importorskip("torch")
    from inpaint_jax.benchmarking import torch_glcic  # noqa: PLC0415  (imports torch)

    return torch_glcic.TorchReference()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A folder where sample_photos gets built once for the benchmark tests."""
    return str(tmp_path_factory.mktemp("tfds"))
