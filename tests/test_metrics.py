"""Tests for inpaint_jax.metrics, checked against scikit-image on real photos."""
import jax
import numpy as np
import pytest
import skimage.data
import skimage.metrics
import skimage.transform

from inpaint_jax import metrics, parallel

HEIGHT, WIDTH = 72, 88


def _photo(loader):
    image = skimage.transform.resize(loader(), (HEIGHT, WIDTH), anti_aliasing=True)
    return image.astype(np.float32)


@pytest.fixture(scope="module")
def photos():
    """Two downscaled photos (2, H, W, 3) in [0, 1]."""
    return np.stack([_photo(skimage.data.astronaut), _photo(skimage.data.chelsea)])


@pytest.fixture(scope="module")
def noisy(photos):
    rng = np.random.default_rng(0)
    return np.clip(photos + rng.normal(0.0, 0.06, photos.shape), 0.0, 1.0).astype(np.float32)


@pytest.fixture(scope="module")
def hole_mask():
    """Different holes per example; the second touches the image border."""
    mask = np.zeros((2, HEIGHT, WIDTH, 1), np.float32)
    mask[0, 20:50, 30:70] = 1.0
    mask[1, 0:25, 60:WIDTH] = 1.0
    return mask


def _skimage_ssim(target, prediction):
    return skimage.metrics.structural_similarity(
        target, prediction, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        channel_axis=-1, data_range=1.0, full=True,
    )


def test_psnr_and_ssim_match_scikit_image(photos, noisy, hole_mask):
    result = jax.jit(metrics.image_metrics)(noisy, photos, hole_mask)
    for i in range(2):
        expected_psnr = skimage.metrics.peak_signal_noise_ratio(photos[i], noisy[i], data_range=1.0)
        expected_ssim, _ = _skimage_ssim(photos[i], noisy[i])
        np.testing.assert_allclose(result["psnr"][i], expected_psnr, rtol=1e-5)
        np.testing.assert_allclose(result["ssim"][i], expected_ssim, atol=1e-4)
    np.testing.assert_allclose(result["l1"], np.abs(noisy - photos).mean(axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(result["l2"], np.square(noisy - photos).mean(axis=(1, 2, 3)), rtol=1e-5)


def test_hole_ssim_is_mean_of_scikit_image_ssim_map_over_the_hole(photos, noisy, hole_mask):
    result = metrics.image_metrics(noisy, photos, hole_mask)
    for i in range(2):
        _, ssim_map = _skimage_ssim(photos[i], noisy[i])
        hole = np.broadcast_to(hole_mask[i] > 0, ssim_map.shape)
        np.testing.assert_allclose(result["hole_ssim"][i], ssim_map[hole].mean(), atol=1e-4)


def test_hole_metrics_when_error_is_only_inside_the_hole(photos, hole_mask):
    prediction = np.where(hole_mask > 0, 0.5, photos).astype(np.float32)
    result = metrics.image_metrics(prediction, photos, hole_mask)
    for i in range(2):
        hole = np.broadcast_to(hole_mask[i] > 0, photos[i].shape)
        hole_error = photos[i][hole] - 0.5
        hole_mse = np.mean(hole_error**2)
        np.testing.assert_allclose(result["hole_l1"][i], np.mean(np.abs(hole_error)), rtol=1e-5)
        np.testing.assert_allclose(result["hole_l2"][i], hole_mse, rtol=1e-5)
        np.testing.assert_allclose(result["hole_psnr"][i], -10 * np.log10(hole_mse), rtol=1e-5)
        # The whole-image error is the hole error diluted by the known pixels.
        np.testing.assert_allclose(result["l2"][i], hole_mse * hole.mean(), rtol=1e-5)
    assert np.all(result["hole_psnr"] < result["psnr"])
    assert np.all(result["hole_ssim"] < result["ssim"])


def test_perfect_prediction_gives_capped_psnr_and_unit_ssim(photos, hole_mask):
    result = metrics.image_metrics(photos, photos, hole_mask)
    for name in ("psnr", "hole_psnr"):
        np.testing.assert_allclose(result[name], metrics.PSNR_CAP_DB, rtol=1e-6)
    for name in ("ssim", "hole_ssim"):
        np.testing.assert_allclose(result[name], 1.0, atol=1e-5)
    for name in ("l1", "l2", "hole_l1", "hole_l2"):
        assert not np.any(result[name])


def test_empty_hole_follows_documented_convention(photos, noisy):
    empty = np.zeros(photos.shape[:3] + (1,), np.float32)
    result = metrics.image_metrics(noisy, photos, empty)
    assert not np.any(result["hole_l1"]) and not np.any(result["hole_l2"])
    np.testing.assert_allclose(result["hole_psnr"], metrics.PSNR_CAP_DB)
    np.testing.assert_allclose(result["hole_ssim"], 1.0)


def test_max_value_rescales_psnr_and_ssim(photos, noisy, hole_mask):
    unit = metrics.image_metrics(noisy, photos, hole_mask)
    scaled = metrics.image_metrics(noisy * 255.0, photos * 255.0, hole_mask, max_value=255.0)
    for name in ("psnr", "ssim", "hole_psnr", "hole_ssim"):
        np.testing.assert_allclose(scaled[name], unit[name], rtol=1e-4)


@pytest.mark.parametrize(
    "prediction_shape, target_shape, mask_shape, message",
    [
        ((2, 32, 32, 3), (2, 32, 32, 3), (2, 32, 32, 3), "mask shape"),
        ((2, 32, 31, 3), (2, 32, 32, 3), (2, 32, 32, 1), "same shape"),
        ((32, 32, 3), (32, 32, 3), (32, 32, 1), "NHWC"),
        ((2, 10, 32, 3), (2, 10, 32, 3), (2, 10, 32, 1), "at least 11 px"),
    ],
)
def test_bad_shapes_are_rejected(prediction_shape, target_shape, mask_shape, message):
    with pytest.raises(ValueError, match=message):
        metrics.image_metrics(
            np.zeros(prediction_shape, np.float32),
            np.zeros(target_shape, np.float32),
            np.zeros(mask_shape, np.float32),
        )


def _means(sums):
    """Per-metric means from `sum_valid`'s sums and count (as the evaluator computes them)."""
    sums = jax.device_get(sums)
    count = int(sums.pop("count"))
    return {name: float(total) / count for name, total in sums.items()}, count


def test_sum_valid_ignores_padded_examples():
    first = metrics.sum_valid({"psnr": np.array([10.0, 20.0]), "ssim": np.array([0.5, 0.7])})
    assert int(first["count"]) == 2
    assert float(first["psnr"]) == pytest.approx(30.0)
    second = metrics.sum_valid(
        {"psnr": np.array([30.0, np.nan, 999.0]), "ssim": np.array([0.9, np.nan, -5.0])},
        valid=np.array([True, False, False]),
    )
    # Padded entries are excluded even when they hold NaN.
    assert int(second["count"]) == 1
    assert float(second["psnr"]) == pytest.approx(30.0)
    assert float(second["ssim"]) == pytest.approx(0.9)
    total = jax.tree.map(lambda a, b: a + b, first, second)
    result, count = _means(total)
    assert count == 3
    assert result["psnr"] == pytest.approx(20.0)
    assert result["ssim"] == pytest.approx(0.7)


def test_sum_valid_without_valid_examples_counts_zero():
    sums = metrics.sum_valid({"psnr": np.array([10.0])}, valid=np.array([False]))
    assert int(sums["count"]) == 0
    assert float(sums["psnr"]) == 0.0


def test_sum_valid_reads_metrics_of_sharded_global_batches():
    mesh = parallel.create_mesh()
    values = np.arange(8, dtype=np.float32)
    valid = values < 5
    batch = parallel.make_global_batch({"l1": values, "valid": valid}, mesh)
    sums = jax.jit(metrics.sum_valid)({"l1": batch["l1"]}, batch["valid"])
    result, count = _means(sums)
    assert count == 5
    assert result["l1"] == pytest.approx(values[valid].mean())
