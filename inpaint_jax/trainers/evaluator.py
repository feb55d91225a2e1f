"""Periodic evaluation during training: mean image metrics on held-out batches, a sample grid."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping

import jax
import numpy as np

from inpaint_jax import files, metrics, parallel
from inpaint_jax.models import layers
from inpaint_jax.trainers.state import TrainState


class Evaluator:
    """Mean image metrics over a finite batch stream, and a sample grid.

    `predict(state, batch)` returns the raw network output; it is composited
    here, so every method is scored on the same completed images. The metric
    step is compiled once and reused by every evaluation.
    """

    def __init__(
        self,
        predict: Callable[[TrainState, dict[str, jax.Array]], jax.Array],
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
        self, state: TrainState, batches: Iterator[dict[str, np.ndarray]]
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
