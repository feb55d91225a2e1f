"""Phase steps shared by the GAN inpainting recipes.

Every recipe trains a completion network (the generator) against a
discriminator in up to three phases:
  "completion"    the generator alone on the reconstruction loss;
  "discriminator" the discriminator alone, the generator frozen;
  "joint"         a discriminator update, then a generator update on
                  reconstruction_weight * reconstruction + adversarial terms.
A recipe subclasses `GANSteps` and says only how its discriminator judges
images: `discriminator_loss` and `adversarial_loss`.
"""

from __future__ import annotations

import abc
import functools
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from inpaint_jax import losses, parallel
from inpaint_jax.models import layers
from inpaint_jax.trainers import common
from inpaint_jax.trainers.common import GANTrainState

RECONSTRUCTION_LOSSES = {"mse": losses.masked_mse, "l1": losses.masked_l1}


def apply_model(module: nn.Module, params, stats, *inputs, train: bool):
    """Applies `module`; returns (output, batch stats after the call).

    Modules without BatchNorm have empty `stats` and get them back unchanged.
    """
    variables = {"params": params, "batch_stats": stats}
    if not train:
        return module.apply(variables, *inputs, train=False), stats
    output, updates = module.apply(variables, *inputs, train=True, mutable=["batch_stats"])
    return output, updates.get("batch_stats", stats)


def create_train_state(
    config: ml_collections.ConfigDict,
    generator: nn.Module,
    discriminator: nn.Module,
    g_tx: optax.GradientTransformation,
    d_tx: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
    discriminator_inputs: tuple[jax.Array, ...],
) -> GANTrainState:
    """Initialises both networks and optimizers, replicated over `mesh`.

    The generator is initialised on one `config.data.crop_size` image and mask;
    the discriminator on `discriminator_inputs`.
    """
    size = config.data.crop_size
    image = jnp.zeros((1, size, size, 3), jnp.float32)
    mask = jnp.zeros((1, size, size, 1), jnp.float32)

    def init(rng):
        g_rng, d_rng, state_rng = jax.random.split(rng, 3)
        g_vars = generator.init(g_rng, image, mask, train=False)
        d_vars = discriminator.init(d_rng, *discriminator_inputs, train=False)
        return GANTrainState(
            step=jnp.zeros((), jnp.int32),
            g_params=g_vars["params"],
            d_params=d_vars["params"],
            g_opt_state=g_tx.init(g_vars["params"]),
            d_opt_state=d_tx.init(d_vars["params"]),
            batch_stats={"g": g_vars.get("batch_stats", {}), "d": d_vars.get("batch_stats", {})},
            rng=state_rng,
        )

    rng = jax.random.key(config.seed, impl=config.rng_impl)
    return jax.jit(init, out_shardings=parallel.replicated_sharding(mesh))(rng)


class GANSteps(abc.ABC):
    """The phase steps of one config; subclasses define how images are judged."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        generator: nn.Module,
        discriminator: nn.Module,
        g_tx: optax.GradientTransformation,
        d_tx: optax.GradientTransformation,
    ):
        self.config = config
        self.generator = generator
        self.discriminator = discriminator
        self.g_tx = g_tx
        self.d_tx = d_tx

    def reconstruction(self, prediction, image, mask):
        """The configured reconstruction loss (masked MSE or L1 over the hole)."""
        return RECONSTRUCTION_LOSSES[self.config.loss.reconstruction](prediction, image, mask)

    @abc.abstractmethod
    def discriminator_loss(self, d_params, d_stats, real, fake, batch, rng):
        """Loss of the discriminator on real images vs. completions `fake`.

        Returns (loss, (new d batch stats, metrics dict)).
        """

    @abc.abstractmethod
    def adversarial_loss(self, d_params, d_stats, completion, batch):
        """Weighted adversarial loss of the generator for `completion`.

        Returns (weighted total, metrics dict of the unweighted terms).
        """

    def complete(self, state: GANTrainState, batch, train: bool):
        """Raw generator output and the generator's batch stats after the call."""
        return apply_model(
            self.generator,
            state.g_params,
            state.batch_stats["g"],
            batch["image"],
            batch["mask"],
            train=train,
        )

    def predict(self, state: GANTrainState, batch):
        """Eval-mode generator output, for evaluation and inference."""
        return self.complete(state, batch, train=False)[0]

    def reconstruction_step(self, state: GANTrainState, batch):
        """Phase "completion": the generator on the reconstruction loss alone."""

        def loss_fn(g_params):
            prediction, g_stats = self.complete(state.replace(g_params=g_params), batch, train=True)
            return self.reconstruction(prediction, batch["image"], batch["mask"]), g_stats

        (loss, g_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g_params)
        state = state.update_generator(self.g_tx, grads, g_stats).replace(step=state.step + 1)
        return state, {"g_reconstruction": loss, "g_grad_norm": optax.tree.norm(grads)}

    def discriminator_update(self, state: GANTrainState, batch, completion):
        """One discriminator update on real images vs. `completion` (no gradient to it)."""
        rng = jax.random.fold_in(state.rng, state.step)
        fake = jax.lax.stop_gradient(completion)

        def loss_fn(d_params):
            return self.discriminator_loss(
                d_params, state.batch_stats["d"], batch["image"], fake, batch, rng
            )

        (loss, (d_stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.d_params
        )
        metrics = {"d_loss": loss, "d_grad_norm": optax.tree.norm(grads), **metrics}
        return state.update_discriminator(self.d_tx, grads, d_stats), metrics

    def discriminator_step(self, state: GANTrainState, batch):
        """Phase "discriminator": the discriminator alone; the generator is frozen."""
        prediction, _ = self.complete(state, batch, train=False)
        completion = layers.composite(batch["image"], prediction, batch["mask"])
        state, metrics = self.discriminator_update(state, batch, completion)
        return state.replace(step=state.step + 1), metrics

    def joint_step(self, state: GANTrainState, batch):
        """Phase "joint": a discriminator update, then a generator update.

        The generator runs forward once; its VJP carries the gradient of the
        joint loss (evaluated against the freshly updated discriminator) back
        to its parameters.
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
            adversarial, terms = self.adversarial_loss(
                state.d_params, state.batch_stats["d"], completion, batch
            )
            reconstruction = self.reconstruction(prediction, batch["image"], batch["mask"])
            weighted = self.config.loss.reconstruction_weight * reconstruction
            return weighted + adversarial, {"g_reconstruction": reconstruction, **terms}

        (loss, terms), grad_prediction = jax.value_and_grad(joint_loss, has_aux=True)(prediction)
        (grads,) = backprop(grad_prediction)
        state = state.update_generator(self.g_tx, grads, g_stats).replace(step=state.step + 1)
        metrics.update(terms, g_loss=loss, g_grad_norm=optax.tree.norm(grads))
        return state, metrics


def warmup_then_joint(step: int, config: ml_collections.ConfigDict) -> str:
    """Schedule of recipes without a discriminator-only phase: "completion" warm-up, then "joint"."""
    return "completion" if step < config.completion_steps else "joint"


def init_recipe(
    config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, recipe: types.ModuleType
) -> tuple[GANTrainState, GANSteps]:
    """A recipe's initial state (replicated on `mesh`) and its phase steps.

    A recipe is a trainer module defining `build_models(config) ->
    (generator, discriminator)`, `create_train_state(config, generator,
    discriminator, g_tx, d_tx, mesh)`, `Steps` (its `GANSteps` subclass) and
    `phase_for_step(step, config)`; the optimizers come from the config.
    """
    generator, discriminator = recipe.build_models(config)
    g_tx = common.create_optimizer(config.g_optimizer)
    d_tx = common.create_optimizer(config.d_optimizer)
    state = recipe.create_train_state(config, generator, discriminator, g_tx, d_tx, mesh)
    return state, recipe.Steps(config, generator, discriminator, g_tx, d_tx)


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, recipe: types.ModuleType
) -> GANTrainState:
    """Trains `recipe` (see `init_recipe`) per `config` in `workdir`, resuming if it can."""
    workdir = common.prepare_workdir(workdir)
    mesh = parallel.create_mesh()
    data = common.create_datasets(config, mesh)
    state, steps = init_recipe(config, mesh, recipe)
    return common.run(
        config,
        workdir,
        mesh,
        data,
        state,
        phase_for_step=functools.partial(recipe.phase_for_step, config=config),
        step_fns={
            "completion": steps.reconstruction_step,
            "discriminator": steps.discriminator_step,
            "joint": steps.joint_step,
        },
        predict=steps.predict,
    )
