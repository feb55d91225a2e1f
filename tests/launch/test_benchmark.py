"""Tests for `python -m launch.benchmark`, run in-process (tests/launch/conftest.py)."""

import json

import jax
import pytest
from absl import app, flags

from tests.benchmarking.conftest import WIDTH
from tests.launch.conftest import launch_command

pytestmark = pytest.mark.fast_compile  # tiny networks: compiling dominates


@pytest.fixture(scope="module")
def benchmark():
    """The launch.benchmark module, with its flags."""
    with launch_command("benchmark") as module:
        yield module


@pytest.fixture
def run_benchmark(benchmark, parsed_flags, tmp_path, capsys):
    """run(subcommand, *arguments) -> (stdout, JSON report) of one in-process benchmark."""
    def run(subcommand, *arguments):
        output = tmp_path / f"benchmark_{subcommand}.json"
        argv = parsed_flags("benchmark", subcommand, *arguments, "--runs=1", "--warmup=1",
                            f"--output={output}")
        benchmark.main(argv)
        return capsys.readouterr().out, json.loads(output.read_text())
    return run


def test_inference_writes_json_and_prints_the_table(run_benchmark):
    pytest.importorskip("torch")
    stdout, report = run_benchmark("inference", "--models=glcic", "--sizes=32",
                                   f"--width_multiplier={WIDTH}", "--compare-torch")
    assert "32 x 32" in stdout and "JAX/torch" in stdout
    assert report["settings"]["compare_torch"] is True
    assert report["environment"]["device_count"] == jax.device_count()
    (row,) = report["results"]
    assert row["reference"]["max_abs_diff"] < 1e-4


def test_compute_dtype_sets_the_networks_arithmetic(run_benchmark, parsed_flags):
    stdout, report = run_benchmark("inference", "--models=glcic", "--sizes=32",
                                   f"--width_multiplier={WIDTH}", "--compute_dtype=bfloat16")
    assert report["settings"]["compute_dtype"] == "bfloat16"
    (row,) = report["results"]
    assert row["dtype"] == "bfloat16" and "bfloat16" in stdout
    with pytest.raises(flags.IllegalFlagValueError, match="compute_dtype"):
        parsed_flags("benchmark", "inference", "--compute_dtype=half")


def test_a_missing_subcommand_is_explained(benchmark, parsed_flags, tmp_path):
    with pytest.raises(app.UsageError, match="give one subcommand: inference, train, data, nps"):
        benchmark.main(parsed_flags("benchmark", "profile"))


def test_an_unknown_model_names_the_configs(benchmark, parsed_flags):
    with pytest.raises(app.UsageError, match="--models: no configs/glcick.py; choose from glcic"):
        benchmark.main(parsed_flags("benchmark", "inference", "--models=glcick", "--sizes=32"))


def test_nps_writes_json_and_prints_the_table(run_benchmark):
    stdout, report = run_benchmark("nps", "--nps_size=64", "--nps_scales=1",
                                   "--nps_iterations=1", f"--width_multiplier={WIDTH}")
    assert "64 x 64 image, 32 x 32 hole" in stdout and "level 1" in stdout
    assert report["settings"]["vgg"] is None and report["settings"]["width_multiplier"] == WIDTH
    (row,) = report["results"]
    assert [level["iterations"] for level in row["levels"]] == [1]


def test_nps_explains_missing_vgg_weights(benchmark, parsed_flags, tmp_path):
    output = tmp_path / "benchmark_nps.json"
    with pytest.raises(app.UsageError, match="No VGG-19 weights: --vgg=") as raised:
        benchmark.main(parsed_flags("benchmark", "nps", f"--vgg={tmp_path}/vgg19.npz",
                                    f"--output={output}"))
    assert "vgg19-dcbb9e9d.pth" in str(raised.value)
    assert not output.exists()
