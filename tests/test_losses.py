"""Tests for inpaint_jax.losses against hand-computed numpy values."""
import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import dfnet as dfnet_config
from configs import two_stage as two_stage_config
from inpaint_jax import losses
from inpaint_jax.models import vgg


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


# ---------------------------------------------------------------- DFNet / refinement loss terms


@pytest.fixture(scope="module")
def smooth_batch():
    """Output, target and mask (2, 16, 16, C): smooth images, a rectangular hole each."""
    rng = np.random.default_rng(5)
    coarse = rng.uniform(size=(2, 4, 4, 3)).astype(np.float32)
    target = np.stack([cv2.resize(c, (16, 16), interpolation=cv2.INTER_LINEAR) for c in coarse])
    output = np.clip(target + rng.normal(0, 0.1, target.shape), 0, 1).astype(np.float32)
    mask = np.zeros((2, 16, 16, 1), np.float32)
    mask[0, 4:10, 5:12] = 1.0
    mask[1, 0:6, 10:16] = 1.0  # touches the border
    return output, target, mask


@pytest.fixture(scope="module")
def features():
    """models.vgg.Features of a random VGG-16 at pool1 and pool2 (He-normal kernels, zero biases)."""
    module = vgg.VGG(depth=16)
    taps = ("pool1", "pool2")
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), taps))
    rng = np.random.default_rng(6)

    def draw(leaf):
        if leaf.ndim == 1:
            return jnp.zeros(leaf.shape, leaf.dtype)
        return jnp.asarray(rng.normal(size=leaf.shape) * np.sqrt(2 / np.prod(leaf.shape[:-1])),
                           leaf.dtype)

    return vgg.Features(module, jax.tree.map(draw, shapes), taps)


def _numpy_masked_tv(image, mask):
    """Mean |step| over the neighbour pairs with at least one hole pixel, vertical plus horizontal."""
    total = 0.0
    for axis in (1, 2):
        steps = np.abs(np.diff(image, axis=axis))
        first = np.take(mask, range(mask.shape[axis] - 1), axis=axis)
        second = np.take(mask, range(1, mask.shape[axis]), axis=axis)
        touching = np.broadcast_to(np.maximum(first, second) > 0, steps.shape)
        total += steps[touching].mean()
    return total


def _numpy_feature_terms(features, output, target):
    """(perceptual, style) from the features of output and target computed separately."""
    ours, theirs = features(output), features(target)
    perceptual = sum(np.mean(np.abs(np.asarray(ours[t]) - np.asarray(theirs[t])))
                     for t in features.taps)
    style = sum(np.mean(np.abs(_numpy_gram(np.asarray(ours[t])) - _numpy_gram(np.asarray(theirs[t]))))
                for t in features.taps)
    return perceptual, style


def test_l1_terms_are_the_hole_and_valid_means_over_every_entry(smooth_batch):
    output, target, mask = smooth_batch
    terms = losses.l1_terms(output, target, mask)
    assert set(terms) == {"l1_hole", "l1_valid"}
    error = np.abs(output - target)
    np.testing.assert_allclose(terms["l1_hole"], np.mean(error * mask), rtol=1e-6)
    np.testing.assert_allclose(terms["l1_valid"], np.mean(error * (1 - mask)), rtol=1e-6)
    assert float(terms["l1_hole"]) > 0 and float(terms["l1_valid"]) > 0


def test_texture_terms_without_features_are_the_tv_of_pairs_touching_the_hole(smooth_batch):
    output, target, mask = smooth_batch
    terms = losses.texture_terms(output, target, mask)
    assert set(terms) == {"tv"}
    np.testing.assert_allclose(terms["tv"], _numpy_masked_tv(output, mask), rtol=1e-5)
    # TV is of the output alone; the target does not enter it.
    other = losses.texture_terms(output, 1 - target, mask)
    assert float(other["tv"]) == float(terms["tv"])


def test_texture_terms_with_features_add_perceptual_and_style(smooth_batch, features):
    output, target, mask = smooth_batch
    terms = jax.jit(lambda o, t, m: losses.texture_terms(o, t, m, features))(output, target, mask)
    assert set(terms) == {"tv", "perceptual", "style"}
    perceptual, style = _numpy_feature_terms(features, output, target)
    np.testing.assert_allclose(terms["perceptual"], perceptual, rtol=1e-4)
    np.testing.assert_allclose(terms["style"], style, rtol=1e-4)
    np.testing.assert_allclose(terms["tv"], _numpy_masked_tv(output, mask), rtol=1e-5)


def test_texture_terms_of_a_perfect_output_leave_only_tv(smooth_batch, features):
    _, target, mask = smooth_batch
    terms = losses.texture_terms(target, target, mask, features)
    assert float(terms["perceptual"]) == 0.0 and float(terms["style"]) == 0.0
    assert float(terms["tv"]) > 0.0
    shifted = losses.texture_terms(target * 0.5, target, mask, features)
    assert float(shifted["perceptual"]) > 0.0 and float(shifted["style"]) > 0.0


def test_target_features_carry_no_gradient(smooth_batch, features):
    output, target, mask = smooth_batch

    def feature_loss(output, target):
        terms = losses.texture_terms(output, target, mask, features)
        return terms["perceptual"] + terms["style"]

    to_output, to_target = jax.jit(jax.grad(feature_loss, argnums=(0, 1)))(output, target)
    assert np.abs(np.asarray(to_output)).sum() > 0
    assert not np.asarray(to_target).any()


@pytest.mark.parametrize("with_features", [False, True], ids=["l1_tv", "all_five"])
def test_completion_terms_are_the_l1_and_texture_terms(smooth_batch, features, with_features):
    output, target, mask = smooth_batch
    extractor = features if with_features else None
    terms = losses.completion_terms(output, target, mask, extractor)
    expected = {**losses.l1_terms(output, target, mask),
                **losses.texture_terms(output, target, mask, extractor)}
    names = {"l1_hole", "l1_valid", "tv"} | ({"perceptual", "style"} if with_features else set())
    assert set(terms) == set(expected) == names
    for name in names:
        np.testing.assert_allclose(terms[name], expected[name], rtol=1e-6, err_msg=name)


def test_weighted_sum_weights_each_term_by_its_loss_config_entry(smooth_batch, features):
    output, target, mask = smooth_batch
    loss_config = dfnet_config.get_config().loss  # the released weights: 6, 6, 0.1, 240, 0.1
    terms = losses.completion_terms(output, target, mask, features)
    total = losses.weighted_sum(terms, loss_config)
    expected = (6.0 * float(terms["l1_hole"]) + 6.0 * float(terms["l1_valid"])
                + 0.1 * float(terms["perceptual"]) + 240.0 * float(terms["style"])
                + 0.1 * float(terms["tv"]))
    np.testing.assert_allclose(float(total), expected, rtol=1e-5)
    # Entries that weight no term (levels, taps) are ignored; a term without a weight is an error.
    assert float(losses.weighted_sum({"tv": 2.0}, {"tv_weight": 0.5, "vgg_taps": ()})) == 1.0
    with pytest.raises(KeyError, match="l1_hole_weight"):
        losses.weighted_sum({"l1_hole": 1.0}, {"tv_weight": 1.0})


def test_uses_features_when_perceptual_or_style_is_weighted():
    assert not losses.uses_features({"perceptual_weight": 0.0, "style_weight": 0.0})
    assert losses.uses_features({"perceptual_weight": 0.1, "style_weight": 0.0})
    assert losses.uses_features({"perceptual_weight": 0.0, "style_weight": 240.0})
    for config in (dfnet_config, two_stage_config):
        assert losses.uses_features(config.get_config().loss)  # the released losses need VGG-16
        assert not losses.uses_features(config.get_config("runlocal").loss)  # offline: no VGG


# ---------------------------------------------------------------- the patch texture loss (NPS)


def numpy_patches(features, patch_size=3):
    """(H, W, C) -> (H * W, patch_size**2 * C): zero-padded patches, by loops."""
    height, width, _ = features.shape
    half = patch_size // 2
    padded = np.pad(features, ((half, half), (half, half), (0, 0)))
    return np.stack([padded[y:y + patch_size, x:x + patch_size].ravel()
                     for y in range(height) for x in range(width)])


def numpy_nearest(queries, sources):
    """Index of the source with the highest cosine similarity, for each query, by loops."""
    def cosine(a, b):
        return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    return np.array([np.argmax([cosine(q, s) for s in sources]) for q in queries])


def numpy_positions(hole, stride):
    """(flat hole positions, flat centres every `stride` px of 3x3 patches clear of the hole)."""
    height, width = hole.shape
    sources = [y * width + x for y in range(1, height - 1) for x in range(1, width - 1)
               if (y - 1) % stride == 0 and (x - 1) % stride == 0
               and not hole[y - 1:y + 2, x - 1:x + 2].any()]
    return np.flatnonzero(hole).astype(np.int32), np.asarray(sources, np.int32)


@pytest.mark.parametrize("patch_size", [3, 5])
def test_patches_are_the_zero_padded_neighbourhoods(patch_size):
    features = np.random.default_rng(0).normal(size=(5, 6, 4)).astype(np.float32)
    patches = np.asarray(losses.extract_patches(jnp.asarray(features), patch_size))
    expected = numpy_patches(features, patch_size)
    assert patches.shape == expected.shape == (30, patch_size**2 * 4)
    for row, expected_row in zip(patches, expected):  # same values, another order
        np.testing.assert_array_equal(np.sort(row), np.sort(expected_row))


def test_nearest_neighbours_agree_with_loops_across_chunks():
    rng = np.random.default_rng(1)
    queries = rng.normal(size=(37, 20)).astype(np.float32)
    sources = rng.normal(size=(53, 20)).astype(np.float32)
    sources[40] = 5 * queries[3]  # far in distance, but the same direction
    found = np.asarray(losses.nearest_neighbours(jnp.asarray(queries), jnp.asarray(sources), 8))
    np.testing.assert_array_equal(found, numpy_nearest(queries, sources))
    assert found[3] == 40


def test_patch_texture_loss_agrees_with_loops():
    rng = np.random.default_rng(2)
    features = np.maximum(rng.normal(size=(14, 16, 6)), 0).astype(np.float32)
    hole = np.zeros((14, 16), bool)
    hole[5:9, 4:11] = True
    hole[3, 12] = True
    holes, sources = numpy_positions(hole, 2)
    patches = numpy_patches(features)
    queries = patches[holes]
    matches = patches[sources][numpy_nearest(queries, patches[sources])]
    expected = np.mean(np.sum((queries - matches) ** 2, axis=1))
    loss = losses.patch_texture_loss(jnp.asarray(features), jnp.asarray(holes),
                                     jnp.asarray(sources), 16)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_patch_texture_loss_is_zero_when_hole_patches_have_copies_outside():
    tile = np.random.default_rng(3).uniform(size=(4, 4, 5)).astype(np.float32)
    features = np.tile(tile, (6, 6, 1))  # period 4: every patch recurs outside the hole
    hole = np.zeros((24, 24), bool)
    hole[10:14, 9:15] = True
    holes, sources = (jnp.asarray(p) for p in numpy_positions(hole, 1))
    assert float(losses.patch_texture_loss(jnp.asarray(features), holes, sources)) == 0.0
    features[11, 12, 2] += 0.5  # this hole patch is now unlike any outside patch
    assert float(losses.patch_texture_loss(jnp.asarray(features), holes, sources)) > 0.0


def test_patch_texture_gradient_reaches_only_the_hole_patches():
    features = np.random.default_rng(4).uniform(size=(12, 12, 3)).astype(np.float32)
    hole = np.zeros((12, 12), bool)
    hole[5:7, 5:8] = True
    holes, sources = (jnp.asarray(p) for p in numpy_positions(hole, 1))
    gradient = np.asarray(jax.grad(losses.patch_texture_loss)(jnp.asarray(features), holes,
                                                              sources))
    near_hole = cv2.dilate(hole.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert not gradient[~near_hole].any()  # the matched outside patches are constants
    assert np.abs(gradient[hole]).sum() > 0
