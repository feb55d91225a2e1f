"""The phase steps of the adversarial recipes (GLCIC, PGGAN, Context Encoder / NPS content).

Every such recipe trains a completion network (the generator) against a
discriminator in up to three phases (`phases.py`):
  "completion"    the generator alone on the reconstruction loss;
  "discriminator" the discriminator alone, the generator frozen;
  "joint"         a discriminator update, then a generator update on
                  reconstruction_weight * reconstruction + adversarial terms.
A recipe says only how its images are judged: `build` makes the state and
a `GAN` of its networks, optimizers and loss functions, and `phase_steps`
gives the jittable step of each phase.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping

import flax.linen as nn
import jax
import optax

from inpaint_jax import losses, models
from inpaint_jax.models import layers
from inpaint_jax.trainers import loop, optimizers, phases
from inpaint_jax.trainers import state as train_state
from inpaint_jax.trainers.state import TrainState, apply_model

RECONSTRUCTION_LOSSES = {"mse": losses.masked_mse, "l1": losses.masked_l1}


@dataclasses.dataclass(frozen=True)
class GAN:
    """One adversarial recipe's parts.

    Attributes:
      generator, discriminator: the networks (`models.build`).
      g_tx, d_tx: their optimizers.
      reconstruction: (prediction, image, mask) -> the reconstruction loss.
      reconstruction_weight: its weight in the joint loss.
      discriminator_loss: (d_params, d_stats, real, fake, batch, rng) ->
        (loss, (new d batch stats, metrics)), for real images vs. completions.
      adversarial_loss: (d_params, d_stats, completion, batch) -> (weighted
        adversarial loss of the generator, metrics of the unweighted terms).
    """

    generator: nn.Module
    discriminator: nn.Module
    g_tx: optax.GradientTransformation
    d_tx: optax.GradientTransformation
    reconstruction: Callable
    reconstruction_weight: float
    discriminator_loss: Callable
    adversarial_loss: Callable


def reconstruction_loss(name: str) -> Callable:
    """The masked reconstruction loss `name` ("mse" or "l1") over the hole."""
    if name not in RECONSTRUCTION_LOSSES:
        raise ValueError(f"Unknown reconstruction loss {name!r}; choose one of "
                         f"{', '.join(RECONSTRUCTION_LOSSES)}.")
    return RECONSTRUCTION_LOSSES[name]


def complete(gan: GAN, state: TrainState, batch, train: bool):
    """Raw generator output and the generator's batch stats after the call."""
    return apply_model(gan.generator, state.g_params, state.batch_stats["g"], batch["image"],
                       batch["mask"], train=train)


def predict(gan: GAN, state: TrainState, batch):
    """Eval-mode generator output, for evaluation."""
    return complete(gan, state, batch, train=False)[0]


def completion_step(gan: GAN, state: TrainState, batch):
    """Phase "completion": the generator on the reconstruction loss alone."""

    def loss_fn(g_params):
        prediction, g_stats = complete(gan, state.replace(g_params=g_params), batch, train=True)
        return gan.reconstruction(prediction, batch["image"], batch["mask"]), g_stats

    (loss, g_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g_params)
    state = state.update_generator(gan.g_tx, grads, g_stats).replace(step=state.step + 1)
    return state, {"g_reconstruction": loss, "g_grad_norm": optax.tree.norm(grads)}


def _discriminator_update(gan: GAN, state: TrainState, batch, completion):
    """One discriminator update on real images vs. `completion` (no gradient to it)."""
    rng = jax.random.fold_in(state.rng, state.step)
    fake = jax.lax.stop_gradient(completion)

    def loss_fn(d_params):
        return gan.discriminator_loss(d_params, state.batch_stats["d"], batch["image"], fake,
                                      batch, rng)

    (loss, (d_stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.d_params)
    metrics = {"d_loss": loss, "d_grad_norm": optax.tree.norm(grads), **metrics}
    return state.update_discriminator(gan.d_tx, grads, d_stats), metrics


def discriminator_step(gan: GAN, state: TrainState, batch):
    """Phase "discriminator": the discriminator alone; the generator is frozen."""
    prediction, _ = complete(gan, state, batch, train=False)
    completion = layers.composite(batch["image"], prediction, batch["mask"])
    state, metrics = _discriminator_update(gan, state, batch, completion)
    return state.replace(step=state.step + 1), metrics


def joint_step(gan: GAN, state: TrainState, batch):
    """Phase "joint": a discriminator update, then a generator update.

    The generator runs forward once; its VJP carries the gradient of the
    joint loss (evaluated against the freshly updated discriminator) back to
    its parameters.
    """
    prediction, backprop, g_stats = jax.vjp(
        lambda g_params: complete(gan, state.replace(g_params=g_params), batch, train=True),
        state.g_params,
        has_aux=True,
    )
    completion = layers.composite(batch["image"], prediction, batch["mask"])
    state, metrics = _discriminator_update(gan, state, batch, completion)

    def joint_loss(prediction):
        completion = layers.composite(batch["image"], prediction, batch["mask"])
        adversarial, terms = gan.adversarial_loss(state.d_params, state.batch_stats["d"],
                                                  completion, batch)
        reconstruction = gan.reconstruction(prediction, batch["image"], batch["mask"])
        total = gan.reconstruction_weight * reconstruction + adversarial
        return total, {"g_reconstruction": reconstruction, **terms}

    (loss, terms), grad_prediction = jax.value_and_grad(joint_loss, has_aux=True)(prediction)
    (grads,) = backprop(grad_prediction)
    state = state.update_generator(gan.g_tx, grads, g_stats).replace(step=state.step + 1)
    metrics.update(terms, g_loss=loss, g_grad_norm=optax.tree.norm(grads))
    return state, metrics


def phase_steps(gan: GAN) -> Mapping[str, Callable]:
    """{phase: step(state, batch) -> (state, metrics)} for the three adversarial phases."""
    return {
        phases.COMPLETION: functools.partial(completion_step, gan),
        phases.DISCRIMINATOR: functools.partial(discriminator_step, gan),
        phases.JOINT: functools.partial(joint_step, gan),
    }


def build(config, mesh: jax.sharding.Mesh, schedule: phases.Schedule, *,
          discriminator_loss: Callable, adversarial_loss: Callable,
          reconstruction: Callable | None = None, local_size: int | None = None) -> loop.Training:
    """An adversarial recipe's `loop.Training`: its networks, optimizers, state and phase steps.

    The networks are `models.build(config.model)`, initialised on
    `models.example_inputs` at `config.data.crop_size` (`local_size`: GLCIC's
    local window); the optimizers come from `config.g_optimizer` and
    `config.d_optimizer`. The recipe's `discriminator_loss(config,
    discriminator, d_params, d_stats, real, fake, batch, rng)` and
    `adversarial_loss(config, discriminator, d_params, d_stats, completion,
    batch)` get `config` and the discriminator bound (see `GAN`);
    `reconstruction` defaults to the masked loss `config.loss.reconstruction`
    names, weighted by `config.loss.reconstruction_weight` in the joint loss.
    """
    networks = models.build(config.model)
    g_tx, d_tx = optimizers.create(config.g_optimizer), optimizers.create(config.d_optimizer)
    inputs = models.example_inputs(config.model, config.data.crop_size, local_size=local_size)
    recipe = GAN(
        generator=networks.generator,
        discriminator=networks.discriminator,
        g_tx=g_tx,
        d_tx=d_tx,
        reconstruction=reconstruction or reconstruction_loss(config.loss.reconstruction),
        reconstruction_weight=config.loss.reconstruction_weight,
        discriminator_loss=functools.partial(discriminator_loss, config, networks.discriminator),
        adversarial_loss=functools.partial(adversarial_loss, config, networks.discriminator),
    )
    return loop.Training(
        state=train_state.create(config, networks, inputs, g_tx, d_tx, mesh),
        steps=phase_steps(recipe),
        schedule=schedule,
        predict=functools.partial(predict, recipe),
    )
