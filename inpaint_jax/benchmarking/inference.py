"""Inference latency per image size: the GLCIC paper's timing table for any generator."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from inpaint_jax import checkpointing, inference, models
from inpaint_jax.benchmarking import configs, measure
from inpaint_jax.benchmarking.reference import ReferenceFramework

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Generator:
    """A generator module, its variables and the model config that describes it.

    `name` is the model family (`model_config.family`).
    """

    model_config: ml_collections.ConfigDict
    module: nn.Module
    variables: Any

    @property
    def name(self) -> str:
        """The model family."""
        return self.model_config.family


# Passes of the BatchNorm calibration; the running statistics move 90% of the
# way to the batch's at each (momentum 0.9), so 40 leave 1.5% of the initial ones.
_CALIBRATION_PASSES = 40
# Side of the calibration image, rounded up to the network's size multiple.
_CALIBRATION_SIZE = 64


def _check_fully_convolutional(generator: nn.Module, family: str) -> None:
    """Raises BenchmarkError for a fixed-size generator (nothing to time per image size)."""
    if getattr(generator, "input_size", None) is not None:
        raise measure.BenchmarkError(
            f"the {family} generator is fixed-size ({generator.input_size} px in): it has no "
            "inference benchmark per image size; time a fully convolutional model."
        )


def random_generator(model_config: ml_collections.ConfigDict, *, seed: int = 0) -> Generator:
    """The generator `model_config` describes, randomly initialised.

    Speed does not depend on the weights, but the output comparison with a
    reference framework does: with the initial BatchNorm statistics (mean 0,
    variance 1) the activations shrink layer by layer and every output is
    sigmoid(~0) = 0.5, which any two implementations agree on. So BatchNorm
    running statistics are calibrated first: train-mode passes over a random
    image until they match its activations.
    """
    model_config = models.as_model_config(model_config)
    module = models.build(model_config).generator
    _check_fully_convolutional(module, model_config.family)
    multiple = module.size_multiple
    size = -(-_CALIBRATION_SIZE // multiple) * multiple
    inputs = model_inputs(model_config, size, size, seed)

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
    return Generator(model_config, module, variables)


def checkpoint_generator(
    workdir: str | os.PathLike, *, compute_dtype: str | None = None
) -> Generator:
    """The generator of the newest checkpoint in `workdir` (trained or imported), with its weights.

    compute_dtype: overrides the saved model config's `compute_dtype`.
    """
    if not (Path(workdir).expanduser() / "checkpoints").is_dir():
        raise checkpointing.CheckpointNotFoundError(
            f"{workdir} has no checkpoints folder; pass the --workdir of a training run or of "
            "imported weights."
        )
    network = inference.load_network(workdir)
    model_config = network.model_config
    if compute_dtype is not None:
        model_config = configs.with_compute_dtype(model_config, compute_dtype)
    # Parameters are float32 whatever the compute dtype, so the saved ones fit this module.
    module = models.build(model_config).generator
    _check_fully_convolutional(module, model_config.family)
    return Generator(model_config, module, network.variables)


def inference_inputs(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random (1, H, W, 3) image and a (1, H, W, 1) mask with a centred hole of half the sides."""
    image = np.random.default_rng(seed).uniform(size=(1, height, width, 3)).astype(np.float32)
    mask = np.zeros((1, height, width, 1), np.float32)
    mask[:, height // 4 : height // 4 + height // 2, width // 4 : width // 4 + width // 2] = 1
    return image, mask


def model_inputs(model_config, height: int, width: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Random batch-1 inputs of the generator `model_config` describes, at height x width.

    3-channel inputs (images) are uniform noise and 1-channel ones (masks)
    the centred hole of `inference_inputs`; any other input (the refinement
    network's 20 channels) is uniform noise of its shape. Speed does not
    depend on the values.
    """
    image, mask = inference_inputs(height, width, seed)
    rng = np.random.default_rng(seed + 1)
    inputs = []
    for example in models.example_inputs(model_config, 1).generator:
        channels = example.shape[-1]
        if channels in (1, 3):
            inputs.append(mask if channels == 1 else image)
        else:
            inputs.append(rng.uniform(size=(1, height, width, channels)).astype(np.float32))
    return tuple(inputs)


def _reference_inference(
    reference: ReferenceFramework, generator: Generator, image, mask, jax_output
) -> tuple[Callable[[], np.ndarray], dict[str, Any]]:
    """The reference's forward function and its probe: memory and max |JAX - reference|."""
    variables = jax.device_get(generator.variables)
    forward = reference.completion_forward(
        variables,
        width_multiplier=generator.model_config.width_multiplier,
        fill_value=tuple(generator.model_config.fill_value),
        image=image,
        mask=mask,
    )
    output, memory = measure.probe(forward)
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

    With `reference`, generators of the families it implements (GLCIC) also
    run in that framework with the same weights on the same input, timed
    round-robin with JAX.
    """
    measure.check_counts(runs=runs, warmup=warmup)
    if not sizes or any(not isinstance(size, int) or size < 1 for size in sizes):
        raise measure.BenchmarkError(f"sizes must be positive numbers of pixels, got {list(sizes)}.")
    rows = []
    for generator in generators:
        predict = jax.jit(
            lambda variables, *inputs, module=generator.module: module.apply(
                variables, *inputs, train=False
            )
        )
        for size in sizes:
            inputs = model_inputs(generator.model_config, size, size)
            arguments = (generator.variables, *jax.device_put(inputs))
            compiled, compile_seconds = measure.compile_timed(predict, *arguments)

            def run_jax(compiled=compiled, arguments=arguments):
                return compiled(*arguments).block_until_ready()

            jax_output, memory = measure.probe(run_jax)
            functions = {"jax": run_jax}
            row = {
                "model": generator.name,
                "dtype": models.compute_dtype(generator.model_config).name,
                "height": size,
                "width": size,
                "pixels": size * size,
                "batch": 1,
                "compile_seconds": compile_seconds,
                "memory": {**memory, **measure.compiled_memory(compiled)},
                "reference": None,
            }
            if reference is not None and generator.name in reference.families:
                functions["reference"], row["reference"] = _reference_inference(
                    reference, generator, *inputs, jax_output
                )
            del jax_output
            timings = measure.time_round_robin(functions, runs=runs, warmup=warmup - 1)
            row["seconds"] = timings["jax"].to_json()
            if "reference" in timings:
                row["reference"]["seconds"] = timings["reference"].to_json()
                row["jax_over_reference"] = timings["jax"].median / timings["reference"].median
            logger.info("%s %dx%d: %.3f s", generator.name, size, size, timings["jax"].median)
            rows.append(row)
    return rows
