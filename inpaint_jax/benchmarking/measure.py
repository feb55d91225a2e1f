"""Measuring primitives: wall-clock timing, memory peaks, compile time, the machine."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import flax
import jax
import jaxlib


class BenchmarkError(ValueError):
    """A benchmark asked for with settings it cannot run."""


def _cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what `platform` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """What the numbers depend on: devices, versions, CPU count and current load."""
    device = jax.devices()[0]
    return {
        "time_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "platform": device.platform,
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "process_count": jax.process_count(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "load_average": list(os.getloadavg()),
        "python_version": platform.python_version(),
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "flax_version": flax.__version__,
    }


@dataclasses.dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of repeated calls of one function."""

    seconds: tuple[float, ...]

    @property
    def median(self) -> float:
        """Median seconds per call."""
        return statistics.median(self.seconds)

    @property
    def mean(self) -> float:
        """Mean seconds per call (includes occasional stalls the median hides)."""
        return statistics.fmean(self.seconds)

    def to_json(self) -> dict[str, Any]:
        """{'median', 'mean', 'min', 'all'} in seconds."""
        return {
            "median": self.median,
            "mean": self.mean,
            "min": min(self.seconds),
            "all": list(self.seconds),
        }


def check_counts(*, runs: int, warmup: int) -> None:
    """Raises BenchmarkError unless runs >= 1 and warmup >= 1 (the first call is the probe)."""
    if not isinstance(runs, int) or runs < 1:
        raise BenchmarkError(f"runs must be an integer >= 1, got {runs!r}.")
    if not isinstance(warmup, int) or warmup < 1:
        raise BenchmarkError(
            f"warmup must be an integer >= 1 (the first call measures memory and is never "
            f"timed), got {warmup!r}."
        )


def time_round_robin(
    functions: Mapping[str, Callable[[], Any]], *, runs: int, warmup: int = 0
) -> dict[str, Timing]:
    """Times each no-argument function `runs` times, one call of each in turn.

    `warmup` untimed rounds come first. Each function must return only when
    its work is done (wait for asynchronous results inside it).
    """
    for _ in range(warmup):
        for function in functions.values():
            function()
    seconds: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(runs):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            seconds[name].append(time.perf_counter() - start)
    return {name: Timing(tuple(values)) for name, values in seconds.items()}


def compile_timed(jitted, *args) -> tuple[Any, float]:
    """Lowers and compiles `jitted` for `args`; returns (executable, seconds taken)."""
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - start


def _proc_status_bytes(field: str) -> int | None:
    """A memory field (e.g. 'VmRSS') of /proc/self/status in bytes; None without procfs."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    return None


def _reset_host_peak() -> bool:
    """Resets the process's peak RSS (Linux); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _host_peak_bytes() -> int:
    """Peak RSS since the last reset (Linux), else over the process's lifetime."""
    peak = _proc_status_bytes("VmHWM")
    if peak is not None:
        return peak
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max_rss if sys.platform == "darwin" else max_rss * 1024


def device_peak_bytes(device: jax.Device | None = None) -> int | None:
    """The device's peak allocated bytes since start (GPU/TPU); None where not reported."""
    stats = (device or jax.local_devices()[0]).memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


@contextlib.contextmanager
def peak_memory() -> Iterator[dict[str, int | None]]:
    """Measures the block's memory; the yielded dict is filled when the block ends.

    Keys: host_peak_rss_bytes (process peak), host_peak_increase_bytes (that
    peak minus the RSS at the start; None where the peak cannot be reset),
    device_peak_bytes (None on CPU).
    """
    usage: dict[str, int | None] = {}
    resettable = _reset_host_peak()
    start = _proc_status_bytes("VmRSS")
    yield usage
    peak = _host_peak_bytes()
    usage["host_peak_rss_bytes"] = peak
    usage["host_peak_increase_bytes"] = peak - start if resettable and start is not None else None
    usage["device_peak_bytes"] = device_peak_bytes()


def compiled_memory(compiled) -> dict[str, int]:
    """XLA's buffer sizes for a compiled program: arguments, outputs, temporaries."""
    analysis = compiled.memory_analysis()
    if analysis is None:
        return {}
    return {
        "xla_argument_bytes": int(analysis.argument_size_in_bytes),
        "xla_output_bytes": int(analysis.output_size_in_bytes),
        "xla_temp_bytes": int(analysis.temp_size_in_bytes),
    }


def probe(function: Callable[[], Any]) -> tuple[Any, dict[str, int | None]]:
    """Calls `function` once under `peak_memory`; returns (its result, the memory used)."""
    with peak_memory() as memory:
        result = function()
    return result, memory


# JAX reports the time spans of tracing, lowering and XLA compilation under this prefix.
_COMPILE_EVENT_PREFIX = "/jax/core/compile/"


def _covered_seconds(spans: Sequence[tuple[float, float]]) -> float:
    """Seconds covered by the union of (start, end) spans: nested spans count once."""
    covered, reached = 0.0, -float("inf")
    for start, end in sorted(spans):
        covered += max(0.0, end - max(start, reached))
        reached = max(reached, end)
    return covered


@contextlib.contextmanager
def compile_time() -> Iterator[dict[str, float | None]]:
    """Measures the wall-clock seconds JAX spends tracing, lowering and compiling in the block.

    From the time spans JAX reports to `jax.monitoring` listeners; a function
    traced inside another one's trace counts once. The yielded dict's
    "compile_seconds" is set when the block ends: None if JAX reported no
    such span (none was compiled, or a JAX version names them otherwise).
    """
    spans: list[tuple[float, float]] = []

    def listen(event: str, start: float, end: float, **_) -> None:
        if event.startswith(_COMPILE_EVENT_PREFIX):
            spans.append((start, end))

    measured: dict[str, float | None] = {}
    jax.monitoring.register_event_time_span_listener(listen)
    try:
        yield measured
    finally:
        jax.monitoring.unregister_event_time_span_listener(listen)
        measured["compile_seconds"] = _covered_seconds(spans) if spans else None
