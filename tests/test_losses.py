"""Tests for inpaint_jax.losses against hand-computed numpy values."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inpaint_jax import losses


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.fixture
def tiny_batch():
    """Prediction, target and mask of shape (2, 3, 4, C) with a partly filled hole."""
    rng = np.random.default_rng(0)
    prediction = rng.uniform(size=(2, 3, 4, 3)).astype(np.float32)
    target = rng.uniform(size=(2, 3, 4, 3)).astype(np.float32)
    mask = np.zeros((2, 3, 4, 1), np.float32)
    mask[0, 1:, 1:3] = 1.0
    mask[1, 0, 0] = 1.0
    return prediction, target, mask


def test_masked_mse_and_l1_average_over_hole_pixels_and_channels(tiny_batch):
    prediction, target, mask = tiny_batch
    hole = np.broadcast_to(mask[..., 0:1] > 0, prediction.shape)
    error = prediction - target
    np.testing.assert_allclose(
        losses.masked_mse(prediction, target, mask), np.mean(error[hole] ** 2), rtol=1e-6
    )
    np.testing.assert_allclose(
        losses.masked_l1(prediction, target, mask), np.mean(np.abs(error[hole])), rtol=1e-6
    )


def test_masked_loss_weights_drop_padded_examples(tiny_batch):
    prediction, target, mask = tiny_batch
    weighted = losses.masked_mse(prediction, target, mask, weights=jnp.array([1.0, 0.0]))
    first_only = losses.masked_mse(prediction[:1], target[:1], mask[:1])
    np.testing.assert_allclose(weighted, first_only, rtol=1e-6)


def test_masked_losses_are_zero_with_finite_gradient_for_empty_mask(tiny_batch):
    prediction, target, _ = tiny_batch
    empty = np.zeros(prediction.shape[:3] + (1,), np.float32)
    for loss_fn in (losses.masked_mse, losses.masked_l1):
        value, grad = jax.value_and_grad(loss_fn)(jnp.asarray(prediction), target, empty)
        assert float(value) == 0.0
        assert np.all(np.isfinite(grad)) and not np.any(grad)


def test_masked_mean_per_example_axis(tiny_batch):
    prediction, _, mask = tiny_batch
    per_example = losses.masked_mean(prediction, mask, axis=(1, 2, 3))
    expected = [prediction[i][np.broadcast_to(mask[i] > 0, prediction[i].shape)].mean() for i in range(2)]
    np.testing.assert_allclose(per_example, expected, rtol=1e-6)


REAL = np.array([2.0, -1.0, 0.5, 3.0], np.float32)
FAKE = np.array([-2.0, 0.3, 1.5], np.float32)


def test_bce_discriminator_loss_is_log_likelihood():
    expected = -np.mean(np.log(_sigmoid(REAL))) - np.mean(np.log(1.0 - _sigmoid(FAKE)))
    np.testing.assert_allclose(losses.discriminator_loss(REAL, FAKE, "bce"), expected, rtol=1e-5)


def test_bce_generator_loss_is_non_saturating():
    expected = -np.mean(np.log(_sigmoid(FAKE)))
    np.testing.assert_allclose(losses.generator_loss(FAKE, "bce"), expected, rtol=1e-5)


def test_hinge_losses():
    expected_d = np.mean(np.maximum(0, 1 - REAL)) + np.mean(np.maximum(0, 1 + FAKE))
    np.testing.assert_allclose(losses.discriminator_loss(REAL, FAKE, "hinge"), expected_d, rtol=1e-6)
    np.testing.assert_allclose(losses.generator_loss(FAKE, "hinge"), -np.mean(FAKE), rtol=1e-6)


def test_lsgan_losses():
    expected_d = 0.5 * np.mean((REAL - 1) ** 2) + 0.5 * np.mean(FAKE**2)
    np.testing.assert_allclose(losses.discriminator_loss(REAL, FAKE, "lsgan"), expected_d, rtol=1e-6)
    np.testing.assert_allclose(
        losses.generator_loss(FAKE, "lsgan"), 0.5 * np.mean((FAKE - 1) ** 2), rtol=1e-6
    )


@pytest.mark.parametrize("kind", losses.GAN_LOSS_KINDS)
def test_gan_losses_have_finite_values_and_gradients_for_extreme_logits(kind):
    extreme = jnp.array([100.0, -100.0, 0.0])
    d_value, d_grads = jax.value_and_grad(losses.discriminator_loss, argnums=(0, 1))(extreme, extreme, kind)
    g_value, g_grad = jax.value_and_grad(losses.generator_loss)(extreme, kind)
    for array in (d_value, *d_grads, g_value, g_grad):
        assert np.all(np.isfinite(array))


def test_bce_loss_of_confident_correct_discriminator_is_near_zero():
    assert float(losses.discriminator_loss(jnp.array([100.0]), jnp.array([-100.0]), "bce")) < 1e-6


def test_unknown_gan_kind_is_rejected_at_trace_time():
    with pytest.raises(ValueError, match="bce, hinge, lsgan"):
        jax.jit(lambda r, f: losses.discriminator_loss(r, f, "wgan"))(REAL, FAKE)
    with pytest.raises(ValueError, match="'wgan'"):
        losses.generator_loss(FAKE, "wgan")


def test_discriminator_accuracy():
    acc_real, acc_fake = losses.discriminator_accuracy(REAL, FAKE)
    assert float(acc_real) == pytest.approx(3 / 4)
    assert float(acc_fake) == pytest.approx(1 / 3)


def test_total_variation_without_mask():
    image = np.random.default_rng(1).uniform(size=(2, 4, 5, 3)).astype(np.float32)
    expected = np.mean(np.abs(np.diff(image, axis=1))) + np.mean(np.abs(np.diff(image, axis=2)))
    np.testing.assert_allclose(losses.total_variation(image), expected, rtol=1e-6)


def test_total_variation_with_mask_counts_only_pairs_touching_the_hole():
    image = np.zeros((1, 4, 4, 1), np.float32)
    image[0, 1, 1] = 1.0  # the single hole pixel
    image[0, 3, 3] = 5.0  # far from the hole: must not count
    mask = np.zeros((1, 4, 4, 1), np.float32)
    mask[0, 1, 1] = 1.0
    # Two vertical pairs touch the hole pixel (above and below), each with |step| 1;
    # likewise two horizontal pairs.
    np.testing.assert_allclose(losses.total_variation(image, mask), 1.0 + 1.0, rtol=1e-6)


def test_total_variation_with_empty_mask_is_zero():
    image = np.random.default_rng(2).uniform(size=(1, 4, 4, 3)).astype(np.float32)
    assert float(losses.total_variation(image, np.zeros((1, 4, 4, 1), np.float32))) == 0.0


def test_losses_are_jittable(tiny_batch):
    prediction, target, mask = tiny_batch
    jitted = jax.jit(losses.masked_l1)(prediction, target, mask)
    np.testing.assert_allclose(jitted, losses.masked_l1(prediction, target, mask), rtol=1e-6)


def _numpy_gram(features):
    batch, height, width, channels = features.shape
    flat = features.reshape(batch, height * width, channels)
    return np.stack([f.T @ f for f in flat]) / (channels * height * width)


@pytest.fixture
def feature_pair():
    """Two dicts of small (N, H, W, C) feature maps under the same layer names."""
    rng = np.random.default_rng(3)
    shapes = {"pool1": (2, 4, 5, 3), "pool2": (2, 2, 3, 6)}
    return tuple(
        {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}
        for _ in range(2)
    )


def test_gram_matrix_is_normalised_feature_correlation():
    features = np.random.default_rng(4).normal(size=(2, 3, 4, 5)).astype(np.float32)
    gram = losses.gram_matrix(features)
    assert gram.shape == (2, 5, 5)
    np.testing.assert_allclose(gram, _numpy_gram(features), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gram, np.swapaxes(gram, 1, 2))


def test_perceptual_loss_sums_mean_absolute_feature_differences(feature_pair):
    a, b = feature_pair
    expected = sum(np.mean(np.abs(a[k] - b[k])) for k in ("pool1", "pool2"))
    np.testing.assert_allclose(
        losses.perceptual_loss(a, b, ("pool1", "pool2")), expected, rtol=1e-6
    )
    only_first = np.mean(np.abs(a["pool1"] - b["pool1"]))
    np.testing.assert_allclose(losses.perceptual_loss(a, b, ["pool1"]), only_first, rtol=1e-6)


def test_style_loss_sums_mean_absolute_gram_differences(feature_pair):
    a, b = feature_pair
    expected = sum(
        np.mean(np.abs(_numpy_gram(a[k]) - _numpy_gram(b[k]))) for k in ("pool1", "pool2")
    )
    np.testing.assert_allclose(losses.style_loss(a, b, ("pool1", "pool2")), expected, rtol=1e-5)


def test_perceptual_and_style_losses_vanish_for_identical_features(feature_pair):
    a, _ = feature_pair
    assert float(losses.perceptual_loss(a, a, ("pool1", "pool2"))) == 0.0
    assert float(losses.style_loss(a, a, ("pool1", "pool2"))) == 0.0


def test_style_loss_ignores_where_features_are(feature_pair):
    """Gram matrices sum over positions, so permuting positions changes nothing."""
    a, _ = feature_pair
    shuffled = {k: v[:, ::-1, ::-1] for k, v in a.items()}
    assert float(losses.perceptual_loss(a, shuffled, ("pool1",))) > 0
    np.testing.assert_allclose(losses.style_loss(a, shuffled, ("pool1", "pool2")), 0.0, atol=1e-6)


def test_feature_losses_name_missing_or_mismatched_layers(feature_pair):
    a, b = feature_pair
    with pytest.raises(ValueError, match="'relu3_3'"):
        losses.perceptual_loss(a, b, ("pool1", "relu3_3"))
    with pytest.raises(ValueError, match="at least one"):
        losses.style_loss(a, b, ())
    with pytest.raises(ValueError, match="differ in shape"):
        losses.style_loss(a, {**b, "pool2": b["pool2"][:1]}, ("pool2",))


def test_hole_and_valid_l1_split_the_plain_l1(tiny_batch):
    prediction, target, mask = tiny_batch
    hole, valid = losses.hole_and_valid_l1(prediction, target, mask)
    error = np.abs(prediction - target)
    np.testing.assert_allclose(hole, np.mean(error * mask), rtol=1e-6)
    np.testing.assert_allclose(valid, np.mean(error * (1 - mask)), rtol=1e-6)
    np.testing.assert_allclose(hole + valid, np.mean(error), rtol=1e-6)
