"""The training loop every recipe shares, and what it needs around it.

A recipe's `train_and_evaluate` reads as a story (see trainers/glcic.py):
prepare the workdir, make the mesh and the data, `build` the networks,
initial state and phase steps (a `Training`), then `restore_and_run`: open
the checkpointer, `restore` the latest checkpoint if there is one, and `run`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from clu import metric_writers, periodic_actions

from inpaint_jax import checkpointing, files, parallel
from inpaint_jax.data import datasets
from inpaint_jax.trainers import evaluator, phases
from inpaint_jax.trainers.state import TrainState, generator_variables


@dataclasses.dataclass(frozen=True)
class Training:
    """What a recipe trains: its initial state, a step per phase, the schedule, the predictor.

    Attributes:
      state: the freshly initialised state, replicated on the mesh.
      steps: {phase: step(state, batch) -> (state, metrics)} for every phase
        of `schedule`; `run` jits each once.
      schedule: which phase each step belongs to.
      predict: (state, batch) -> the generator's raw eval-mode prediction,
        for evaluation.
    """

    state: TrainState
    steps: Mapping[str, Callable]
    schedule: phases.Schedule
    predict: Callable


def prepare_workdir(workdir: str | os.PathLike) -> str:
    """Creates `workdir` if needed and checks that it is writable."""
    workdir = os.path.abspath(os.path.expanduser(os.fspath(workdir)))
    try:
        files.check_writable_dir(workdir)
    except OSError as e:
        raise PermissionError(
            f"Workdir {workdir!r} is not writable ({e.strerror}). Pass a --workdir "
            "you can write to."
        ) from e
    return workdir


def open_checkpointer(config: ml_collections.ConfigDict, workdir: str) -> checkpointing.Checkpointer:
    """The run's checkpointer in workdir/checkpoints (its interval and retention from `config`)."""
    return checkpointing.Checkpointer(
        f"{workdir}/checkpoints",
        max_to_keep=config.keep_checkpoints,
        save_interval_steps=config.checkpoint_every_steps,
    )


def restore(checkpointer: checkpointing.Checkpointer, state: TrainState, train_iter) -> TrainState:
    """`state` and the data position of the latest checkpoint, if any; else `state` as it is."""
    if checkpointer.latest_step() is None:
        return state
    restored = checkpointer.restore(state)
    if restored.data_state is not None:
        train_iter.set_state(restored.data_state)
    logging.info("Resumed from step %d.", int(restored.state.step))
    return restored.state


def create_writer(workdir: str) -> metric_writers.MetricWriter:
    """TensorBoard + console on process 0, console only elsewhere."""
    return metric_writers.create_default_writer(
        workdir, just_logging=jax.process_index() > 0, asynchronous=False
    )


def flatten_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Config as flat {"a.b": value} with values TensorBoard can show."""
    flat = {}

    def visit(prefix, node):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping):
                visit(name + ".", value)
            else:
                flat[name] = value if isinstance(value, (int, float, str, bool)) else str(value)

    visit("", config.to_dict())
    return flat


def check_finite(step: int, scalars: Mapping[str, Any]) -> None:
    """Stops the run with the offending step and term if any scalar is NaN/Inf."""
    bad = [name for name, value in scalars.items() if not np.isfinite(np.asarray(value)).all()]
    if bad:
        raise FloatingPointError(
            f"Non-finite value at step {step} in {', '.join(sorted(bad))}. The run "
            "stops here; the last good checkpoint is kept. Lower the learning rate "
            "or check the data."
        )


class MetricsLog:
    """Averages per-step scalar metrics between two writes, with throughput."""

    def __init__(self, writer: metric_writers.MetricWriter, global_batch_size: int):
        self._writer = writer
        self._global_batch_size = global_batch_size
        self._pending: list[tuple[int, dict[str, jax.Array]]] = []
        self._checked: list[dict[str, np.ndarray]] = []
        self._start = time.perf_counter()

    def add(self, step: int, step_metrics: dict[str, jax.Array]) -> None:
        """Records step `step`'s metrics and checks the previous step's for NaN.

        Checking one step late keeps the host from waiting for the device.
        """
        self.check()
        self._pending.append((step, step_metrics))

    def check(self) -> None:
        """Fetches and NaN-checks every recorded step not checked yet."""
        for step, values in self._pending:
            values = jax.device_get(values)
            check_finite(step, values)
            self._checked.append(values)
        self._pending = []

    def write(self, step: int) -> None:
        """Writes the averages since the last write, plus steps/s and images/s."""
        self.check()
        if not self._checked:
            return
        elapsed = time.perf_counter() - self._start
        keys = sorted({k for values in self._checked for k in values})
        summary = {k: float(np.mean([v[k] for v in self._checked if k in v])) for k in keys}
        steps_per_sec = len(self._checked) / max(elapsed, 1e-9)
        summary["steps_per_sec"] = steps_per_sec
        summary["images_per_sec"] = steps_per_sec * self._global_batch_size
        summary["images_per_sec_per_device"] = summary["images_per_sec"] / jax.device_count()
        self._writer.write_scalars(step, summary)
        self._checked = []
        self._start = time.perf_counter()


def run(
    config: ml_collections.ConfigDict,
    workdir: str,
    mesh: jax.sharding.Mesh,
    data: datasets.Datasets,
    state: TrainState,
    training: Training,
    checkpointer: checkpointing.Checkpointer,
) -> TrainState:
    """Trains from `state` to `config.total_steps`; returns the final state.

    Each step runs `training.steps[training.schedule.phase(step)]` (each
    jitted once, state replicated and donated, batch sharded over `mesh`),
    logs, NaN-checks, checkpoints the state with the generator alone and its
    model config (every `checkpoint_every_steps`, at the end and on
    SIGTERM), and evaluates every `eval_every_steps`. It waits for the last
    save before returning.
    """
    initial_step = int(state.step)
    replicated = parallel.replicated_sharding(mesh)
    jitted = {
        phase: jax.jit(training.steps[phase], out_shardings=(replicated, replicated),
                       donate_argnums=0)
        for phase in training.schedule.phases
    }
    writer = create_writer(workdir)
    if initial_step == 0:
        writer.write_hparams(flatten_config(config))
    log = MetricsLog(writer, config.global_batch_size)
    report_progress = periodic_actions.ReportProgress(
        num_train_steps=config.total_steps, writer=writer
    )
    evaluate = evaluator.Evaluator(training.predict, mesh, config.eval.num_samples)

    logging.info("Training from step %d to %d on %d devices.", initial_step, config.total_steps,
                 jax.device_count())
    with checkpointing.PreemptionWatcher() as preemption:
        for step in range(initial_step + 1, config.total_steps + 1):
            batch = parallel.make_global_batch(next(data.train), mesh)
            state, step_metrics = jitted[training.schedule.phase(step - 1)](state, batch)
            log.add(step, step_metrics)
            report_progress(step)
            last = step == config.total_steps
            if step % config.log_every_steps == 0 or last:
                log.write(step)
            stop = preemption.should_stop(step)
            if stop or last or checkpointer.should_save(step):
                log.check()  # never checkpoint a state that produced a NaN.
                checkpointer.save(
                    step,
                    state,
                    generator=generator_variables(state),
                    model_config=config.model.to_dict(),
                    data_state=data.train.get_state(),
                    config=config.to_dict(),
                    force=True,
                )
            if stop:
                logging.warning("Preempted at step %d; checkpoint saved, exiting.", step)
                break
            if step % config.eval_every_steps == 0 or last:
                results, grid = evaluate(state, data.eval_batches())
                writer.write_scalars(step, {f"eval/{k}": v for k, v in results.items()})
                writer.write_images(step, {"eval/samples": grid[None]})
                if jax.process_index() == 0:
                    evaluator.write_eval_results(workdir, step, results)
    checkpointer.wait_until_finished()
    writer.flush()
    return state


def restore_and_run(config: ml_collections.ConfigDict, workdir: str, mesh: jax.sharding.Mesh,
                    data: datasets.Datasets, training: Training) -> TrainState:
    """Resumes from the latest checkpoint in `workdir` if there is one, then `run`s to the end."""
    with open_checkpointer(config, workdir) as checkpointer:
        state = restore(checkpointer, training.state, data.train)
        return run(config, workdir, mesh, data, state, training, checkpointer)
