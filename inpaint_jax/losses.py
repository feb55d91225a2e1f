"""Loss functions for inpainting: masked reconstruction, GAN objectives, TV, perceptual, style,
and the patch texture loss of neural patch synthesis.

Every function here is a pure ``jax.numpy`` function, safe under ``jax.jit``
and ``jax.grad``: no Python control flow depends on array values. Images are
float NHWC; masks are float (N, H, W, 1) with 1 = hole and broadcast over the
channels.
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax

GAN_LOSS_KINDS = ("bce", "hinge", "lsgan")


def masked_mean(values: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
    """Weighted mean of ``values`` with ``mask`` (broadcast to ``values``) as weights.

    ``axis=None`` pools every entry into one scalar; ``axis=(1, 2, 3)`` gives one
    value per example. Where the mask sums to zero the result is 0 (not NaN),
    and so is its gradient.
    """
    weights = jnp.broadcast_to(mask, values.shape).astype(values.dtype)
    total = jnp.sum(values * weights, axis=axis)
    count = jnp.sum(weights, axis=axis)
    return total / jnp.where(count > 0, count, 1.0)


def _hole_weights(mask: jax.Array, weights: jax.Array | None) -> jax.Array:
    """The hole mask, scaled per example by ``weights`` (B,) when given."""
    if weights is None:
        return mask
    return mask * jnp.reshape(weights, (-1,) + (1,) * (mask.ndim - 1)).astype(mask.dtype)


def masked_mse(prediction, target, mask, weights=None) -> jax.Array:
    """Mean squared error over hole pixels and channels.

    Equals ``sum((p - t)**2 * mask) / (sum(mask) * C)`` over the whole batch;
    0 when the mask is empty. ``weights`` (B,) scales each example (e.g. 0 for
    the padded examples of an evaluation batch).
    """
    return masked_mean(jnp.square(prediction - target), _hole_weights(mask, weights))


def masked_l1(prediction, target, mask, weights=None) -> jax.Array:
    """Mean absolute error over hole pixels and channels; see :func:`masked_mse`."""
    return masked_mean(jnp.abs(prediction - target), _hole_weights(mask, weights))


def _check_gan_kind(kind: str) -> None:
    """Raises ValueError for an unknown GAN loss kind (at trace time)."""
    if kind not in GAN_LOSS_KINDS:
        raise ValueError(
            f"unknown GAN loss kind {kind!r}; choose one of {', '.join(GAN_LOSS_KINDS)}"
        )


def discriminator_loss(real_logits, fake_logits, kind: str = "bce") -> jax.Array:
    """Discriminator loss on raw logits (any shape, e.g. (N,) or a PatchGAN map).

    - ``bce``: ``-mean(log sigmoid(r)) - mean(log(1 - sigmoid(f)))``, the GAN
      objective GLCIC uses, computed stably from logits;
    - ``hinge``: ``mean(relu(1 - r)) + mean(relu(1 + f))``;
    - ``lsgan``: ``0.5 * mean((r - 1)**2) + 0.5 * mean(f**2)`` (Mao et al., with
      targets 1 for real and 0 for fake on the raw outputs).
    """
    _check_gan_kind(kind)
    if kind == "bce":
        return (
            jnp.mean(optax.sigmoid_binary_cross_entropy(real_logits, jnp.ones_like(real_logits)))
            + jnp.mean(optax.sigmoid_binary_cross_entropy(fake_logits, jnp.zeros_like(fake_logits)))
        )
    if kind == "hinge":
        return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))
    return 0.5 * jnp.mean(jnp.square(real_logits - 1.0)) + 0.5 * jnp.mean(jnp.square(fake_logits))


def generator_loss(fake_logits, kind: str = "bce") -> jax.Array:
    """Adversarial loss of the generator on the discriminator's logits for its output.

    - ``bce``: non-saturating ``-mean(log sigmoid(f))``;
    - ``hinge``: ``-mean(f)``;
    - ``lsgan``: ``0.5 * mean((f - 1)**2)``.
    """
    _check_gan_kind(kind)
    if kind == "bce":
        return jnp.mean(optax.sigmoid_binary_cross_entropy(fake_logits, jnp.ones_like(fake_logits)))
    if kind == "hinge":
        return -jnp.mean(fake_logits)
    return 0.5 * jnp.mean(jnp.square(fake_logits - 1.0))


def discriminator_accuracy(real_logits, fake_logits) -> tuple[jax.Array, jax.Array]:
    """Fractions of real inputs called real (logit > 0) and fake inputs called fake (logit < 0)."""
    acc_real = jnp.mean((real_logits > 0).astype(jnp.float32))
    acc_fake = jnp.mean((fake_logits < 0).astype(jnp.float32))
    return acc_real, acc_fake


def total_variation(image, mask=None) -> jax.Array:
    """Anisotropic total variation: mean |vertical step| + mean |horizontal step|.

    Each term is the mean absolute difference between neighbouring pixels,
    over all neighbour pairs, channels and examples. With a ``mask`` (1 = hole)
    only the pairs that touch the hole count, i.e. pairs with at least one
    pixel in the hole: the hole dilated by one pixel, as in the TV term of Liu
    et al. (2018). An empty mask gives 0.
    """
    vertical = jnp.abs(image[:, 1:] - image[:, :-1])
    horizontal = jnp.abs(image[:, :, 1:] - image[:, :, :-1])
    if mask is None:
        return jnp.mean(vertical) + jnp.mean(horizontal)
    vertical_pairs = jnp.maximum(mask[:, 1:], mask[:, :-1])
    horizontal_pairs = jnp.maximum(mask[:, :, 1:], mask[:, :, :-1])
    return masked_mean(vertical, vertical_pairs) + masked_mean(horizontal, horizontal_pairs)


def hole_and_valid_l1(prediction, target, mask) -> tuple[jax.Array, jax.Array]:
    """Liu et al. (2018)'s L_hole and L_valid: ``mean(|p - t| * m)`` and ``mean(|p - t| * (1 - m))``.

    Both means run over every entry (examples, pixels, channels), not only over
    the hole or the known region, so their sum is the plain L1 distance and a
    hole's share of the loss grows with its area. ``mask`` (N, H, W, 1) may be
    fractional (e.g. a down-scaled mask).
    """
    error = jnp.abs(prediction - target)
    return jnp.mean(error * mask), jnp.mean(error * (1 - mask))


def gram_matrix(features: jax.Array) -> jax.Array:
    """Gram matrices of (N, H, W, C) feature maps: (N, C, C) = F^T F / (C * H * W).

    F is the (H * W, C) matrix of one example's features; the normalisation by
    the layer's size C * H * W is Gatys et al.'s and Liu et al.'s K_p. The
    product runs at full float32 precision (no TF32 / bf16 passes).
    """
    batch, height, width, channels = features.shape
    flat = features.reshape(batch, height * width, channels)
    gram = jnp.einsum("npc,npd->ncd", flat, flat, precision=jax.lax.Precision.HIGHEST)
    return gram / (channels * height * width)


def _feature_pairs(features_a, features_b, layers):
    """[(a, b)] for each name of ``layers``, or ValueError naming what is missing or mismatched."""
    layers = tuple(layers)
    if not layers:
        raise ValueError("layers must name at least one feature layer (e.g. ('pool1', 'pool2')).")
    missing = [name for name in layers if name not in features_a or name not in features_b]
    if missing:
        raise ValueError(
            f"feature layers {missing} are missing: the first features have "
            f"{sorted(features_a)}, the second {sorted(features_b)}. Extract every layer the "
            f"loss names (e.g. VGG(...)(images, taps=layers))."
        )
    pairs = [(features_a[name], features_b[name]) for name in layers]
    for name, (a, b) in zip(layers, pairs):
        if a.shape != b.shape:
            raise ValueError(f"features {name!r} differ in shape: {a.shape} vs {b.shape}.")
    return pairs


def perceptual_loss(features_a, features_b, layers) -> jax.Array:
    """Sum over ``layers`` of the mean absolute difference between two feature maps.

    ``features_a`` and ``features_b`` map layer names to (N, H, W, C) arrays
    (e.g. the taps of ``models.vgg.VGG``); this is the perceptual loss of Liu
    et al. (2018) and DFNet: per layer, ``mean(|a - b|)`` over examples,
    positions and channels.
    """
    return sum(jnp.mean(jnp.abs(a - b)) for a, b in _feature_pairs(features_a, features_b, layers))


def style_loss(features_a, features_b, layers) -> jax.Array:
    """Sum over ``layers`` of the mean absolute difference between Gram matrices.

    Per layer, ``mean(|gram_matrix(a) - gram_matrix(b)|)`` over examples and
    the C x C entries: the style loss of Liu et al. (2018) and DFNet (an L1
    distance between Gram matrices normalised by C * H * W).
    """
    pairs = _feature_pairs(features_a, features_b, layers)
    return sum(jnp.mean(jnp.abs(gram_matrix(a) - gram_matrix(b))) for a, b in pairs)


def l1_terms(output, target, mask) -> dict[str, jax.Array]:
    """{"l1_hole", "l1_valid"} of one output against its target (`hole_and_valid_l1`)."""
    hole, valid = hole_and_valid_l1(output, target, mask)
    return {"l1_hole": hole, "l1_valid": valid}


def texture_terms(output, target, mask, features=None) -> dict[str, jax.Array]:
    """{"tv"} of one output, plus {"perceptual", "style"} against `target` with `features`.

    TV counts the pixel pairs that touch the hole (`total_variation` with the
    mask). `features` is a `models.vgg.Features` (images -> {tap: features},
    with its `taps`); the target's features carry no gradient.
    """
    terms = {"tv": total_variation(output, mask)}
    if features is not None:
        both = features(jnp.concatenate([output, jax.lax.stop_gradient(target)]))
        ours = {tap: value[: output.shape[0]] for tap, value in both.items()}
        theirs = {tap: value[output.shape[0]:] for tap, value in both.items()}
        terms["perceptual"] = perceptual_loss(ours, theirs, features.taps)
        terms["style"] = style_loss(ours, theirs, features.taps)
    return terms


def completion_terms(output, target, mask, features=None) -> dict[str, jax.Array]:
    """Every term of DFNet's loss for one output (also the two-stage refinement network's loss).

    `l1_terms` and `texture_terms`: "l1_hole", "l1_valid", "tv" and, with
    `features`, "perceptual" and "style".
    """
    return {**l1_terms(output, target, mask), **texture_terms(output, target, mask, features)}


def weighted_sum(terms: Mapping[str, jax.Array], weights: Mapping[str, float]) -> jax.Array:
    """Sum of each term times `weights[f"{name}_weight"]` (the configs' `loss` sections)."""
    return sum(weights[f"{name}_weight"] * value for name, value in terms.items())


def uses_features(weights: Mapping[str, float]) -> bool:
    """Whether a loss config weights a feature term ("perceptual" or "style") above 0."""
    return weights["perceptual_weight"] > 0 or weights["style_weight"] > 0


def extract_patches(features: jax.Array, patch_size: int = 3) -> jax.Array:
    """(H, W, C) features -> (H * W, patch_size**2 * C): the patch centred on each position.

    The map is zero-padded, so border positions have patches too.
    """
    patches = jax.lax.conv_general_dilated_patches(
        features[None], (patch_size, patch_size), (1, 1), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return patches.reshape(-1, patches.shape[-1])


def nearest_neighbours(queries: jax.Array, sources: jax.Array, chunk_size: int) -> jax.Array:
    """For each row of `queries` (P, D), the index of the most similar row of `sources` (S, D).

    Similarity is the cosine of the angle between the rows (normalised
    cross-correlation); all similarities of up to `chunk_size` queries come
    from one matrix product. Rows of zeros are similar to nothing (cosine 0).
    """
    unit_sources = sources / (jnp.linalg.norm(sources, axis=1, keepdims=True) + 1e-8)
    count = queries.shape[0]
    chunks = -(-count // chunk_size)
    padded = jnp.pad(queries, ((0, chunks * chunk_size - count), (0, 0)))

    def best(chunk):
        # A query's own norm scales its row of similarities: the argmax is the cosine's.
        return jnp.argmax(chunk @ unit_sources.T, axis=1)

    indices = jax.lax.map(best, padded.reshape(chunks, chunk_size, -1))
    return indices.reshape(-1)[:count]


def patch_texture_loss(features: jax.Array, hole_positions: jax.Array,
                       source_positions: jax.Array, chunk_size: int = 4096,
                       patch_size: int = 3) -> jax.Array:
    """Mean over hole patches of the squared distance to their nearest outside patch.

    The texture term of multi-scale neural patch synthesis (Yang et al. 2017;
    `nps.py`). `features` (H, W, C) is one image's feature map; the positions
    are flat indices of patch centres into it (`nps.patch_positions`). The
    nearest neighbour (by `nearest_neighbours`) is a constant target: no
    gradient flows into it.
    """
    patches = extract_patches(features, patch_size)
    queries, sources = patches[hole_positions], patches[source_positions]
    matches = jax.lax.stop_gradient(sources[nearest_neighbours(queries, sources, chunk_size)])
    return jnp.mean(jnp.sum(jnp.square(queries - matches), axis=1))
