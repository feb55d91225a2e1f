"""Speed and memory measurements behind `launch.benchmark`.

Four benchmarks, each returning a JSON-ready report (`write_report`) that
a `format_*_table` function prints:

* `benchmark_inference`: completion latency of a generator per image size,
  batch 1, in the GLCIC paper's timing-table format (size, pixels, seconds).
* `benchmark_train`: training images/second per device of each phase step
  of a recipe (GLCIC: completion, discriminator, joint; PGGAN: joint), with a
  fixed synthetic batch (data excluded) and with the real input pipeline
  (data included), so a data-bound run is visible.
* `benchmark_data`: input-pipeline throughput (images/second per process).
* `benchmark_nps`: seconds per image of multi-scale neural patch synthesis
  (`nps.py`), per pyramid level and in all, with the time the first image
  spends compiling (`compile_time`).

How things are measured:
  * A jitted function is lowered and compiled explicitly, and that time is
    reported as `compile_seconds`; the timed calls run the compiled
    executable and wait for its result (`jax.block_until_ready`).
  * The first untimed call of every function is also its memory probe; the
    remaining warm-up calls follow, then the timed runs. The median is the
    headline figure (robust to other processes on a shared machine); mean,
    min and every run are kept in the JSON.
  * A reference implementation in another framework (`ReferenceFramework`,
    e.g. Torch's in tests/torch_reference.py) is timed round-robin with the
    JAX function -- one call of each in turn -- so a load spike slows both,
    and its output is compared with JAX's, so the two compute the same thing.
  * Memory: the process's peak resident set size during the probe call (on
    Linux the peak is reset first, via /proc/self/clear_refs; elsewhere it
    is the lifetime peak), the accelerator's `peak_bytes_in_use` where the
    device reports it, and XLA's own buffer sizes for the compiled program.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import importlib
import json
import logging
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import jaxlib
import ml_collections
import numpy as np
import skimage.data

from inpaint_jax import checkpointing, files, inference, nps, parallel, two_stage, windows
from inpaint_jax.models import vgg
from inpaint_jax.trainers import common, context_encoder

logger = logging.getLogger(__name__)

# The figure the GLCIC paper (Iizuka et al. 2017, Table 2) gives for its
# completion network, printed under the inference table for reference.
PAPER_REFERENCE = "GLCIC paper, Table 2: 1024 x 1024 (1,048,576 pixels) in 0.561 s on a GPU"

# Phase steps timed for each trainer, and the `GANSteps` method of each phase.
TRAIN_PHASES = {"glcic": ("completion", "discriminator", "joint"), "pggan": ("joint",)}
# Fully convolutional generators timed per image size; two_stage is the refinement network
# alone, on the 20-channel input (its coarse stage is one of the others, at 512 px).
INFERENCE_MODELS = ("glcic", "pggan", "dfnet", "two_stage")
_STEP_METHODS = {
    "completion": "reconstruction_step",
    "discriminator": "discriminator_step",
    "joint": "joint_step",
}

# Trainers whose generator the reference framework implements (GLCIC's
# completion network), and their phase the reference can train.
REFERENCE_TRAINERS = ("glcic",)
REFERENCE_PHASE = "completion"

# Above this max |JAX - reference| the two outputs are flagged as disagreeing.
AGREEMENT_TOLERANCE = 1e-3

DATA_MODES = ("synthetic", "pipeline")


class BenchmarkError(ValueError):
    """A benchmark asked for with settings it cannot run."""


class ReferenceFramework(Protocol):
    """GLCIC's completion network in another framework (tests/torch_reference.py).

    Both methods take the Flax variables ({'params', 'batch_stats'}) of a
    GLCIC CompletionNetwork, copy them into the other framework's network and
    return a no-argument function ready to be timed.
    """

    name: str  # e.g. "torch 2.13.0"
    num_threads: int  # intra-op threads it runs with

    def completion_forward(
        self, variables, *, width_multiplier, fill_value, image, mask
    ) -> Callable[[], np.ndarray]:
        """Eval-mode forward pass on NHWC numpy inputs; the function returns the NHWC output."""

    def completion_train_step(
        self, variables, *, width_multiplier, fill_value, optimizer_config, image, mask
    ) -> tuple[Callable[[], float], Any]:
        """GLCIC's completion-phase step (masked MSE, the config's Adadelta).

        Returns (step function returning the loss, the network being trained).
        """


# ----------------------------------------------------------------- environment


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


# ----------------------------------------------------------------------- timing


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


# ----------------------------------------------------------------------- memory


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


def _probe(function: Callable[[], Any]) -> tuple[Any, dict[str, int | None]]:
    """Calls `function` once under `peak_memory`; returns (its result, the memory used)."""
    with peak_memory() as memory:
        result = function()
    return result, memory


# ----------------------------------------------------------------------- models


@dataclasses.dataclass(frozen=True)
class Generator:
    """A completion network, its variables and the config that describes it."""

    name: str
    config: ml_collections.ConfigDict
    module: nn.Module
    variables: Any


def _trainer_name(config: ml_collections.ConfigDict, known: Sequence[str] = tuple(TRAIN_PHASES),
                  what: str = "training benchmark") -> str:
    """`config.trainer`, if it is one of `known` (default: the trainers with a training benchmark)."""
    if config.trainer not in known:
        raise BenchmarkError(
            f"config.trainer={config.trainer!r} has no {what}; choose one of {', '.join(known)}."
        )
    return config.trainer


def trainer_module(config: ml_collections.ConfigDict, known: Sequence[str] = tuple(TRAIN_PHASES),
                   what: str = "training benchmark"):
    """The module of inpaint_jax.trainers that `config.trainer` names, if it is one of `known`."""
    return importlib.import_module(f"inpaint_jax.trainers.{_trainer_name(config, known, what)}")


def _inference_trainer(config: ml_collections.ConfigDict):
    """The trainer module of a generator with an inference benchmark (INFERENCE_MODELS)."""
    return trainer_module(config, INFERENCE_MODELS,
                          "inference benchmark (fixed-size networks are not timed per size)")


# Passes of the BatchNorm calibration; the running statistics move 90% of the
# way to the batch's at each (momentum 0.9), so 40 leave 1.5% of the initial ones.
_CALIBRATION_PASSES = 40
# Side of the calibration image: at most the crop size, rounded up to the network's size multiple.
_CALIBRATION_SIZE = 64


def random_generator(name: str, config: ml_collections.ConfigDict, *, seed: int = 0) -> Generator:
    """The generator `config.model` describes, randomly initialised.

    Speed does not depend on the weights, but the output comparison with a
    reference framework does: with the initial BatchNorm statistics (mean 0,
    variance 1) the activations shrink layer by layer and every output is
    sigmoid(~0) = 0.5, which any two implementations agree on. So BatchNorm
    running statistics are calibrated first: train-mode passes over a random
    image until they match its activations.
    """
    module, _ = _inference_trainer(config).build_models(config)
    multiple = getattr(module, "size_multiple", 1)
    size = -(-min(config.data.crop_size, _CALIBRATION_SIZE) // multiple) * multiple
    inputs = model_inputs(config, size, size, seed)

    def calibrated_init(rng):
        variables = module.init(rng, *inputs, train=False)
        if "batch_stats" not in variables:
            return variables

        def calibrate(_, stats):
            _, updates = module.apply(
                {**variables, "batch_stats": stats},
                *inputs,
                train=True,
                mutable=["batch_stats"],
            )
            return updates["batch_stats"]

        stats = jax.lax.fori_loop(0, _CALIBRATION_PASSES, calibrate, variables["batch_stats"])
        return {**variables, "batch_stats": stats}

    variables = jax.jit(calibrated_init)(jax.random.key(seed))
    return Generator(name, config, module, variables)


def checkpoint_generator(
    workdir: str | os.PathLike, *, compute_dtype: str | None = None
) -> Generator:
    """The generator of the newest checkpoint in a training `workdir`, with its weights.

    compute_dtype: overrides the saved config's `compute_dtype` (see `benchmark_config`).
    """
    if not (Path(workdir).expanduser() / "checkpoints").is_dir():
        raise checkpointing.CheckpointNotFoundError(
            f"{workdir} has no checkpoints folder; pass the --workdir of a training run."
        )
    network = inference.load_network(workdir)
    config = benchmark_config(network.config, compute_dtype=compute_dtype)
    # Parameters are float32 whatever the compute dtype, so the saved ones fit this module.
    generator, _ = _inference_trainer(config).build_models(config)
    return Generator(config.trainer, config, generator, network.variables)


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
    compute_dtype: the networks' compute dtype, one of `common.COMPUTE_DTYPES`
      (auto = bfloat16 on GPU/TPU, float32 on CPU); parameters stay float32.
    """
    config = config.copy_and_resolve_references()
    if size is not None:
        if size < 1:
            raise BenchmarkError(f"size must be a positive number of pixels, got {size}.")
        scale = size / config.data.crop_size
        config.data.crop_size = size
        config.mask.local_size = max(1, round(config.mask.local_size * scale))
        if config.data.resize_range:
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
        config.compute_dtype = compute_dtype
        try:
            common.resolve_compute_dtype(config)
        except ValueError as error:
            raise BenchmarkError(str(error)) from error
    return config


# -------------------------------------------------------------------- inference


def inference_inputs(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random (1, H, W, 3) image and a (1, H, W, 1) mask with a centred hole of half the sides."""
    image = np.random.default_rng(seed).uniform(size=(1, height, width, 3)).astype(np.float32)
    mask = np.zeros((1, height, width, 1), np.float32)
    mask[:, height // 4 : height // 4 + height // 2, width // 4 : width // 4 + width // 2] = 1
    return image, mask


def model_inputs(config: ml_collections.ConfigDict, height: int, width: int,
                 seed: int = 0) -> tuple[np.ndarray, ...]:
    """The generator's batch-1 inputs: `inference_inputs`, or for the two-stage refinement
    network the 20-channel input of that image (hole filled grey) and mask."""
    image, mask = inference_inputs(height, width, seed)
    if config.trainer != "two_stage":
        return image, mask
    merged = np.where(mask > 0, np.float32(0.5), image)[0]
    offsets = two_stage.shift_offsets(height, width, config.shift_fraction)
    return (two_stage.refinement_input(merged, mask[0], offsets)[None],)


def _reference_inference(
    reference: ReferenceFramework, generator: Generator, image, mask, jax_output
) -> tuple[Callable[[], np.ndarray], dict[str, Any]]:
    """The reference's forward function and its probe: memory and max |JAX - reference|."""
    variables = jax.device_get(generator.variables)
    forward = reference.completion_forward(
        variables,
        width_multiplier=generator.config.model.width_multiplier,
        fill_value=tuple(generator.config.model.fill_value),
        image=image,
        mask=mask,
    )
    output, memory = _probe(forward)
    return forward, {
        "name": reference.name,
        "threads": reference.num_threads,
        "memory": memory,
        "max_abs_diff": float(np.max(np.abs(np.asarray(jax_output) - output))),
    }


def benchmark_inference(
    generators: Sequence[Generator],
    sizes: Sequence[int],
    *,
    runs: int = 5,
    warmup: int = 1,
    reference: ReferenceFramework | None = None,
) -> list[dict[str, Any]]:
    """Latency of each generator on one square image of each size (batch 1).

    With `reference`, GLCIC generators also run in that framework with the
    same weights on the same input, timed round-robin with JAX.
    """
    check_counts(runs=runs, warmup=warmup)
    if not sizes or any(not isinstance(size, int) or size < 1 for size in sizes):
        raise BenchmarkError(f"sizes must be positive numbers of pixels, got {list(sizes)}.")
    rows = []
    for generator in generators:
        predict = jax.jit(
            lambda variables, *inputs, module=generator.module: module.apply(
                variables, *inputs, train=False
            )
        )
        for size in sizes:
            inputs = model_inputs(generator.config, size, size)
            arguments = (generator.variables, *jax.device_put(inputs))
            compiled, compile_seconds = compile_timed(predict, *arguments)

            def run_jax(compiled=compiled, arguments=arguments):
                return compiled(*arguments).block_until_ready()

            jax_output, memory = _probe(run_jax)
            functions = {"jax": run_jax}
            row = {
                "model": generator.name,
                "dtype": common.resolve_compute_dtype(generator.config).name,
                "height": size,
                "width": size,
                "pixels": size * size,
                "batch": 1,
                "compile_seconds": compile_seconds,
                "memory": {**memory, **compiled_memory(compiled)},
                "reference": None,
            }
            if reference is not None and generator.config.trainer in REFERENCE_TRAINERS:
                functions["reference"], row["reference"] = _reference_inference(
                    reference, generator, *inputs, jax_output
                )
            del jax_output
            timings = time_round_robin(functions, runs=runs, warmup=warmup - 1)
            row["seconds"] = timings["jax"].to_json()
            if "reference" in timings:
                row["reference"]["seconds"] = timings["reference"].to_json()
                row["jax_over_reference"] = timings["jax"].median / timings["reference"].median
            logger.info("%s %dx%d: %.3f s", generator.name, size, size, timings["jax"].median)
            rows.append(row)
    return rows


# ------------------------------------------------------------------------ train


@dataclasses.dataclass(frozen=True)
class TrainCase:
    """One configuration to time: a label for the tables, its training config, its phases.

    `phases` defaults to every phase of the trainer in TRAIN_PHASES.
    """

    label: str
    config: ml_collections.ConfigDict
    phases: tuple[str, ...] | None = None

    def phases_to_time(self) -> tuple[str, ...]:
        """The phases to time, checked against the trainer's."""
        available = TRAIN_PHASES[_trainer_name(self.config)]
        if self.phases is None:
            return available
        unknown = [phase for phase in self.phases if phase not in available]
        if unknown or not self.phases:
            raise BenchmarkError(
                f"{self.label}: cannot time phases {list(self.phases)}; the "
                f"{self.config.trainer} trainer has {', '.join(available)}."
            )
        return tuple(self.phases)


class _StepRunner:
    """Calls a compiled phase step on successive batches, carrying (donated) state."""

    def __init__(self, compiled, state, next_batch: Callable[[], dict]):
        self.compiled = compiled
        self.state = state
        self._next_batch = next_batch

    def __call__(self) -> dict[str, jax.Array]:
        """One step; returns its metrics once the new state is computed."""
        self.state, metrics = self.compiled(self.state, self._next_batch())
        jax.block_until_ready(self.state)
        return metrics


def synthetic_batch(
    config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, seed: int = 0
) -> dict[str, np.ndarray]:
    """This process's share of a training batch on `mesh`: random images, the config's masks."""
    batch_size = parallel.per_process_batch_size(config.global_batch_size, mesh)
    size = config.data.crop_size
    rng = np.random.default_rng(seed)
    mask_fn = common.make_mask_fn(config)
    samples = [mask_fn(rng, size, size) for _ in range(batch_size)]
    return {
        "image": rng.uniform(size=(batch_size, size, size, 3)).astype(np.float32),
        "mask": np.stack([sample.mask for sample in samples]),
        "local_box": np.stack([sample.local_box for sample in samples]).astype(np.int32),
    }


def _train_row(case: TrainCase, phase: str, mode: str, timing: Timing) -> dict[str, Any]:
    """The shared fields of one train-benchmark result."""
    config = case.config
    per_device = config.global_batch_size / jax.device_count()
    return {
        "case": case.label,
        "trainer": config.trainer,
        "phase": phase,
        "data": mode,
        "dtype": common.resolve_compute_dtype(config).name,
        "size": config.data.crop_size,
        "width_multiplier": config.model.width_multiplier,
        "global_batch": config.global_batch_size,
        "batch_per_device": per_device,
        "device_count": jax.device_count(),
        "step_seconds": timing.to_json(),
        "images_per_second_per_device": per_device / timing.median,
        "images_per_second_per_device_mean": per_device / timing.mean,
    }


def _reference_train_step(
    reference: ReferenceFramework, config, state, batch: Mapping[str, np.ndarray]
) -> tuple[Callable[[], float], dict[str, Any]]:
    """The reference's completion-phase step from the same weights, and its probe."""
    variables = jax.device_get({"params": state.g_params, "batch_stats": state.batch_stats["g"]})
    train_step, _ = reference.completion_train_step(
        variables,
        width_multiplier=config.model.width_multiplier,
        fill_value=tuple(config.model.fill_value),
        optimizer_config=config.g_optimizer.to_dict(),
        image=batch["image"],
        mask=batch["mask"],
    )
    loss, memory = _probe(train_step)
    return train_step, {
        "name": reference.name,
        "threads": reference.num_threads,
        "memory": memory,
        "first_loss": loss,
    }


def benchmark_train(
    cases: Sequence[TrainCase],
    *,
    steps: int = 5,
    warmup: int = 2,
    data_modes: Sequence[str] = DATA_MODES,
    reference: ReferenceFramework | None = None,
) -> list[dict[str, Any]]:
    """Step time and images/second per device of each phase of each case.

    data_modes: "synthetic" reuses one batch already on the devices (data
    excluded); "pipeline" reads every batch from the case's input pipeline
    (`config.data`, data included). With `reference`, the GLCIC completion
    phase also runs in that framework on the synthetic batch, from the same
    weights, timed round-robin with JAX.
    """
    check_counts(runs=steps, warmup=warmup)
    unknown = set(data_modes) - set(DATA_MODES)
    if unknown or not data_modes:
        raise BenchmarkError(
            f"data_modes must be a non-empty subset of {DATA_MODES}, got {tuple(data_modes)}."
        )
    for case in cases:
        case.phases_to_time()  # fail before any compilation
    rows = []
    for case in cases:
        rows += _benchmark_case(case, steps, warmup, data_modes, reference)
    return rows


def _benchmark_case(case, steps, warmup, data_modes, reference) -> list[dict[str, Any]]:
    """`benchmark_train` for one case: compile each phase once, then time it per data mode."""
    config = case.config
    trainer = trainer_module(config)
    mesh = parallel.create_mesh()
    generator, discriminator = trainer.build_models(config)
    g_tx = common.create_optimizer(config.g_optimizer)
    d_tx = common.create_optimizer(config.d_optimizer)
    state = trainer.create_train_state(config, generator, discriminator, g_tx, d_tx, mesh)
    phase_steps = trainer.Steps(config, generator, discriminator, g_tx, d_tx)
    host_batch = synthetic_batch(config, mesh)
    batch = parallel.make_global_batch(host_batch, mesh)
    replicated = parallel.replicated_sharding(mesh)

    rows = []
    for phase in case.phases_to_time():
        step = jax.jit(
            getattr(phase_steps, _STEP_METHODS[phase]),
            out_shardings=(replicated, replicated),
            donate_argnums=0,
        )
        compiled, compile_seconds = compile_timed(step, state, batch)
        for mode in data_modes:
            compare = (
                reference is not None
                and mode == "synthetic"
                and phase == REFERENCE_PHASE
                and config.trainer in REFERENCE_TRAINERS
            )
            with _batches(mode, config, mesh, batch) as next_batch:
                functions = {}
                if compare:
                    # Before JAX's first step donates `state`: both start from the same weights.
                    functions["reference"], reference_row = _reference_train_step(
                        reference, config, state, host_batch
                    )
                runner = _StepRunner(compiled, state, next_batch)
                functions["jax"] = runner
                metrics, memory = _probe(runner)
                timings = time_round_robin(functions, runs=steps, warmup=warmup - 1)
                state = runner.state
            row = _train_row(case, phase, mode, timings["jax"])
            row.update(
                compile_seconds=compile_seconds,
                memory={**memory, **compiled_memory(compiled)},
                reference=None,
            )
            if compare:
                reference_row["step_seconds"] = timings["reference"].to_json()
                reference_row["images_per_second"] = (
                    config.global_batch_size / timings["reference"].median
                )
                row["first_loss"] = float(metrics["g_reconstruction"])
                row["reference"] = reference_row
                row["jax_over_reference"] = timings["jax"].median / timings["reference"].median
            logger.info(
                "%s %s (%s data): %.3f s/step", case.label, phase, mode, timings["jax"].median
            )
            rows.append(row)
    return rows


@contextlib.contextmanager
def _batches(mode: str, config, mesh, batch) -> Iterator[Callable[[], dict]]:
    """A next-batch function: the fixed device batch, or the input pipeline's next batch."""
    if mode == "synthetic":
        yield lambda: batch
        return
    iterator = common.create_datasets(config, mesh).train
    try:
        yield lambda: parallel.make_global_batch(next(iterator), mesh)
    finally:
        iterator.close()


# ------------------------------------------------------------------------- data


def benchmark_data(
    config: ml_collections.ConfigDict,
    *,
    worker_counts: Sequence[int] = (0,),
    batches: int = 10,
    warmup: int = 2,
) -> list[dict[str, Any]]:
    """Images/second per process of the training input pipeline `config.data` describes.

    One result per grain worker count; throughput = images / mean batch time
    (stalls included).
    """
    check_counts(runs=batches, warmup=warmup)
    if not worker_counts or any(not isinstance(w, int) or w < 0 for w in worker_counts):
        raise BenchmarkError(
            f"worker_counts must be integers >= 0 (0 = no worker processes), got "
            f"{tuple(worker_counts)}."
        )
    mesh = parallel.create_mesh()
    batch_size = parallel.per_process_batch_size(config.global_batch_size, mesh)
    rows = []
    for workers in worker_counts:
        case_config = benchmark_config(config, worker_count=workers)
        iterator = common.create_datasets(case_config, mesh).train
        try:
            next_batch = functools.partial(next, iterator)
            _, memory = _probe(next_batch)
            timing = time_round_robin({"data": next_batch}, runs=batches, warmup=warmup - 1)["data"]
        finally:
            iterator.close()
        rows.append(
            {
                "dataset": case_config.data.name,
                "worker_count": workers,
                "batch_per_process": batch_size,
                "crop_size": case_config.data.crop_size,
                "resize_range": list(case_config.data.resize_range or []),
                "mask": case_config.mask.kind,
                "batch_seconds": timing.to_json(),
                "images_per_second": batch_size / timing.mean,
                "memory": memory,
            }
        )
    return rows


# -------------------------------------------------------------------------- nps

# The NPS paper's figure, printed under the NPS table for reference.
NPS_REFERENCE = (
    "NPS paper (Yang et al. 2017), released code: about 30 s per 512 x 512 image with a "
    "256 x 256 hole on a GPU"
)


def random_vgg19(seed: int = 0) -> tuple[vgg.VGG, Any]:
    """A full-size VGG-19 with random weights and its variables (the speed is ImageNet's)."""
    module = vgg.VGG(depth=19)
    init = jax.jit(module.init, static_argnames="taps")
    deepest = vgg.relu_tap_names(19)[-1]
    return module, init(jax.random.key(seed), jnp.zeros((1, 16, 16, 3)), taps=(deepest,))


def random_content_model(
    config: ml_collections.ConfigDict, *, seed: int = 0
) -> inference.InpaintingModel:
    """The network of a Context Encoder recipe (e.g. configs/nps_content.py), randomly initialised.

    Wrapped as `inference.load_model` wraps a trained one: a fixed-size model
    that inpaints any image through a window around its holes.
    """
    generator, _ = context_encoder.build_models(config)
    size = generator.input_size
    image, mask = inference_inputs(size, size, seed)
    init = jax.jit(functools.partial(generator.init, train=False))
    variables = init(jax.random.key(seed), image, mask)
    return inference.wrap_generator(config.trainer, config, 0, generator, variables)


def nps_inputs(size: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's astronaut at size x size, float32 RGB, and a (size, size, 1) mask.

    The hole is the centred square of half the side: the paper's setting at
    512 px (a 256 x 256 hole).
    """
    photo = skimage.data.astronaut().astype(np.float32) / 255
    _, mask = inference_inputs(size, size)
    return windows.resize_image(photo, (size, size)), mask[0]


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


def _timed_synthesis(model: nps.NeuralPatchSynthesis, image, mask) -> tuple[nps.Synthesis, float]:
    """(model.synthesise(image, mask), its wall-clock seconds)."""
    start = time.perf_counter()
    synthesis = model.synthesise(image, mask)
    return synthesis, time.perf_counter() - start


def benchmark_nps(
    model: nps.NeuralPatchSynthesis, size: int, *, runs: int = 1, warmup: int = 1
) -> list[dict[str, Any]]:
    """Seconds per `size` x `size` image (`nps_inputs`) of neural patch synthesis.

    The first call compiles (one function per pyramid level, and the content
    model) and is the memory probe; its time is reported as
    `first_call_seconds` per stage and in all, and the part of it spent
    tracing, lowering and compiling as `compile_seconds` (`compile_time`).
    After `warmup - 1` more untimed calls, `runs` calls are timed; per stage
    (content prediction, each level) and in all, `seconds` summarises them.
    """
    check_counts(runs=runs, warmup=warmup)
    if not isinstance(size, int) or size < model.settings.min_size:
        raise BenchmarkError(
            f"the NPS image side must be a number of pixels >= the settings' min_size "
            f"({model.settings.min_size}), got {size!r}."
        )
    image, mask = nps_inputs(size)
    with compile_time() as compiling:
        (first, first_seconds), memory = _probe(lambda: _timed_synthesis(model, image, mask))
    for _ in range(warmup - 1):
        _timed_synthesis(model, image, mask)
    timed = [_timed_synthesis(model, image, mask) for _ in range(runs)]
    total = Timing(tuple(seconds for _, seconds in timed))
    content = Timing(tuple(synthesis.content_seconds for synthesis, _ in timed))
    levels = []
    for index, level in enumerate(timed[-1][0].levels):
        timing = Timing(tuple(synthesis.levels[index].seconds for synthesis, _ in timed))
        levels.append(
            {
                "size": level.size,
                "iterations": level.iterations,
                "texture_layers": list(level.taps),
                "seconds": timing.to_json(),
                "first_call_seconds": first.levels[index].seconds,
                "energy": level.energy._asdict(),
            }
        )
        logger.info("NPS level %d (%d px): %.2f s", index + 1, level.size, timing.median)
    logger.info("NPS %dx%d: %.2f s per image", size, size, total.median)
    return [
        {
            "image_size": size,
            "hole_size": size // 2,
            "window_side": first.window.side,
            "settings": dataclasses.asdict(model.settings),
            "content": {
                "size": model.settings.content_size,
                "seconds": content.to_json(),
                "first_call_seconds": first.content_seconds,
            },
            "levels": levels,
            "seconds": total.to_json(),
            "first_call_seconds": first_seconds,
            "compile_seconds": compiling["compile_seconds"],
            "memory": memory,
        }
    ]


# ---------------------------------------------------------------- tables, JSON


def _format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned text columns, two spaces apart."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()
        for line in lines
    )


def _mebibytes(count: int | None) -> str:
    return "-" if count is None else f"{count / 2**20:,.0f}"


def _reference_name(rows: Sequence[Mapping[str, Any]]) -> str:
    names = {row["reference"]["name"].split()[0] for row in rows if row.get("reference")}
    return names.pop() if len(names) == 1 else "reference"


def format_inference_table(report: Mapping[str, Any]) -> str:
    """The inference results as the GLCIC paper's timing table (size, pixels, seconds)."""
    rows, other = report["results"], _reference_name(report["results"])
    table = []
    for row in rows:
        reference = row.get("reference")
        agree = ""
        if reference and reference["max_abs_diff"] > AGREEMENT_TOLERANCE:
            agree = " (outputs differ!)"
        table.append(
            [
                row["model"],
                row["dtype"],
                f"{row['height']} x {row['width']}",
                f"{row['pixels']:,}",
                f"{row['seconds']['median']:.3f}",
                f"{row['compile_seconds']:.2f}",
                _mebibytes(row["memory"]["host_peak_increase_bytes"]),
                f"{reference['seconds']['median']:.3f}" if reference else "-",
                f"{row['jax_over_reference']:.2f}" if reference else "-",
                f"{reference['max_abs_diff']:.1e}{agree}" if reference else "-",
            ]
        )
    headers = [
        "model",
        "dtype",
        "image size",
        "pixels",
        "JAX (s)",
        "compile (s)",
        "peak +MiB",
        f"{other} (s)",
        f"JAX/{other}",
        "max |diff|",
    ]
    settings = report["settings"]
    return "\n".join(
        [
            (
                f"Completion latency, batch 1, median of {settings['runs']} runs "
                f"({_machine(report['environment'])})"
            ),
            _format_table(headers, table),
            PAPER_REFERENCE,
        ]
    )


def format_train_table(report: Mapping[str, Any]) -> str:
    """Images/second per device of each case, phase and data mode."""
    rows, other = report["results"], _reference_name(report["results"])
    table = []
    for row in rows:
        reference = row.get("reference")
        table.append(
            [
                row["case"],
                row["phase"],
                row["data"],
                row["dtype"],
                str(row["size"]),
                f"{row['batch_per_device']:g}",
                f"{row['step_seconds']['median']:.3f}",
                f"{row['images_per_second_per_device']:.2f}",
                f"{row['compile_seconds']:.1f}",
                f"{reference['images_per_second']:.2f}" if reference else "-",
                f"{row['jax_over_reference']:.2f}" if reference else "-",
            ]
        )
    headers = [
        "case",
        "phase",
        "data",
        "dtype",
        "size",
        "batch/device",
        "step (s)",
        "images/s/device",
        "compile (s)",
        f"{other} images/s",
        f"JAX/{other} time",
    ]
    settings = report["settings"]
    return "\n".join(
        [
            (
                f"Training step, median of {settings['steps']} steps "
                f"({_machine(report['environment'])})"
            ),
            _format_table(headers, table),
        ]
    )


def format_data_table(report: Mapping[str, Any]) -> str:
    """Input-pipeline images/second per process for each worker count."""
    table = [
        [
            str(row["worker_count"]),
            str(row["batch_per_process"]),
            str(row["crop_size"]),
            f"{row['batch_seconds']['mean']:.3f}",
            f"{row['images_per_second']:.1f}",
        ]
        for row in report["results"]
    ]
    # Batches arrive in bursts (prefetching), so throughput is the mean, not the median.
    headers = ["workers", "batch", "crop", "mean batch (s)", "images/s"]
    first = report["results"][0]
    return "\n".join(
        [
            (
                f"Input pipeline ({first['dataset']}, resize {first['resize_range']}, "
                f"{first['mask']} masks; {_machine(report['environment'])})"
            ),
            _format_table(headers, table),
        ]
    )


def format_nps_table(report: Mapping[str, Any]) -> str:
    """Seconds per stage of NPS on one image: content prediction, each level, in all."""
    row = report["results"][0]

    def line(stage, side, iterations, timings):
        return [
            stage,
            f"{side} x {side}",
            iterations,
            f"{timings['seconds']['median']:.2f}",
            f"{timings['first_call_seconds']:.2f}",
        ]

    table = [line("content", row["content"]["size"], "-", row["content"])]
    table += [
        line(f"level {index}", level["size"], str(level["iterations"]), level)
        for index, level in enumerate(row["levels"], start=1)
    ]
    table.append(line("total", row["image_size"], "", row))
    headers = ["stage", "size", "iterations", "seconds", "first image (s)"]
    hole, runs = row["hole_size"], report["settings"]["runs"]
    compiling = row["compile_seconds"]
    return "\n".join(
        [
            (
                f"Neural patch synthesis, {row['image_size']} x {row['image_size']} image, "
                f"{hole} x {hole} hole, median of {runs} runs ({_machine(report['environment'])})"
            ),
            _format_table(headers, table),
            (
                f"First image: {row['first_call_seconds']:.1f} s, of which "
                + ("- (not reported by JAX)" if compiling is None else f"{compiling:.1f} s")
                + " tracing, lowering and compiling; peak memory "
                f"+{_mebibytes(row['memory']['host_peak_increase_bytes'])} MiB host RSS."
            ),
            NPS_REFERENCE,
        ]
    )


def _machine(env: Mapping[str, Any]) -> str:
    """'2 x cpu (Intel ...), load 1.2, jax 0.10.2' for table titles."""
    device = env["device_kind"] if env["platform"] != "cpu" else env["cpu_model"]
    return (
        f"{env['device_count']} x {env['platform']} ({device}), {env['cpu_count']} cores, "
        f"load {env['load_average'][0]:.1f}, jax {env['jax_version']}"
    )


def build_report(
    benchmark: str,
    settings: Mapping[str, Any],
    results: list[dict[str, Any]],
    started: Mapping[str, Any],
) -> dict[str, Any]:
    """The JSON document of one benchmark run; `started` is `environment()` taken before it."""
    return {
        "benchmark": benchmark,
        "environment": dict(started),
        "load_average_after": list(os.getloadavg()),
        "settings": dict(settings),
        "results": results,
    }


def write_report(report: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Writes `report` as indented JSON to `path`, atomically; returns the path."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    with files.atomic_write(path) as file:
        json.dump(report, file, indent=1)
        file.write("\n")
    return path
