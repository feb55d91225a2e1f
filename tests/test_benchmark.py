"""Tests for inpaint_jax.benchmarking, launch.benchmark and the Torch reference network.

Tiny sizes and 1/8-width networks only; nothing here asserts a timing.
"""

import importlib
import json
import mmap
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import glcic as glcic_config
from configs import nps_content as nps_content_config
from configs import pggan as pggan_config
from inpaint_jax import benchmarking, nps, parallel
from inpaint_jax.trainers import common
from inpaint_jax.trainers import glcic as glcic_trainer

torch = pytest.importorskip("torch")
import torch_reference  # needs torch

REPO = Path(__file__).resolve().parent.parent
WIDTH = 0.125


def _glcic(size=32, batch_per_device=1, **overrides):
    return benchmarking.benchmark_config(
        glcic_config.get_config("runlocal"),
        size=size,
        batch_per_device=batch_per_device,
        width_multiplier=WIDTH,
        **overrides,
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A folder where sample_photos gets built once for this file."""
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def calibrated_generator():
    """A tiny GLCIC completion network as `random_generator` makes it."""
    return benchmarking.random_generator("glcic", _glcic())


@pytest.fixture(scope="module")
def glcic_generator(calibrated_generator):
    """The tiny GLCIC network with its BatchNorm scales and shifts randomly perturbed."""
    rng = np.random.default_rng(1)

    def perturb(path, leaf):
        if path[-2].key != "norm":
            return leaf
        return leaf * rng.uniform(0.5, 1.5, leaf.shape) + rng.normal(0, 0.1, leaf.shape)

    params = jax.tree_util.tree_map_with_path(perturb, calibrated_generator.variables["params"])
    variables = {**calibrated_generator.variables, "params": params}
    return benchmarking.Generator(
        "glcic", calibrated_generator.config, calibrated_generator.module, variables
    )


@pytest.fixture(scope="module")
def reference():
    return torch_reference.TorchReference()


# ------------------------------------------------------------- torch reference


def test_torch_reference_matches_the_flax_completion_network(glcic_generator, reference):
    image, mask = benchmarking.inference_inputs(32, 32, seed=3)
    ours = np.asarray(
        glcic_generator.module.apply(glcic_generator.variables, image, mask, train=False)
    )
    forward = reference.completion_forward(
        jax.device_get(glcic_generator.variables),
        width_multiplier=WIDTH,
        fill_value=tuple(glcic_generator.config.model.fill_value),
        image=image,
        mask=mask,
    )
    theirs = forward()
    assert theirs.shape == ours.shape == (1, 32, 32, 3)
    assert ours.std() > 0.02  # calibrated statistics: not the constant 0.5 of vanished activations
    np.testing.assert_allclose(theirs, ours, atol=1e-4)


def test_random_generator_calibration_keeps_activations_alive(calibrated_generator):
    stats = calibrated_generator.variables["batch_stats"]["layer16"]["norm"]
    assert not np.allclose(stats["var"], 1.0)
    image, mask = benchmarking.inference_inputs(32, 32, seed=5)
    variables = calibrated_generator.variables
    assert calibrated_generator.module.apply(variables, image, mask, train=False).std() > 0.01


def test_torch_training_step_matches_the_jax_completion_phase(reference):
    config = _glcic()
    config.global_batch_size = 2
    mesh = parallel.create_mesh(jax.devices()[:1])
    generator, discriminator = glcic_trainer.build_models(config)
    g_tx = common.create_optimizer(config.g_optimizer)
    d_tx = common.create_optimizer(config.d_optimizer)
    state = glcic_trainer.create_train_state(config, generator, discriminator, g_tx, d_tx, mesh)
    variables = jax.device_get({"params": state.g_params, "batch_stats": state.batch_stats["g"]})
    batch = benchmarking.synthetic_batch(config, mesh)
    steps = glcic_trainer.Steps(config, generator, discriminator, g_tx, d_tx)
    new_state, metrics = jax.jit(steps.reconstruction_step)(
        state, parallel.make_global_batch(batch, mesh)
    )

    train_step, network = reference.completion_train_step(
        variables,
        width_multiplier=WIDTH,
        fill_value=tuple(config.model.fill_value),
        optimizer_config=config.g_optimizer.to_dict(),
        image=batch["image"],
        mask=batch["mask"],
    )
    loss = train_step()
    assert loss == pytest.approx(float(metrics["g_reconstruction"]), rel=1e-5)
    for name, kernel in torch_reference.flax_kernels(network).items():
        before = variables["params"][name]["conv"]["kernel"]
        after = np.asarray(new_state.g_params[name]["conv"]["kernel"])
        assert not np.allclose(after, before)  # the step moved every layer,
        np.testing.assert_allclose(kernel, after, atol=2e-5, err_msg=name)  # the same way


def test_torch_reference_rejects_variables_of_another_width(glcic_generator):
    network = torch_reference.CompletionNetwork(width_multiplier=0.25)
    with pytest.raises(
        torch_reference.ReferenceMismatchError, match="layer01/conv/kernel.*width_multiplier"
    ):
        torch_reference.load_flax_variables(network, jax.device_get(glcic_generator.variables))


def test_torch_reference_mirrors_adadelta_only():
    network = torch_reference.CompletionNetwork(width_multiplier=WIDTH)
    with pytest.raises(ValueError, match="Adadelta only, got optimizer 'adam'"):
        torch_reference.adadelta(
            network, {"name": "adam", "learning_rate": 1e-3, "b1": 0.9, "eps": 1e-8}
        )


# ------------------------------------------------------------ timing, memory


def test_time_round_robin_alternates_functions_after_warmup():
    calls = []
    timings = benchmarking.time_round_robin(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, runs=3, warmup=2
    )
    assert calls == ["a", "b"] * 5
    assert set(timings) == {"a", "b"}
    assert all(len(t.seconds) == 3 for t in timings.values())


def test_timing_summary():
    timing = benchmarking.Timing((3.0, 1.0, 2.0, 10.0))
    assert timing.median == 2.5
    assert timing.mean == 4.0
    assert timing.to_json() == {
        "median": 2.5,
        "mean": 4.0,
        "min": 1.0,
        "all": [3.0, 1.0, 2.0, 10.0],
    }


def test_compile_timed_returns_a_working_executable():
    compiled, seconds = benchmarking.compile_timed(jax.jit(lambda x: 2 * x), np.arange(3.0))
    np.testing.assert_array_equal(compiled(np.arange(3.0)), [0.0, 2.0, 4.0])
    assert seconds > 0
    assert benchmarking.compiled_memory(compiled)["xla_output_bytes"] == 3 * 4


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux procfs")
def test_peak_memory_sees_a_temporary_allocation():
    with benchmarking.peak_memory() as small:
        np.ones(1000)
    with benchmarking.peak_memory() as large:
        # 50 MiB of fresh pages, written, then unmapped. (np.ones could reuse heap
        # memory a previous test freed, which is already resident.)
        with mmap.mmap(-1, 50 * 2**20) as pages:
            pages.write(b"\x01" * len(pages))
    assert large["host_peak_increase_bytes"] >= 45 * 2**20
    assert small["host_peak_increase_bytes"] < 45 * 2**20
    assert large["host_peak_rss_bytes"] >= large["host_peak_increase_bytes"]
    assert large["device_peak_bytes"] is None  # the CPU reports no device memory


@pytest.mark.parametrize(
    "runs, warmup, message",
    [(0, 1, "runs must be an integer >= 1"), (2, 0, "warmup must be an integer >= 1")],
)
def test_check_counts_rejects_bad_counts(runs, warmup, message):
    with pytest.raises(benchmarking.BenchmarkError, match=message):
        benchmarking.check_counts(runs=runs, warmup=warmup)


def test_environment_names_the_machine():
    env = benchmarking.environment()
    assert env["platform"] == "cpu"
    assert env["device_count"] == jax.device_count()
    assert env["cpu_count"] == os.cpu_count()
    assert env["jax_version"] == jax.__version__
    assert len(env["load_average"]) == 3


# ------------------------------------------------------------------- configs


def test_benchmark_config_scales_the_geometry_with_the_size(tmp_path):
    config = benchmarking.benchmark_config(
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
    assert config.compute_dtype == "bfloat16"
    assert glcic_config.get_config().data.crop_size == 256  # a copy; the original is untouched


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
    with pytest.raises(benchmarking.BenchmarkError, match=message):
        benchmarking.benchmark_config(glcic_config.get_config(), **kwargs)


def test_unknown_trainer_is_a_clear_error():
    config = _glcic()
    config.trainer = "context_encoder"
    with pytest.raises(
        benchmarking.BenchmarkError,
        match="'context_encoder' has no inference benchmark .fixed-size networks are not timed "
        "per size.; choose one of glcic, pggan, dfnet, two_stage",
    ):
        benchmarking.random_generator("ce", config)
    with pytest.raises(benchmarking.BenchmarkError,
                       match="'context_encoder' has no training benchmark; choose one of glcic"):
        benchmarking.TrainCase("ce", config).phases_to_time()


# ---------------------------------------------------------------- inference


def _check_report(report, tmp_path, name):
    path = benchmarking.write_report(report, tmp_path / f"{name}.json")
    loaded = json.loads(path.read_text())
    assert loaded == json.loads(json.dumps(report))
    assert loaded["benchmark"] == name
    assert {"device_kind", "jax_version", "cpu_count", "load_average"} <= set(loaded["environment"])
    assert len(loaded["load_average_after"]) == 3
    return loaded


def test_benchmark_inference_times_each_model_and_size_against_torch(
    glcic_generator, reference, tmp_path
):
    pggan = benchmarking.random_generator(
        "pggan",
        benchmarking.benchmark_config(pggan_config.get_config("runlocal"), width_multiplier=WIDTH),
    )
    started = benchmarking.environment()
    rows = benchmarking.benchmark_inference(
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

    report = benchmarking.build_report("inference", {"runs": 2}, rows, started)
    loaded = _check_report(report, tmp_path, "inference")
    table = benchmarking.format_inference_table(loaded)
    assert "32 x 32" in table and "4,096" in table and "JAX/torch" in table and "float32" in table
    assert benchmarking.PAPER_REFERENCE in table


@pytest.mark.parametrize("model", ["dfnet", "two_stage"])
def test_benchmark_inference_times_dfnet_and_the_refinement_network(model):
    config = importlib.import_module(f"configs.{model}").get_config("runlocal")
    config.model.encoder_kernels = (3,) * 7  # 128 px stride: more than the 64 px calibration
    generator = benchmarking.random_generator(
        model, benchmarking.benchmark_config(config, width_multiplier=WIDTH))
    (row,) = benchmarking.benchmark_inference([generator], [128], runs=1, warmup=1)
    assert (row["model"], row["pixels"]) == (model, 128 * 128)
    assert row["memory"]["xla_output_bytes"] == 128 * 128 * 3 * 4
    inputs = benchmarking.model_inputs(config, 64, 64)
    assert [x.shape[-1] for x in inputs] == ([20] if model == "two_stage" else [3, 1])


def test_benchmark_inference_rejects_bad_sizes(glcic_generator):
    with pytest.raises(benchmarking.BenchmarkError, match="sizes must be positive"):
        benchmarking.benchmark_inference([glcic_generator], [0])


def test_checkpoint_generator_loads_the_trained_weights(glcic_workdir):
    generator = benchmarking.checkpoint_generator(glcic_workdir)
    assert generator.name == "glcic"
    assert generator.config.model.width_multiplier == 0.125
    assert set(generator.variables) == {"params", "batch_stats"}
    # Initial BatchNorm variances are 1; training moved them.
    assert not np.allclose(generator.variables["batch_stats"]["layer01"]["norm"]["var"], 1.0)
    rows = benchmarking.benchmark_inference([generator], [16], runs=1, warmup=1)
    assert rows[0]["model"] == "glcic"


def test_checkpoint_generator_can_compute_in_another_dtype(glcic_workdir):
    generator = benchmarking.checkpoint_generator(glcic_workdir, compute_dtype="bfloat16")
    assert generator.module.dtype == jax.numpy.bfloat16
    (row,) = benchmarking.benchmark_inference([generator], [16], runs=1, warmup=1)
    assert row["dtype"] == "bfloat16"
    assert row["memory"]["xla_output_bytes"] == 16 * 16 * 3 * 4  # float32 output


def test_checkpoint_generator_needs_a_training_workdir(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoints folder"):
        benchmarking.checkpoint_generator(tmp_path)


# -------------------------------------------------------------------- train


def test_benchmark_train_times_phases_with_and_without_data(data_dir, reference, tmp_path):
    case = benchmarking.TrainCase("tiny", _glcic(data_dir=data_dir), phases=("completion",))
    started = benchmarking.environment()
    rows = benchmarking.benchmark_train([case], steps=2, warmup=1, reference=reference)
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

    report = benchmarking.build_report("train", {"steps": 2}, rows, started)
    table = benchmarking.format_train_table(_check_report(report, tmp_path, "train"))
    assert "completion" in table and "pipeline" in table and "torch images/s" in table


def test_benchmark_train_rejects_a_phase_the_trainer_lacks():
    case = benchmarking.TrainCase("tiny", _glcic(), phases=("warmup",))
    with pytest.raises(
        benchmarking.BenchmarkError,
        match=r"tiny: cannot time phases \['warmup'\]; the glcic trainer has completion, "
        r"discriminator, joint",
    ):
        benchmarking.benchmark_train([case])


def test_benchmark_train_rejects_unknown_data_modes():
    case = benchmarking.TrainCase("tiny", _glcic())
    with pytest.raises(benchmarking.BenchmarkError, match="data_modes must be a non-empty subset"):
        benchmarking.benchmark_train([case], data_modes=("disk",))


# --------------------------------------------------------------------- data


def test_benchmark_data_measures_the_pipeline(data_dir, tmp_path):
    config = _glcic(size=32, data_dir=data_dir)
    started = benchmarking.environment()
    rows = benchmarking.benchmark_data(config, worker_counts=[0], batches=3, warmup=1)
    (row,) = rows
    assert row["dataset"] == "sample_photos"
    assert (row["worker_count"], row["crop_size"], row["resize_range"]) == (0, 32, [32, 48])
    assert row["batch_per_process"] == jax.device_count()
    assert row["images_per_second"] == pytest.approx(
        row["batch_per_process"] / row["batch_seconds"]["mean"]
    )
    report = benchmarking.build_report("data", {}, rows, started)
    assert "workers" in benchmarking.format_data_table(_check_report(report, tmp_path, "data"))


def test_benchmark_data_rejects_negative_worker_counts():
    with pytest.raises(benchmarking.BenchmarkError, match="worker_counts must be integers >= 0"):
        benchmarking.benchmark_data(_glcic(), worker_counts=[-1])


# ---------------------------------------------------------------------- nps


@pytest.fixture(scope="module")
def tiny_nps():
    """NPS over a 1/8-width random NPS content network with a random VGG-19: 2 levels, 2 steps."""
    config = benchmarking.benchmark_config(
        nps_content_config.get_config(), width_multiplier=WIDTH
    )
    content = benchmarking.random_content_model(config)
    settings = nps.NPSSettings(num_scales=2, iterations=2, min_size=32)
    return nps.NeuralPatchSynthesis(content, *benchmarking.random_vgg19(), settings)


def test_nps_inputs_are_the_papers_centred_half_side_hole_on_a_photo():
    image, mask = benchmarking.nps_inputs(64)
    assert image.shape == (64, 64, 3) and image.dtype == np.float32 and image.std() > 0.1
    assert mask.shape == (64, 64, 1)
    np.testing.assert_array_equal(np.argwhere(mask[..., 0])[[0, -1]], [[16, 16], [47, 47]])


def test_random_content_model_is_a_fixed_size_nps_content_network(tiny_nps):
    content = tiny_nps.content_model
    assert (content.name, content.input_size) == ("context_encoder", 128)
    assert content.config.model.bottleneck == "dense"
    image, mask = benchmarking.nps_inputs(96)
    assert content(image, mask).shape == (96, 96, 3)


def test_benchmark_nps_times_each_level_and_the_first_call_apart(tiny_nps, tmp_path):
    started = benchmarking.environment()
    (row,) = benchmarking.benchmark_nps(tiny_nps, 64, runs=2, warmup=1)
    assert (row["image_size"], row["hole_size"], row["window_side"]) == (64, 32, 64)
    assert [(level["size"], level["iterations"]) for level in row["levels"]] == [(32, 2), (64, 2)]
    for part in [row, row["content"], *row["levels"]]:
        assert len(part["seconds"]["all"]) == 2 and part["first_call_seconds"] > 0
    assert 0 < row["compile_seconds"] < row["first_call_seconds"]
    assert row["first_call_seconds"] >= sum(level["first_call_seconds"] for level in row["levels"])
    assert all(np.isfinite(level["energy"]["total"]) for level in row["levels"])
    assert row["levels"][-1]["texture_layers"] == ["relu3_1"]  # relu4_1 is too coarse at 64 px
    assert row["settings"]["iterations"] == 2 and "host_peak_rss_bytes" in row["memory"]

    report = benchmarking.build_report("nps", {"runs": 2}, [row], started)
    table = benchmarking.format_nps_table(_check_report(report, tmp_path, "nps"))
    assert "64 x 64 image, 32 x 32 hole, median of 2 runs" in table
    assert "level 2" in table and benchmarking.NPS_REFERENCE in table
    assert f"of which {row['compile_seconds']:.1f} s tracing, lowering and compiling" in table


def test_compile_time_counts_tracing_and_compiling_once_and_nothing_else():
    function = jax.jit(lambda x: jax.jit(jnp.sin)(x) * 2)  # a trace nested in a trace
    with benchmarking.compile_time() as first:
        function(jnp.ones(3)).block_until_ready()
    with benchmarking.compile_time() as second:
        function(jnp.ones(3)).block_until_ready()  # cached: nothing compiles
    assert first["compile_seconds"] > 0 and second["compile_seconds"] is None
    assert benchmarking._covered_seconds([(0, 2), (1, 3), (5, 6)]) == 4
    assert benchmarking._covered_seconds([(0, 5), (1, 2), (2, 3)]) == 5


def test_benchmark_nps_rejects_images_below_the_working_size(tiny_nps):
    with pytest.raises(benchmarking.BenchmarkError, match=r"min_size \(32\), got 16"):
        benchmarking.benchmark_nps(tiny_nps, 16)


# ---------------------------------------------------------------------- CLI


def _run_cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO), "XLA_FLAGS": ""}
    return subprocess.run(
        [sys.executable, "-m", "launch.benchmark", *args],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _cli_report(subcommand, *args, cwd):
    """Runs a subcommand once (--runs=1 --warmup=1) in `cwd`; returns (its stdout, its JSON)."""
    result = _run_cli(subcommand, *args, "--runs=1", "--warmup=1", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, json.loads((cwd / f"benchmark_{subcommand}.json").read_text())


def test_cli_inference_writes_json_and_prints_the_table(tmp_path):
    stdout, report = _cli_report(
        "inference",
        "--models=glcic",
        "--sizes=32",
        f"--width_multiplier={WIDTH}",
        "--compare-torch",
        cwd=tmp_path,
    )
    assert "32 x 32" in stdout and "JAX/torch" in stdout
    assert report["settings"]["compare_torch"] is True
    assert report["environment"]["device_count"] == 1
    (row,) = report["results"]
    assert row["reference"]["max_abs_diff"] < 1e-4


def test_cli_compute_dtype_sets_the_networks_arithmetic(tmp_path):
    stdout, report = _cli_report(
        "inference",
        "--models=glcic",
        "--sizes=32",
        f"--width_multiplier={WIDTH}",
        "--compute_dtype=bfloat16",
        cwd=tmp_path,
    )
    assert report["settings"]["compute_dtype"] == "bfloat16"
    (row,) = report["results"]
    assert row["dtype"] == "bfloat16" and "bfloat16" in stdout
    result = _run_cli("inference", "--compute_dtype=half", cwd=tmp_path)
    assert result.returncode != 0 and "--compute_dtype" in result.stderr


def test_cli_explains_a_missing_subcommand(tmp_path):
    result = _run_cli("profile", cwd=tmp_path)
    assert result.returncode != 0
    assert "give one subcommand: inference, train, data" in result.stderr


def test_cli_nps_writes_json_and_prints_the_table(tmp_path):
    stdout, report = _cli_report(
        "nps",
        "--nps_size=64",
        "--nps_scales=1",
        "--nps_iterations=1",
        f"--width_multiplier={WIDTH}",
        cwd=tmp_path,
    )
    assert "64 x 64 image, 32 x 32 hole" in stdout and "level 1" in stdout
    assert report["settings"]["vgg"] is None and report["settings"]["width_multiplier"] == WIDTH
    (row,) = report["results"]
    assert [level["iterations"] for level in row["levels"]] == [1]


def test_cli_nps_explains_missing_vgg_weights(tmp_path):
    result = _run_cli("nps", f"--vgg={tmp_path}/vgg19.npz", cwd=tmp_path)
    assert result.returncode != 0
    assert "No VGG-19 weights: --vgg=" in result.stderr and "vgg19-dcbb9e9d.pth" in result.stderr
    assert not (tmp_path / "benchmark_nps.json").exists()
