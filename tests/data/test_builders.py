"""Tests for the TFDS builders (inpaint_jax.data.builders), built through inpaint_jax.data.sources.

Every dataset is built offline from small generated images under tmp_path
(sample_photos from the photos installed packages ship). Builds that several
tests read are shared through module-scoped fixtures. What data.sources adds
to the builders (dataset names, records, its errors) is in test_sources.py.
"""
import importlib.util
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from inpaint_jax.data import sources
from inpaint_jax.data.builders import (ManualDirError, NotEnoughImagesError,
                                       image_folder, sample_photos)
from inpaint_jax.image_io import decode_image

_RNG = np.random.default_rng(0)
_EXIF_ORIENTATION = 0x0112


def _write_image(path: Path, size=(20, 28), exif_orientation: int | None = None) -> np.ndarray:
    """Writes random pixels (format from the extension) and returns them as uint8 (H, W, 3)."""
    pixels = _RNG.integers(0, 256, (*size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels)
    if exif_orientation is None:
        image.save(path)
    else:
        exif = Image.Exif()
        exif[_EXIF_ORIENTATION] = exif_orientation
        image.save(path, exif=exif)
    return pixels


def _write_corrupt_files(folder: Path) -> list[str]:
    """Writes a truncated JPEG and a text file named .jpg; returns their names."""
    _write_image(folder / "whole.jpg", size=(64, 64))
    data = (folder / "whole.jpg").read_bytes()
    (folder / "whole.jpg").unlink()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "notes.jpg").write_text("not an image")
    return ["truncated.jpg", "notes.jpg"]


def _records(source) -> dict:
    """{image_id: image} of every record of a source."""
    return {record["image_id"]: record["image"] for record in map(source.__getitem__,
                                                                 range(len(source)))}


def _split_records(name: str, splits, **kwargs) -> dict[str, dict]:
    """{split: {image_id: image}} of dataset `name`, built by `get_data_source(**kwargs)`."""
    return {split: _records(sources.get_data_source(name, split, **kwargs)) for split in splits}


def _as_uint8(data: bytes) -> np.ndarray:
    return np.round(decode_image(data) * 255).astype(np.uint8)


# ---------------------------------------------------------------- image_folder


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """A nested folder of PNG/JPEG photos with mixed-case extensions, plus files to ignore.

    Returns (folder, {image_id: pixels of the PNGs}, all image ids).
    """
    folder = tmp_path_factory.mktemp("photos")
    pngs = {
        "a": _write_image(folder / "a.png"),
        "trip/b": _write_image(folder / "trip" / "b.PNG"),
        "trip/2019/c": _write_image(folder / "trip" / "2019" / "c.png", size=(9, 13)),
    }
    for i in range(5):
        _write_image(folder / "trip" / f"jpeg_{i}.JPG")
    _write_image(folder / "d.jpeg")
    (folder / "readme.txt").write_text("ignored: not an image extension")
    _write_image(folder / ".hidden" / "e.png")
    ids = set(pngs) | {f"trip/jpeg_{i}" for i in range(5)} | {"d"}
    return folder, pngs, ids


@pytest.fixture(scope="module")
def folder_sources(photo_folder, tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds_image_folder"))
    return {split: sources.get_data_source("image_folder", split, data_dir=data_dir,
                                           manual_dir=str(photo_folder[0]), eval_fraction=0.3)
            for split in ("train", "eval")}


def test_image_folder_finds_every_image_and_keeps_the_original_bytes(photo_folder,
                                                                     folder_sources):
    folder, pngs, ids = photo_folder
    train, evaluation = _records(folder_sources["train"]), _records(folder_sources["eval"])
    assert train and evaluation and not set(train) & set(evaluation)
    assert set(train) | set(evaluation) == ids
    records = {**train, **evaluation}
    files = {p.relative_to(folder).with_suffix("").as_posix(): p for p in folder.rglob("*.*")}
    for image_id, data in records.items():
        assert isinstance(data, bytes) and data == files[image_id].read_bytes()
    for image_id, pixels in pngs.items():
        np.testing.assert_array_equal(_as_uint8(records[image_id]), pixels)


def test_image_folder_stores_upright_size(tmp_path):
    folder = tmp_path / "photos"
    # Orientation 6 = rotate 90 degrees: stored 20 x 40, upright 40 x 20.
    _write_image(folder / "rotated.jpg", size=(20, 40), exif_orientation=6)
    _write_image(folder / "plain.png", size=(10, 30))
    builder = sources.build_dataset("image_folder", data_dir=str(tmp_path / "tfds"),
                                    manual_dir=str(folder), eval_fraction=0.5)
    records = [r for split in ("train", "eval") for r in builder.as_data_source(split)]
    sizes = {r["image_id"].decode(): (r["height"], r["width"]) for r in records}
    assert sizes == {"rotated": (40, 20), "plain": (10, 30)}


def test_image_folder_skips_and_reports_unreadable_files(tmp_path, caplog):
    folder = tmp_path / "photos"
    for name in ("x.png", "y.jpg", "z.png", "same.png", "same.jpg"):
        _write_image(folder / name)
    bad_names = _write_corrupt_files(folder)
    with caplog.at_level("WARNING", logger="inpaint_jax"):
        records = _split_records("image_folder", ("train", "eval"),
                                 data_dir=str(tmp_path / "tfds"), manual_dir=str(folder))
    assert set(records["train"]) | set(records["eval"]) == {"x", "y", "z", "same"}
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("inpaint_jax")]
    summary = [m for m in warnings if "skipped 2 unreadable" in m]
    assert len(summary) == 1 and all(name in summary[0] for name in bad_names)
    # The id clash: one file kept, the other reported.
    assert any("same.png" in m and "same.jpg" in m for m in warnings)


def test_image_folder_split_is_deterministic_and_stable_when_photos_are_added(tmp_path):
    folder = tmp_path / "photos"
    for i in range(30):
        _write_image(folder / f"img_{i:02d}.png", size=(4, 4))

    def split_ids(data_dir):
        records = _split_records("image_folder", ("train", "eval"), data_dir=str(data_dir),
                                 manual_dir=str(folder), eval_fraction=0.2)
        return set(records["train"]), set(records["eval"])

    train, evaluation = split_ids(tmp_path / "tfds")
    assert split_ids(tmp_path / "other_tfds") == (train, evaluation)
    for i in range(30, 45):
        _write_image(folder / f"img_{i:02d}.png", size=(4, 4))
    new_train, new_evaluation = split_ids(tmp_path / "tfds")  # the changed folder is rebuilt
    assert len(new_train) + len(new_evaluation) == 45
    assert train <= new_train and evaluation <= new_evaluation


def test_assign_eval_keeps_both_splits_non_empty():
    ids = [f"photo_{i}" for i in range(10)]
    assert len(image_folder.assign_eval(ids, 1e-12)) == 1
    assert len(image_folder.assign_eval(ids, 1 - 1e-12)) == 9
    assert image_folder.assign_eval(ids, 0.5) == image_folder.assign_eval(ids[::-1], 0.5)


def test_different_folders_share_a_data_dir(tmp_path):
    counts = {}
    for name, count in (("first", 2), ("second", 3)):
        for i in range(count):
            _write_image(tmp_path / name / "photos" / f"{i}.png", size=(4, 4))
        records = _split_records("image_folder", ("train", "eval"), data_dir=str(tmp_path / "tfds"),
                                 manual_dir=str(tmp_path / name / "photos"))
        counts[name] = len(records["train"]) + len(records["eval"])
    assert counts == {"first": 2, "second": 3}


def test_image_folder_errors_name_the_problem(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()

    def build(**kwargs):
        return sources.build_dataset("image_folder", data_dir=str(tmp_path / "tfds"), **kwargs)

    with pytest.raises(ManualDirError, match="is not a directory"):
        build(manual_dir=str(tmp_path / "missing"))
    with pytest.raises(ManualDirError, match="is empty"):
        build(manual_dir=str(folder))
    (folder / "notes.txt").write_text("no photos here")
    with pytest.raises(NotEnoughImagesError, match="no image files were found"):
        build(manual_dir=str(folder))
    _write_corrupt_files(folder)
    with pytest.raises(NotEnoughImagesError, match="all 2 image files are unreadable"):
        build(manual_dir=str(folder))
    _write_image(folder / "only.png")
    with pytest.raises(NotEnoughImagesError, match="at least 2"):
        build(manual_dir=str(folder))
    with pytest.raises(ValueError, match="eval_fraction"):
        build(manual_dir=str(folder), eval_fraction=1.5)
    with pytest.raises(ValueError, match="unknown option.*'eval_fractoin'"):
        build(manual_dir=str(folder), eval_fractoin=0.1)
    # None of the failed builds left anything behind: the fixed folder builds.
    _write_image(folder / "second.png")
    builder = build(manual_dir=str(folder))
    assert len(builder.as_data_source("train")) + len(builder.as_data_source("eval")) == 2


# ----------------------------------------------------------- paris_street_view


@pytest.fixture(scope="module")
def paris(tmp_path_factory):
    """Paris StreetView in the official layout: (data_dir it is built in, {image_id: pixels})."""
    root = tmp_path_factory.mktemp("paris")
    pixels = {}
    for folder, names in (("paris_train_original", ("000", "001", "002")),
                          ("paris_eval_gt", ("000_im", "001_im"))):
        for name in names:
            pixels[f"{folder}/{name}"] = _write_image(root / folder / f"{name}.png")
    data_dir = str(tmp_path_factory.mktemp("tfds_paris"))
    sources.build_dataset("paris_street_view", data_dir=data_dir, manual_dir=str(root))
    return data_dir, pixels


def test_paris_street_view_reads_the_official_layout(paris):
    data_dir, pixels = paris
    records = _split_records("paris_street_view", ("train", "eval"), data_dir=data_dir)
    for split, folder in (("train", "paris_train_original"), ("eval", "paris_eval_gt")):
        assert set(records[split]) == {i for i in pixels if i.startswith(folder + "/")}
        for image_id, data in records[split].items():
            np.testing.assert_array_equal(_as_uint8(data), pixels[image_id])


def test_builders_are_registered_with_tfds(paris):
    data_dir, _ = paris
    source = tfds.data_source("paris_street_view", split="eval", data_dir=data_dir, try_gcs=False)
    assert len(source) == 2


def test_paris_street_view_layout_errors(tmp_path):
    root = tmp_path / "paris"
    _write_image(root / "paris_train_original" / "0.png")
    data_dir = str(tmp_path / "tfds")
    with pytest.raises(ManualDirError, match="paris_eval_gt"):
        sources.get_data_source("paris_street_view", "train", data_dir=data_dir,
                                manual_dir=str(root))


# ---------------------------------------------------------------- places365_hr

_PLACES_TARS = {"data_large": "train_large_places365standard.tar", "val_large": "val_large.tar"}


@pytest.fixture(scope="module")
def places_files(tmp_path_factory):
    """Places365-HR as extracted folders under one root and as the original tars under another.

    Returns (folders root, tars root, {split: {image_id: bytes}} of the readable images).
    """
    extracted = tmp_path_factory.mktemp("places_extracted")
    readable = {"train": {}, "validation": {}}
    for path in ("data_large/a/abbey/00000001.jpg", "data_large/a/abbey/00000002.jpg",
                 "data_large/b/bakery/shop/00000001.png", "val_large/Places365_val_00000001.jpg",
                 "val_large/Places365_val_00000002.jpg"):
        _write_image(extracted / path)
        split = "train" if path.startswith("data_large") else "validation"
        readable[split][path.rsplit(".", 1)[0]] = (extracted / path).read_bytes()
    _write_corrupt_files(extracted / "data_large" / "c" / "canyon")
    archives = tmp_path_factory.mktemp("places_tars")
    for folder, tar_name in _PLACES_TARS.items():
        with tarfile.open(archives / tar_name, "w") as tar:
            tar.add(extracted / folder, arcname=folder)
    return extracted, archives, readable


@pytest.mark.parametrize("layout", ["folders", "tars"])
def test_places365_hr_reads_folders_and_tars_alike(places_files, tmp_path, layout):
    extracted, archives, readable = places_files
    manual_dir = extracted if layout == "folders" else archives
    records = _split_records("places365_hr", ("train", "validation"), data_dir=str(tmp_path),
                             manual_dir=str(manual_dir))
    assert records == readable


def test_places365_hr_missing_split_names_both_layouts(tmp_path):
    _write_image(tmp_path / "places" / "data_large" / "a" / "abbey" / "1.jpg")
    with pytest.raises(ManualDirError, match="val_large.*val_large.tar"):
        sources.build_dataset("places365_hr", data_dir=str(tmp_path / "tfds"),
                              manual_dir=str(tmp_path / "places"))


# --------------------------------------------------------------- sample_photos


def test_sample_photos_are_the_installed_rgb_photos(tmp_path):
    records = _split_records("sample_photos", ("train", "eval"), data_dir=str(tmp_path))
    assert set(records["eval"]) == {"skimage/chelsea", "skimage/coffee"}
    expected_train = {"skimage/astronaut", "skimage/motorcycle_left", "skimage/rocket"}
    if importlib.util.find_spec("sklearn"):
        expected_train |= {"sklearn/china", "sklearn/flower"}
    if importlib.util.find_spec("matplotlib"):
        expected_train |= {"matplotlib/grace_hopper"}
    assert set(records["train"]) == expected_train
    on_disk = sample_photos.find_sample_photos()
    for image_id, data in {**records["train"], **records["eval"]}.items():
        assert data == on_disk[image_id].read_bytes()
        pixels = _as_uint8(data)
        assert min(pixels.shape[:2]) >= 256
        assert np.abs(np.diff(pixels.astype(int), axis=-1)).mean() > 5  # colour, not grey
