"""Grain input pipelines: augmented training batches and fixed evaluation batches.

Records come from a random-access source (`data.sources.get_data_source`):
dicts with 'image' (encoded image bytes or a uint8 (H, W, 3) array) and
'image_id' (str). Both iterators yield per-process batches, dicts of numpy:

- 'image': float32 (B, S, S, 3) in [0, 1]
- 'mask': float32 (B, S, S, 1), 1 = hole
- 'local_box': int32 (B, 4), top, left, height, width of the local window
- 'valid': bool (B,), evaluation only (False marks padding)

Training (the GLCIC recipe): the whole dataset is shuffled with `seed`
(differently every epoch) and repeated forever; process `shard_index` takes
every `shard_count`-th example of that stream, so within an epoch the
processes read disjoint examples that together cover the dataset. Each
example has its shortest side resized to a random size in `resize_range`,
is cropped at a random place to `crop_size` and gets a mask from `mask_fn`.
All randomness comes from grain's per-example RNG, a function of the seed and
the example's position in the global stream, so processes get different
masks and a restored iterator repeats the batches exactly.

The training iterator is a `grain.DatasetIterator`: `get_state()` returns a
JSON-serialisable dict and `set_state(state)` resumes from it.
"""

import functools
from collections.abc import Sequence

import cv2
import grain
import jax
import numpy as np
from absl import flags

from inpaint_jax import image_io, masks

_READ_THREADS = 16  # threads decoding and augmenting examples in each (worker) process


class PipelineError(ValueError):
    """A pipeline argument or a dataset record that the pipeline cannot use."""


def create_train_iterator(source, *, batch_size: int, crop_size: int,
                          resize_range: tuple[int, int] | None,
                          mask_fn: masks.MaskFn, seed: int,
                          shard_index: int | None = None,
                          shard_count: int | None = None,
                          worker_count: int = 0) -> grain.DatasetIterator:
    """Returns an infinite, checkpointable iterator over augmented training batches.

    Args:
      source: random-access source of {'image', 'image_id'} records.
      batch_size: examples per batch on this process; the stream repeats
        forever, so a batch may be larger than this process's share (it then
        spans epochs: tiny datasets such as sample_photos work).
      crop_size: side S of the square crops.
      resize_range: (lo, hi); the shortest side of every image is resized to
        a size drawn uniformly from [lo, hi] (needs crop_size <= lo <= hi).
        None crops the images at their original size; an image smaller than
        the crop then raises `PipelineError` naming it when it is read.
      mask_fn: draws a `masks.MaskSample` for an S x S crop.
      seed: non-negative seed of the shuffle, the crops and the masks.
      shard_index, shard_count: this process's shard; default to
        jax.process_index() and jax.process_count().
      worker_count: grain worker processes (0 = threads in this process).
        Results do not depend on it for 0 and 1; with more workers each one
        batches its own slice of the stream, so batches differ (still
        deterministic for a fixed worker count).

    Raises:
      PipelineError: an argument is invalid or the source is too small.
    """
    num_examples = _check_source(source)
    _check_positive(batch_size=batch_size, crop_size=crop_size)
    _check_seed(seed)
    _check_resize_range(resize_range, crop_size)
    shard_index, shard_count = _resolve_shard(shard_index, shard_count)
    if num_examples < shard_count:
        raise PipelineError(
            f"The source has {num_examples} examples, fewer than the {shard_count} "
            "processes that each need a share of it. Use a larger dataset.")
    if not isinstance(worker_count, int) or worker_count < 0:
        raise PipelineError(f"worker_count must be an integer >= 0, got {worker_count!r}.")

    transform = functools.partial(_train_example, crop_size=crop_size,
                                  resize_range=resize_range, mask_fn=mask_fn)
    return train_batches(source, transform, batch_size=batch_size, seed=seed,
                         shard_index=shard_index, shard_count=shard_count,
                         worker_count=worker_count)


def train_batches(source, transform, *, batch_size: int, seed: int, shard_index: int,
                  shard_count: int, worker_count: int = 0) -> grain.DatasetIterator:
    """The infinite, checkpointable batch stream of `create_train_iterator` for any `transform`.

    `transform(record, rng)` turns one record of `source` into a dict of
    arrays using only the `np.random.Generator` it is given. The arguments
    are not checked here (see `create_train_iterator`).
    """
    dataset = grain.MapDataset.source(source).seed(seed).shuffle().repeat()
    dataset = dataset.random_map(transform)[shard_index::shard_count]
    dataset = dataset.to_iter_dataset(_read_options(batch_size))
    dataset = dataset.batch(batch_size, drop_remainder=True)
    if worker_count:
        _mark_absl_flags_parsed()
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return iter(dataset)


def create_eval_iterator(source, *, batch_size: int, crop_size: int,
                         mask_fn: masks.MaskFn, seed: int,
                         shard_index: int | None = None,
                         shard_count: int | None = None) -> grain.DatasetIterator:
    """Returns a single pass over this process's share of the evaluation batches.

    Every image has its shortest side resized to `crop_size` and is centre
    cropped; example i gets the mask `mask_fn(masks.mask_rng(seed, i), S, S)`,
    so its mask depends only on (seed, i), not on batching or sharding.
    Process `shard_index` reads examples shard_index, shard_index +
    shard_count, ...; every process yields the same number of full batches
    (needed for a jitted multi-process step), padded at the end with repeated
    examples whose 'valid' entry is False. Each call gives the same batches.

    Raises:
      PipelineError: an argument is invalid or the source is empty.
    """
    num_examples = _check_source(source)
    _check_positive(batch_size=batch_size, crop_size=crop_size)
    _check_seed(seed)
    shard_index, shard_count = _resolve_shard(shard_index, shard_count)
    example = functools.partial(_eval_example, source=source, crop_size=crop_size,
                                mask_fn=mask_fn, seed=seed)
    return eval_batches(num_examples, example, batch_size=batch_size, shard_index=shard_index,
                        shard_count=shard_count)


def eval_batches(num_examples: int, example, *, batch_size: int, shard_index: int,
                 shard_count: int) -> grain.DatasetIterator:
    """The padded, sharded single pass of `create_eval_iterator` for any `example` function.

    `example(index)` returns the dict of arrays of example `index` (0 <=
    index < num_examples); this adds 'valid'. Arguments are not checked here.
    """
    examples_per_process = -(-num_examples // shard_count)
    batches_per_process = -(-examples_per_process // batch_size)
    padded_total = batches_per_process * batch_size * shard_count
    transform = functools.partial(_padded_example, example=example, num_examples=num_examples)
    dataset = grain.MapDataset.range(shard_index, padded_total, shard_count).map(transform)
    dataset = dataset.to_iter_dataset(_read_options(batch_size))
    return iter(dataset.batch(batch_size))


def _padded_example(position: int, *, example, num_examples: int) -> dict:
    """Example `position` wrapped around the end, marked invalid past it."""
    values = example(position % num_examples)
    values["valid"] = np.bool_(position < num_examples)
    return values


def _train_example(record, rng: np.random.Generator, *, crop_size: int,
                   resize_range: tuple[int, int] | None, mask_fn: masks.MaskFn) -> dict:
    """Decodes, resizes to a random scale, randomly crops and masks one record."""
    image, name = decode_record(record)
    if resize_range is not None:
        image = _resize_shortest_side(image, int(rng.integers(resize_range[0], resize_range[1] + 1)))
    elif min(image.shape[:2]) < crop_size:
        height, width = image.shape[:2]
        raise PipelineError(
            f"Image {name!r} is {height}x{width} pixels, smaller than the {crop_size}x{crop_size} "
            f"crop, and resize_range is None. Set resize_range (e.g. ({crop_size}, "
            f"{crop_size + crop_size // 2})) or remove images smaller than {crop_size} pixels.")
    top = int(rng.integers(image.shape[0] - crop_size + 1))
    left = int(rng.integers(image.shape[1] - crop_size + 1))
    crop = image[top:top + crop_size, left:left + crop_size]
    return _example(crop, mask_fn(rng, crop_size, crop_size))


def _eval_example(index: int, *, source, crop_size: int, mask_fn: masks.MaskFn,
                  seed: int) -> dict:
    """Resizes, centre-crops and masks example `index`."""
    image, _ = decode_record(source[index])
    image = _resize_shortest_side(image, crop_size)
    top = (image.shape[0] - crop_size) // 2
    left = (image.shape[1] - crop_size) // 2
    crop = image[top:top + crop_size, left:left + crop_size]
    return _example(crop, mask_fn(masks.mask_rng(seed, index), crop_size, crop_size))


def _example(crop: np.ndarray, sample: masks.MaskSample) -> dict:
    """Packs a crop (uint8, or float that cubic upscaling may push past [0, 1]) and its mask."""
    image = crop.astype(np.float32) / 255.0 if crop.dtype == np.uint8 else np.clip(crop, 0.0, 1.0)
    return {
        "image": image,
        "mask": np.asarray(sample.mask, dtype=np.float32),
        "local_box": np.asarray(sample.local_box, dtype=np.int32),
    }


def decode_record(record) -> tuple[np.ndarray, str]:
    """Returns the record's image and its id.

    Encoded bytes decode to float32 in [0, 1]; arrays stay uint8 (both resize
    fast with cv2, and converting either to the other costs more).
    """
    name = record["image_id"]
    image = record["image"]
    if isinstance(image, bytes):
        return image_io.decode_image(image, name=name), name
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise PipelineError(
            f"Record {name!r}: 'image' must be encoded image bytes or a uint8 (H, W, 3) "
            f"array, got an array of dtype {image.dtype} and shape {image.shape}.")
    return image, name


def _resize_shortest_side(image: np.ndarray, size: int) -> np.ndarray:
    """Resizes an image, keeping its aspect ratio, so its shortest side is `size`.

    Area averaging when shrinking (antialiased), bicubic when enlarging.
    """
    height, width = image.shape[:2]
    shortest = min(height, width)
    if shortest == size:
        return image
    scale = size / shortest
    new_height = size if height == shortest else round(height * scale)
    new_width = size if width == shortest else round(width * scale)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(image, (new_width, new_height), interpolation=interpolation)


def _read_options(batch_size: int) -> grain.ReadOptions:
    """Threaded reading that keeps about one batch (at least one per thread) in flight."""
    return grain.ReadOptions(num_threads=_READ_THREADS,
                             prefetch_buffer_size=max(batch_size, _READ_THREADS))


def _mark_absl_flags_parsed() -> None:
    """Lets grain's worker processes start outside an absl app (flags left at defaults).

    grain 0.2.x reads an absl flag when it starts workers and fails if the
    program never parsed its flags (google/grain#1355), e.g. in a notebook.
    """
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _check_source(source) -> int:
    """Returns len(source), raising if it is not a non-empty random-access source."""
    try:
        num_examples = len(source)
    except TypeError:
        raise PipelineError(
            f"source must be a random-access data source (len() and indexing), got "
            f"{type(source).__name__}.") from None
    if num_examples == 0:
        raise PipelineError("The source is empty (0 examples): check the dataset name, split "
                            "and data_dir.")
    return num_examples


def _check_positive(**values: int) -> None:
    """Raises unless every named value is an integer >= 1."""
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise PipelineError(f"{name} must be an integer >= 1, got {value!r}.")


def _check_seed(seed: int) -> None:
    """Raises unless the seed is a non-negative integer."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise PipelineError(f"seed must be a non-negative integer, got {seed!r}.")


def _check_resize_range(resize_range: Sequence[int] | None, crop_size: int) -> None:
    """Raises unless resize_range is None or (lo, hi) with crop_size <= lo <= hi."""
    if resize_range is None:
        return
    if len(resize_range) != 2:
        raise PipelineError(f"resize_range must be (lo, hi) or None, got {resize_range!r}.")
    low, high = resize_range
    if low > high:
        raise PipelineError(
            f"resize_range {tuple(resize_range)} has lo > hi; give it as (lo, hi) with lo <= hi, "
            f"e.g. ({high}, {low}).")
    if low < crop_size:
        raise PipelineError(
            f"resize_range lower bound {low} is smaller than crop_size {crop_size}: a "
            f"{crop_size}x{crop_size} crop does not fit in an image whose shortest side is "
            f"{low}. Use lo >= crop_size (the GLCIC paper uses (256, 384) with crop 256).")


def _resolve_shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
    """Fills in the JAX process defaults and checks 0 <= shard_index < shard_count."""
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        raise PipelineError(
            f"Need 0 <= shard_index < shard_count, got shard_index={shard_index}, "
            f"shard_count={shard_count}.")
    return shard_index, shard_count
