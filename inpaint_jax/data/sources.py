"""The data-source entry point: one split of a dataset as random-access records.

`get_data_source(name, split, data_dir=...)` returns an `ImageRecordSource`
whose records are ``{'image': ..., 'image_id': str}``: 'image' is the original
encoded file bytes, except for the stock `places365_small`, where it is a
uint8 (256, 256, 3) array. Datasets are TFDS datasets written as ArrayRecord
in `data_dir` and read with `builder.as_data_source` (which grain consumes).
A dataset that is not prepared yet is built on first use, offline (TFDS'
GCS lookups are off), from `manual_dir` where the dataset needs one; see
`inpaint_jax.data.builders` for the layouts. `places365_small` cannot be built
here (it needs a download) and is only read when already prepared.

On several hosts, prepare the dataset once (`build_dataset`) before starting
the job: concurrent builds into one `data_dir` are not coordinated.
"""

import logging
import os
import posixpath
from collections.abc import Sequence
from pathlib import Path

import tensorflow_datasets as tfds

from inpaint_jax.data.builders import BUILDERS, ManualDirError, common

logger = logging.getLogger(__name__)

DATASETS = ("sample_photos", "image_folder", "paris_street_view", "places365_hr", "places365_small")

# Splits of the stock TFDS datasets used here (our builders list theirs in `SPLITS`).
_STOCK_SPLITS = {"places365_small": ("train", "validation", "test")}


class DatasetNotPreparedError(ValueError):
    """A dataset that cannot be built here is not (or not usably) prepared in `data_dir`."""


def _encoded_record(record: dict) -> dict:
    """The common record of our builders' examples."""
    return {"image": bytes(record["image"]), "image_id": record["image_id"].decode("utf-8")}


def _places365_small_record(record: dict) -> dict:
    """The common record of a stock places365_small example: id = file name without extension."""
    filename = record["filename"].decode("utf-8")
    return {"image": record["image"], "image_id": posixpath.splitext(filename)[0]}


class ImageRecordSource:
    """One split of a dataset: `len()` and `[index]` -> ``{'image', 'image_id'}``; picklable."""

    def __init__(self, records: Sequence[dict], *, dataset: str, split: str):
        self._records = records
        self._to_record = (_places365_small_record if dataset in _STOCK_SPLITS
                           else _encoded_record)
        self.dataset = dataset
        self.split = split

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> dict:
        return self._to_record(self._records[index])

    def __repr__(self) -> str:
        return (f"ImageRecordSource(dataset={self.dataset!r}, split={self.split!r}, "
                f"num_records={len(self)})")


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")


def splits_of(name: str) -> tuple[str, ...]:
    """The split names of dataset `name` (one of `DATASETS`)."""
    _check_name(name)
    return _STOCK_SPLITS[name] if name in _STOCK_SPLITS else BUILDERS[name].SPLITS


def _check_random_access(builder: tfds.core.DatasetBuilder) -> None:
    """Refuses a prepared dataset that was written in a format without random access."""
    formats = builder.info.available_file_formats()
    if not formats & set(tfds.core.FileFormat.with_random_access()):
        raise DatasetNotPreparedError(
            f"{builder.name} in {builder.data_dir} was written as "
            f"{sorted(f.value for f in formats)}, which cannot be read by index. Delete that "
            "folder and prepare it again with file_format='array_record' "
            "(tfds build ... --file_format=array_record).")


def _prepared_places365_small(data_dir: str, manual_dir: str | None,
                              options: dict) -> tfds.core.DatasetBuilder:
    """The stock places365_small builder, if the dataset is prepared in `data_dir`."""
    common.reject_options("places365_small", options, accepted=())
    if manual_dir is not None:
        raise ValueError("dataset 'places365_small' does not read manual_dir; leave it unset")
    builder = tfds.builder("places365_small", data_dir=data_dir, try_gcs=False)
    if not builder.is_prepared():
        raise DatasetNotPreparedError(
            f"places365_small is not prepared in data_dir={data_dir} (looked for "
            f"{builder.data_dir}), and it cannot be downloaded from here. On a machine with "
            "internet access run\n"
            f"  tfds build places365_small --data_dir={data_dir} --file_format=array_record\n"
            "(or build it there into another folder and copy its places365_small/ folder into "
            "data_dir).")
    return builder


def _prepared_own(name: str, data_dir: str, manual_dir: str | None,
                  options: dict) -> tfds.core.DatasetBuilder:
    """The builder of one of our datasets, prepared (offline) first if needed."""
    builder_cls = BUILDERS[name]
    instructions = builder_cls.MANUAL_DOWNLOAD_INSTRUCTIONS
    if manual_dir is not None and instructions is None:
        raise ValueError(f"dataset {name!r} does not read manual_dir; leave it unset")
    builder = builder_cls.from_options(data_dir=data_dir, manual_dir=manual_dir, **options)
    if builder.is_prepared():
        return builder
    if instructions is not None:
        if manual_dir is None:
            raise ManualDirError(f"{name} is not prepared in {data_dir} yet; preparing it needs "
                                 f"manual_dir.\n{instructions}")
        common.require_dir(Path(manual_dir), f"{name} manual_dir", instructions)
    logger.info("Preparing %s in %s", name, builder.data_dir)
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir,
                                                     try_download_gcs=False))
    return builder


def build_dataset(name: str, *, data_dir: str, manual_dir: str | None = None,
                  **builder_kwargs) -> tfds.core.DatasetBuilder:
    """Prepares dataset `name` in `data_dir` unless it is there already; returns its TFDS builder.

    Building is offline and reads `manual_dir` (required, and only accepted, by
    the datasets that need one). `builder_kwargs` are dataset options:
    `image_folder` takes `eval_fraction`; the others take none.
    Raises `ValueError` subclasses with the fix for: an unknown name or option,
    a missing or badly laid out manual_dir (`ManualDirError`), too few
    readable images (`NotEnoughImagesError`), places365_small not prepared
    (`DatasetNotPreparedError`).
    """
    _check_name(name)
    data_dir = os.path.expanduser(os.fspath(data_dir))
    if manual_dir is not None:
        manual_dir = os.path.expanduser(os.fspath(manual_dir))
    if name in _STOCK_SPLITS:
        builder = _prepared_places365_small(data_dir, manual_dir, builder_kwargs)
    else:
        builder = _prepared_own(name, data_dir, manual_dir, builder_kwargs)
    _check_random_access(builder)
    return builder


def get_data_source(name: str, split: str, *, data_dir: str, manual_dir: str | None = None,
                    **builder_kwargs) -> ImageRecordSource:
    """Random access to `split` of dataset `name`, prepared in `data_dir` on first use.

    See `build_dataset` for `manual_dir`, `builder_kwargs` and the errors;
    an unknown split raises `ValueError` listing the dataset's splits.
    """
    splits = splits_of(name)
    if split not in splits:
        raise ValueError(f"unknown split {split!r} of dataset {name!r}; available splits: {splits}")
    builder = build_dataset(name, data_dir=data_dir, manual_dir=manual_dir, **builder_kwargs)
    return ImageRecordSource(builder.as_data_source(split=split), dataset=name, split=split)
