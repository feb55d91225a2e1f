"""Input-pipeline throughput: images/second per process of a training config's data."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import ml_collections

from inpaint_jax import parallel
from inpaint_jax.benchmarking import configs, measure
from inpaint_jax.data import datasets


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
    measure.check_counts(runs=batches, warmup=warmup)
    if not worker_counts or any(not isinstance(w, int) or w < 0 for w in worker_counts):
        raise measure.BenchmarkError(
            f"worker_counts must be integers >= 0 (0 = no worker processes), got "
            f"{tuple(worker_counts)}."
        )
    mesh = parallel.create_mesh()
    batch_size = parallel.per_process_batch_size(config.global_batch_size, mesh)
    rows = []
    for workers in worker_counts:
        case_config = configs.benchmark_config(config, worker_count=workers)
        iterator = datasets.create(case_config, mesh).train
        try:
            next_batch = functools.partial(next, iterator)
            _, memory = measure.probe(next_batch)
            timing = measure.time_round_robin({"data": next_batch}, runs=batches, warmup=warmup - 1)["data"]
        finally:
            iterator.close()
        rows.append(
            {
                "dataset": case_config.data.name,
                "worker_count": workers,
                "batch_per_process": batch_size,
                "crop_size": case_config.data.crop_size,
                "resize_range": list(case_config.data.get("resize_range") or []),
                "mask": case_config.mask.kind,
                "batch_seconds": timing.to_json(),
                "images_per_second": batch_size / timing.mean,
                "memory": memory,
            }
        )
    return rows
