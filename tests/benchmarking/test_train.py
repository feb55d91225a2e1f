"""Tests for inpaint_jax.benchmarking.train: images/second of each training phase."""

import jax
import pytest

from inpaint_jax import parallel
from inpaint_jax.benchmarking import measure, tables, train
from inpaint_jax.trainers import glcic as glcic_trainer
from tests.benchmarking.conftest import check_report, tiny_glcic

pytestmark = pytest.mark.fast_compile  # tiny networks: compiling dominates


def test_benchmark_train_times_phases_with_and_without_data(data_dir, reference, tmp_path):
    case = train.TrainCase("tiny", tiny_glcic(data_dir=data_dir), glcic_trainer.build,
                           phases=("completion",))
    started = measure.environment()
    rows = train.benchmark_train([case], steps=2, warmup=1, reference=reference)
    assert [(r["phase"], r["data"]) for r in rows] == [
        ("completion", "synthetic"),
        ("completion", "pipeline"),
    ]
    for row in rows:
        assert row["dtype"] == "float32"
        assert row["global_batch"] == jax.device_count()
        assert row["batch_per_device"] == 1
        assert row["images_per_second_per_device"] == pytest.approx(
            1 / row["step_seconds"]["median"]
        )
        assert len(row["step_seconds"]["all"]) == 2
    synthetic, pipeline = rows
    assert synthetic["reference"]["first_loss"] == pytest.approx(synthetic["first_loss"], rel=1e-4)
    assert synthetic["reference"]["images_per_second"] == pytest.approx(
        jax.device_count() / synthetic["reference"]["step_seconds"]["median"]
    )
    assert pipeline["reference"] is None

    report = tables.build_report("train", {"steps": 2}, rows, started)
    table = tables.format_train_table(check_report(report, tmp_path, "train"))
    assert "completion" in table and "pipeline" in table and "torch images/s" in table


def test_benchmark_train_rejects_a_phase_the_recipe_lacks():
    case = train.TrainCase("tiny", tiny_glcic(), glcic_trainer.build, phases=("warmup",))
    with pytest.raises(
        measure.BenchmarkError,
        match=r"tiny: cannot time phases \['warmup'\]; the glcic recipe has completion, "
        r"discriminator, joint",
    ):
        train.benchmark_train([case], data_modes=("synthetic",))


def test_benchmark_train_rejects_unknown_data_modes():
    case = train.TrainCase("tiny", tiny_glcic(), glcic_trainer.build)
    with pytest.raises(measure.BenchmarkError, match="data_modes must be a non-empty subset"):
        train.benchmark_train([case], data_modes=("disk",))


def test_synthetic_batch_has_the_configs_masks_and_windows():
    config = tiny_glcic()
    mesh = parallel.create_mesh()
    batch = train.synthetic_batch(config, mesh)
    size = config.data.crop_size
    assert batch["image"].shape == (jax.device_count(), size, size, 3)
    assert batch["mask"].shape == (jax.device_count(), size, size, 1)
    assert batch["mask"].any() and not batch["mask"].all()
    top, left, height, width = batch["local_box"][0]
    assert (height, width) == (config.mask.local_size,) * 2
