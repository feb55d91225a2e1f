"""Optimizers from a config's optimizer section (configs/common.py: adadelta, adam)."""

from __future__ import annotations

import ml_collections
import optax

OPTIMIZERS = ("adadelta", "adam")


def learning_rate(config: ml_collections.ConfigDict) -> float | optax.Schedule:
    """The section's learning rate: a number, or a schedule against the step count.

    `learning_rate`, multiplied by `decay_factor` every `decay_every_steps`
    steps (a staircase). With `decay_every_steps` 0 it is the plain number,
    so the optimizer state holds no step count.
    """
    if config.decay_every_steps < 0:
        raise ValueError(f"decay_every_steps must be >= 0 (0 = a constant learning rate), got "
                         f"{config.decay_every_steps}.")
    if not config.decay_every_steps:
        return config.learning_rate
    return optax.exponential_decay(config.learning_rate, config.decay_every_steps,
                                   config.decay_factor, staircase=True)


def create(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """The optax optimizer the section names, with its `learning_rate` schedule."""
    rate = learning_rate(config)
    if config.name == "adadelta":
        return optax.adadelta(rate, rho=config.rho, eps=config.eps)
    if config.name == "adam":
        return optax.adam(rate, b1=config.b1, b2=config.b2, eps=config.eps)
    raise ValueError(
        f"Unknown optimizer {config.name!r}; choose one of {', '.join(map(repr, OPTIMIZERS))}."
    )
