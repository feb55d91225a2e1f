"""The seeded evaluation benchmark: methods x images x masks -> metrics by hole-area bin.

A *method* (:class:`Method`) completes an image: ``fill(image, mask)`` takes a
float32 (H, W, 3) image in [0, 1] and a float32 (H, W, 1) mask (1 = hole) and
returns the completed image. Methods come from a trained model
(:func:`model_method`) or from the classical baselines (:func:`baseline`).
Every output is composited before it is scored, so known pixels are always the
original ones and only the hole is compared.

Images (:class:`ImageSet`) come from a dataset split (:func:`dataset_images`),
a folder (:func:`folder_images`) or memory (:meth:`ImageSet.from_arrays`).
Each is made square at every evaluation size (:func:`fit_square`):

* ``crop`` (default): the shortest side is resized to the size, then the
  centre square is cut out (the training pipeline's evaluation crop; no
  distortion).
* ``stretch``: the whole image is resized to size x size, distorting its
  aspect ratio, as the two-stage paper (Moskalenko et al. 2021, Table 1) did.

Masks are a seeded, versioned set, identical on every machine and in any
evaluation order:

* :class:`GeneratedMasks`: the mask of image ``X`` at size S is
  ``masks.make_mask_fn(kind, **params)(masks.mask_rng(seed, image_key(X)), S, S)``
  where :func:`image_key` is a SHA-256 of the id. At several sizes the same
  random stream draws each mask, so it keeps its layout, scaled.
* :class:`FolderMasks`: mask files (e.g. the NVIDIA irregular masks, white =
  hole), sorted by name; the i-th image of the evaluation order gets file
  ``i mod n``, resized to the image with nearest-neighbour interpolation.

:func:`evaluate` runs every method on every image and size and returns an
:class:`Evaluation`: per-image scores, mean metrics per hole-area bin and
overall, seconds per image, sample grids and a manifest whose ``mask_sha256``
(over every mask's bits) proves that two runs used identical masks.
:func:`format_table` and :func:`write_results` present and save it.

Timing: a method marked ``warm_up`` (a jitted model) compiles on its first
call at each image size; that call is made once, untimed, before the timed
call on the same image, and its duration is reported separately as
``warmup_seconds``. Seconds per image are wall-clock seconds of ``fill``
alone (scoring excluded), on whatever machine runs the evaluation.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import functools
import hashlib
import io
import json
import logging
import numbers
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import jax
import numpy as np
import skimage.restoration

from inpaint_jax import files, image_io, inference, masks, metrics, two_stage
from inpaint_jax.data import sources
from inpaint_jax.data.builders import common

logger = logging.getLogger(__name__)

MANIFEST_FORMAT_VERSION = 1  # bump when the manifest layout or the mask recipe changes
METRIC_NAMES = ("l1", "l2", "psnr", "ssim", "hole_l1", "hole_l2", "hole_psnr", "hole_ssim")
DEFAULT_BIN_EDGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)  # inner edges of the hole-area bins
FITS = ("crop", "stretch")
BASELINES = ("telea", "ns", "biharmonic", "patchmatch")
OVERALL = "all"  # name of the bin holding every image
OPENCV_RADIUS = 3  # cv2.inpaint neighbourhood radius in pixels (OpenCV's documented example)
PATCHMATCH_PATCH_SIZE = 5  # PatchMatch patch side in pixels (the PyPatchMatch example's value)
SAMPLE_TILE = 256  # largest side of one tile of the sample grid, in pixels
MIN_SIZE = metrics.SSIM_FILTER_SIZE  # smallest evaluation size: SSIM's window must fit

_image_metrics = jax.jit(metrics.image_metrics)


class EvaluationError(ValueError):
    """An evaluation that cannot run as asked: bad arguments, images or masks."""


# ---------------------------------------------------------------------------
# Methods


@dataclasses.dataclass(frozen=True)
class Method:
    """A named way to complete images.

    Attributes:
      name: the row label in the results.
      fill: ``fill(image, mask) -> completed`` on float32 (H, W, 3) / (H, W, 1).
      warm_up: whether the first call at a new image size compiles (and so is
        run once untimed first).
    """

    name: str
    fill: Callable[[np.ndarray, np.ndarray], np.ndarray]
    warm_up: bool = False


def model_method(model: inference.InpaintingModel, *, postprocess: bool = False) -> Method:
    """The trained ``model`` as a method (``+postprocess`` appended to its name if asked)."""
    name = f"{model.name}+postprocess" if postprocess else model.name
    fill = functools.partial(inference.inpaint, model, postprocess=postprocess)
    return Method(name=name, fill=fill, warm_up=True)


def coarse_method(model: two_stage.TwoStageModel) -> Method:
    """The coarse stage of a two-stage model alone: its completion upsampled and merged.

    Named ``<coarse model>_upsampled``; the comparison row of the two-stage
    paper's Table 1 (the coarse model at its working size, scaled up).
    """
    return Method(name=f"{model.coarse.name}_upsampled", fill=model.coarse_complete,
                  warm_up=True)


def baseline(name: str) -> Method:
    """A classical inpainting method by name, one of :data:`BASELINES`.

    * ``telea``: OpenCV fast marching (Telea 2004), ``cv2.INPAINT_TELEA``.
    * ``ns``: OpenCV Navier-Stokes (Bertalmio et al. 2001), ``cv2.INPAINT_NS``.
      Both run on the image rounded to uint8 with a radius of
      :data:`OPENCV_RADIUS` pixels.
    * ``biharmonic``: ``skimage.restoration.inpaint_biharmonic`` per channel
      (slow for large holes at high resolution).
    * ``patchmatch``: PatchMatch (Barnes et al. 2009) from the optional
      ``pypatchmatch`` package, patch size :data:`PATCHMATCH_PATCH_SIZE`.

    Outputs are composited: known pixels are returned exactly as given.
    Raises `EvaluationError` for an unknown name or a missing PatchMatch.
    """
    if name == "telea":
        return Method(name, functools.partial(_opencv_fill, flag=cv2.INPAINT_TELEA))
    if name == "ns":
        return Method(name, functools.partial(_opencv_fill, flag=cv2.INPAINT_NS))
    if name == "biharmonic":
        return Method(name, _biharmonic_fill)
    if name == "patchmatch":
        return Method(name, functools.partial(_patchmatch_fill, _import_patchmatch()))
    raise EvaluationError(f"unknown baseline {name!r}; valid baselines: {', '.join(BASELINES)}")


def composite(image: np.ndarray, completed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``completed`` in the hole (mask >= 0.5) and ``image`` exactly everywhere else."""
    return np.where(np.asarray(mask) >= 0.5, np.asarray(completed, np.float32), image)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.round(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)


def _opencv_fill(image: np.ndarray, mask: np.ndarray, *, flag: int) -> np.ndarray:
    filled = cv2.inpaint(_to_uint8(image), _to_uint8(mask[..., 0]), OPENCV_RADIUS, flag)
    return composite(image, filled.astype(np.float32) / 255, mask)


def _biharmonic_fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    filled = skimage.restoration.inpaint_biharmonic(image, mask[..., 0] >= 0.5, channel_axis=-1)
    return composite(image, filled, mask)


def _import_patchmatch():
    """The ``inpaint`` function of PyPatchMatch (the ``pypatchmatch`` wheel or its source)."""
    try:
        from patchmatch import patch_match  # the pypatchmatch wheel
    except ImportError:
        try:
            import patch_match  # vacancy/PyPatchMatch built from source
        except ImportError:
            raise EvaluationError(
                "baseline 'patchmatch' needs PyPatchMatch, which is not installed: run "
                "`pip install pypatchmatch` (its first import fetches or compiles a native "
                "library), or leave patchmatch out of the baselines"
            ) from None
    return patch_match.inpaint


def _patchmatch_fill(inpaint_fn, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    hole = _to_uint8(mask)  # (H, W, 1), 255 = hole
    filled = inpaint_fn(_to_uint8(image), hole, patch_size=PATCHMATCH_PATCH_SIZE)
    return composite(image, filled.astype(np.float32) / 255, mask)


# ---------------------------------------------------------------------------
# Images


@dataclasses.dataclass(frozen=True)
class ImageSet:
    """Evaluation images, read on demand, in evaluation order.

    Attributes:
      source: how the set was made, for the manifest (JSON-serialisable).
      count: the number of images.
      load: ``load(index)`` -> (unique image id, float32 (H, W, 3) in [0, 1]).
    """

    source: Mapping[str, Any]
    count: int
    load: Callable[[int], tuple[str, np.ndarray]]

    def __len__(self) -> int:
        return self.count

    @classmethod
    def from_arrays(cls, images: Mapping[str, np.ndarray]) -> ImageSet:
        """Images already in memory, float32 (H, W, 3) in [0, 1], by id (in this order)."""
        arrays = [np.asarray(image, np.float32) for image in images.values()]
        for image_id, image in zip(images, arrays):
            if image.ndim != 3 or image.shape[-1] != 3:
                raise EvaluationError(
                    f"image {image_id!r} has shape {image.shape}; expected (H, W, 3)"
                )
        image_ids = tuple(images)
        return cls({"arrays": len(arrays)}, len(arrays), lambda i: (image_ids[i], arrays[i]))


def dataset_images(
    name: str, split: str, *, data_dir: str, manual_dir: str | None = None, limit: int | None = None
) -> ImageSet:
    """The first ``limit`` (default: all) images of a dataset split, in the dataset's order.

    The dataset is prepared on first use; unknown names or splits and missing
    data raise the `ValueError`s of `inpaint_jax.data.sources`.
    """
    source = sources.get_data_source(
        name, split, data_dir=os.path.expanduser(data_dir), manual_dir=manual_dir
    )
    count = _limited(len(source), limit)
    if count == 0:
        raise EvaluationError(f"split {split!r} of dataset {name!r} has no images")
    return ImageSet(
        {"dataset": name, "split": split}, count, functools.partial(_decode_record, source)
    )


def folder_images(folder: str | os.PathLike, *, limit: int | None = None) -> ImageSet:
    """The images under ``folder`` (recursively), sorted by id, the first ``limit`` of them.

    Ids are relative paths without the extension, as in the ``image_folder``
    dataset, so the same photo gets the same generated mask either way.
    """
    files = list(_image_files(folder, "image").items())
    return ImageSet(
        {"folder": Path(folder).expanduser().resolve().name},
        _limited(len(files), limit),
        lambda index: (files[index][0], image_io.read_image(files[index][1])),
    )


def fit_square(image: np.ndarray, size: int, fit: str = "crop") -> np.ndarray:
    """Resizes ``image`` to ``size`` x ``size`` by ``fit`` (see the module docstring).

    Area averaging when shrinking, bicubic interpolation (clipped to [0, 1])
    when enlarging.
    """
    height, width = image.shape[:2]
    if fit == "stretch":
        return _resize(image, size, size)
    if fit != "crop":
        raise EvaluationError(f"unknown fit {fit!r}; use one of {', '.join(FITS)}")
    scale = size / min(height, width)
    new_height, new_width = max(size, round(height * scale)), max(size, round(width * scale))
    resized = _resize(image, new_height, new_width)
    top, left = (new_height - size) // 2, (new_width - size) // 2
    return resized[top : top + size, left : left + size]


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return np.asarray(image, np.float32)
    shrinking = height * width < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    resized = cv2.resize(
        np.asarray(image, np.float32), (width, height), interpolation=interpolation
    )
    return np.clip(resized, 0.0, 1.0)


def _decode_record(source, index: int) -> tuple[str, np.ndarray]:
    record = source[index]
    image_id, image = record["image_id"], record["image"]
    if isinstance(image, bytes):
        return image_id, image_io.decode_image(image, name=image_id)
    return image_id, np.asarray(image, np.float32) / 255


def _image_files(folder: str | os.PathLike, what: str) -> dict[str, Path]:
    """Image files under ``folder`` by id; raises `EvaluationError` if there are none."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise EvaluationError(
            f"{what} folder {os.fspath(folder)!r} does not exist or is not a folder"
        )
    files = common.find_image_files(folder, folder)
    if not files:
        raise EvaluationError(
            f"{what} folder {os.fspath(folder)!r} holds no image files "
            f"(extensions: {', '.join(common.IMAGE_EXTENSIONS)})"
        )
    return files


def _limited(count: int, limit: int | None) -> int:
    if limit is None:
        return count
    if isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 1:
        raise EvaluationError(f"the number of images must be a positive integer, got {limit!r}")
    return min(count, int(limit))


# ---------------------------------------------------------------------------
# Masks


class MaskSet(Protocol):
    """A deterministic source of one hole mask per (image, size)."""

    def description(self) -> dict[str, Any]:
        """What defines the set, for the manifest."""

    def mask(self, position: int, image_id: str, size: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Bool (size, size) hole map of image ``position``/``image_id``, and what it was."""


def image_key(image_id: str) -> int:
    """A stable 64-bit integer of an image id (SHA-256; unlike ``hash()``, fixed across runs)."""
    return int.from_bytes(hashlib.sha256(image_id.encode("utf-8")).digest()[:8], "big")


@dataclasses.dataclass(frozen=True)
class GeneratedMasks:
    """Masks drawn by a `masks` generator, seeded by ``seed`` and each image's id.

    Attributes:
      kind: one of ``masks.MASK_KINDS``.
      seed: non-negative seed of the whole set.
      params: the generator's parameters (omitted ones take its defaults).
    """

    kind: str
    seed: int
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    _mask_fn: masks.MaskFn = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        masks.mask_rng(self.seed)  # raises MaskConfigError for a bad seed
        object.__setattr__(self, "params", dict(self.params))
        # Built (and so validated) now rather than at the first image.
        object.__setattr__(self, "_mask_fn", masks.make_mask_fn(self.kind, **self.params))

    def description(self) -> dict[str, Any]:
        """Generator, parameters and seed."""
        return {"generator": self.kind, "params": self.params, "seed": self.seed}

    def mask(self, position: int, image_id: str, size: int) -> tuple[np.ndarray, dict[str, Any]]:
        """The image's mask (``position`` is not used) and its random-stream key."""
        key = image_key(image_id)
        sample = self._mask_fn(masks.mask_rng(self.seed, key), size, size)
        return sample.mask[..., 0] >= 0.5, {"mask_rng_key": key}


@dataclasses.dataclass(frozen=True)
class FolderMasks:
    """Mask files from a folder (white = hole), assigned in turn: image i gets file i mod n.

    Build it with :meth:`from_folder`. Files are read when used and resized to
    each size with nearest-neighbour interpolation, which keeps them binary.
    """

    folder: Path
    files: tuple[str, ...]  # paths relative to `folder`, sorted

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> FolderMasks:
        """Every mask image under ``folder``, sorted; raises `EvaluationError` if none."""
        folder = Path(folder).expanduser()
        paths = _image_files(folder, "mask").values()
        return cls(folder, tuple(path.relative_to(folder).as_posix() for path in paths))

    def description(self) -> dict[str, Any]:
        """The folder's name and the number of mask files."""
        return {"folder": self.folder.resolve().name, "num_files": len(self.files)}

    def mask(self, position: int, image_id: str, size: int) -> tuple[np.ndarray, dict[str, Any]]:
        """File ``position mod n`` at ``size`` x ``size`` (``image_id`` is not used), and its name.

        Raises ``image_io.ImageFileError``/``MaskError`` for unreadable files
        or files that are all hole at this size.
        """
        name = self.files[position % len(self.files)]
        path = self.folder / name
        hole = image_io.read_mask(path)[..., 0]
        resized = cv2.resize(hole, (size, size), interpolation=cv2.INTER_NEAREST)
        resized = image_io.validate_mask(resized, name=f"{os.fspath(path)} at {size}x{size}")
        return resized[..., 0] >= 0.5, {"mask_file": name}


# ---------------------------------------------------------------------------
# Evaluation


@dataclasses.dataclass(frozen=True)
class ImageScore:
    """The metrics of one method on one image at one size."""

    method: str
    size: int
    image_id: str
    hole_fraction: float
    seconds: float
    metrics: Mapping[str, float]


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Everything one evaluation produced.

    Attributes:
      manifest: the images, masks and their SHA-256 (see :func:`evaluate`).
      methods: method names, in order.
      sizes: evaluation sizes, in order.
      bin_edges: inner edges of the hole-area bins.
      scores: one :class:`ImageScore` per method, image and size.
      summary: mean rows per (size, bin, method); see :func:`summarize`.
      warmup_seconds: {method: {size: seconds}} of untimed first calls.
      sample_grids: {size: float32 grid image} of the first images.
    """

    manifest: Mapping[str, Any]
    methods: tuple[str, ...]
    sizes: tuple[int, ...]
    bin_edges: tuple[float, ...]
    scores: tuple[ImageScore, ...]
    summary: tuple[Mapping[str, Any], ...]
    warmup_seconds: Mapping[str, Mapping[int, float]]
    sample_grids: Mapping[int, np.ndarray]

    @property
    def manifest_sha256(self) -> str:
        """SHA-256 of the manifest's canonical JSON."""
        return hashlib.sha256(_canonical_json(self.manifest).encode("utf-8")).hexdigest()


def parse_sizes(values: Sequence[str | int]) -> tuple[int, ...]:
    """Evaluation sizes from strings or ints (e.g. ``['512', '1024']``); each at least 11 px."""
    sizes = []
    for value in values:
        text = str(value).strip()
        if not text.isdigit() or int(text) < MIN_SIZE:
            raise EvaluationError(
                f"evaluation sizes must be whole numbers of pixels >= {MIN_SIZE} (the SSIM "
                f"window), e.g. 512,1024; got {value!r}"
            )
        sizes.append(int(text))
    if not sizes:
        raise EvaluationError("give at least one evaluation size, e.g. 256 or 512,1024")
    if len(set(sizes)) != len(sizes):
        raise EvaluationError(f"evaluation sizes {sizes} repeat a size; list each once")
    return tuple(sizes)


def parse_bin_edges(values: Sequence[str | float]) -> tuple[float, ...]:
    """Inner edges of the hole-area bins from strings or numbers: increasing, in (0, 1)."""
    try:
        edges = tuple(float(value) for value in values)
    except ValueError:
        edges = ()
    if not edges or not all(0 < edge < 1 for edge in edges) or list(edges) != sorted(set(edges)):
        raise EvaluationError(
            "hole-area bin edges must be increasing fractions strictly between 0 and 1, "
            f"e.g. 0.1,0.2,0.3; got {list(values)}"
        )
    return edges


def bin_labels(bin_edges: Sequence[float]) -> tuple[str, ...]:
    """Labels of the hole-area bins: '0-10%', ..., '>60%' for the default edges."""
    percents = [f"{100 * edge:g}" for edge in bin_edges]
    lower = ["0", *percents]
    return tuple(f"{low}-{high}%" for low, high in zip(lower, percents)) + (f">{percents[-1]}%",)


def hole_bin(hole_fraction: float, bin_edges: Sequence[float]) -> str:
    """The bin label of a hole fraction; a fraction on an edge goes to the bin above it."""
    return bin_labels(bin_edges)[int(np.searchsorted(bin_edges, hole_fraction, side="right"))]


def evaluate(
    methods: Sequence[Method],
    images: ImageSet,
    mask_set: MaskSet,
    *,
    sizes: Sequence[int],
    fit: str = "crop",
    bin_edges: Sequence[float] = DEFAULT_BIN_EDGES,
    num_samples: int = 4,
) -> Evaluation:
    """Runs every method on every image at every size and scores the composited results.

    Each image is made square (:func:`fit_square`), gets its mask from
    ``mask_set`` and is completed by each method; metrics are
    ``metrics.image_metrics`` of the composited completion against the
    square image. The manifest holds the image source, the mask set, ``fit``,
    the sizes, per image the mask it got and its hole fraction at each size,
    and ``mask_sha256``: SHA-256 over every mask's id, shape and bits.
    Sample grids show the first ``num_samples`` images.

    Raises:
      EvaluationError: no methods, repeated method names, bad sizes, fit or
        bin edges, an empty image set, or a method output of the wrong shape
        or with non-finite values in the hole.
    """
    _check_methods(methods)
    sizes = parse_sizes(sizes)
    bin_edges = parse_bin_edges(bin_edges)
    if fit not in FITS:
        raise EvaluationError(f"unknown fit {fit!r}; use one of {', '.join(FITS)}")
    if len(images) == 0:
        raise EvaluationError("the image set is empty; give at least one image")

    mask_hash = hashlib.sha256()
    scores, assignments = [], []
    warmup_seconds = {method.name: {} for method in methods if method.warm_up}
    sample_rows = {size: [] for size in sizes}
    for position in range(len(images)):
        image_id, original = images.load(position)
        assignment = {"image_id": image_id, "hole_fraction": {}}
        for size in sizes:
            image = fit_square(original, size, fit)
            hole, mask_info = mask_set.mask(position, image_id, size)
            assignment.update(mask_info)
            _hash_mask(mask_hash, image_id, hole)
            hole_fraction = int(hole.sum()) / hole.size
            assignment["hole_fraction"][str(size)] = hole_fraction
            mask = hole.astype(np.float32)[..., None]
            outputs = _complete_all(methods, image, mask, warmup_seconds)
            scores += [
                ImageScore(
                    method.name,
                    size,
                    image_id,
                    hole_fraction,
                    seconds,
                    _score(completed, image, mask),
                )
                for method, (completed, seconds) in zip(methods, outputs)
            ]
            if position < num_samples:
                sample_rows[size].append(_sample_row(image, mask, [out for out, _ in outputs]))
        assignments.append(assignment)

    manifest = {
        "format_version": MANIFEST_FORMAT_VERSION,
        "images": dict(images.source),
        "masks": mask_set.description(),
        "fit": fit,
        "sizes": list(sizes),
        "assignments": assignments,
        "mask_sha256": mask_hash.hexdigest(),
    }
    names = tuple(method.name for method in methods)
    return Evaluation(
        manifest=manifest,
        methods=names,
        sizes=sizes,
        bin_edges=bin_edges,
        scores=tuple(scores),
        summary=summarize(scores, names, sizes, bin_edges),
        warmup_seconds=warmup_seconds,
        sample_grids={
            size: np.concatenate(rows, axis=0) for size, rows in sample_rows.items() if rows
        },
    )


def summarize(
    scores: Sequence[ImageScore],
    methods: Sequence[str],
    sizes: Sequence[int],
    bin_edges: Sequence[float],
) -> tuple[dict[str, Any], ...]:
    """Mean metrics and seconds per image for each size, non-empty bin (then 'all') and method.

    Each row: ``size``, ``bin``, ``method``, ``count``, the :data:`METRIC_NAMES`
    and ``sec_per_image``. Bins without images get no rows.
    """
    rows = []
    for size in sizes:
        at_size = [score for score in scores if score.size == size]
        for label in (*bin_labels(bin_edges), OVERALL):
            in_bin = [
                s
                for s in at_size
                if label == OVERALL or hole_bin(s.hole_fraction, bin_edges) == label
            ]
            for method in methods:
                chosen = [score for score in in_bin if score.method == method]
                if not chosen:
                    continue
                means = {
                    name: float(np.mean([s.metrics[name] for s in chosen])) for name in METRIC_NAMES
                }
                rows.append(
                    {
                        "size": size,
                        "bin": label,
                        "method": method,
                        "count": len(chosen),
                        **means,
                        "sec_per_image": float(np.mean([s.seconds for s in chosen])),
                    }
                )
    return tuple(rows)


def _check_methods(methods: Sequence[Method]) -> None:
    if not methods:
        raise EvaluationError("nothing to evaluate: give a trained model and/or baselines")
    names = [method.name for method in methods]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise EvaluationError(f"method names must be unique; repeated: {', '.join(repeated)}")


def _complete_all(
    methods: Sequence[Method],
    image: np.ndarray,
    mask: np.ndarray,
    warmup_seconds: dict[str, dict[int, float]],
) -> list[tuple[np.ndarray, float]]:
    """Each method's composited completion and seconds; warms up methods new to this size."""
    size = image.shape[0]
    outputs = []
    for method in methods:
        if method.warm_up and size not in warmup_seconds[method.name]:
            warmup_seconds[method.name][size] = _timed_fill(method, image, mask)[1]
        outputs.append(_timed_fill(method, image, mask))
    return outputs


def _timed_fill(method: Method, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float]:
    """The composited output of ``method`` and the seconds its ``fill`` took."""
    start = time.perf_counter()
    completed = np.asarray(method.fill(image, mask))  # asarray waits for asynchronous results
    seconds = time.perf_counter() - start
    if completed.shape != image.shape:
        raise EvaluationError(
            f"method {method.name!r} returned shape {completed.shape} for a {image.shape} image"
        )
    completed = composite(image, completed, mask)
    if not np.all(np.isfinite(completed)):
        raise EvaluationError(f"method {method.name!r} filled the hole with NaN or infinite values")
    return completed, seconds


def _score(completed: np.ndarray, image: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    values = jax.device_get(_image_metrics(completed[None], image[None], mask[None]))
    return {name: float(values[name][0]) for name in METRIC_NAMES}


def _hash_mask(digest, image_id: str, hole: np.ndarray) -> None:
    digest.update(image_id.encode("utf-8") + b"\0")
    digest.update(np.asarray(hole.shape, ">u4").tobytes())
    digest.update(np.packbits(hole).tobytes())


def _sample_row(
    image: np.ndarray, mask: np.ndarray, completions: Sequence[np.ndarray]
) -> np.ndarray:
    """[masked input (holes white) | each completion | ground truth]; tiles <= SAMPLE_TILE px."""
    tiles = [image * (1 - mask) + mask, *completions, image]
    side = min(image.shape[0], SAMPLE_TILE)
    return np.concatenate([_resize(np.clip(tile, 0, 1), side, side) for tile in tiles], axis=1)


# ---------------------------------------------------------------------------
# Reporting


_TABLE_FORMATS = {
    "l1": ".4f",
    "l2": ".5f",
    "psnr": ".2f",
    "ssim": ".4f",
    "hole_l1": ".4f",
    "hole_l2": ".5f",
    "hole_psnr": ".2f",
    "hole_ssim": ".4f",
    "sec_per_image": ".4f",
}


def format_table(evaluation: Evaluation) -> str:
    """The summary as aligned text: one block per size, rows bin x method."""
    headers = ["hole area", "method", "n", *METRIC_NAMES, "sec/img"]
    blocks = []
    for size in evaluation.sizes:
        rows = [
            [
                row["bin"],
                row["method"],
                str(row["count"]),
                *(
                    format(row[name], _TABLE_FORMATS[name])
                    for name in (*METRIC_NAMES, "sec_per_image")
                ),
            ]
            for row in evaluation.summary
            if row["size"] == size
        ]
        widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]
        num_images = len(evaluation.manifest["assignments"])
        lines = [f"{size}x{size} ({evaluation.manifest['fit']}), {num_images} images"]
        for cells in (headers, *rows):
            lines.append(
                "  ".join(
                    cell.ljust(width) if i < 2 else cell.rjust(width)
                    for i, (cell, width) in enumerate(zip(cells, widths))
                )
            )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def prepare_output_dir(path: str | os.PathLike) -> Path:
    """Creates the output folder if needed and checks that files can be written there."""
    path = Path(path).expanduser()
    try:
        files.check_writable_dir(path)
    except OSError as error:
        raise EvaluationError(
            f"cannot write results to {os.fspath(path)!r} ({error.strerror or error}); "
            "choose an output folder you can write to"
        ) from error
    return path


def default_output_dir(workdir: str | os.PathLike) -> Path:
    """``<workdir>/eval_<local time>``, e.g. ``eval_20240131-142501``."""
    return Path(workdir).expanduser() / f"eval_{datetime.datetime.now():%Y%m%d-%H%M%S}"


def write_results(evaluation: Evaluation, output_dir: str | os.PathLike) -> list[Path]:
    """Writes manifest.json, results.json, results.csv and samples_<size>.png, each atomically.

    Returns the paths written.
    """
    output_dir = prepare_output_dir(output_dir)
    results = {
        "format_version": MANIFEST_FORMAT_VERSION,
        "manifest_sha256": evaluation.manifest_sha256,
        "mask_sha256": evaluation.manifest["mask_sha256"],
        "methods": list(evaluation.methods),
        "sizes": list(evaluation.sizes),
        "bin_edges": list(evaluation.bin_edges),
        "summary": list(evaluation.summary),
        "warmup_seconds": {
            name: {str(size): seconds for size, seconds in by_size.items()}
            for name, by_size in evaluation.warmup_seconds.items()
        },
        "per_image": [dataclasses.asdict(score) for score in evaluation.scores],
    }
    written = [
        output_dir / "manifest.json",
        output_dir / "results.json",
        output_dir / "results.csv",
    ]
    _write_text(written[0], json.dumps(evaluation.manifest, indent=1) + "\n")
    _write_text(written[1], json.dumps(results, indent=1) + "\n")
    _write_text(written[2], _summary_csv(evaluation.summary))
    for size, grid in evaluation.sample_grids.items():
        written.append(output_dir / f"samples_{size}.png")
        image_io.write_image(written[-1], grid)
    return written


def _summary_csv(summary: Sequence[Mapping[str, Any]]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(
        text,
        ["size", "bin", "method", "count", *METRIC_NAMES, "sec_per_image"],
        lineterminator="\n",
    )
    writer.writeheader()
    writer.writerows(summary)
    return text.getvalue()


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _write_text(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` atomically."""
    with files.atomic_write(path) as file:
        file.write(text)
