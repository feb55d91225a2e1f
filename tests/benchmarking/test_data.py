"""Tests for inpaint_jax.benchmarking.data: input-pipeline throughput."""

import jax
import pytest

from inpaint_jax.benchmarking import data, measure, tables
from tests.benchmarking.conftest import check_report, tiny_glcic


def test_benchmark_data_measures_the_pipeline(data_dir, tmp_path):
    config = tiny_glcic(size=32, data_dir=data_dir)
    started = measure.environment()
    rows = data.benchmark_data(config, worker_counts=[0], batches=3, warmup=1)
    (row,) = rows
    assert row["dataset"] == "sample_photos"
    assert (row["worker_count"], row["crop_size"], row["resize_range"]) == (0, 32, [32, 48])
    assert row["batch_per_process"] == jax.device_count()
    assert row["images_per_second"] == pytest.approx(
        row["batch_per_process"] / row["batch_seconds"]["mean"]
    )
    report = tables.build_report("data", {}, rows, started)
    assert "workers" in tables.format_data_table(check_report(report, tmp_path, "data"))


def test_benchmark_data_rejects_negative_worker_counts():
    with pytest.raises(measure.BenchmarkError, match="worker_counts must be integers >= 0"):
        data.benchmark_data(tiny_glcic(), worker_counts=[-1])
