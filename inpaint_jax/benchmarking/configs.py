"""Benchmark settings applied to a training or model config."""

from __future__ import annotations

import os

import jax
import ml_collections

from inpaint_jax import models
from inpaint_jax.benchmarking.measure import BenchmarkError


def with_compute_dtype(model_config: ml_collections.ConfigDict,
                       compute_dtype: str) -> ml_collections.ConfigDict:
    """A copy of `model_config` computing in `compute_dtype` (checked: BenchmarkError)."""
    model_config = models.as_model_config(model_config).copy_and_resolve_references()
    model_config.compute_dtype = compute_dtype
    try:
        models.compute_dtype(model_config)
    except models.ModelConfigError as error:
        raise BenchmarkError(str(error)) from error
    return model_config


def benchmark_config(
    config: ml_collections.ConfigDict,
    *,
    size: int | None = None,
    batch_per_device: int | None = None,
    width_multiplier: float | None = None,
    data_dir: str | None = None,
    worker_count: int | None = None,
    compute_dtype: str | None = None,
) -> ml_collections.ConfigDict:
    """A copy of a training config with the benchmark's settings.

    size: the crop side; the local window and the resize range scale with it.
    batch_per_device: global batch = this times the number of devices.
    width_multiplier: the networks' channel multiplier.
    data_dir: read the offline `sample_photos` dataset from (or build it in) this folder.
    worker_count: grain worker processes of the input pipeline.
    compute_dtype: the networks' compute dtype, one of `models.COMPUTE_DTYPES`
      (auto = bfloat16 on GPU/TPU, float32 on CPU); parameters stay float32.
    """
    config = config.copy_and_resolve_references()
    if size is not None:
        if size < 1:
            raise BenchmarkError(f"size must be a positive number of pixels, got {size}.")
        scale = size / config.data.crop_size
        config.data.crop_size = size
        if "local_size" in config.mask:
            config.mask.local_size = max(1, round(config.mask.local_size * scale))
        if config.data.get("resize_range"):
            config.data.resize_range = tuple(round(s * scale) for s in config.data.resize_range)
    if batch_per_device is not None:
        if batch_per_device < 1:
            raise BenchmarkError(f"batch_per_device must be >= 1, got {batch_per_device}.")
        config.global_batch_size = batch_per_device * jax.device_count()
    if width_multiplier is not None:
        if width_multiplier <= 0:
            raise BenchmarkError(f"width_multiplier must be > 0, got {width_multiplier}.")
        config.model.width_multiplier = width_multiplier
    if data_dir is not None:
        config.data.name = "sample_photos"
        config.data.data_dir = os.fspath(data_dir)
        config.data.manual_dir = ""
        config.data.train_split = "train"
        config.data.eval_split = "eval"
    if worker_count is not None:
        config.data.worker_count = worker_count
    if compute_dtype is not None:
        config.model = with_compute_dtype(config.model, compute_dtype)
    return config
