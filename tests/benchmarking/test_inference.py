"""Tests for inpaint_jax.benchmarking.inference: generators to time, and the latency table."""

import importlib

import jax
import numpy as np
import pytest

from configs import context_encoder as context_encoder_config
from configs import pggan as pggan_config
from inpaint_jax import checkpointing
from inpaint_jax.benchmarking import configs, inference, measure, tables
from tests.benchmarking.conftest import WIDTH, check_report, tiny_glcic
from tests.test_two_stage import write_generator_workdir

pytestmark = pytest.mark.fast_compile  # tiny networks: compiling dominates


def test_random_generator_calibration_keeps_activations_alive(calibrated_generator):
    assert calibrated_generator.name == "glcic"
    stats = calibrated_generator.variables["batch_stats"]["layer16"]["norm"]
    assert not np.allclose(stats["var"], 1.0)
    image, mask = inference.inference_inputs(32, 32, seed=5)
    variables = calibrated_generator.variables
    assert calibrated_generator.module.apply(variables, image, mask, train=False).std() > 0.01


def test_inference_inputs_have_a_centred_hole_of_half_the_sides():
    image, mask = inference.inference_inputs(8, 12, seed=1)
    assert image.shape == (1, 8, 12, 3) and image.dtype == np.float32
    np.testing.assert_array_equal(np.argwhere(mask[0, ..., 0])[[0, -1]], [[2, 3], [5, 8]])
    np.testing.assert_array_equal(inference.inference_inputs(8, 12, seed=1)[0], image)


def test_benchmark_inference_times_each_model_and_size_against_torch(
    glcic_generator, reference, tmp_path
):
    torch = pytest.importorskip("torch")
    pggan = inference.random_generator(
        configs.benchmark_config(pggan_config.get_config("runlocal"), width_multiplier=WIDTH).model
    )
    started = measure.environment()
    rows = inference.benchmark_inference(
        [glcic_generator, pggan], [32, 64], runs=2, warmup=1, reference=reference
    )
    assert [(r["model"], r["height"], r["pixels"]) for r in rows] == [
        ("glcic", 32, 1024),
        ("glcic", 64, 4096),
        ("pggan", 32, 1024),
        ("pggan", 64, 4096),
    ]
    for row in rows:
        assert row["dtype"] == "float32"  # "auto" on a CPU
        assert len(row["seconds"]["all"]) == 2
        assert row["compile_seconds"] > 0
        assert row["memory"]["xla_output_bytes"] == row["pixels"] * 3 * 4
    for row in rows[:2]:
        assert row["reference"]["max_abs_diff"] < 1e-4
        assert row["reference"]["name"] == f"torch {torch.__version__}"
        assert row["jax_over_reference"] == pytest.approx(
            row["seconds"]["median"] / row["reference"]["seconds"]["median"]
        )
    assert rows[2]["reference"] is None  # no PGGAN in Torch

    report = tables.build_report("inference", {"runs": 2}, rows, started)
    loaded = check_report(report, tmp_path, "inference")
    table = tables.format_inference_table(loaded)
    assert "32 x 32" in table and "4,096" in table and "JAX/torch" in table and "float32" in table
    assert tables.PAPER_REFERENCE in table


@pytest.mark.parametrize("recipe", ["dfnet", "two_stage"])
def test_benchmark_inference_times_dfnet_and_the_refinement_network(recipe):
    config = importlib.import_module(f"configs.{recipe}").get_config("runlocal")
    config.model.encoder_kernels = (3,) * 7  # 128 px stride: more than the 64 px calibration
    model_config = configs.benchmark_config(config, width_multiplier=WIDTH).model
    generator = inference.random_generator(model_config)
    family = "dfnet" if recipe == "dfnet" else "refinement"
    assert generator.name == family
    (row,) = inference.benchmark_inference([generator], [128], runs=1, warmup=1)
    assert (row["model"], row["pixels"]) == (family, 128 * 128)
    assert row["memory"]["xla_output_bytes"] == 128 * 128 * 3 * 4
    inputs = inference.model_inputs(model_config, 64, 64)
    assert [x.shape for x in inputs] == (
        [(1, 64, 64, 20)] if recipe == "two_stage" else [(1, 64, 64, 3), (1, 64, 64, 1)])


def test_benchmark_inference_rejects_bad_sizes_and_counts(glcic_generator):
    with pytest.raises(measure.BenchmarkError, match="sizes must be positive"):
        inference.benchmark_inference([glcic_generator], [0])
    with pytest.raises(measure.BenchmarkError, match="sizes must be positive"):
        inference.benchmark_inference([glcic_generator], [])
    with pytest.raises(measure.BenchmarkError, match="runs must be an integer >= 1"):
        inference.benchmark_inference([glcic_generator], [16], runs=0)


def test_fixed_size_generators_have_no_benchmark_per_size(tmp_path):
    config = configs.benchmark_config(context_encoder_config.get_config(),
                                      width_multiplier=WIDTH)
    with pytest.raises(measure.BenchmarkError,
                       match="context_encoder generator is fixed-size .128 px in.: it has no "
                             "inference benchmark per image size"):
        inference.random_generator(config.model)
    workdir = write_generator_workdir(tmp_path / "ce", config.model, 1)
    with pytest.raises(measure.BenchmarkError, match="fixed-size"):
        inference.checkpoint_generator(workdir)


def test_checkpoint_generator_loads_the_trained_weights(glcic_workdir):
    generator = inference.checkpoint_generator(glcic_workdir)
    assert generator.name == "glcic"
    assert generator.model_config.width_multiplier == 0.125
    assert set(generator.variables) == {"params", "batch_stats"}
    # Initial BatchNorm variances are 1; training moved them.
    assert not np.allclose(generator.variables["batch_stats"]["layer01"]["norm"]["var"], 1.0)
    rows = inference.benchmark_inference([generator], [16], runs=1, warmup=1)
    assert rows[0]["model"] == "glcic"


def test_checkpoint_generator_can_compute_in_another_dtype(glcic_workdir):
    generator = inference.checkpoint_generator(glcic_workdir, compute_dtype="bfloat16")
    assert generator.module.dtype == jax.numpy.bfloat16
    assert generator.model_config.compute_dtype == "bfloat16"
    (row,) = inference.benchmark_inference([generator], [16], runs=1, warmup=1)
    assert row["dtype"] == "bfloat16"
    assert row["memory"]["xla_output_bytes"] == 16 * 16 * 3 * 4  # float32 output
    with pytest.raises(measure.BenchmarkError, match="compute_dtype must be one of"):
        inference.checkpoint_generator(glcic_workdir, compute_dtype="half")


def test_checkpoint_generator_takes_imported_weights(tmp_path):
    model_config = tiny_glcic().model
    workdir = write_generator_workdir(tmp_path / "imported", model_config, 0, seed=2)
    generator = inference.checkpoint_generator(workdir)
    assert generator.name == "glcic" and generator.model_config.width_multiplier == WIDTH


def test_checkpoint_generator_needs_a_training_workdir(tmp_path):
    with pytest.raises(checkpointing.CheckpointNotFoundError, match="no checkpoints folder"):
        inference.checkpoint_generator(tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoints folder"):
        inference.checkpoint_generator(tmp_path / "missing")
