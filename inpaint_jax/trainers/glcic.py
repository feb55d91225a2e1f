"""GLCIC training (Iizuka et al., SIGGRAPH 2017, Algorithm 1).

Three phases, chosen on the host by step number, each one jitted step:
  1. "completion"    (step < T_C): completion net alone, reconstruction loss
     on the hole.
  2. "discriminator" (T_C <= step < T_C + T_D): the context discriminator
     alone; the completion net is frozen (eval mode, no update).
  3. "joint": each step first updates the discriminator on real images vs.
     completions, then the completion net on reconstruction + alpha * GAN loss
     against the updated discriminator (alpha: `loss.adversarial_weight`).
The discriminators see composited completions (known pixels from the image,
hole pixels from the network); the local discriminator sees the window around
the hole, or a random window of a real image.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import ml_collections

from inpaint_jax import losses, parallel
from inpaint_jax.data import datasets
from inpaint_jax.trainers import gan, loop, phases
from inpaint_jax.trainers import state as train_state


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


def judge(discriminator, local_size: int, d_params, d_stats, images, boxes):
    """Context-discriminator logits (N,) for `images` with local windows at `boxes`."""
    local = crop_windows(images, boxes, local_size)
    return train_state.apply_model(discriminator, d_params, d_stats, local, images, train=True)


def discriminator_loss(config, discriminator, d_params, d_stats, real, fake, batch, rng):
    """GAN loss of real images, at random windows, vs. completions at the windows around their
    holes; both go through one batch so BatchNorm sees both."""
    local_size = config.mask.local_size
    batch_size, height, width, _ = real.shape
    real_boxes = random_windows(rng, batch_size, height, width, local_size)
    logits, d_stats = judge(discriminator, local_size, d_params, d_stats,
                            jnp.concatenate([real, fake]),
                            jnp.concatenate([real_boxes, batch["local_box"]]))
    real_logits, fake_logits = logits[:batch_size], logits[batch_size:]
    acc_real, acc_fake = losses.discriminator_accuracy(real_logits, fake_logits)
    loss = losses.discriminator_loss(real_logits, fake_logits, config.loss.gan)
    return loss, (d_stats, {"d_acc_real": acc_real, "d_acc_fake": acc_fake})


def adversarial_loss(config, discriminator, d_params, d_stats, completion, batch):
    """alpha * GAN loss of the completion judged at the window around its hole."""
    logits, _ = judge(discriminator, config.mask.local_size, d_params, d_stats, completion,
                      batch["local_box"])
    adversarial = losses.generator_loss(logits, config.loss.gan)
    return config.loss.adversarial_weight * adversarial, {"g_adversarial": adversarial}


def schedule(config: ml_collections.ConfigDict) -> phases.Schedule:
    """T_C completion steps, T_D discriminator steps, then joint training to total_steps."""
    return phases.schedule(config.total_steps,
                           (phases.COMPLETION, config.completion_steps),
                           (phases.DISCRIMINATOR, config.discriminator_steps),
                           then=phases.JOINT)


def build(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> loop.Training:
    """The completion network and context discriminator, their initial state and phase steps."""
    return gan.build(
        config, mesh, schedule(config),
        discriminator_loss=discriminator_loss,
        adversarial_loss=adversarial_loss,
        local_size=config.mask.local_size,
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> train_state.TrainState:
    """Trains GLCIC per `config` in `workdir`, resuming from its last checkpoint."""
    workdir = loop.prepare_workdir(workdir)
    mesh = parallel.create_mesh()
    data = datasets.create(config, mesh)
    training = build(config, mesh)
    return loop.restore_and_run(config, workdir, mesh, data, training)
