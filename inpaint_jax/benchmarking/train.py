"""Training images/second per device of each phase step of a recipe."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from inpaint_jax import models, parallel
from inpaint_jax.benchmarking import measure
from inpaint_jax.benchmarking.measure import BenchmarkError, Timing
from inpaint_jax.benchmarking.reference import ReferenceFramework
from inpaint_jax.data import datasets

logger = logging.getLogger(__name__)

DATA_MODES = ("synthetic", "pipeline")


@dataclasses.dataclass(frozen=True)
class TrainCase:
    """One configuration to time: a label for the tables, its training config, how to build it.

    `build(config, mesh)` is the recipe's (`trainers.<recipe>.build`): it
    gives the initial state, the phase steps and the schedule. `phases`
    defaults to every phase of the schedule.
    """

    label: str
    config: ml_collections.ConfigDict
    build: Callable
    phases: tuple[str, ...] | None = None

    def phases_to_time(self, schedule) -> tuple[str, ...]:
        """The phases to time, checked against those of the recipe's `schedule`."""
        available = schedule.phases
        if self.phases is None:
            return available
        unknown = [phase for phase in self.phases if phase not in available]
        if unknown or not self.phases:
            raise BenchmarkError(
                f"{self.label}: cannot time phases {list(self.phases)}; the "
                f"{self.config.trainer} recipe has {', '.join(available)}."
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
    mask_fn = datasets.mask_fn(config)
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
        "dtype": models.compute_dtype(config.model).name,
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
    loss, memory = measure.probe(train_step)
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
    (`config.data`, data included). With `reference`, the phase it
    implements (GLCIC's completion phase) also runs in that framework on the
    synthetic batch, from the same weights, timed round-robin with JAX.
    """
    measure.check_counts(runs=steps, warmup=warmup)
    unknown = set(data_modes) - set(DATA_MODES)
    if unknown or not data_modes:
        raise BenchmarkError(
            f"data_modes must be a non-empty subset of {DATA_MODES}, got {tuple(data_modes)}."
        )
    rows = []
    for case in cases:
        rows += _benchmark_case(case, steps, warmup, data_modes, reference)
    return rows


def _benchmark_case(case, steps, warmup, data_modes, reference) -> list[dict[str, Any]]:
    """`benchmark_train` for one case: compile each phase once, then time it per data mode."""
    config = case.config
    mesh = parallel.create_mesh()
    training = case.build(config, mesh)
    phases = case.phases_to_time(training.schedule)
    state = training.state
    host_batch = synthetic_batch(config, mesh)
    batch = parallel.make_global_batch(host_batch, mesh)
    replicated = parallel.replicated_sharding(mesh)

    rows = []
    for phase in phases:
        step = jax.jit(
            training.steps[phase],
            out_shardings=(replicated, replicated),
            donate_argnums=0,
        )
        compiled, compile_seconds = measure.compile_timed(step, state, batch)
        for mode in data_modes:
            compare = (
                reference is not None
                and mode == "synthetic"
                and phase == reference.phase
                and config.model.family in reference.families
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
                metrics, memory = measure.probe(runner)
                timings = measure.time_round_robin(functions, runs=steps, warmup=warmup - 1)
                state = runner.state
            row = _train_row(case, phase, mode, timings["jax"])
            row.update(
                compile_seconds=compile_seconds,
                memory={**memory, **measure.compiled_memory(compiled)},
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
    iterator = datasets.create(config, mesh).train
    try:
        yield lambda: parallel.make_global_batch(next(iterator), mesh)
    finally:
        iterator.close()
