"""The one phase step of recipes trained without a discriminator (DFNet, two-stage refinement)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import jax
import optax

from inpaint_jax import models
from inpaint_jax.trainers import loop, optimizers, phases
from inpaint_jax.trainers import state as train_state
from inpaint_jax.trainers.state import TrainState


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


def build(config, mesh: jax.sharding.Mesh, networks: models.Networks, loss_fn: Callable,
          predict: Callable) -> loop.Training:
    """A non-adversarial recipe's `loop.Training`: one phase, "train", for `config.total_steps`.

    `loss_fn(g_params, g_stats, batch)` as for `train_step`; `predict(state,
    batch)` the eval-mode prediction. The optimizer comes from
    `config.g_optimizer`, the initial state from `models.example_inputs` at
    `config.data.crop_size`.
    """
    g_tx = optimizers.create(config.g_optimizer)
    inputs = models.example_inputs(config.model, config.data.crop_size)
    return loop.Training(
        state=train_state.create(config, networks, inputs, g_tx, None, mesh),
        steps=phase_steps(loss_fn, g_tx, optimizers.learning_rate(config.g_optimizer)),
        schedule=phases.schedule(config.total_steps, then=phases.TRAIN),
        predict=predict,
    )
