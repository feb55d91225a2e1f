"""Tests for inpaint_jax.benchmarking.measure: timing, memory and compile-time probes."""

import mmap
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inpaint_jax.benchmarking import measure


def test_time_round_robin_alternates_functions_after_warmup():
    calls = []
    timings = measure.time_round_robin(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, runs=3, warmup=2
    )
    assert calls == ["a", "b"] * 5
    assert set(timings) == {"a", "b"}
    assert all(len(t.seconds) == 3 for t in timings.values())


def test_timing_summary():
    timing = measure.Timing((3.0, 1.0, 2.0, 10.0))
    assert timing.median == 2.5
    assert timing.mean == 4.0
    assert timing.to_json() == {"median": 2.5, "mean": 4.0, "min": 1.0, "all": [3.0, 1.0, 2.0, 10.0]}


def test_compile_timed_returns_a_working_executable():
    compiled, seconds = measure.compile_timed(jax.jit(lambda x: 2 * x), np.arange(3.0))
    np.testing.assert_array_equal(compiled(np.arange(3.0)), [0.0, 2.0, 4.0])
    assert seconds > 0
    assert measure.compiled_memory(compiled)["xla_output_bytes"] == 3 * 4


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux procfs")
def test_peak_memory_sees_a_temporary_allocation():
    with measure.peak_memory() as small:
        np.ones(1000)
    with measure.peak_memory() as large:
        # 50 MiB of fresh pages, written, then unmapped. (np.ones could reuse heap
        # memory a previous test freed, which is already resident.)
        with mmap.mmap(-1, 50 * 2**20) as pages:
            pages.write(b"\x01" * len(pages))
    assert large["host_peak_increase_bytes"] >= 45 * 2**20
    assert small["host_peak_increase_bytes"] < 45 * 2**20
    assert large["host_peak_rss_bytes"] >= large["host_peak_increase_bytes"]
    assert large["device_peak_bytes"] is None  # the CPU reports no device memory


def test_probe_returns_the_result_and_the_memory_it_took():
    result, memory = measure.probe(lambda: 41 + 1)
    assert result == 42
    assert {"host_peak_rss_bytes", "host_peak_increase_bytes", "device_peak_bytes"} <= set(memory)


@pytest.mark.parametrize(
    "runs, warmup, message",
    [(0, 1, "runs must be an integer >= 1"), (2, 0, "warmup must be an integer >= 1")],
)
def test_check_counts_rejects_bad_counts(runs, warmup, message):
    with pytest.raises(measure.BenchmarkError, match=message):
        measure.check_counts(runs=runs, warmup=warmup)


def test_environment_names_the_machine():
    env = measure.environment()
    assert env["platform"] == "cpu"
    assert env["device_count"] == jax.device_count()
    assert env["cpu_count"] == os.cpu_count()
    assert env["jax_version"] == jax.__version__
    assert len(env["load_average"]) == 3


def test_compile_time_counts_tracing_and_compiling_once_and_nothing_else():
    function = jax.jit(lambda x: jax.jit(jnp.sin)(x) * 2)  # a trace nested in a trace
    with measure.compile_time() as first:
        function(jnp.ones(3)).block_until_ready()
    with measure.compile_time() as second:
        function(jnp.ones(3)).block_until_ready()  # cached: nothing compiles
    assert first["compile_seconds"] > 0 and second["compile_seconds"] is None
    assert measure._covered_seconds([(0, 2), (1, 3), (5, 6)]) == 4
    assert measure._covered_seconds([(0, 5), (1, 2), (2, 3)]) == 5
