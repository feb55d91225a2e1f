"""What recipes trained without a discriminator share (DFNet, two-stage refinement): one phase step."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import jax
import optax

from inpaint_jax import losses, models
from inpaint_jax.models import vgg
from inpaint_jax.trainers import loop, optimizers, phases
from inpaint_jax.trainers import state as train_state
from inpaint_jax.trainers.state import TrainState
from inpaint_jax.weights import vgg as vgg_weights

FEATURE_VGG_DEPTH = 16  # perceptual and style features come from VGG-16 (DFNet's released loss).


def train_step(loss_fn: Callable, g_tx: optax.GradientTransformation,
               learning_rate: float | optax.Schedule, state: TrainState, batch):
    """One optimizer update of the generator; returns (state, metrics).

    `loss_fn(g_params, g_stats, batch)` returns (loss, (new batch stats,
    {term: value})); the metrics are each term as `g_<term>`, `g_loss`,
    `g_grad_norm` and the step's `g_learning_rate`.
    """
    (loss, (g_stats, terms)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.g_params, state.batch_stats["g"], batch
    )
    rate = learning_rate(state.step) if callable(learning_rate) else learning_rate
    metrics = {f"g_{name}": value for name, value in terms.items()}
    metrics.update(g_loss=loss, g_grad_norm=optax.tree.norm(grads), g_learning_rate=rate)
    state = state.update_generator(g_tx, grads, g_stats)
    return state.replace(step=state.step + 1), metrics


def phase_steps(loss_fn: Callable, g_tx: optax.GradientTransformation,
                learning_rate: float | optax.Schedule) -> Mapping[str, Callable]:
    """{"train": step(state, batch) -> (state, metrics)} (see `train_step`)."""
    return {phases.TRAIN: functools.partial(train_step, loss_fn, g_tx, learning_rate)}


def loss_features(config) -> vgg.Features | None:
    """The VGG-16 taps `config.loss.vgg_taps` (weights `config.vgg_path`) for the feature terms.

    None when the loss weights neither the perceptual nor the style term (no
    weights needed); otherwise a missing `vgg_path` raises
    `weights.vgg.MissingWeightsError`, which says which file to get.
    """
    if not losses.uses_features(config.loss):
        return None
    return vgg_weights.load_features(config.vgg_path, FEATURE_VGG_DEPTH, config.loss.vgg_taps)


def build(config, mesh: jax.sharding.Mesh, loss_fn: Callable, predict: Callable) -> loop.Training:
    """A non-adversarial recipe's `loop.Training`: one phase, "train", for `config.total_steps`.

    The network is `models.build(config.model).generator`, initialised on
    `models.example_inputs` at `config.data.crop_size`; the optimizer comes
    from `config.g_optimizer`. The recipe's `loss_fn(generator, config,
    features, g_params, g_stats, batch)` (see `train_step`) and
    `predict(generator, state, batch)` get the generator (and the config and
    the VGG features of `loss_features`) bound. Missing VGG weights fail here,
    before any data is read.
    """
    features = loss_features(config)
    networks = models.build(config.model)
    g_tx = optimizers.create(config.g_optimizer)
    inputs = models.example_inputs(config.model, config.data.crop_size)
    bound_loss = functools.partial(loss_fn, networks.generator, config, features)
    return loop.Training(
        state=train_state.create(config, networks, inputs, g_tx, None, mesh),
        steps=phase_steps(bound_loss, g_tx, optimizers.learning_rate(config.g_optimizer)),
        schedule=phases.schedule(config.total_steps, then=phases.TRAIN),
        predict=functools.partial(predict, networks.generator),
    )
