"""GLCIC training (Iizuka et al., SIGGRAPH 2017, Algorithm 1).

Three phases, chosen on the host by step number, each one jitted step:
  1. "completion"    (step < T_C): completion net alone, reconstruction loss
     on the hole.
  2. "discriminator" (T_C <= step < T_C + T_D): the context discriminator
     alone; the completion net is frozen (eval mode, no update).
  3. "joint": each step first updates the discriminator on real images vs.
     completions, then the completion net on reconstruction + alpha * GAN loss
     against the updated discriminator.
The discriminators see composited completions (known pixels from the image,
hole pixels from the network); the local discriminator sees the window around
the hole, or a random window of a real image.
"""

from __future__ import annotations

import logging
import sys

import jax
import jax.numpy as jnp
import ml_collections

from inpaint_jax import losses
from inpaint_jax.models import glcic
from inpaint_jax.trainers import common, gan

PHASES = ("completion", "discriminator", "joint")


def phase_for_step(step: int, config: ml_collections.ConfigDict) -> str:
    """The training phase that 0-based step `step` belongs to."""
    if step < config.completion_steps:
        return "completion"
    if step < config.completion_steps + config.discriminator_steps:
        return "discriminator"
    return "joint"


def build_models(
    config: ml_collections.ConfigDict,
) -> tuple[glcic.CompletionNetwork, glcic.ContextDiscriminator]:
    """The completion network and the context discriminator of `config.model`.

    Both compute in `common.resolve_compute_dtype(config)`, with float32 parameters.
    """
    dtype = common.resolve_compute_dtype(config)
    generator = glcic.CompletionNetwork(
        fill_value=tuple(config.model.fill_value),
        width_multiplier=config.model.width_multiplier,
        dtype=dtype,
    )
    discriminator = glcic.ContextDiscriminator(
        width_multiplier=config.model.width_multiplier, dtype=dtype
    )
    return generator, discriminator


def crop_windows(images: jax.Array, boxes: jax.Array, size: int) -> jax.Array:
    """Cuts the square `size` window at each box's (top, left) from each image."""

    def crop(image, box):
        return jax.lax.dynamic_slice(image, (box[0], box[1], 0), (size, size, image.shape[-1]))

    return jax.vmap(crop)(images, boxes)


def random_windows(rng: jax.Array, batch: int, height: int, width: int, size: int) -> jax.Array:
    """Uniformly placed (top, left, size, size) windows for real images."""
    top_rng, left_rng = jax.random.split(rng)
    top = jax.random.randint(top_rng, (batch,), 0, height - size + 1)
    left = jax.random.randint(left_rng, (batch,), 0, width - size + 1)
    sizes = jnp.full((batch,), size)
    return jnp.stack([top, left, sizes, sizes], axis=-1)


class Steps(gan.GANSteps):
    """GLCIC's phase steps: one context discriminator on global + local views."""

    def judge(self, d_params, d_stats, images, boxes):
        """Discriminator logits (N,) for `images` with local windows at `boxes`."""
        local = crop_windows(images, boxes, self.config.mask.local_size)
        return gan.apply_model(self.discriminator, d_params, d_stats, local, images, train=True)

    def discriminator_loss(self, d_params, d_stats, real, fake, batch, rng):
        """BCE (or the configured GAN loss) of real images, at random windows, vs. completions
        at the windows around their holes; both go through one batch so BatchNorm sees both."""
        batch_size, height, width, _ = real.shape
        real_boxes = random_windows(rng, batch_size, height, width, self.config.mask.local_size)
        logits, d_stats = self.judge(
            d_params,
            d_stats,
            jnp.concatenate([real, fake]),
            jnp.concatenate([real_boxes, batch["local_box"]]),
        )
        real_logits, fake_logits = logits[:batch_size], logits[batch_size:]
        acc_real, acc_fake = losses.discriminator_accuracy(real_logits, fake_logits)
        loss = losses.discriminator_loss(real_logits, fake_logits, self.config.loss.gan)
        return loss, (d_stats, {"d_acc_real": acc_real, "d_acc_fake": acc_fake})

    def adversarial_loss(self, d_params, d_stats, completion, batch):
        """alpha * GAN loss of the completion judged at the window around its hole."""
        logits, _ = self.judge(d_params, d_stats, completion, batch["local_box"])
        adversarial = losses.generator_loss(logits, self.config.loss.gan)
        return self.config.loss.alpha * adversarial, {"g_adversarial": adversarial}


def create_train_state(
    config, generator, discriminator, g_tx, d_tx, mesh: jax.sharding.Mesh
) -> common.GANTrainState:
    """Initialises both networks and optimizers, replicated over `mesh`."""
    size, local = config.data.crop_size, config.mask.local_size
    discriminator_inputs = (
        jnp.zeros((1, local, local, 3), jnp.float32),
        jnp.zeros((1, size, size, 3), jnp.float32),
    )
    return gan.create_train_state(
        config, generator, discriminator, g_tx, d_tx, mesh, discriminator_inputs
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> common.GANTrainState:
    """Trains GLCIC per `config` in `workdir`, resuming from its last checkpoint."""
    if config.completion_steps + config.discriminator_steps > config.total_steps:
        logging.warning("total_steps ends before the joint phase starts.")
    return gan.train_and_evaluate(config, workdir, recipe=sys.modules[__name__])
