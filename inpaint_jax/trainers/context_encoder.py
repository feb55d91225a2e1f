"""Context Encoder training (Pathak et al., CVPR 2016); also trains the NPS content network.

As in the released code (`train.lua`, center-region inpainting with
`overlapPred=4 wtl2=0.999`): the input hole is the centre 64x64 square less
a 4 px border (56x56), the network predicts the whole 64x64 centre, and the
generator minimises
  reconstruction_weight * L2 + adversarial_weight * GAN loss   (0.999, 0.001)
where L2 is the mean squared error over the 64x64 patch with the 4 px overlap
border weighted `overlap_weight` (10) times the interior: the border's
pixels are known, so learning them ties the patch to its surroundings. Each
joint step updates the discriminator on real centre patches vs. the centres
of composited completions (the known border around the predicted 56x56
hole; the released code shows it the raw 64x64 prediction), then the
generator against the updated discriminator (`gan.joint_step`). An
optional reconstruction-only warm-up (`completion_steps`, 0 in the paper's
recipe) comes first.

The NPS content network (configs/nps_content.py) is the same recipe with
the model options `bottleneck="dense"` and ELU activations.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from inpaint_jax import losses, masks, parallel
from inpaint_jax.data import datasets
from inpaint_jax.models import context_encoder as ce
from inpaint_jax.trainers import gan, loop, phases
from inpaint_jax.trainers import state as train_state


def expected_hole(overlap: int) -> np.ndarray:
    """Bool (128, 128) map of the input hole: the 64x64 centre less its `overlap` px border."""
    start, end = ce.PATCH_START + overlap, ce.PATCH_START + ce.PATCH_SIZE - overlap
    hole = np.zeros((ce.INPUT_SIZE, ce.INPUT_SIZE), bool)
    hole[start:end, start:end] = True
    return hole


def overlap_weights(overlap: int, overlap_weight: float) -> np.ndarray:
    """(64, 64, 1) loss weights: 1 on the hole, `overlap_weight` on the known border around it."""
    hole = ce.center_region(expected_hole(overlap)[None, :, :, None])[0]
    return np.where(hole, 1.0, overlap_weight).astype(np.float32)


def overlap_weighted_mse(prediction, target, overlap: int, overlap_weight: float) -> jax.Array:
    """Mean over the centre patch of overlap-weighted squared errors (the released code's loss).

    `prediction` and `target` are (N, 128, 128, 3) images; only their 64x64
    centres count. Equals sum(w * (p - t)^2) / (N * 64 * 64 * 3) with w from
    `overlap_weights`, so an error in the border costs `overlap_weight` times
    the same error inside.
    """
    error = jnp.square(ce.center_region(prediction) - ce.center_region(target))
    return jnp.mean(overlap_weights(overlap, overlap_weight) * error)


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ContextEncoderConfigError unless the data and masks fit the fixed CE geometry."""
    if config.data.crop_size != ce.INPUT_SIZE:
        raise ce.ContextEncoderConfigError(
            f"The Context Encoder is fixed-size: config.data.crop_size must be {ce.INPUT_SIZE}, "
            f"got {config.data.crop_size}."
        )
    overlap = config.loss.overlap
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not (
        0 <= overlap < ce.PATCH_SIZE // 2
    ):
        raise ce.ContextEncoderConfigError(
            f"config.loss.overlap must be a whole number of pixels in [0, {ce.PATCH_SIZE // 2}), "
            f"got {overlap!r} (the paper's released code: 4)."
        )
    hole = datasets.mask_fn(config)(masks.mask_rng(0), ce.INPUT_SIZE, ce.INPUT_SIZE).mask
    if not np.array_equal(hole[..., 0] > 0, expected_hole(overlap)):
        side = ce.PATCH_SIZE - 2 * overlap
        raise ce.ContextEncoderConfigError(
            f"The Context Encoder predicts the {ce.PATCH_SIZE}x{ce.PATCH_SIZE} centre, and with "
            f"config.loss.overlap={overlap} its hole is the centred {side}x{side} square; "
            f"config.mask gives another hole. Use config.mask.kind='center' with "
            f"config.mask.params.hole_size={side}/{ce.INPUT_SIZE}."
        )


def judge(discriminator, d_params, d_stats, images):
    """Discriminator logits (N,) for the centre patches of `images`, and its new batch stats."""
    return train_state.apply_model(discriminator, d_params, d_stats, ce.center_region(images),
                                   train=True)


def discriminator_loss(config, discriminator, d_params, d_stats, real, fake, batch, rng):
    """GAN loss of real centres vs. completed centres, in one batch so BatchNorm sees both."""
    logits, d_stats = judge(discriminator, d_params, d_stats, jnp.concatenate([real, fake]))
    real_logits, fake_logits = jnp.split(logits, 2)
    acc_real, acc_fake = losses.discriminator_accuracy(real_logits, fake_logits)
    loss = losses.discriminator_loss(real_logits, fake_logits, config.loss.gan)
    return loss, (d_stats, {"d_acc_real": acc_real, "d_acc_fake": acc_fake})


def adversarial_loss(config, discriminator, d_params, d_stats, completion, batch):
    """adversarial_weight * GAN loss of the completed centre patches."""
    logits, _ = judge(discriminator, d_params, d_stats, completion)
    adversarial = losses.generator_loss(logits, config.loss.gan)
    return config.loss.adversarial_weight * adversarial, {"g_adversarial": adversarial}


def reconstruction(config, prediction, image, mask):
    """Overlap-weighted L2 over the 64x64 centre (the mask is the fixed centre hole)."""
    return overlap_weighted_mse(prediction, image, config.loss.overlap, config.loss.overlap_weight)


def schedule(config: ml_collections.ConfigDict) -> phases.Schedule:
    """An optional reconstruction warm-up (`completion_steps`), then joint training."""
    return phases.schedule(config.total_steps, (phases.COMPLETION, config.completion_steps),
                           then=phases.JOINT)


def build(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> loop.Training:
    """The Context Encoder (or NPS content net) and its discriminator, state and phase steps."""
    check_config(config)
    return gan.build(
        config, mesh, schedule(config),
        discriminator_loss=discriminator_loss,
        adversarial_loss=adversarial_loss,
        reconstruction=functools.partial(reconstruction, config),
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> train_state.TrainState:
    """Trains a Context Encoder per `config` in `workdir`, resuming from its last checkpoint."""
    check_config(config)  # before the data is read.
    workdir = loop.prepare_workdir(workdir)
    mesh = parallel.create_mesh()
    data = datasets.create(config, mesh)
    training = build(config, mesh)
    return loop.restore_and_run(config, workdir, mesh, data, training)
