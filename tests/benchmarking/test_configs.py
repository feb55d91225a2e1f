"""Tests for inpaint_jax.benchmarking.configs: benchmark settings applied to a recipe config."""

import jax
import pytest

from configs import glcic as glcic_config
from configs import two_stage as two_stage_config
from inpaint_jax.benchmarking import configs, measure


def test_benchmark_config_scales_the_geometry_with_the_size(tmp_path):
    config = configs.benchmark_config(
        glcic_config.get_config(),
        size=128,
        batch_per_device=3,
        width_multiplier=0.5,
        data_dir=str(tmp_path),
        worker_count=2,
        compute_dtype="bfloat16",
    )
    assert config.data.crop_size == 128
    assert config.mask.local_size == 64
    assert tuple(config.data.resize_range) == (128, 192)
    assert config.global_batch_size == 3 * jax.device_count()
    assert config.model.width_multiplier == 0.5
    assert (config.data.name, config.data.data_dir, config.data.eval_split) == (
        "sample_photos",
        str(tmp_path),
        "eval",
    )
    assert config.data.worker_count == 2
    assert config.model.compute_dtype == "bfloat16"
    assert glcic_config.get_config().data.crop_size == 256  # a copy; the original is untouched


def test_benchmark_config_of_a_recipe_without_a_local_window_or_resize_range():
    config = configs.benchmark_config(two_stage_config.get_config(), size=64)
    assert config.data.crop_size == 64
    assert "local_size" not in config.mask and not config.data.get("resize_range")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"size": 0}, "size must be a positive"),
        ({"batch_per_device": 0}, "batch_per_device must be >= 1"),
        ({"width_multiplier": 0.0}, "width_multiplier must be > 0"),
        ({"compute_dtype": "half"}, "compute_dtype must be one of 'auto', 'float32', 'bfloat16'"),
    ],
)
def test_benchmark_config_rejects_bad_settings(kwargs, message):
    with pytest.raises(measure.BenchmarkError, match=message):
        configs.benchmark_config(glcic_config.get_config(), **kwargs)


def test_with_compute_dtype_copies_the_model_config():
    model_config = glcic_config.get_config().model
    bfloat16 = configs.with_compute_dtype(model_config, "bfloat16")
    assert bfloat16.compute_dtype == "bfloat16" and model_config.compute_dtype == "auto"
    assert bfloat16.family == "glcic"
