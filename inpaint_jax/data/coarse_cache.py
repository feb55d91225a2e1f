"""Coarse completions computed once per training image, and refinement patches cut from them.

Training the two-stage refinement network (`inpaint_jax.two_stage`) needs,
for every training image, the coarse model's completion at full resolution.
The coarse model is frozen, so `build_cache` computes it once per (image,
mask) and stores one entry per pair:

  <directory>/<split>/<index>_<k>.npz   image, mask, merged (uint8, full resolution)

`image` is the dataset image (its longer side scaled down to `max_side` if
larger, then rounded to 8 bits), `mask` its k-th hole mask (from
`masks.mask_rng(seed, index, k)`), `merged` the coarse completion with the
known pixels of `image` (`two_stage.coarse_complete`). Entries are written
atomically, so an interrupted build resumes where it stopped. Each process
computes every `process_count`-th image, writes the list of its entries
that have at least one usable patch (`two_stage.patch_positions`) and why
the others were skipped, then all processes wait for each other and read
the whole list. `directory` must therefore be shared by all processes
(`create_datasets` puts it under the cache root, by default in the workdir,
which multi-host runs keep on shared storage) and depends on everything that
changes the entries (`fingerprint`: the coarse checkpoint and the data
settings).

The iterators then cut patches: `create_train_iterator` a uniformly drawn
patch whose hole covers `hole_range` of it (10-90%) from a shuffled entry,
`create_eval_iterator` one fixed such patch per entry. Batches hold
'image' (the ground truth patch), 'mask' (the main hole) and 'inputs'
(the 20-channel refinement input of the patch, with shifts of the whole
image), plus 'valid' for evaluation. `create_datasets` assembles both
splits from a two_stage training config.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import grain
import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from inpaint_jax import files, masks, parallel, two_stage
from inpaint_jax.data import datasets, pipeline

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when what a cache entry holds changes.


class CoarseCacheError(ValueError):
    """A cache that cannot give training patches (e.g. no image has a usable patch)."""


class CacheSource:
    """Random-access source over the usable entries of one split: `[i]` -> {image, mask, merged}."""

    def __init__(self, directory: str | Path, names: list[str]):
        self.directory = Path(directory)
        self.names = list(names)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        with np.load(self.directory / f"{self.names[index]}.npz") as entry:
            return {key: entry[key] for key in ("image", "mask", "merged")}


def _entry_name(index: int, k: int) -> str:
    return f"{index:08d}_{k}"


def _fit_longer_side(image: np.ndarray, max_side: int) -> np.ndarray:
    """`image` scaled down (area averaging) so that its longer side is at most `max_side` (0: as is)."""
    height, width = image.shape[:2]
    if not max_side or max(height, width) <= max_side:
        return image
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] floats (or uint8) as uint8."""
    if image.dtype == np.uint8:
        return image
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def _compute_entry(record, *, coarse_model, coarse_size: int, mask_fn: masks.MaskFn,
                   rng: np.random.Generator, max_side: int) -> dict[str, np.ndarray]:
    """image, mask and merged (uint8) of one record and one mask draw."""
    image, _ = pipeline.decode_record(record)
    image = _to_uint8(_fit_longer_side(image, max_side))
    height, width = image.shape[:2]
    mask = mask_fn(rng, height, width).mask
    merged = two_stage.coarse_complete(coarse_model, image.astype(np.float32) / 255, mask,
                                       coarse_size)
    return {"image": image, "mask": mask.astype(np.uint8), "merged": _to_uint8(merged)}


def _index_path(directory: Path, patch_size: int, hole_range: tuple[float, float],
                process: int) -> Path:
    """The list of usable entries that `process` (of all processes) wrote for these patch settings."""
    return directory / (f"usable-{patch_size}px-{hole_range[0]:g}-{hole_range[1]:g}-"
                        f"{process}-of-{jax.process_count()}.json")


def _skip_reason(height: int, width: int, mask: np.ndarray, patch_size: int,
                 hole_range: tuple[float, float]) -> str | None:
    """Why an entry gives no training patch, or None if it gives one."""
    if min(height, width) < patch_size:
        return f"{height}x{width} is smaller than a {patch_size} px patch"
    if not len(two_stage.patch_positions(mask, patch_size, hole_range)):
        return (f"no {patch_size} px patch has a hole covering {hole_range[0]:.0%}-"
                f"{hole_range[1]:.0%} of it")
    return None


def build_cache(source, directory: str | Path, *, coarse_model: Callable, coarse_size: int,
                mask_fn: masks.MaskFn, seed: int, masks_per_image: int, max_side: int,
                patch_size: int, hole_range: tuple[float, float]) -> CacheSource:
    """Computes the missing entries of this process's share, then returns every usable entry.

    Args:
      source: random-access records {'image', 'image_id'} (`data.sources`).
      directory: this split's cache folder (created), shared by all processes.
      coarse_model: (image, mask) -> prediction, e.g. `inference.load_model`.
      coarse_size: the coarse model's working size (`two_stage.coarse_complete`).
      mask_fn: draws each entry's mask at the image's size.
      seed: seed of the masks; entry (index, k) uses masks.mask_rng(seed, index, k).
      masks_per_image: entries (masks) per image.
      max_side: longer side images are scaled down to (0 = full resolution).
      patch_size, hole_range: what makes an entry usable.

    Raises:
      CoarseCacheError: no entry of the split has a usable patch.
    """
    directory = files.check_writable_dir(directory)
    index_path = functools.partial(_index_path, directory, patch_size, hole_range)
    if not index_path(jax.process_index()).exists():
        _build_share(source, directory, index_path(jax.process_index()), coarse_model=coarse_model,
                     coarse_size=coarse_size, mask_fn=mask_fn, seed=seed,
                     masks_per_image=masks_per_image, max_side=max_side,
                     patch_size=patch_size, hole_range=hole_range)
    multihost_utils.sync_global_devices(f"coarse cache {directory}")
    usable, skipped = [], {}
    for process in range(jax.process_count()):
        part = json.loads(index_path(process).read_text())
        usable += part["usable"]
        skipped.update(part["skipped"])
    if skipped:
        logger.warning("The coarse cache in %s skips %d of %d entries: %s", directory,
                       len(skipped), len(skipped) + len(usable),
                       "; ".join(f"{name}: {why}" for name, why in sorted(skipped.items())[:5]))
    if not usable:
        raise CoarseCacheError(
            f"none of the {len(skipped)} images x masks in {directory} has a {patch_size} px "
            f"patch whose hole covers {hole_range[0]:.0%}-{hole_range[1]:.0%} of it; use a "
            "smaller config.data.crop_size, larger images or other masks (config.mask)"
        )
    return CacheSource(directory, sorted(usable))


def _build_share(source, directory: Path, index_path: Path, *, coarse_model, coarse_size: int,
                 mask_fn: masks.MaskFn, seed: int, masks_per_image: int, max_side: int,
                 patch_size: int, hole_range: tuple[float, float]) -> None:
    """Writes this process's missing entries and the list of its usable ones."""
    usable, skipped, computed = [], {}, 0
    for index in range(jax.process_index(), len(source), jax.process_count()):
        for k in range(masks_per_image):
            name = _entry_name(index, k)
            path = directory / f"{name}.npz"
            if path.exists():
                with np.load(path) as entry:
                    mask, (height, width) = entry["mask"], entry["image"].shape[:2]
            else:
                entry = _compute_entry(source[index], coarse_model=coarse_model,
                                       coarse_size=coarse_size, mask_fn=mask_fn,
                                       rng=masks.mask_rng(seed, index, k), max_side=max_side)
                with files.atomic_write(path, binary=True) as file:
                    np.savez(file, **entry)
                mask, (height, width) = entry["mask"], entry["image"].shape[:2]
                computed += 1
            reason = _skip_reason(height, width, mask, patch_size, hole_range)
            if reason:
                skipped[name] = reason
            else:
                usable.append(name)
    logger.info("Coarse cache %s: computed %d entries, %d usable, %d skipped.", directory,
                computed, len(usable), len(skipped))
    with files.atomic_write(index_path) as file:
        json.dump({"usable": usable, "skipped": skipped}, file)


def _patch(entry: dict[str, np.ndarray], box: two_stage.Box, shift_fraction: float) -> dict:
    """The batch example of `entry` for `box`: image and mask patches and the 20-channel input."""
    image = entry["image"].astype(np.float32) / 255
    mask = entry["mask"].astype(np.float32)
    merged = entry["merged"].astype(np.float32) / 255
    top, left, height, width = box
    offsets = two_stage.shift_offsets(*image.shape[:2], shift_fraction)
    return {
        "image": image[top:top + height, left:left + width],
        "mask": mask[top:top + height, left:left + width],
        "inputs": two_stage.refinement_input(merged, mask, offsets, box),
    }


def _random_patch(entry, rng: np.random.Generator, *, patch_size: int, shift_fraction: float,
                  hole_range: tuple[float, float]) -> dict:
    """A patch drawn with `rng` among the entry's usable ones."""
    box = two_stage.sample_patch_box(entry["mask"], patch_size, rng, hole_range)
    return _patch(entry, box, shift_fraction)


def create_train_iterator(cache: CacheSource, *, batch_size: int, patch_size: int,
                          shift_fraction: float, hole_range: tuple[float, float], seed: int,
                          worker_count: int = 0) -> grain.DatasetIterator:
    """Infinite, checkpointable batches of random usable patches (see `pipeline.train_batches`).

    Entries are shuffled per epoch with `seed`; this process reads every
    `process_count`-th of the stream.
    """
    transform = functools.partial(_random_patch, patch_size=patch_size,
                                  shift_fraction=shift_fraction, hole_range=hole_range)
    return pipeline.train_batches(cache, transform, batch_size=batch_size, seed=seed,
                                  shard_index=jax.process_index(),
                                  shard_count=jax.process_count(), worker_count=worker_count)


def _fixed_patch(index: int, *, cache: CacheSource, seed: int, **settings) -> dict:
    """Entry `index`'s evaluation patch, drawn with masks.mask_rng(seed, index)."""
    return _random_patch(cache[index], masks.mask_rng(seed, index), **settings)


def create_eval_iterator(cache: CacheSource, *, batch_size: int, patch_size: int,
                         shift_fraction: float, hole_range: tuple[float, float],
                         seed: int) -> grain.DatasetIterator:
    """One pass over this process's share of the entries, one fixed patch each (+ 'valid')."""
    example = functools.partial(_fixed_patch, cache=cache, seed=seed, patch_size=patch_size,
                                shift_fraction=shift_fraction, hole_range=hole_range)
    return pipeline.eval_batches(len(cache), example, batch_size=batch_size,
                                 shard_index=jax.process_index(),
                                 shard_count=jax.process_count())


def fingerprint(config: ml_collections.ConfigDict, coarse) -> str:
    """A short hash of everything that determines the entries (not the patch settings).

    `coarse` is the loaded coarse model (an `inference.InpaintingModel`) of
    `config.coarse_workdir`.
    """
    data = config.data
    identity = {
        "version": FORMAT_VERSION,
        "coarse": {"name": coarse.name, "step": coarse.step,
                   "model_config": coarse.model_config.to_dict(),
                   "workdir": os.path.abspath(os.path.expanduser(config.coarse_workdir)),
                   "size": config.model.coarse_size},
        "data": {"name": data.name, "data_dir": os.path.abspath(os.path.expanduser(data.data_dir)),
                 "manual_dir": data.manual_dir, "max_side": data.max_side},
        "mask": {"kind": config.mask.kind, "params": config.mask.params.to_dict(),
                 "local_size": config.mask.get("local_size")},
        "seeds": [config.seed, config.eval.mask_seed],
        "masks_per_image": config.masks_per_image,
    }
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def create_datasets(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, coarse,
                    cache_root: str) -> datasets.Datasets:
    """Builds (or reuses) the cache of both splits under `cache_root`; returns the patch iterators.

    `config` is a two_stage training config, `coarse` its loaded coarse model.
    """
    root = os.path.join(cache_root, fingerprint(config, coarse))
    data = config.data
    split_sources = datasets.data_sources(config)
    mask_fn = datasets.mask_fn(config)
    patch = dict(patch_size=data.crop_size, shift_fraction=config.model.shift_fraction,
                 hole_range=tuple(config.patch_hole_range))
    train_cache, eval_cache = (
        build_cache(
            source,
            os.path.join(root, split),
            coarse_model=coarse,
            coarse_size=config.model.coarse_size,
            mask_fn=mask_fn,
            seed=seed,
            masks_per_image=config.masks_per_image,
            max_side=data.max_side,
            patch_size=patch["patch_size"],
            hole_range=patch["hole_range"],
        )
        for source, split, seed in zip(split_sources, (data.train_split, data.eval_split),
                                       (config.seed, config.eval.mask_seed))
    )
    train = create_train_iterator(
        train_cache,
        batch_size=parallel.per_process_batch_size(config.global_batch_size, mesh),
        seed=config.seed,
        worker_count=data.worker_count,
        **patch,
    )
    eval_batch_size = parallel.per_process_batch_size(config.eval.global_batch_size, mesh)

    def eval_batches():
        batches = create_eval_iterator(eval_cache, batch_size=eval_batch_size,
                                       seed=config.eval.mask_seed, **patch)
        return datasets.first_batches(batches, config.eval.max_batches)

    return datasets.Datasets(train=train, eval_batches=eval_batches)
