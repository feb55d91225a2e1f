"""Image-quality metrics for inpainting: L1, L2, PSNR and SSIM, whole image and hole.

:func:`image_metrics` returns one value per example so that padded evaluation
batches can be averaged correctly with :func:`sum_valid` (the trainers' evaluator does).

Conventions:
- PSNR is ``10 * log10(max_value**2 / MSE)``, capped at :data:`PSNR_CAP_DB`
  (100 dB): a perfect prediction gives the cap rather than ``inf``, so means
  over a data set stay finite.
- SSIM follows Wang et al. (2004) with an 11x11 Gaussian window (sigma 1.5),
  K1 = 0.01, K2 = 0.03, computed by ``dm_pix.ssim``. The whole-image SSIM is
  the mean of the SSIM map over the pixels at least 5 px from the border
  (where the window fits), as in ``dm_pix.ssim`` and scikit-image. For the
  hole SSIM the map is also needed at the border, so the images are padded by
  symmetric reflection first (the ``reflect`` mode scikit-image uses); the hole
  SSIM is the mean of that full-size map over hole pixels and channels.
- An example whose mask is empty has nothing to get wrong in its hole: its
  ``hole_l1`` and ``hole_l2`` are 0, ``hole_psnr`` is the cap and
  ``hole_ssim`` is 1.
"""
from __future__ import annotations

from collections.abc import Mapping

import dm_pix as pix
import jax
import jax.numpy as jnp

from inpaint_jax.losses import masked_mean

PSNR_CAP_DB = 100.0
SSIM_FILTER_SIZE = 11
SSIM_FILTER_SIGMA = 1.5
_SSIM_RADIUS = SSIM_FILTER_SIZE // 2
_PER_EXAMPLE = (1, 2, 3)


def psnr_from_mse(mse: jax.Array, max_value: float = 1.0) -> jax.Array:
    """PSNR in dB for a mean squared error, capped at :data:`PSNR_CAP_DB`."""
    smallest_mse = max_value**2 * 10.0 ** (-PSNR_CAP_DB / 10.0)
    return 10.0 * jnp.log10(max_value**2 / jnp.maximum(mse, smallest_mse))


def _check_shapes(prediction, target, mask) -> None:
    """Raises ValueError unless the shapes are (N, H, W, C), (N, H, W, C), (N, H, W, 1)."""
    if prediction.ndim != 4 or prediction.shape != target.shape:
        raise ValueError(
            f"prediction {prediction.shape} and target {target.shape} must be NHWC "
            "batches of the same shape"
        )
    if mask.shape != prediction.shape[:3] + (1,):
        raise ValueError(
            f"mask shape {mask.shape} does not match the images {prediction.shape}; "
            f"expected {prediction.shape[:3] + (1,)}"
        )
    if min(prediction.shape[1:3]) < SSIM_FILTER_SIZE:
        raise ValueError(
            f"images of {prediction.shape[1]}x{prediction.shape[2]} px are too small for "
            f"SSIM; both sides must be at least {SSIM_FILTER_SIZE} px"
        )


def ssim_map(prediction, target, max_value: float = 1.0) -> jax.Array:
    """Full-size (N, H, W, C) SSIM map; the border uses symmetric reflection padding."""
    pad = ((0, 0), (_SSIM_RADIUS, _SSIM_RADIUS), (_SSIM_RADIUS, _SSIM_RADIUS), (0, 0))
    return pix.ssim(
        jnp.pad(prediction, pad, mode="symmetric"),
        jnp.pad(target, pad, mode="symmetric"),
        max_val=max_value,
        filter_size=SSIM_FILTER_SIZE,
        filter_sigma=SSIM_FILTER_SIGMA,
        return_map=True,
    )


def image_metrics(prediction, target, mask, max_value: float = 1.0) -> dict[str, jax.Array]:
    """Per-example (N,) metrics of ``prediction`` against ``target``.

    Keys: ``l1``, ``l2`` (MSE), ``psnr``, ``ssim`` over the whole image and
    ``hole_l1``, ``hole_l2``, ``hole_psnr``, ``hole_ssim`` over the pixels where
    ``mask`` (N, H, W, 1) is 1. Images are NHWC with values in [0, max_value];
    both sides must be at least 11 px. Jit-able.
    """
    prediction = jnp.asarray(prediction, jnp.float32)
    target = jnp.asarray(target, jnp.float32)
    mask = jnp.asarray(mask, jnp.float32)
    _check_shapes(prediction, target, mask)

    l1 = pix.mae(prediction, target)
    l2 = pix.mse(prediction, target)
    hole_l2 = masked_mean(jnp.square(prediction - target), mask, axis=_PER_EXAMPLE)
    full_map = ssim_map(prediction, target, max_value)
    interior = full_map[:, _SSIM_RADIUS:-_SSIM_RADIUS, _SSIM_RADIUS:-_SSIM_RADIUS]
    has_hole = jnp.sum(mask, axis=_PER_EXAMPLE) > 0
    return {
        "l1": l1,
        "l2": l2,
        "psnr": psnr_from_mse(l2, max_value),
        "ssim": jnp.mean(interior, axis=_PER_EXAMPLE),
        "hole_l1": masked_mean(jnp.abs(prediction - target), mask, axis=_PER_EXAMPLE),
        "hole_l2": hole_l2,
        "hole_psnr": psnr_from_mse(hole_l2, max_value),
        "hole_ssim": jnp.where(has_hole, masked_mean(full_map, mask, axis=_PER_EXAMPLE), 1.0),
    }


def sum_valid(metrics: Mapping[str, jax.Array], valid=None) -> dict[str, jax.Array]:
    """Sums of per-example metrics over the valid examples, plus their ``count``.

    ``valid`` (N,) bool marks real examples (False for padding; all valid when
    omitted). Padded entries are excluded even when they hold NaN. Jit-able;
    on sharded global arrays the sums are ordinary (replicated) scalars that
    every process can read.
    """
    batch_size = next(iter(metrics.values())).shape[0]
    valid = jnp.ones((batch_size,), bool) if valid is None else jnp.asarray(valid, bool)
    sums = {name: jnp.sum(jnp.where(valid, value, 0.0)) for name, value in metrics.items()}
    sums["count"] = jnp.sum(valid.astype(jnp.int32))
    return sums
