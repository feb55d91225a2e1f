"""Tests for inpaint_jax.image_io: decoding every image mode, bad files, masks, atomic writes."""

import io
import logging
import os

import numpy as np
import pytest
from PIL import Image, ImageFile
from skimage import data as skimage_data

from inpaint_jax import image_io
from inpaint_jax.image_io import ImageFileError, MaskError


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    """A small, non-square uint8 RGB photo."""
    return skimage_data.astronaut()[:384:8, ::8].copy()


def save_pil(image: Image.Image, path, **options):
    """Saves a Pillow image and returns its path."""
    image.save(path, **options)
    return path


def encode(image: Image.Image, image_format: str) -> bytes:
    """The encoded bytes of a Pillow image."""
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


# ---------------------------------------------------------------- reading images


def test_rgb_png_reads_exactly(tmp_path, astronaut):
    path = save_pil(Image.fromarray(astronaut), tmp_path / "a.png")
    image = image_io.read_image(path)
    assert image.dtype == np.float32 and image.shape == astronaut.shape
    np.testing.assert_array_equal(image, astronaut.astype(np.float32) / 255)


def test_grayscale_is_replicated_to_three_channels(tmp_path, astronaut):
    gray = astronaut[..., 1]
    image = image_io.read_image(save_pil(Image.fromarray(gray), tmp_path / "g.png"))
    assert image.shape == gray.shape + (3,)
    for channel in range(3):
        np.testing.assert_array_equal(image[..., channel], gray / np.float32(255))


def test_one_bit_image_reads_as_black_and_white(tmp_path):
    bits = np.zeros((6, 9), bool)
    bits[1:4, 2:7] = True
    image = image_io.read_image(save_pil(Image.fromarray(bits), tmp_path / "b.png"))
    np.testing.assert_array_equal(image, np.repeat(bits[..., None], 3, -1).astype(np.float32))


def test_rgba_drops_alpha_keeping_stored_colour(tmp_path, astronaut):
    alpha = np.zeros(astronaut.shape[:2], np.uint8)
    alpha[:, : alpha.shape[1] // 2] = 255
    rgba = np.dstack([astronaut, alpha])
    image = image_io.read_image(save_pil(Image.fromarray(rgba), tmp_path / "a.png"))
    np.testing.assert_array_equal(image, astronaut / np.float32(255))


def test_gray_with_alpha_reads_gray(tmp_path):
    gray = np.arange(30, dtype=np.uint8).reshape(5, 6) * 8
    la = Image.fromarray(np.dstack([gray, np.full_like(gray, 100)]), mode="LA")
    image = image_io.read_image(save_pil(la, tmp_path / "la.png"))
    np.testing.assert_array_equal(image, np.repeat(gray[..., None], 3, -1) / np.float32(255))


def test_palette_with_transparency_reads_palette_colours(tmp_path):
    colours = np.array([[255, 0, 0], [0, 128, 255], [10, 20, 30]], np.uint8)
    indices = np.array([[0, 1, 2, 1], [2, 2, 0, 1], [1, 0, 0, 2]], np.uint8)
    palette_image = Image.fromarray(indices, mode="P")
    palette_image.putpalette(colours.ravel().tolist())
    path = save_pil(palette_image, tmp_path / "p.png", transparency=2)
    assert Image.open(path).mode == "P"
    np.testing.assert_array_equal(image_io.read_image(path), colours[indices] / np.float32(255))


def test_sixteen_bit_png_scales_by_65535(tmp_path):
    values = np.array([[0, 1, 257], [32768, 65534, 65535]], np.uint16)
    path = save_pil(Image.fromarray(values), tmp_path / "16.png")
    assert Image.open(path).mode == "I;16"
    image = image_io.read_image(path)
    expected = (values / 65535).astype(np.float32)
    np.testing.assert_array_equal(image, np.repeat(expected[..., None], 3, -1))


def test_32_bit_integer_image_reads_as_16_bit_range(tmp_path):
    values = np.array([[0, 65535], [1000, 40000]], np.int32)
    path = save_pil(Image.fromarray(values), tmp_path / "i.tif")
    assert Image.open(path).mode == "I"
    expected = (values / 65535).astype(np.float32)
    np.testing.assert_array_equal(image_io.read_image(path)[..., 0], expected)


@pytest.mark.parametrize(
    "values", [np.array([[0, 70000]], np.int32), np.array([[0.0, 1.5]], np.float32)], ids=["I", "F"]
)
def test_high_depth_values_out_of_range_are_refused(tmp_path, values):
    path = save_pil(Image.fromarray(values), tmp_path / "big.tif")
    with pytest.raises(ImageFileError, match="big.tif"):
        image_io.read_image(path)


def test_float_tiff_in_unit_range_reads_directly(tmp_path):
    values = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
    path = save_pil(Image.fromarray(values), tmp_path / "f.tif")
    np.testing.assert_array_equal(image_io.read_image(path)[..., 2], values)


def test_cmyk_jpeg_reads_as_rgb(tmp_path, astronaut):
    path = save_pil(Image.fromarray(astronaut).convert("CMYK"), tmp_path / "c.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"
    image = image_io.read_image(path)
    assert image.shape == astronaut.shape
    assert np.abs(image - astronaut / 255).mean() < 0.02


@pytest.mark.parametrize("orientation, quarter_turns", [(6, -1), (8, 1)])
def test_exif_orientation_is_applied(tmp_path, orientation, quarter_turns):
    stored = np.zeros((16, 32, 3), np.uint8)  # wide as stored; tall once rotated
    stored[:8, :16] = (255, 0, 0)
    stored[8:, 16:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save_pil(
        Image.fromarray(stored), tmp_path / "rot.jpg", exif=exif, quality=95, subsampling=0
    )
    image = image_io.read_image(path)
    expected = np.rot90(stored, k=quarter_turns) / 255
    assert image.shape == expected.shape == (32, 16, 3)
    assert np.abs(image - expected).max() < 0.1


def test_decode_image_matches_read_image(tmp_path, astronaut):
    path = save_pil(Image.fromarray(astronaut), tmp_path / "a.webp", lossless=True)
    decoded = image_io.decode_image(path.read_bytes())
    np.testing.assert_array_equal(decoded, image_io.read_image(path))


# ---------------------------------------------------------------- bad files


@pytest.mark.parametrize("image_format, suffix", [("JPEG", ".jpg"), ("PNG", ".png")])
def test_truncated_files_raise_naming_the_file(tmp_path, astronaut, image_format, suffix):
    encoded = encode(Image.fromarray(astronaut), image_format)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(encoded[: len(encoded) // 2])
    with pytest.raises(ImageFileError, match=f"cut{suffix}.*truncated"):
        image_io.read_image(path)


def test_truncated_files_raise_even_if_pillow_is_told_to_accept_them(monkeypatch, astronaut):
    encoded = encode(Image.fromarray(astronaut), "JPEG")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageFileError, match="'half.jpg'"):
        image_io.decode_image(encoded[: len(encoded) // 2], name="half.jpg")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_text_file_named_jpg_raises_naming_the_file(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(ImageFileError, match="notes.jpg.*not in any image format"):
        image_io.read_image(path)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.png"):
        image_io.read_image(tmp_path / "absent.png")


def test_decompression_bombs(monkeypatch, caplog, tmp_path):
    path = save_pil(Image.new("RGB", (12, 12)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.warns(Image.DecompressionBombWarning), caplog.at_level(logging.WARNING):
        assert image_io.read_image(path).shape == (12, 12, 3)
    assert "bomb.png" in caplog.text
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    with pytest.raises(ImageFileError, match="bomb.png.*MAX_IMAGE_PIXELS"):
        image_io.read_image(path)


# ---------------------------------------------------------------- masks


def hole_pattern(shape=(10, 12)) -> np.ndarray:
    """A boolean mask with one rectangular hole."""
    hole = np.zeros(shape, bool)
    hole[2:6, 3:9] = True
    return hole


def test_gray_mask_white_is_hole(tmp_path):
    hole = hole_pattern()
    path = save_pil(Image.fromarray(hole.astype(np.uint8) * 255), tmp_path / "m.png")
    mask = image_io.read_mask(path)
    assert mask.dtype == np.float32 and mask.shape == hole.shape + (1,)
    np.testing.assert_array_equal(mask[..., 0], hole)


def test_rgb_mask_uses_luminance(tmp_path):
    hole = hole_pattern()
    rgb = np.zeros(hole.shape + (3,), np.uint8)
    rgb[hole] = (255, 255, 255)
    rgb[~hole] = (255, 0, 0)  # dark red: luminance 0.3, known
    mask = image_io.read_mask(save_pil(Image.fromarray(rgb), tmp_path / "m.png"))
    np.testing.assert_array_equal(mask[..., 0], hole)


def test_sixteen_bit_mask(tmp_path):
    hole = hole_pattern()
    path = save_pil(Image.fromarray(hole.astype(np.uint16) * 65535), tmp_path / "m.png")
    mask = image_io.read_mask(path)
    np.testing.assert_array_equal(mask[..., 0], hole)


def test_opaque_rgba_mask_uses_luminance(tmp_path):
    hole = hole_pattern()
    gray = hole.astype(np.uint8) * 255
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 255)])
    mask = image_io.read_mask(save_pil(Image.fromarray(rgba), tmp_path / "m.png"))
    np.testing.assert_array_equal(mask[..., 0], hole)


def test_transparent_pixels_of_a_mask_file_are_holes(tmp_path, astronaut):
    hole = hole_pattern(astronaut.shape[:2])
    alpha = np.where(hole, 0, 255).astype(np.uint8)
    path = save_pil(Image.fromarray(np.dstack([astronaut, alpha])), tmp_path / "erased.png")
    np.testing.assert_array_equal(image_io.read_mask(path)[..., 0], hole)


def test_white_strokes_on_transparent_layer_are_refused_as_ambiguous(tmp_path):
    hole = hole_pattern()
    rgba = np.zeros(hole.shape + (4,), np.uint8)
    rgba[hole] = (255, 255, 255, 255)
    path = save_pil(Image.fromarray(rgba), tmp_path / "strokes.png")
    with pytest.raises(MaskError, match="strokes.png.*ambiguous"):
        image_io.read_mask(path)


def test_antialiased_mask_is_thresholded_and_reported(tmp_path, caplog):
    gray = np.zeros((10, 10), np.uint8)
    gray[:, 5:] = 255
    gray[:, 4] = 100  # below half: known
    gray[:, 5] = 200  # above half: hole
    path = save_pil(Image.fromarray(gray), tmp_path / "soft.png")
    with caplog.at_level(logging.WARNING):
        mask = image_io.read_mask(path)
    np.testing.assert_array_equal(mask[..., 0], gray >= 128)
    assert "soft.png" in caplog.text and "20.00%" in caplog.text


def test_binary_mask_is_not_reported(tmp_path, caplog):
    path = save_pil(Image.fromarray(hole_pattern().astype(np.uint8) * 255), tmp_path / "m.png")
    with caplog.at_level(logging.WARNING):
        image_io.read_mask(path, expected_shape=(10, 12))
    assert caplog.text == ""


def test_mask_size_mismatch_says_both_sizes_and_the_fix(tmp_path):
    path = save_pil(Image.fromarray(hole_pattern().astype(np.uint8) * 255), tmp_path / "m.png")
    with pytest.raises(MaskError, match=r"'.*m.png' is 10x12.*image is 20x24.*nearest-neighbour"):
        image_io.read_mask(path, expected_shape=(20, 24))


def test_all_white_mask_is_an_error(tmp_path):
    path = save_pil(Image.new("L", (8, 6), 255), tmp_path / "white.png")
    with pytest.raises(MaskError, match="white.png.*every pixel"):
        image_io.read_mask(path)


def test_all_black_mask_is_a_logged_no_op(tmp_path, caplog):
    path = save_pil(Image.new("L", (8, 6), 0), tmp_path / "black.png")
    with caplog.at_level(logging.WARNING):
        mask = image_io.read_mask(path)
    np.testing.assert_array_equal(mask, np.zeros((6, 8, 1), np.float32))
    assert "black.png" in caplog.text and "no hole" in caplog.text


def test_alpha_mask_of_an_image(tmp_path, astronaut):
    hole = hole_pattern(astronaut.shape[:2])
    alpha = np.where(hole, 0, 255).astype(np.uint8)
    path = save_pil(Image.fromarray(np.dstack([astronaut, alpha])), tmp_path / "photo.png")
    np.testing.assert_array_equal(image_io.read_alpha_mask(path)[..., 0], hole)


def test_alpha_mask_of_an_image_without_alpha_is_an_error(tmp_path, astronaut):
    path = save_pil(Image.fromarray(astronaut), tmp_path / "opaque.png")
    with pytest.raises(MaskError, match="opaque.png.*no alpha channel"):
        image_io.read_alpha_mask(path)


def test_validate_mask_accepts_bool_and_channel_axis():
    hole = hole_pattern()
    np.testing.assert_array_equal(image_io.validate_mask(hole)[..., 0], hole)
    with_channel = hole[..., None].astype(np.float64)
    np.testing.assert_array_equal(image_io.validate_mask(with_channel), with_channel)


@pytest.mark.parametrize(
    "mask, message",
    [
        (np.zeros((2, 3, 4), np.float32), "shape"),
        (np.zeros((0, 3), np.float32), "shape"),
        (np.zeros((4, 4), np.uint8), "dtype"),
        (np.array([[0.0, np.nan]]), r"outside \[0, 1\]"),
        (np.array([[0.0, 2.0]]), r"outside \[0, 1\]"),
    ],
)
def test_validate_mask_rejects_bad_arrays(mask, message):
    with pytest.raises(MaskError, match=message):
        image_io.validate_mask(mask, "in-memory")


def test_validate_mask_rejects_a_malformed_expected_shape():
    with pytest.raises(ValueError, match="height, width"):
        image_io.validate_mask(hole_pattern(), expected_shape=(10, 12, 3))


# ---------------------------------------------------------------- writing


def test_uint8_png_round_trip_is_exact(tmp_path, astronaut):
    path = tmp_path / "out.png"
    image_io.write_image(path, astronaut)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), astronaut)


def test_float_png_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.random((9, 7, 3), dtype=np.float32)
    path = tmp_path / "out.png"
    image_io.write_image(path, image)
    read = image_io.read_image(path)
    np.testing.assert_array_equal(read, np.round(image * 255) / np.float32(255))
    image_io.write_image(path, read)
    np.testing.assert_array_equal(image_io.read_image(path), read)


def test_small_overshoots_are_clipped(tmp_path):
    path = tmp_path / "out.png"
    image_io.write_image(path, np.array([[-0.2, 0.5, 1.3]], np.float32))
    np.testing.assert_array_equal(np.asarray(Image.open(path)), [[0, 128, 255]])


@pytest.mark.parametrize("shape", [(5, 6), (5, 6, 1)])
def test_one_channel_images_are_written_gray(tmp_path, shape):
    values = (np.arange(30, dtype=np.uint8) * 8).reshape(shape)
    path = tmp_path / "gray.png"
    image_io.write_image(path, values)
    written = Image.open(path)
    assert written.mode == "L"
    np.testing.assert_array_equal(np.asarray(written), values.reshape(5, 6))


def test_written_mask_reads_back(tmp_path):
    hole = hole_pattern()[..., None].astype(np.float32)
    path = tmp_path / "mask.png"
    image_io.write_image(path, hole)
    np.testing.assert_array_equal(image_io.read_mask(path), hole)


@pytest.mark.parametrize(
    "name, tolerance",
    [
        ("o.png", 0), ("o.PNG", 0), ("o.bmp", 0), ("o.tiff", 0), ("o.tif", 0),
        ("o.jpg", 0.05), ("o.jpeg", 0.05), ("o.webp", 0.05),
    ],
)
def test_formats_follow_the_extension(tmp_path, astronaut, name, tolerance):
    path = tmp_path / name
    image_io.write_image(path, astronaut)
    expected_format = image_io._OUTPUT_FORMATS[path.suffix.lower()]
    assert Image.open(path).format == expected_format
    assert np.abs(image_io.read_image(path) - astronaut / np.float32(255)).mean() <= tolerance


@pytest.mark.parametrize(
    "name, image, message",
    [
        ("o.gif", np.zeros((4, 4, 3), np.uint8), "unsupported extension '.gif'"),
        ("noextension", np.zeros((4, 4, 3), np.uint8), "unsupported extension"),
        ("o.png", np.zeros((4, 4, 4), np.uint8), "shape"),
        ("o.png", np.zeros((0, 4, 3), np.uint8), "shape"),
        ("o.png", np.zeros((4, 4), np.int64), "dtype int64"),
        ("o.png", np.full((4, 4), np.nan, np.float32), "NaN"),
        ("o.png", np.full((4, 4), 200.0, np.float32), r"\[0, 255\]"),
        ("o.png", np.full((4, 4), -1.0, np.float32), r"\[-1, 1\]"),
    ],
)
def test_invalid_writes_raise_before_creating_anything(tmp_path, name, image, message):
    with pytest.raises(ValueError, match=message):
        image_io.write_image(tmp_path / name, image)
    assert os.listdir(tmp_path) == []


def test_missing_output_directory_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        image_io.write_image(tmp_path / "nowhere" / "o.png", np.zeros((2, 2), np.uint8))


def failing_save(self, fp, *args, **kwargs):
    """Stands in for Image.save: writes part of a file, then fails."""
    fp.write(b"half an image")
    raise OSError("disk full")


@pytest.mark.parametrize("existing", [None, b"previous output"])
def test_failed_write_leaves_no_trace(tmp_path, monkeypatch, astronaut, existing):
    path = tmp_path / "out.png"
    if existing is not None:
        path.write_bytes(existing)
    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        image_io.write_image(path, astronaut)
    assert os.listdir(tmp_path) == ([] if existing is None else ["out.png"])
    if existing is not None:
        assert path.read_bytes() == existing


def test_overwrite_replaces_the_file(tmp_path, astronaut):
    path = tmp_path / "out.png"
    path.write_bytes(b"previous output")
    image_io.write_image(path, astronaut)
    assert os.listdir(tmp_path) == ["out.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(path)), astronaut)
