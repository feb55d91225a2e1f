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

import functools
import logging

import jax
import jax.numpy as jnp
import ml_collections
import optax

from inpaint_jax import losses, parallel
from inpaint_jax.models import glcic, layers
from inpaint_jax.trainers import common

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
    """The completion network and the context discriminator of `config.model`."""
    generator = glcic.CompletionNetwork(
        fill_value=tuple(config.model.fill_value), width_multiplier=config.model.width_multiplier
    )
    discriminator = glcic.ContextDiscriminator(width_multiplier=config.model.width_multiplier)
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


class Steps:
    """The three jitted phase steps for one config."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        generator,
        discriminator,
        g_tx: optax.GradientTransformation,
        d_tx: optax.GradientTransformation,
    ):
        self.config = config
        self.generator = generator
        self.discriminator = discriminator
        self.g_tx = g_tx
        self.d_tx = d_tx
        self.reconstruction = {"mse": losses.masked_mse, "l1": losses.masked_l1}[
            config.loss.reconstruction
        ]

    def complete(self, state, batch, train: bool):
        """Raw completion-net output (and its new batch stats when training)."""
        variables = {"params": state.g_params, "batch_stats": state.batch_stats["g"]}
        if not train:
            return self.generator.apply(variables, batch["image"], batch["mask"], train=False), None
        prediction, updates = self.generator.apply(
            variables, batch["image"], batch["mask"], train=True, mutable=["batch_stats"]
        )
        return prediction, updates["batch_stats"]

    def judge(self, d_params, d_stats, images, boxes):
        """Discriminator logits (N,) for `images` with local windows at `boxes`."""
        local = crop_windows(images, boxes, self.config.mask.local_size)
        logits, updates = self.discriminator.apply(
            {"params": d_params, "batch_stats": d_stats},
            local,
            images,
            train=True,
            mutable=["batch_stats"],
        )
        return logits, updates["batch_stats"]

    def reconstruction_step(self, state, batch):
        """Phase 1: completion net on the reconstruction loss alone."""

        def loss_fn(g_params):
            prediction, g_stats = self.complete(state.replace(g_params=g_params), batch, train=True)
            return self.reconstruction(prediction, batch["image"], batch["mask"]), g_stats

        (loss, g_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g_params)
        state = state.update_generator(self.g_tx, grads, g_stats).replace(step=state.step + 1)
        return state, {"g_reconstruction": loss, "g_grad_norm": optax.tree.norm(grads)}

    def discriminator_update(self, state, batch, completion):
        """One discriminator step: real images vs. `completion` (no gradient to it)."""
        images = batch["image"]
        batch_size, height, width, _ = images.shape
        rng = jax.random.fold_in(state.rng, state.step)
        real_boxes = random_windows(rng, batch_size, height, width, self.config.mask.local_size)
        both = jnp.concatenate([images, jax.lax.stop_gradient(completion)])
        boxes = jnp.concatenate([real_boxes, batch["local_box"]])

        def loss_fn(d_params):
            logits, d_stats = self.judge(d_params, state.batch_stats["d"], both, boxes)
            real, fake = logits[:batch_size], logits[batch_size:]
            return losses.discriminator_loss(real, fake, self.config.loss.gan), (
                d_stats,
                real,
                fake,
            )

        (loss, (d_stats, real, fake)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.d_params
        )
        acc_real, acc_fake = losses.discriminator_accuracy(real, fake)
        return state.update_discriminator(self.d_tx, grads, d_stats), {
            "d_loss": loss,
            "d_grad_norm": optax.tree.norm(grads),
            "d_acc_real": acc_real,
            "d_acc_fake": acc_fake,
        }

    def discriminator_step(self, state, batch):
        """Phase 2: discriminators alone; the completion net is frozen."""
        prediction, _ = self.complete(state, batch, train=False)
        completion = layers.composite(batch["image"], prediction, batch["mask"])
        state, metrics = self.discriminator_update(state, batch, completion)
        return state.replace(step=state.step + 1), metrics

    def joint_step(self, state, batch):
        """Phase 3: a discriminator update, then a completion-net update.

        The completion net runs forward once; its VJP carries the gradient of the
        joint loss (evaluated against the freshly updated discriminator) back to
        its parameters.
        """
        prediction, backprop, g_stats = jax.vjp(
            lambda g_params: self.complete(state.replace(g_params=g_params), batch, train=True),
            state.g_params,
            has_aux=True,
        )
        completion = layers.composite(batch["image"], prediction, batch["mask"])
        state, metrics = self.discriminator_update(state, batch, completion)

        def joint_loss(prediction):
            completion = layers.composite(batch["image"], prediction, batch["mask"])
            logits, _ = self.judge(
                state.d_params, state.batch_stats["d"], completion, batch["local_box"]
            )
            reconstruction = self.reconstruction(prediction, batch["image"], batch["mask"])
            adversarial = losses.generator_loss(logits, self.config.loss.gan)
            return reconstruction + self.config.loss.alpha * adversarial, (
                reconstruction,
                adversarial,
            )

        (loss, (reconstruction, adversarial)), grad_prediction = jax.value_and_grad(
            joint_loss, has_aux=True
        )(prediction)
        (grads,) = backprop(grad_prediction)
        state = state.update_generator(self.g_tx, grads, g_stats).replace(step=state.step + 1)
        metrics.update(
            g_loss=loss,
            g_reconstruction=reconstruction,
            g_adversarial=adversarial,
            g_grad_norm=optax.tree.norm(grads),
        )
        return state, metrics

    def predict(self, state, batch):
        """Eval-mode completion-net output, for evaluation and inference."""
        return self.complete(state, batch, train=False)[0]


def create_train_state(
    config, generator, discriminator, g_tx, d_tx, mesh: jax.sharding.Mesh
) -> common.GANTrainState:
    """Initialises both networks and optimizers, replicated over `mesh`."""
    size, local = config.data.crop_size, config.mask.local_size
    image = jnp.zeros((1, size, size, 3), jnp.float32)
    mask = jnp.zeros((1, size, size, 1), jnp.float32)
    patch = jnp.zeros((1, local, local, 3), jnp.float32)

    def init(rng):
        g_rng, d_rng, state_rng = jax.random.split(rng, 3)
        g_vars = generator.init(g_rng, image, mask, train=False)
        d_vars = discriminator.init(d_rng, patch, image, train=False)
        return common.GANTrainState(
            step=jnp.zeros((), jnp.int32),
            g_params=g_vars["params"],
            d_params=d_vars["params"],
            g_opt_state=g_tx.init(g_vars["params"]),
            d_opt_state=d_tx.init(d_vars["params"]),
            batch_stats={"g": g_vars["batch_stats"], "d": d_vars["batch_stats"]},
            rng=state_rng,
        )

    rng = jax.random.key(config.seed, impl=config.rng_impl)
    return jax.jit(init, out_shardings=parallel.replicated_sharding(mesh))(rng)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> common.GANTrainState:
    """Trains GLCIC per `config` in `workdir`, resuming from its last checkpoint."""
    if config.completion_steps + config.discriminator_steps > config.total_steps:
        logging.warning("total_steps ends before the joint phase starts.")
    workdir = common.prepare_workdir(workdir)
    mesh = parallel.create_mesh()
    data = common.create_datasets(config, mesh)

    generator, discriminator = build_models(config)
    g_tx = common.create_optimizer(config.g_optimizer)
    d_tx = common.create_optimizer(config.d_optimizer)
    state = create_train_state(config, generator, discriminator, g_tx, d_tx, mesh)
    steps = Steps(config, generator, discriminator, g_tx, d_tx)
    return common.run(
        config,
        workdir,
        mesh,
        data,
        state,
        phase_for_step=functools.partial(phase_for_step, config=config),
        step_fns={
            "completion": steps.reconstruction_step,
            "discriminator": steps.discriminator_step,
            "joint": steps.joint_step,
        },
        predict=steps.predict,
    )
