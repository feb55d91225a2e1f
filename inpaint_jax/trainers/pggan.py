"""PGGAN training (Demir & Unal, "Patch-Based Image Inpainting with GANs", 2018).

The generator is trained on the joint loss
  reconstruction_weight * L1 + global_adversarial_weight * G-GAN loss
  + patch_adversarial_weight * PatchGAN loss
(paper: 0.995, 0.0025, 0.0025) against one discriminator whose shared trunk
feeds a global head (one logit per image) and a PatchGAN head (one logit per
local window). Each joint step updates the discriminator first, then the
generator (`gan.joint_step`). An optional reconstruction-only warm-up
(`completion_steps`, 0 in the paper's config) comes first.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import ml_collections

from inpaint_jax import losses, parallel
from inpaint_jax.data import datasets
from inpaint_jax.trainers import gan, loop, phases
from inpaint_jax.trainers import state as train_state

HEADS = ("global", "patch")


def head_logits(discriminator, d_params, d_stats, images):
    """{head: logits} for the heads the discriminator has, and its new batch stats."""
    logits, d_stats = train_state.apply_model(discriminator, d_params, d_stats, images,
                                              train=True)
    by_head = {head: getattr(logits, f"{head}_logits") for head in HEADS}
    return {head: value for head, value in by_head.items() if value is not None}, d_stats


def discriminator_loss(config, discriminator, d_params, d_stats, real, fake, batch, rng):
    """Sum over heads of the GAN loss of real images vs. completions (one batch)."""
    batch_size = real.shape[0]
    logits, d_stats = head_logits(discriminator, d_params, d_stats, jnp.concatenate([real, fake]))
    total, metrics = 0.0, {}
    for head, logits_of_head in logits.items():
        real_logits, fake_logits = logits_of_head[:batch_size], logits_of_head[batch_size:]
        loss = losses.discriminator_loss(real_logits, fake_logits, config.loss.gan)
        acc_real, acc_fake = losses.discriminator_accuracy(real_logits, fake_logits)
        metrics.update({f"d_loss_{head}": loss, f"d_acc_real_{head}": acc_real,
                        f"d_acc_fake_{head}": acc_fake})
        total += loss
    return total, (d_stats, metrics)


def adversarial_loss(config, discriminator, d_params, d_stats, completion, batch):
    """global_adversarial_weight * G-GAN loss + patch_adversarial_weight * PatchGAN loss."""
    logits, _ = head_logits(discriminator, d_params, d_stats, completion)
    weights = {"global": config.loss.global_adversarial_weight,
               "patch": config.loss.patch_adversarial_weight}
    total, terms = 0.0, {}
    for head, logits_of_head in logits.items():
        terms[f"g_adversarial_{head}"] = losses.generator_loss(logits_of_head, config.loss.gan)
        total += weights[head] * terms[f"g_adversarial_{head}"]
    return total, terms


def schedule(config: ml_collections.ConfigDict) -> phases.Schedule:
    """An optional reconstruction warm-up (`completion_steps`), then joint training."""
    return phases.schedule(config.total_steps, (phases.COMPLETION, config.completion_steps),
                           then=phases.JOINT)


def build(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> loop.Training:
    """The generator and the two-headed discriminator, their initial state and phase steps."""
    return gan.build(
        config, mesh, schedule(config),
        discriminator_loss=discriminator_loss,
        adversarial_loss=adversarial_loss,
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> train_state.TrainState:
    """Trains PGGAN per `config` in `workdir`, resuming from its last checkpoint."""
    workdir = loop.prepare_workdir(workdir)
    mesh = parallel.create_mesh()
    data = datasets.create(config, mesh)
    training = build(config, mesh)
    return loop.restore_and_run(config, workdir, mesh, data, training)
