"""Tests for inpaint_jax.benchmarking.nps: seconds per image of neural patch synthesis."""

import numpy as np
import pytest

from configs import nps_content as nps_content_config
from inpaint_jax import nps
from inpaint_jax.benchmarking import configs, measure, tables
from inpaint_jax.benchmarking import nps as nps_benchmark
from tests.benchmarking.conftest import WIDTH, check_report


@pytest.fixture(scope="module")
def tiny_nps():
    """NPS over a 1/8-width random NPS content network with a random VGG-19: 2 levels, 2 steps."""
    config = configs.benchmark_config(nps_content_config.get_config(), width_multiplier=WIDTH)
    content = nps_benchmark.random_content_model(config)
    settings = nps.NPSSettings(num_scales=2, iterations=2, min_size=32)
    return nps.NeuralPatchSynthesis(content, *nps_benchmark.random_vgg19(), settings)


def test_nps_inputs_are_the_papers_centred_half_side_hole_on_a_photo():
    image, mask = nps_benchmark.nps_inputs(64)
    assert image.shape == (64, 64, 3) and image.dtype == np.float32 and image.std() > 0.1
    assert mask.shape == (64, 64, 1)
    np.testing.assert_array_equal(np.argwhere(mask[..., 0])[[0, -1]], [[16, 16], [47, 47]])


def test_random_content_model_is_a_fixed_size_nps_content_network(tiny_nps):
    content = tiny_nps.content_model
    assert (content.name, content.input_size) == ("context_encoder", 128)
    assert content.model_config.bottleneck == "dense"
    image, mask = nps_benchmark.nps_inputs(96)
    assert content(image, mask).shape == (96, 96, 3)


def test_benchmark_nps_times_each_level_and_the_first_call_apart(tiny_nps, tmp_path):
    started = measure.environment()
    (row,) = nps_benchmark.benchmark_nps(tiny_nps, 64, runs=2, warmup=1)
    assert (row["image_size"], row["hole_size"], row["window_side"]) == (64, 32, 64)
    assert [(level["size"], level["iterations"]) for level in row["levels"]] == [(32, 2), (64, 2)]
    for part in [row, row["content"], *row["levels"]]:
        assert len(part["seconds"]["all"]) == 2 and part["first_call_seconds"] > 0
    assert 0 < row["compile_seconds"] < row["first_call_seconds"]
    assert row["first_call_seconds"] >= sum(level["first_call_seconds"] for level in row["levels"])
    assert all(np.isfinite(level["energy"]["total"]) for level in row["levels"])
    assert row["levels"][-1]["texture_layers"] == ["relu3_1"]  # relu4_1 is too coarse at 64 px
    assert row["settings"]["iterations"] == 2 and "host_peak_rss_bytes" in row["memory"]

    report = tables.build_report("nps", {"runs": 2}, [row], started)
    table = tables.format_nps_table(check_report(report, tmp_path, "nps"))
    assert "64 x 64 image, 32 x 32 hole, median of 2 runs" in table
    assert "level 2" in table and tables.NPS_REFERENCE in table
    assert f"of which {row['compile_seconds']:.1f} s tracing, lowering and compiling" in table


def test_benchmark_nps_rejects_images_below_the_working_size(tiny_nps):
    with pytest.raises(measure.BenchmarkError, match=r"min_size \(32\), got 16"):
        nps_benchmark.benchmark_nps(tiny_nps, 16)
