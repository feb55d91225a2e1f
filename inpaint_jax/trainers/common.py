"""Machinery shared by every GAN training recipe.

A recipe (e.g. `trainers/glcic.py`) owns its networks, losses and schedule;
everything else -- workdir, data, optimizers, the train-state pytree,
checkpoint restore, logging, NaN guards, evaluation and sample grids -- lives
here once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from clu import metric_writers, periodic_actions
from jax.experimental import multihost_utils

from inpaint_jax import checkpointing, files, masks, metrics, parallel
from inpaint_jax.data import pipeline, sources
from inpaint_jax.models import layers

PyTree = Any


@flax.struct.dataclass
class GANTrainState:
    """Everything a GAN run needs to continue exactly: one explicit pytree."""

    step: jax.Array
    g_params: PyTree
    d_params: PyTree
    g_opt_state: PyTree
    d_opt_state: PyTree
    batch_stats: PyTree  # {"g": ..., "d": ...} BatchNorm running statistics.
    rng: jax.Array

    def update_generator(self, tx: optax.GradientTransformation, grads, g_stats) -> "GANTrainState":
        """Applies one optimizer update to the generator and takes its new batch stats."""
        updates, g_opt_state = tx.update(grads, self.g_opt_state, self.g_params)
        return self.replace(
            g_params=optax.apply_updates(self.g_params, updates),
            g_opt_state=g_opt_state,
            batch_stats={**self.batch_stats, "g": g_stats},
        )

    def update_discriminator(
        self, tx: optax.GradientTransformation, grads, d_stats
    ) -> "GANTrainState":
        """Applies one optimizer update to the discriminator and takes its new batch stats."""
        updates, d_opt_state = tx.update(grads, self.d_opt_state, self.d_params)
        return self.replace(
            d_params=optax.apply_updates(self.d_params, updates),
            d_opt_state=d_opt_state,
            batch_stats={**self.batch_stats, "d": d_stats},
        )


# Values of config.compute_dtype: "auto" is bfloat16 on GPU and TPU, float32 on CPU.
COMPUTE_DTYPES = ("auto", "float32", "bfloat16")


def resolve_compute_dtype(
    config: ml_collections.ConfigDict, backend: str | None = None
) -> jnp.dtype:
    """The dtype the models compute in, from `config.compute_dtype` (see COMPUTE_DTYPES).

    "auto" means bfloat16 on GPU and TPU and float32 on CPU, for `backend`
    (default: `jax.default_backend()`, i.e. where this process runs); a
    config without the field (checkpoints saved before it existed) means
    "auto". Parameters, optimizer state and losses stay float32 whatever this
    returns. Raises ValueError for any other value.
    """
    name = config.get("compute_dtype", "auto")
    if name not in COMPUTE_DTYPES:
        raise ValueError(
            f"config.compute_dtype must be one of {', '.join(map(repr, COMPUTE_DTYPES))}, "
            f"got {name!r}."
        )
    if name == "auto":
        name = "float32" if (backend or jax.default_backend()) == "cpu" else "bfloat16"
    return jnp.dtype(name)


def create_generator_state(
    config: ml_collections.ConfigDict,
    generator: flax.linen.Module,
    g_tx: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
    *init_inputs: jax.Array,
) -> GANTrainState:
    """The initial state of a recipe without a discriminator, replicated over `mesh`.

    The generator is initialised (seed `config.seed`) on `init_inputs`; the
    discriminator part is empty (`d_params` {}, `d_opt_state`
    optax.EmptyState()), so the shared loop `run` needs no special case.
    """

    def init(rng):
        g_rng, state_rng = jax.random.split(rng)
        variables = generator.init(g_rng, *init_inputs, train=False)
        return GANTrainState(
            step=jnp.zeros((), jnp.int32),
            g_params=variables["params"],
            d_params={},
            g_opt_state=g_tx.init(variables["params"]),
            d_opt_state=optax.EmptyState(),
            batch_stats={"g": variables.get("batch_stats", {}), "d": {}},
            rng=state_rng,
        )

    rng = jax.random.key(config.seed, impl=config.rng_impl)
    return jax.jit(init, out_shardings=parallel.replicated_sharding(mesh))(rng)


SINGLE_PHASE = "train"  # the phase name of recipes trained in one phase.


def generator_only_recipe_state(example_inputs: Callable[[ml_collections.ConfigDict], tuple]):
    """The `create_train_state` of a recipe without a discriminator (DFNet, two-stage refinement).

    `example_inputs(config)` gives the generator's positional inputs for
    initialisation. The returned function has every recipe's signature and
    ignores `discriminator` and `d_tx`.
    """

    def create_train_state(config, generator, discriminator, g_tx, d_tx, mesh) -> GANTrainState:
        """The initial state of `generator` and `g_tx`, replicated over `mesh`; no discriminator."""
        del discriminator, d_tx
        return create_generator_state(config, generator, g_tx, mesh, *example_inputs(config))

    return create_train_state


def train_generator_only(config: ml_collections.ConfigDict, workdir: str, mesh: jax.sharding.Mesh,
                         data: Datasets, recipe, features) -> GANTrainState:
    """`run` for a recipe trained without a discriminator, in one phase.

    `recipe` is its trainer module: `build_models`, `create_train_state` and
    `Steps(config, generator, g_tx, features)` with `train_step` and `predict`.
    """
    generator, _ = recipe.build_models(config)
    g_tx = create_optimizer(config.g_optimizer)
    state = recipe.create_train_state(config, generator, None, g_tx, None, mesh)
    steps = recipe.Steps(config, generator, g_tx, features)
    return run(
        config,
        workdir,
        mesh,
        data,
        state,
        phase_for_step=lambda step: SINGLE_PHASE,
        step_fns={SINGLE_PHASE: steps.train_step},
        predict=steps.predict,
    )


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


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Builds the optax optimizer named by `config.name`."""
    if config.name == "adadelta":
        return optax.adadelta(config.learning_rate, rho=config.b1, eps=config.eps)
    if config.name == "adam":
        return optax.adam(config.learning_rate, b1=config.b1, b2=config.b2, eps=config.eps)
    if config.name == "sgd":
        return optax.sgd(config.learning_rate, momentum=config.b1 or None)
    raise ValueError(f"Unknown optimizer {config.name!r}; choose one of 'adadelta', 'adam', 'sgd'.")


def make_mask_fn(config: ml_collections.ConfigDict) -> masks.MaskFn:
    """The hole generator described by `config.mask`."""
    return masks.make_mask_fn(
        config.mask.kind, local_size=config.mask.local_size, **config.mask.params
    )


@dataclasses.dataclass
class Datasets:
    """The training iterator and a factory for the (finite) evaluation pass."""

    train: Iterator[dict[str, np.ndarray]]
    eval_batches: Callable[[], Iterator[dict[str, np.ndarray]]]


def data_sources(config: ml_collections.ConfigDict):
    """(train, eval) random-access sources of `config.data`, built offline by process 0 if needed."""
    data = config.data
    source_kwargs = dict(data_dir=os.path.expanduser(data.data_dir),
                         manual_dir=data.manual_dir or None)
    if jax.process_index() == 0:  # one process builds; the others wait, then read.
        sources.build_dataset(data.name, **source_kwargs)
    multihost_utils.sync_global_devices("dataset built")
    return (sources.get_data_source(data.name, data.train_split, **source_kwargs),
            sources.get_data_source(data.name, data.eval_split, **source_kwargs))


def first_batches(batches: Iterator[dict], max_batches: int) -> Iterator[dict]:
    """The first `max_batches` of `batches` (all of them when `max_batches` is 0)."""
    for index, batch in enumerate(batches):
        if max_batches and index >= max_batches:
            return
        yield batch


def create_datasets(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Datasets:
    """Per-process train and eval iterators for `config.data` on `mesh`."""
    data = config.data
    train_source, eval_source = data_sources(config)
    mask_fn = make_mask_fn(config)
    train = pipeline.create_train_iterator(
        train_source,
        batch_size=parallel.per_process_batch_size(config.global_batch_size, mesh),
        crop_size=data.crop_size,
        resize_range=tuple(data.resize_range) if data.resize_range else None,
        mask_fn=mask_fn,
        seed=config.seed,
        worker_count=data.worker_count,
    )
    eval_batch_size = parallel.per_process_batch_size(config.eval.global_batch_size, mesh)

    def eval_batches():
        batches = pipeline.create_eval_iterator(
            eval_source,
            batch_size=eval_batch_size,
            crop_size=data.crop_size,
            mask_fn=mask_fn,
            seed=config.eval.mask_seed,
        )
        return first_batches(batches, config.eval.max_batches)

    return Datasets(train=train, eval_batches=eval_batches)


def restore_or_keep(
    checkpointer: checkpointing.Checkpointer, state: GANTrainState, train_iter
) -> GANTrainState:
    """Resumes `state` and the data position from the latest checkpoint, if any."""
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


class Evaluator:
    """Mean image metrics over a finite batch stream, and a sample grid.

    `predict(state, batch)` returns the raw network output; it is composited
    here, so every method is scored on the same completed images. The metric
    step is compiled once and reused by every evaluation.
    """

    def __init__(
        self,
        predict: Callable[[GANTrainState, dict[str, jax.Array]], jax.Array],
        mesh: jax.sharding.Mesh,
        num_samples: int,
    ):
        self._mesh = mesh
        replicated = parallel.replicated_sharding(mesh)

        def sums(state, batch):
            completion = layers.composite(batch["image"], predict(state, batch), batch["mask"])
            per_example = metrics.image_metrics(completion, batch["image"], batch["mask"])
            totals = metrics.sum_valid(per_example, batch["valid"])
            samples = (
                batch["image"][:num_samples],
                batch["mask"][:num_samples],
                completion[:num_samples],
            )
            return totals, jax.lax.with_sharding_constraint(samples, replicated)

        self._sums = jax.jit(sums)

    def __call__(
        self, state: GANTrainState, batches: Iterator[dict[str, np.ndarray]]
    ) -> tuple[dict[str, float], np.ndarray]:
        """Evaluates `state` on every batch of `batches`."""
        totals, grid = {}, None
        for batch in batches:
            batch_totals, samples = self._sums(state, parallel.make_global_batch(batch, self._mesh))
            for k, v in jax.device_get(batch_totals).items():
                totals[k] = totals.get(k, 0.0) + float(v)
            if grid is None:
                grid = sample_grid(*jax.device_get(samples))
        count = totals.pop("count", 0.0)
        if not count:
            raise ValueError(
                "The evaluation split yielded no examples; check config.data.eval_split."
            )
        return {k: v / count for k, v in totals.items()}, grid


def sample_grid(image: np.ndarray, mask: np.ndarray, completion: np.ndarray) -> np.ndarray:
    """Rows of [masked input | completion | ground truth], float32 HxWx3."""
    masked = image * (1.0 - mask) + mask  # holes shown in white.
    rows = [np.concatenate(triple, axis=1) for triple in zip(masked, completion, image)]
    return np.clip(np.concatenate(rows, axis=0), 0.0, 1.0)


def write_eval_results(workdir: str, step: int, results: Mapping[str, float]) -> None:
    """Appends `results` for `step` to workdir/eval_metrics.json, atomically."""
    path = os.path.join(workdir, "eval_metrics.json")
    history = []
    if os.path.exists(path):
        with open(path) as f:
            history = [entry for entry in json.load(f) if entry["step"] != step]
    history.append({"step": step, **{k: float(v) for k, v in results.items()}})
    with files.atomic_write(path) as f:
        json.dump(history, f, indent=1)


def run(
    config: ml_collections.ConfigDict,
    workdir: str,
    mesh: jax.sharding.Mesh,
    data: Datasets,
    state: GANTrainState,
    *,
    phase_for_step: Callable[[int], str],
    step_fns: Mapping[str, Callable],
    predict: Callable[[GANTrainState, dict[str, jax.Array]], jax.Array],
) -> GANTrainState:
    """The training loop every recipe shares.

    Resumes `state` and the data position from the workdir's last checkpoint,
    then for each step runs `step_fns[phase_for_step(step)]` (each jitted once,
    state replicated and donated, batch sharded over `mesh`), logs, NaN-checks,
    checkpoints (every `checkpoint_every_steps`, at the end and on SIGTERM)
    and evaluates every `eval_every_steps`. Returns the final state.
    """
    checkpointer = checkpointing.Checkpointer(
        f"{workdir}/checkpoints",
        max_to_keep=config.keep_checkpoints,
        save_interval_steps=config.checkpoint_every_steps,
    )
    state = restore_or_keep(checkpointer, state, data.train)
    initial_step = int(state.step)

    replicated = parallel.replicated_sharding(mesh)
    jitted = {
        phase: jax.jit(fn, out_shardings=(replicated, replicated), donate_argnums=0)
        for phase, fn in step_fns.items()
    }
    writer = create_writer(workdir)
    if initial_step == 0:
        writer.write_hparams(flatten_config(config))
    log = MetricsLog(writer, config.global_batch_size)
    report_progress = periodic_actions.ReportProgress(
        num_train_steps=config.total_steps, writer=writer
    )
    evaluator = Evaluator(predict, mesh, config.eval.num_samples)

    logging.info(
        "Training from step %d to %d on %d devices.",
        initial_step,
        config.total_steps,
        jax.device_count(),
    )
    with checkpointing.PreemptionWatcher() as preemption:
        for step in range(initial_step + 1, config.total_steps + 1):
            batch = parallel.make_global_batch(next(data.train), mesh)
            state, step_metrics = jitted[phase_for_step(step - 1)](state, batch)
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
                    data_state=data.train.get_state(),
                    config=config.to_dict(),
                    force=True,
                )
            if stop:
                logging.warning("Preempted at step %d; checkpoint saved, exiting.", step)
                break
            if step % config.eval_every_steps == 0 or last:
                results, grid = evaluator(state, data.eval_batches())
                writer.write_scalars(step, {f"eval/{k}": v for k, v in results.items()})
                writer.write_images(step, {"eval/samples": grid[None]})
                if jax.process_index() == 0:
                    write_eval_results(workdir, step, results)
    checkpointer.wait_until_finished()
    checkpointer.close()
    writer.flush()
    return state
