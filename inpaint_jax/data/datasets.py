"""A training run's data, assembled from its config: the train iterator and the eval batches.

`create(config, mesh)` reads `config.data` (dataset, splits, crop, resize),
`config.mask` (hole generator) and the batch sizes, and gives this process's
share: a checkpointable train iterator and a factory for the finite
evaluation pass (the same fixed masks every time).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from inpaint_jax import masks, parallel
from inpaint_jax.data import pipeline, sources


@dataclasses.dataclass
class Datasets:
    """The training iterator and a factory for the (finite) evaluation pass."""

    train: Iterator[dict[str, np.ndarray]]
    eval_batches: Callable[[], Iterator[dict[str, np.ndarray]]]


def mask_fn(config: ml_collections.ConfigDict) -> masks.MaskFn:
    """The hole generator `config.mask` describes (its `local_size`, where the recipe has one)."""
    return masks.make_mask_fn(config.mask.kind, local_size=config.mask.get("local_size"),
                              **config.mask.params)


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


def create(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Datasets:
    """This process's train and eval iterators for `config.data` on `mesh`."""
    data = config.data
    train_source, eval_source = data_sources(config)
    holes = mask_fn(config)
    train = pipeline.create_train_iterator(
        train_source,
        batch_size=parallel.per_process_batch_size(config.global_batch_size, mesh),
        crop_size=data.crop_size,
        resize_range=tuple(data.resize_range) if data.resize_range else None,
        mask_fn=holes,
        seed=config.seed,
        worker_count=data.worker_count,
    )
    eval_batch_size = parallel.per_process_batch_size(config.eval.global_batch_size, mesh)

    def eval_batches():
        batches = pipeline.create_eval_iterator(
            eval_source,
            batch_size=eval_batch_size,
            crop_size=data.crop_size,
            mask_fn=holes,
            seed=config.eval.mask_seed,
        )
        return first_batches(batches, config.eval.max_batches)

    return Datasets(train=train, eval_batches=eval_batches)
