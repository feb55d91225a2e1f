"""PGGAN training (Demir & Unal, "Patch-Based Image Inpainting with GANs", 2018).

The generator is trained on the joint loss
  reconstruction_weight * L1 + global_weight * G-GAN loss + patch_weight * PatchGAN loss
(paper: 0.995, 0.0025, 0.0025) against one discriminator whose shared trunk
feeds a global head (one logit per image) and a PatchGAN head (one logit per
local window). Each joint step updates the discriminator first, then the
generator (`gan.GANSteps.joint_step`). An optional reconstruction-only
warm-up (`completion_steps`, 0 in the paper's config) comes first.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import ml_collections

from inpaint_jax import losses
from inpaint_jax.models import pggan
from inpaint_jax.trainers import common, gan

PHASES = ("completion", "joint")
phase_for_step = gan.warmup_then_joint  # reconstruction warm-up, then joint.
HEADS = ("global", "patch")
DISCRIMINATORS = {
    "pggan": pggan.PGGANDiscriminator,
    "global": pggan.GlobalOnlyDiscriminator,
    "patch": pggan.PatchOnlyDiscriminator,
}


def build_models(
    config: ml_collections.ConfigDict,
) -> tuple[pggan.PGGANGenerator, pggan.PGGANDiscriminator]:
    """The generator preset and the discriminator variant of `config.model`.

    Both compute in `common.resolve_compute_dtype(config)`, with float32 parameters.
    """
    model = config.model
    if model.discriminator not in DISCRIMINATORS:
        raise ValueError(
            f"Unknown config.model.discriminator {model.discriminator!r}; choose one of "
            f"{', '.join(DISCRIMINATORS)}."
        )
    dtype = common.resolve_compute_dtype(config)
    generator = pggan.make_generator(
        model.preset,
        num_blocks=model.num_blocks,
        dilation_position=model.dilation_position,
        upsampling=model.upsampling,
        norm=model.norm,
        fill_value=tuple(model.fill_value),
        width_multiplier=model.width_multiplier,
        dtype=dtype,
    )
    discriminator = DISCRIMINATORS[model.discriminator](
        norm=model.norm, width_multiplier=model.width_multiplier, dtype=dtype
    )
    return generator, discriminator


class Steps(gan.GANSteps):
    """PGGAN's phase steps: one discriminator with a global and a PatchGAN head."""

    def head_logits(self, d_params, d_stats, images):
        """{head: logits} for the heads the discriminator has, and its new batch stats."""
        logits, d_stats = gan.apply_model(self.discriminator, d_params, d_stats, images, train=True)
        by_head = {head: getattr(logits, f"{head}_logits") for head in HEADS}
        return {head: value for head, value in by_head.items() if value is not None}, d_stats

    def discriminator_loss(self, d_params, d_stats, real, fake, batch, rng):
        """Sum over heads of the GAN loss of real images vs. completions (one batch)."""
        batch_size = real.shape[0]
        logits, d_stats = self.head_logits(d_params, d_stats, jnp.concatenate([real, fake]))
        total, metrics = 0.0, {}
        for head, head_logits in logits.items():
            real_logits, fake_logits = head_logits[:batch_size], head_logits[batch_size:]
            loss = losses.discriminator_loss(real_logits, fake_logits, self.config.loss.gan)
            acc_real, acc_fake = losses.discriminator_accuracy(real_logits, fake_logits)
            metrics.update(
                {
                    f"d_loss_{head}": loss,
                    f"d_acc_real_{head}": acc_real,
                    f"d_acc_fake_{head}": acc_fake,
                }
            )
            total += loss
        return total, (d_stats, metrics)

    def adversarial_loss(self, d_params, d_stats, completion, batch):
        """global_weight * G-GAN loss + patch_weight * PatchGAN loss of the completion."""
        logits, _ = self.head_logits(d_params, d_stats, completion)
        weights = {"global": self.config.loss.global_weight, "patch": self.config.loss.patch_weight}
        total, terms = 0.0, {}
        for head, head_logits in logits.items():
            terms[f"g_adversarial_{head}"] = losses.generator_loss(
                head_logits, self.config.loss.gan
            )
            total += weights[head] * terms[f"g_adversarial_{head}"]
        return total, terms


def create_train_state(
    config, generator, discriminator, g_tx, d_tx, mesh: jax.sharding.Mesh
) -> common.GANTrainState:
    """Initialises both networks and optimizers, replicated over `mesh`."""
    size = config.data.crop_size
    discriminator_inputs = (jnp.zeros((1, size, size, 3), jnp.float32),)
    return gan.create_train_state(
        config, generator, discriminator, g_tx, d_tx, mesh, discriminator_inputs
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> common.GANTrainState:
    """Trains PGGAN per `config` in `workdir`, resuming from its last checkpoint."""
    return gan.train_and_evaluate(config, workdir, recipe=sys.modules[__name__])
