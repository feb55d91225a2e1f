"""Tests for inpaint_jax.data.sources: dataset names, records, offline building and its errors.

The datasets' own layouts and errors are in test_builders.py.
"""

import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.datasets.places365_small import places365_small_dataset_builder
from tests.helpers import write_photos

from inpaint_jax.data import sources
from inpaint_jax.data.builders import BUILDERS, ManualDirError
from inpaint_jax.image_io import decode_image


def _write_image(path: Path, size=(20, 28), seed=0) -> None:
    """Random pixels in an image file (format from the extension)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_every_dataset_has_splits_and_a_builder_or_is_the_stock_places365_small():
    assert set(sources.DATASETS) == {*BUILDERS, "places365_small"}
    for name in sources.DATASETS:
        splits = sources.splits_of(name)
        assert splits and all(isinstance(split, str) for split in splits)
    assert sources.splits_of("image_folder") == ("train", "eval")
    assert sources.splits_of("places365_small") == ("train", "validation", "test")


@pytest.fixture(scope="module")
def generated_folder(tmp_path_factory):
    """(folder of 6 generated PNG photos, data_dir the image_folder dataset is built into)."""
    folder = write_photos(str(tmp_path_factory.mktemp("photos")), 6)
    return folder, str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def folder_sources(generated_folder):
    """{split: source} of image_folder over the generated folder, built offline on first use."""
    folder, data_dir = generated_folder
    return {split: sources.get_data_source("image_folder", split, data_dir=data_dir,
                                           manual_dir=folder, eval_fraction=0.3)
            for split in ("train", "eval")}


def test_image_folder_is_built_offline_and_its_records_are_the_file_bytes_and_ids(
    generated_folder, folder_sources
):
    folder, data_dir = generated_folder
    files = {path.stem: path.read_bytes() for path in Path(folder).glob("*.png")}
    seen = {}
    for split, source in folder_sources.items():
        assert isinstance(source, sources.ImageRecordSource)
        assert (source.dataset, source.split) == ("image_folder", split)
        assert repr(source) == (f"ImageRecordSource(dataset='image_folder', split={split!r}, "
                                f"num_records={len(source)})")
        assert len(source) > 0
        for index in range(len(source)):
            record = source[index]
            assert set(record) == {"image", "image_id"}
            assert isinstance(record["image"], bytes) and isinstance(record["image_id"], str)
            assert record["image_id"] not in seen
            seen[record["image_id"]] = record["image"]
    assert seen == files
    assert decode_image(seen["photo_000"]).shape[-1] == 3
    # Prepared once: building again reuses it.
    builder = sources.build_dataset("image_folder", data_dir=data_dir, manual_dir=folder,
                                    eval_fraction=0.3)
    assert builder.is_prepared()
    assert builder.data_dir.startswith(data_dir)


def test_source_survives_pickling(folder_sources):
    source = folder_sources["train"]
    restored = pickle.loads(pickle.dumps(source))
    assert len(restored) == len(source)
    assert [restored[i] for i in range(len(source))] == [source[i] for i in range(len(source))]
    assert source[np.int64(0)] == source[0]


def test_unknown_dataset_and_split_list_the_choices(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'paris'.*places365_small"):
        sources.get_data_source("paris", "train", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unknown dataset 'paris'"):
        sources.build_dataset("paris", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"unknown split 'validation'.*\('train', 'eval'\)"):
        sources.get_data_source("sample_photos", "validation", data_dir=str(tmp_path))


@pytest.mark.parametrize("name, message", [
    ("image_folder", "needs manual_dir"),
    ("paris_street_view", "(?s)needs manual_dir.*paris_eval_gt"),
    ("places365_hr", "(?s)needs manual_dir.*val_large"),
])
def test_a_manual_dataset_not_prepared_without_manual_dir_says_it_needs_one(tmp_path, name,
                                                                             message):
    with pytest.raises(ManualDirError, match=message):
        sources.get_data_source(name, sources.splits_of(name)[0], data_dir=str(tmp_path))
    assert not any(tmp_path.iterdir())  # nothing was written


def test_datasets_without_manual_dir_refuse_one(tmp_path):
    with pytest.raises(ValueError, match="does not read manual_dir"):
        sources.get_data_source("sample_photos", "train", data_dir=str(tmp_path),
                                manual_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unknown option"):
        sources.get_data_source("sample_photos", "train", data_dir=str(tmp_path),
                                eval_fraction=0.1)
    with pytest.raises(ValueError, match="does not read manual_dir"):
        sources.get_data_source("places365_small", "train", data_dir=str(tmp_path),
                                manual_dir=str(tmp_path))


def test_dataset_written_without_random_access_is_refused(tmp_path):
    root = tmp_path / "paris"
    for folder in ("paris_train_original", "paris_eval_gt"):
        _write_image(root / folder / "0.png", size=(4, 4))
    data_dir = str(tmp_path / "tfds")
    BUILDERS["paris_street_view"](data_dir=data_dir).download_and_prepare(
        file_format="tfrecord", download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
    with pytest.raises(sources.DatasetNotPreparedError, match="array_record"):
        sources.get_data_source("paris_street_view", "train", data_dir=data_dir)


# ------------------------------------------------------------- places365_small


def test_places365_small_not_prepared_explains_how_to_prepare(tmp_path):
    with pytest.raises(sources.DatasetNotPreparedError,
                       match="tfds build places365_small.*array_record"):
        sources.get_data_source("places365_small", "train", data_dir=str(tmp_path))


def _places365_small_from_local_archives(root: Path):
    """The stock places365_small builder, reading small local archives instead of downloading."""
    annotations = root / "annotations"
    annotations.mkdir()
    splits = {"train": ("data_256", "/a/abbey/00000001.jpg", "places365_train_standard.txt"),
              "validation": ("val_256", "Places365_val_00000001.jpg", "places365_val.txt")}
    for prefix, name, annotation in splits.values():
        _write_image(root / prefix / name.lstrip("/"), size=(256, 256))
        (annotations / annotation).write_text(f"{name} 7\n")
        with tarfile.open(root / f"{prefix}.tar", "w") as tar:
            tar.add(root / prefix, arcname=prefix)

    class LocalPlaces365Small(places365_small_dataset_builder.Builder, skip_registration=True):
        name = "places365_small"
        code_path = None  # no checksums to look up (and tensorflow/datasets#11212)

        def _split_generators(self, dl_manager):
            return [tfds.core.SplitGenerator(name=split, gen_kwargs=dict(
                archive=dl_manager.iter_archive(root / f"{prefix}.tar"), path_prefix=prefix,
                annotation_path=annotations / annotation, split_name=split))
                for split, (prefix, _, annotation) in splits.items()]

    return LocalPlaces365Small


def test_places365_small_records_are_mapped_to_the_common_format(tmp_path):
    data_dir = str(tmp_path / "tfds")
    builder = _places365_small_from_local_archives(tmp_path)(data_dir=data_dir)
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    source = sources.get_data_source("places365_small", "validation", data_dir=data_dir)
    assert len(source) == 1
    record = source[0]
    assert set(record) == {"image", "image_id"}
    assert record["image_id"] == "val_256/Places365_val_00000001"
    assert record["image"].dtype == np.uint8 and record["image"].shape == (256, 256, 3)
    original = np.asarray(Image.open(tmp_path / "val_256" / "Places365_val_00000001.jpg"))
    assert np.abs(record["image"].astype(int) - original).mean() < 2
