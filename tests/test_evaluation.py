"""Tests for inpaint_jax.evaluation: seeded masks, metrics, bins, baselines and reports."""

import csv
import hashlib
import json
import sys
import types

import numpy as np
import pytest
import skimage.data
import skimage.metrics
import skimage.transform
from PIL import Image

from inpaint_jax import evaluation, image_io, inference

SIZE = 32


def _photo(loader, height=SIZE, width=SIZE):
    return skimage.transform.resize(loader(), (height, width), anti_aliasing=True).astype(
        np.float32
    )


@pytest.fixture(scope="module")
def photos():
    """Four small square photos by id."""
    loaders = {
        "astronaut": skimage.data.astronaut,
        "chelsea": skimage.data.chelsea,
        "coffee": skimage.data.coffee,
        "rocket": skimage.data.rocket,
    }
    return {name: _photo(loader) for name, loader in loaders.items()}


def _grey_fill(image, mask):
    """A deterministic stand-in method: mid-grey everywhere (the evaluation composites it)."""
    del mask
    return np.full_like(image, 0.5)


GREY = evaluation.Method("grey", _grey_fill)


class _AreaMasks:
    """A test mask set: image i gets a top-left rectangle covering `fractions[i]` of the image."""

    def __init__(self, fractions):
        self.fractions = fractions

    def description(self):
        return {"test": "area"}

    def mask(self, position, image_id, size):
        hole = np.zeros((size, size), bool)
        rows = round(self.fractions[position] * size)
        hole[:rows, :] = True
        return hole, {}


def _write_mask(path, shape, box):
    top, left, bottom, right = box
    pixels = np.zeros(shape, np.uint8)
    pixels[top:bottom, left:right] = 255
    Image.fromarray(pixels).save(path)


# --- metrics through the evaluation path ---------------------------------------------------------


def test_metrics_equal_scikit_image_on_the_composited_completion(photos):
    images = evaluation.ImageSet.from_arrays(photos)
    mask_set = evaluation.GeneratedMasks("glcic", seed=3)
    result = evaluation.evaluate([GREY], images, mask_set, sizes=[SIZE])
    for position, score in enumerate(result.scores):
        target = photos[score.image_id]
        hole, _ = mask_set.mask(position, score.image_id, SIZE)
        completed = np.where(hole[..., None], np.float32(0.5), target)
        difference = np.abs(completed - target)
        ssim, ssim_map = skimage.metrics.structural_similarity(
            target,
            completed,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            channel_axis=-1,
            data_range=1.0,
            full=True,
        )
        hole_mse = np.mean(np.square(difference)[hole])
        np.testing.assert_allclose(score.metrics["l1"], difference.mean(), rtol=1e-5)
        np.testing.assert_allclose(score.metrics["hole_l1"], difference[hole].mean(), rtol=1e-5)
        np.testing.assert_allclose(score.metrics["hole_l2"], hole_mse, rtol=1e-5)
        np.testing.assert_allclose(
            score.metrics["psnr"],
            skimage.metrics.peak_signal_noise_ratio(target, completed, data_range=1.0),
            rtol=1e-5,
        )
        np.testing.assert_allclose(
            score.metrics["hole_psnr"], 10 * np.log10(1 / hole_mse), rtol=1e-5
        )
        np.testing.assert_allclose(score.metrics["ssim"], ssim, atol=1e-4)
        np.testing.assert_allclose(score.metrics["hole_ssim"], ssim_map[hole].mean(), atol=1e-4)
        assert score.hole_fraction == hole.mean()


# --- seeded, versioned masks ---------------------------------------------------------------------


def test_same_run_twice_gives_identical_manifest_and_numbers(photos, tmp_path):
    images = evaluation.ImageSet.from_arrays(photos)
    methods = [GREY, evaluation.baseline("telea")]
    first, second = (
        evaluation.evaluate(
            methods, images, evaluation.GeneratedMasks("free_form", 7), sizes=[SIZE]
        )
        for _ in range(2)
    )
    assert first.manifest == second.manifest
    assert first.manifest_sha256 == second.manifest_sha256
    assert [s.metrics for s in first.scores] == [s.metrics for s in second.scores]
    evaluation.write_results(first, tmp_path / "a")
    evaluation.write_results(second, tmp_path / "b")
    assert (tmp_path / "a/manifest.json").read_bytes() == (
        tmp_path / "b/manifest.json"
    ).read_bytes()

    reseeded = evaluation.evaluate(
        methods, images, evaluation.GeneratedMasks("free_form", 8), sizes=[SIZE]
    )
    assert reseeded.manifest["mask_sha256"] != first.manifest["mask_sha256"]
    assert reseeded.manifest_sha256 != first.manifest_sha256


def test_generated_mask_depends_on_image_id_not_on_order(photos):
    forward = evaluation.ImageSet.from_arrays(photos)
    backward = evaluation.ImageSet.from_arrays(dict(reversed(photos.items())))
    mask_set = evaluation.GeneratedMasks("mixed", 11)
    fractions = [
        {
            a["image_id"]: a["hole_fraction"]
            for a in evaluation.evaluate([GREY], images, mask_set, sizes=[SIZE]).manifest[
                "assignments"
            ]
        }
        for images in (forward, backward)
    ]
    assert fractions[0] == fractions[1]
    assert len({str(f) for f in fractions[0].values()}) > 1  # different ids, different masks
    hole, info = mask_set.mask(0, "chelsea", SIZE)
    np.testing.assert_array_equal(hole, mask_set.mask(99, "chelsea", SIZE)[0])
    assert info == {"mask_rng_key": evaluation.image_key("chelsea")}
    assert evaluation.image_key("chelsea") == int.from_bytes(
        hashlib.sha256(b"chelsea").digest()[:8], "big"
    )


def test_manifest_hash_covers_the_mask_bits(photos):
    images = evaluation.ImageSet.from_arrays(photos)
    manifest = evaluation.evaluate([GREY], images, _AreaMasks([0.25] * 4), sizes=[SIZE]).manifest
    shifted = evaluation.evaluate(
        [GREY], images, _AreaMasks([0.25, 0.25, 0.25, 0.5]), sizes=[SIZE]
    ).manifest
    assert manifest["mask_sha256"] != shifted["mask_sha256"]
    digest = hashlib.sha256()
    for image_id in photos:
        hole = np.zeros((SIZE, SIZE), bool)
        hole[:8] = True
        digest.update(image_id.encode() + b"\0" + np.asarray([SIZE, SIZE], ">u4").tobytes())
        digest.update(np.packbits(hole).tobytes())
    assert manifest["mask_sha256"] == digest.hexdigest()


def test_mask_folder_assigns_files_in_turn_and_resizes_them(photos, tmp_path):
    mask_dir = tmp_path / "masks"
    mask_dir.mkdir()
    _write_mask(mask_dir / "b.png", (64, 64), (0, 0, 32, 64))  # top half at 64 px
    _write_mask(mask_dir / "a.png", (64, 64), (16, 16, 32, 48))  # 16x32 block at 64 px
    (mask_dir / "notes.txt").write_text("not a mask")
    mask_set = evaluation.FolderMasks.from_folder(mask_dir)
    images = evaluation.ImageSet.from_arrays(dict(list(photos.items())[:3]))
    manifest = evaluation.evaluate([GREY], images, mask_set, sizes=[SIZE]).manifest
    assert [a["mask_file"] for a in manifest["assignments"]] == ["a.png", "b.png", "a.png"]
    assert [a["hole_fraction"][str(SIZE)] for a in manifest["assignments"]] == [0.125, 0.5, 0.125]
    assert manifest["masks"] == {"folder": "masks", "num_files": 2}
    hole, _ = mask_set.mask(0, "any", SIZE)
    expected = np.zeros((SIZE, SIZE), bool)
    expected[8:16, 8:24] = True
    np.testing.assert_array_equal(hole, expected)


def test_mask_folder_errors(photos, tmp_path):
    with pytest.raises(evaluation.EvaluationError, match="does not exist"):
        evaluation.FolderMasks.from_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/readme.txt").write_text("no masks here")
    with pytest.raises(evaluation.EvaluationError, match="no image files"):
        evaluation.FolderMasks.from_folder(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken/mask.png").write_bytes(b"\x89PNG not really")
    images = evaluation.ImageSet.from_arrays(photos)
    with pytest.raises(image_io.ImageFileError, match="mask.png"):
        evaluation.evaluate(
            [GREY], images, evaluation.FolderMasks.from_folder(tmp_path / "broken"), sizes=[SIZE]
        )
    (tmp_path / "full").mkdir()
    _write_mask(tmp_path / "full/all.png", (64, 64), (0, 0, 64, 64))
    with pytest.raises(image_io.MaskError, match="every pixel"):
        evaluation.evaluate(
            [GREY], images, evaluation.FolderMasks.from_folder(tmp_path / "full"), sizes=[SIZE]
        )


# --- hole-area bins ------------------------------------------------------------------------------


def test_images_land_in_their_hole_area_bins(photos):
    images = evaluation.ImageSet.from_arrays(photos)
    fractions = [2 / 32, 4 / 32, 6 / 32, 24 / 32]  # 6.25 %, 12.5 %, 18.75 %, 75 %
    result = evaluation.evaluate([GREY], images, _AreaMasks(fractions), sizes=[SIZE])
    counts = {row["bin"]: row["count"] for row in result.summary}
    assert counts == {"0-10%": 1, "10-20%": 2, ">60%": 1, "all": 4}
    in_bin = [s.metrics["hole_l1"] for s in result.scores if 0.1 <= s.hole_fraction < 0.2]
    row = next(row for row in result.summary if row["bin"] == "10-20%")
    assert row["hole_l1"] == pytest.approx(np.mean(in_bin))


def test_bin_labels_and_edges():
    assert evaluation.bin_labels(evaluation.DEFAULT_BIN_EDGES) == (
        "0-10%",
        "10-20%",
        "20-30%",
        "30-40%",
        "40-50%",
        "50-60%",
        ">60%",
    )
    assert evaluation.bin_labels((0.25, 0.5)) == ("0-25%", "25-50%", ">50%")
    assert (
        evaluation.hole_bin(0.1, evaluation.DEFAULT_BIN_EDGES) == "10-20%"
    )  # lower edge inclusive
    assert evaluation.hole_bin(0.05, (0.25, 0.5)) == "0-25%"
    assert evaluation.hole_bin(0.9, (0.25, 0.5)) == ">50%"
    assert evaluation.parse_bin_edges(["0.25", "0.5"]) == (0.25, 0.5)
    for bad in (["0.5", "0.25"], ["0"], ["1.5"], ["abc"], []):
        with pytest.raises(evaluation.EvaluationError, match="bin edges"):
            evaluation.parse_bin_edges(bad)


# --- baselines -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["telea", "ns", "biharmonic"])
def test_baselines_fill_from_the_surroundings_and_keep_known_pixels(name, photos):
    method = evaluation.baseline(name)
    mask = np.zeros((SIZE, SIZE, 1), np.float32)
    mask[10:20, 8:24] = 1
    photo = photos["coffee"]
    completed = method.fill(photo, mask)
    known = mask[..., 0] == 0
    np.testing.assert_array_equal(completed[known], photo[known])
    assert not np.allclose(completed[~known], photo[~known])

    flat = np.full((SIZE, SIZE, 3), (0.2, 0.6, 0.4), np.float32)
    flat[mask[..., 0] == 1] = (1.0, 0.0, 1.0)  # whatever is in the hole must not leak out
    # OpenCV works in uint8 and may be off by a couple of levels.
    np.testing.assert_allclose(
        method.fill(flat, mask), np.full_like(flat, (0.2, 0.6, 0.4)), atol=3 / 255
    )


def test_unknown_baseline_lists_the_valid_names():
    with pytest.raises(evaluation.EvaluationError, match="telea, ns, biharmonic, patchmatch"):
        evaluation.baseline("deepfill")


def test_patchmatch_without_the_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "patchmatch", None)
    monkeypatch.setitem(sys.modules, "patch_match", None)
    with pytest.raises(evaluation.EvaluationError, match="pip install pypatchmatch"):
        evaluation.baseline("patchmatch")


def test_patchmatch_gets_uint8_image_and_hole_and_is_composited(monkeypatch, photos):
    calls = []

    def fake_inpaint(image, mask, *, patch_size):
        calls.append((image, mask, patch_size))
        return np.zeros_like(image)

    monkeypatch.setitem(sys.modules, "patchmatch", None)
    monkeypatch.setitem(sys.modules, "patch_match", types.SimpleNamespace(inpaint=fake_inpaint))
    mask = np.zeros((SIZE, SIZE, 1), np.float32)
    mask[4:12, 4:12] = 1
    completed = evaluation.baseline("patchmatch").fill(photos["rocket"], mask)
    image, hole, patch_size = calls[0]
    assert image.dtype == np.uint8 and hole.dtype == np.uint8 and hole.shape == (SIZE, SIZE, 1)
    assert set(np.unique(hole)) == {0, 255} and patch_size == evaluation.PATCHMATCH_PATCH_SIZE
    np.testing.assert_array_equal(completed[4:12, 4:12], 0)
    np.testing.assert_array_equal(completed[12:], photos["rocket"][12:])


# --- reports -------------------------------------------------------------------------------------


def test_results_json_csv_table_and_grid_hold_every_method_and_bin(photos, tmp_path):
    images = evaluation.ImageSet.from_arrays(photos)
    methods = [GREY, evaluation.baseline("telea"), evaluation.baseline("ns")]
    mask_set = _AreaMasks([2 / 32, 4 / 32, 6 / 32, 24 / 32])
    result = evaluation.evaluate(methods, images, mask_set, sizes=[SIZE], num_samples=2)
    written = evaluation.write_results(result, tmp_path / "out")
    assert sorted(path.name for path in written) == [
        "manifest.json",
        "results.csv",
        "results.json",
        f"samples_{SIZE}.png",
    ]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]

    bins = {"0-10%", "10-20%", ">60%", "all"}
    expected_rows = {(b, m.name) for b in bins for m in methods}
    results = json.loads((tmp_path / "out/results.json").read_text())
    assert {(row["bin"], row["method"]) for row in results["summary"]} == expected_rows
    assert results["manifest_sha256"] == result.manifest_sha256
    manifest_text = json.dumps(
        json.loads((tmp_path / "out/manifest.json").read_text()),
        sort_keys=True,
        separators=(",", ":"),
    )
    assert hashlib.sha256(manifest_text.encode()).hexdigest() == result.manifest_sha256
    assert len(results["per_image"]) == len(methods) * len(photos)

    with open(tmp_path / "out/results.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert {(row["bin"], row["method"]) for row in rows} == expected_rows
    grey_all = next(r for r in rows if r["method"] == "grey" and r["bin"] == "all")
    assert float(grey_all["psnr"]) == pytest.approx(
        np.mean([s.metrics["psnr"] for s in result.scores if s.method == "grey"])
    )

    table = evaluation.format_table(result)
    for label, name in expected_rows:
        assert any(line.split()[:2] == [label, name] for line in table.splitlines())

    grid = image_io.read_image(tmp_path / "out" / f"samples_{SIZE}.png")
    assert grid.shape == (2 * SIZE, (len(methods) + 2) * SIZE, 3)
    np.testing.assert_allclose(grid[:SIZE, -SIZE:], photos["astronaut"], atol=1 / 255)


def test_multi_resolution_gives_one_block_per_size(photos, tmp_path):
    images = evaluation.ImageSet.from_arrays({k: photos[k] for k in ("astronaut", "chelsea")})
    sizes = (16, 24, 40)
    result = evaluation.evaluate([GREY], images, evaluation.GeneratedMasks("glcic", 0), sizes=sizes)
    assert {row["size"] for row in result.summary} == set(sizes)
    assert [s.size for s in result.scores] == [16, 24, 40, 16, 24, 40]
    for assignment in result.manifest["assignments"]:
        assert set(assignment["hole_fraction"]) == {"16", "24", "40"}
    table = evaluation.format_table(result)
    assert [line.split()[0] for line in table.splitlines() if "(crop)" in line] == [
        "16x16",
        "24x24",
        "40x40",
    ]
    assert {size: grid.shape[0] for size, grid in result.sample_grids.items()} == {
        16: 32,
        24: 48,
        40: 80,
    }
    written = {path.name for path in evaluation.write_results(result, tmp_path)}
    assert {"samples_16.png", "samples_24.png", "samples_40.png"} <= written


def test_fit_crop_keeps_the_centre_and_stretch_keeps_everything():
    image = np.zeros((20, 40, 3), np.float32)
    image[:, :10, 0] = 1  # red left quarter
    image[:, 10:30, 1] = 1  # green middle
    image[:, 30:, 2] = 1  # blue right quarter
    cropped = evaluation.fit_square(image, 20, "crop")
    np.testing.assert_array_equal(cropped, image[:, 10:30])
    stretched = evaluation.fit_square(image, 20, "stretch")
    assert stretched.shape == (20, 20, 3)
    np.testing.assert_allclose(stretched[:, 0], [[1, 0, 0]] * 20)
    np.testing.assert_allclose(stretched[:, -1], [[0, 0, 1]] * 20)
    assert evaluation.fit_square(image, 10, "crop").shape == (10, 10, 3)
    with pytest.raises(evaluation.EvaluationError, match="crop, stretch"):
        evaluation.fit_square(image, 10, "pad")


# --- images --------------------------------------------------------------------------------------


def test_folder_images_are_sorted_with_image_folder_ids(photos, tmp_path):
    (tmp_path / "sub").mkdir()
    for path, name in (
        (tmp_path / "b.png", "chelsea"),
        (tmp_path / "sub/a.jpg", "coffee"),
        (tmp_path / "c.png", "rocket"),
    ):
        image_io.write_image(path, photos[name])
    images = evaluation.folder_images(tmp_path, limit=2)
    assert len(images) == 2 and images.source == {"folder": tmp_path.name}
    image_id, image = images.load(0)
    assert image_id == "b"
    np.testing.assert_allclose(image, photos["chelsea"], atol=1 / 255)
    everything = evaluation.folder_images(tmp_path)
    assert [everything.load(i)[0] for i in range(len(everything))] == ["b", "c", "sub/a"]


def test_bad_image_sources(photos, tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        evaluation.dataset_images("nope", "eval", data_dir="/nonexistent")
    with pytest.raises(ValueError, match="unknown split 'testing'"):
        evaluation.dataset_images("sample_photos", "testing", data_dir="/nonexistent")
    with pytest.raises(evaluation.EvaluationError, match="does not exist"):
        evaluation.folder_images("/nonexistent/photos")
    image_io.write_image(tmp_path / "photo.png", photos["chelsea"])
    with pytest.raises(evaluation.EvaluationError, match="positive integer"):
        evaluation.folder_images(tmp_path, limit=0)


# --- bad arguments -------------------------------------------------------------------------------


def test_bad_evaluation_arguments(photos):
    images = evaluation.ImageSet.from_arrays(photos)
    masks = evaluation.GeneratedMasks("center", 0)
    with pytest.raises(evaluation.EvaluationError, match="nothing to evaluate"):
        evaluation.evaluate([], images, masks, sizes=[SIZE])
    with pytest.raises(evaluation.EvaluationError, match="repeated: grey"):
        evaluation.evaluate([GREY, GREY], images, masks, sizes=[SIZE])
    with pytest.raises(evaluation.EvaluationError, match="unknown fit"):
        evaluation.evaluate([GREY], images, masks, sizes=[SIZE], fit="pad")
    with pytest.raises(evaluation.EvaluationError, match="image set is empty"):
        evaluation.evaluate([GREY], evaluation.ImageSet.from_arrays({}), masks, sizes=[SIZE])
    cropped = evaluation.Method("cropped", lambda image, mask: image[1:])
    with pytest.raises(evaluation.EvaluationError, match="'cropped' returned shape"):
        evaluation.evaluate([cropped], images, masks, sizes=[SIZE])
    broken = evaluation.Method("nan", lambda image, mask: np.full_like(image, np.nan))
    with pytest.raises(evaluation.EvaluationError, match="'nan' filled the hole with NaN"):
        evaluation.evaluate([broken], images, masks, sizes=[SIZE])
    with pytest.raises(ValueError, match="unknown mask kind"):
        evaluation.GeneratedMasks("squares", 0)
    with pytest.raises(ValueError, match="non-negative"):
        evaluation.GeneratedMasks("glcic", -1)


@pytest.mark.parametrize("sizes", [["512", "abc"], ["0"], ["-64"], ["8"], [], ["64", "64"], [2.5]])
def test_bad_sizes_are_refused(sizes):
    with pytest.raises(evaluation.EvaluationError, match="size"):
        evaluation.parse_sizes(sizes)


def test_parse_sizes_accepts_strings_and_ints():
    assert evaluation.parse_sizes(["512", " 1024", 1536]) == (512, 1024, 1536)


def test_output_dir_that_cannot_be_written(tmp_path):
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(evaluation.EvaluationError, match="cannot write results"):
        evaluation.prepare_output_dir(tmp_path / "file/results")
    assert evaluation.prepare_output_dir(tmp_path / "new/results").is_dir()


# --- the trained model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(glcic_workdir):
    return inference.load_model(f"{glcic_workdir}/checkpoints/6")


def test_trained_model_is_scored_beside_baselines_with_a_warm_up(tiny_model, photos):
    size = tiny_model.training_config.data.crop_size
    images = evaluation.ImageSet.from_arrays(
        {k: photos[k] for k in ("chelsea", "coffee", "rocket")}
    )
    methods = [evaluation.model_method(tiny_model), evaluation.baseline("telea")]
    runs = [
        evaluation.evaluate(methods, images, evaluation.GeneratedMasks("glcic", 5), sizes=[size])
        for _ in range(2)
    ]
    assert runs[0].methods == (tiny_model.name, "telea")
    assert set(runs[0].warmup_seconds) == {tiny_model.name}
    assert set(runs[0].warmup_seconds[tiny_model.name]) == {size}
    assert [s.metrics for s in runs[0].scores] == [s.metrics for s in runs[1].scores]
    model_scores = [s for s in runs[0].scores if s.method == tiny_model.name]
    assert len(model_scores) == 3 and all(0 < s.metrics["hole_l1"] < 1 for s in model_scores)
