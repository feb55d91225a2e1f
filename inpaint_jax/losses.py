"""Loss functions for inpainting: masked reconstruction, GAN objectives, TV.

Every function here is a pure ``jax.numpy`` function, safe under ``jax.jit``
and ``jax.grad``: no Python control flow depends on array values. Images are
float NHWC; masks are float (N, H, W, 1) with 1 = hole and broadcast over the
channels.
"""
from __future__ import annotations

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
