"""The training state of every recipe: one explicit pytree, and how it is made and applied."""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from inpaint_jax import models, parallel

PyTree = Any


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue exactly.

    Recipes without a discriminator have `d_params` {} and `d_opt_state`
    optax.EmptyState(), so every recipe shares one loop and one checkpoint layout.
    """

    step: jax.Array
    g_params: PyTree
    d_params: PyTree
    g_opt_state: PyTree
    d_opt_state: PyTree
    batch_stats: PyTree  # {"g": ..., "d": ...} BatchNorm running statistics.
    rng: jax.Array

    def update_generator(self, tx: optax.GradientTransformation, grads, g_stats) -> TrainState:
        """Applies one optimizer update to the generator and takes its new batch stats."""
        updates, g_opt_state = tx.update(grads, self.g_opt_state, self.g_params)
        return self.replace(
            g_params=optax.apply_updates(self.g_params, updates),
            g_opt_state=g_opt_state,
            batch_stats={**self.batch_stats, "g": g_stats},
        )

    def update_discriminator(self, tx: optax.GradientTransformation, grads, d_stats) -> TrainState:
        """Applies one optimizer update to the discriminator and takes its new batch stats."""
        updates, d_opt_state = tx.update(grads, self.d_opt_state, self.d_params)
        return self.replace(
            d_params=optax.apply_updates(self.d_params, updates),
            d_opt_state=d_opt_state,
            batch_stats={**self.batch_stats, "d": d_stats},
        )


def create(
    config: ml_collections.ConfigDict,
    networks: models.Networks,
    inputs: models.ExampleInputs,
    g_tx: optax.GradientTransformation,
    d_tx: optax.GradientTransformation | None,
    mesh: jax.sharding.Mesh,
) -> TrainState:
    """The initial state (seed `config.seed`), replicated over `mesh`.

    Each network is initialised on its `inputs`; without a discriminator
    (`networks.discriminator` None) its part of the state is empty.
    """

    if networks.discriminator is not None and inputs.discriminator is None:
        raise ValueError("the discriminator has no example inputs; for glcic pass "
                         "models.example_inputs(..., local_size=config.mask.local_size).")

    def init(rng):
        g_rng, d_rng, state_rng = jax.random.split(rng, 3)
        g_vars = networks.generator.init(g_rng, *inputs.generator, train=False)
        if networks.discriminator is None:
            d_vars, d_opt_state = {"params": {}}, optax.EmptyState()
        else:
            d_vars = networks.discriminator.init(d_rng, *inputs.discriminator, train=False)
            d_opt_state = d_tx.init(d_vars["params"])
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            g_params=g_vars["params"],
            d_params=d_vars["params"],
            g_opt_state=g_tx.init(g_vars["params"]),
            d_opt_state=d_opt_state,
            batch_stats={"g": g_vars.get("batch_stats", {}), "d": d_vars.get("batch_stats", {})},
            rng=state_rng,
        )

    rng = jax.random.key(config.seed, impl=config.rng_impl)
    return jax.jit(init, out_shardings=parallel.replicated_sharding(mesh))(rng)


def generator_variables(state: TrainState) -> dict[str, PyTree]:
    """The generator's variables {"params", "batch_stats"}: what a generator checkpoint holds."""
    return {"params": state.g_params, "batch_stats": state.batch_stats["g"]}


def apply_model(module: nn.Module, params, stats, *inputs, train: bool, method=None):
    """Applies `module` (its `method`, default `__call__`); returns (output, batch stats after).

    Modules without BatchNorm have empty `stats` and get them back unchanged.
    """
    variables = {"params": params, "batch_stats": stats}
    if not train:
        return module.apply(variables, *inputs, train=False, method=method), stats
    output, updates = module.apply(variables, *inputs, train=True, method=method,
                                   mutable=["batch_stats"])
    return output, updates.get("batch_stats", stats)
