"""DFNet training (Hong et al., "Deep Fusion Network for Image Completion", ACM MM 2019).

Non-adversarial: one jitted step updates the network with Adam on a loss over
its multi-scale outputs (`dfnet.DFNet.multiscale`), as in the authors'
released `loss.py` and `config.yaml` (github.com/hughplay/DFNet):

  mean over `loss.reconstruction_levels` (released: all six fusion levels) of
      l1_hole_weight * L_hole + l1_valid_weight * L_valid
  + mean over `loss.texture_levels` (released: levels 0, 1, 2) of
      perceptual_weight * perceptual + style_weight * style + tv_weight * TV

with released weights 6 (on the whole-image L1, i.e. 6 on L_hole and 6 on
L_valid), 0.1, 240 and 0.1. Each level's output is compared with the image
down-scaled to its size (`dfnet.downscale`). L_hole and L_valid are Liu et
al.'s (`losses.hole_and_valid_l1`); perceptual and style losses compare VGG-16
pool1, pool2 and pool3 features (L1 between features and between Gram
matrices normalised by C * H * W). Deviations from the released code, on
purpose: VGG sees its inputs with the input normalisation of its weights
(the released code feeds it raw [0, 1] images), and TV is taken over the
output's pixel pairs that touch the hole (the released code applies it to the
target, where it has no gradient). The released recipe decays the learning
rate 10x every 5 epochs of 37,500 steps (`lr_decay_every_steps`).

The perceptual and style terms need VGG-16 weights (`config.vgg_path`; see
`models.vgg.require_weights`). With both weights 0 no VGG is loaded (the
`:runlocal` variant trains offline on L1 + TV this way).

The training state is the project's `GANTrainState` with an empty
discriminator (`d_params` {} and `d_opt_state` optax.EmptyState()), so the
shared loop `common.run` (checkpoints, resume, evaluation, logging) runs it
unchanged. The loss helpers (`FeatureExtractor`, `reconstruction_terms`,
`texture_terms`, `weighted_total`) serve any recipe with this kind of loss.
"""

from __future__ import annotations

import dataclasses
import sys

import jax
import jax.numpy as jnp
import ml_collections
import optax

from inpaint_jax import losses, parallel
from inpaint_jax.models import dfnet, vgg
from inpaint_jax.trainers import common
from inpaint_jax.trainers.common import GANTrainState

VGG_DEPTH = 16  # perceptual and style features come from VGG-16 (released code).
# config.loss field holding the weight of each loss term.
TERM_WEIGHTS = {
    "l1_hole": "l1_hole_weight",
    "l1_valid": "l1_valid_weight",
    "perceptual": "perceptual_weight",
    "style": "style_weight",
    "tv": "tv_weight",
}


@dataclasses.dataclass(frozen=True)
class FeatureExtractor:
    """A VGG with its weights; called on (N, H, W, 3) images it returns {tap: features}."""

    module: vgg.VGG
    variables: dict
    taps: tuple[str, ...]

    def __call__(self, images) -> dict[str, jax.Array]:
        """The `taps` of `images` (RGB in [0, 1])."""
        return self.module.apply(self.variables, images, self.taps)


def load_feature_extractor(config: ml_collections.ConfigDict) -> FeatureExtractor | None:
    """VGG-16 from `config.vgg_path` with the taps `config.loss.vgg_taps`.

    Returns None when neither the perceptual nor the style weight is positive
    (no weights needed). Otherwise a missing `vgg_path` raises
    `vgg.MissingWeightsError`, which says which file to get and to pass it as
    --config.vgg_path.
    """
    if config.loss.perceptual_weight <= 0 and config.loss.style_weight <= 0:
        return None
    module, variables = vgg.load_vgg(config.vgg_path, VGG_DEPTH, config_flag="--config.vgg_path")
    return FeatureExtractor(module, variables, tuple(config.loss.vgg_taps))


def reconstruction_terms(output, target, mask) -> dict[str, jax.Array]:
    """{"l1_hole", "l1_valid"} of one output against its target (`losses.hole_and_valid_l1`)."""
    hole, valid = losses.hole_and_valid_l1(output, target, mask)
    return {"l1_hole": hole, "l1_valid": valid}


def texture_terms(output, target, mask, features: FeatureExtractor | None) -> dict[str, jax.Array]:
    """{"tv"} of one output, plus {"perceptual", "style"} against `target` when `features` is given.

    TV counts the neighbour pairs that touch the hole (`losses.total_variation`
    with the mask). The target's features carry no gradient.
    """
    terms = {"tv": losses.total_variation(output, mask)}
    if features is not None:
        both = features(jnp.concatenate([output, jax.lax.stop_gradient(target)]))
        ours = {tap: value[: output.shape[0]] for tap, value in both.items()}
        theirs = {tap: value[output.shape[0] :] for tap, value in both.items()}
        terms["perceptual"] = losses.perceptual_loss(ours, theirs, features.taps)
        terms["style"] = losses.style_loss(ours, theirs, features.taps)
    return terms


def weighted_total(terms: dict[str, jax.Array], loss_config: ml_collections.ConfigDict):
    """Sum of each term times its weight in `loss_config` (see TERM_WEIGHTS)."""
    return sum(loss_config[TERM_WEIGHTS[name]] * value for name, value in terms.items())


def _mean_over_levels(per_level: list[dict[str, jax.Array]]) -> dict[str, jax.Array]:
    if not per_level:
        return {}
    return {name: sum(terms[name] for terms in per_level) / len(per_level) for name in per_level[0]}


def multiscale_terms(
    outputs: dfnet.DFNetOutputs,
    image,
    mask,
    loss_config: ml_collections.ConfigDict,
    features: FeatureExtractor | None,
) -> dict[str, jax.Array]:
    """Every loss term of DFNet's outputs, each averaged over the levels it applies to."""
    scaled = {
        level: (output, dfnet.downscale(image, level), dfnet.downscale(mask, level))
        for level, output in zip(outputs.levels, outputs.images)
    }
    reconstruction = [
        reconstruction_terms(*scaled[level]) for level in loss_config.reconstruction_levels
    ]
    texture = [texture_terms(*scaled[level], features) for level in loss_config.texture_levels]
    return {**_mean_over_levels(reconstruction), **_mean_over_levels(texture)}


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises DFNetConfigError unless the loss levels are levels with a fusion block."""
    fusion_levels = set(config.model.fusion_levels)
    for field in ("reconstruction_levels", "texture_levels"):
        levels = tuple(config.loss[field])
        if not set(levels) <= fusion_levels:
            raise dfnet.DFNetConfigError(
                f"config.loss.{field}={levels} names levels without an output; the network has "
                f"fusion blocks at config.model.fusion_levels={tuple(config.model.fusion_levels)}."
            )


def learning_rate_factor(step, config: ml_collections.ConfigDict):
    """lr_decay_factor ** (step // lr_decay_every_steps); 1 when lr_decay_every_steps is 0."""
    if not config.lr_decay_every_steps:
        return 1.0
    return jnp.power(config.lr_decay_factor, step // config.lr_decay_every_steps)


def _scaled_updates(tx: optax.GradientTransformation, factor) -> optax.GradientTransformation:
    """`tx` with its updates multiplied by `factor` and the same state (Adam: lr * factor)."""

    def update(grads, opt_state, params=None):
        updates, opt_state = tx.update(grads, opt_state, params)
        return jax.tree.map(lambda u: u * factor, updates), opt_state

    return optax.GradientTransformation(tx.init, update)


def build_models(config: ml_collections.ConfigDict) -> tuple[dfnet.DFNet, None]:
    """The DFNet of `config.model`, and no discriminator.

    It computes in `common.resolve_compute_dtype(config)`, with float32 parameters.
    """
    model = config.model
    generator = dfnet.DFNet(
        encoder_kernels=tuple(model.encoder_kernels),
        fusion_levels=tuple(model.fusion_levels),
        alpha_channels=model.alpha_channels,
        fill_value=tuple(model.fill_value),
        width_multiplier=model.width_multiplier,
        dtype=common.resolve_compute_dtype(config),
    )
    return generator, None


def example_inputs(config: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array]:
    """A zero image and mask of one training crop, to initialise the network."""
    size = config.data.crop_size
    return jnp.zeros((1, size, size, 3), jnp.float32), jnp.zeros((1, size, size, 1), jnp.float32)


create_train_state = common.generator_only_recipe_state(example_inputs)


class Steps:
    """DFNet's training step and prediction for one config."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        generator: dfnet.DFNet,
        g_tx: optax.GradientTransformation,
        features: FeatureExtractor | None,
    ):
        self.config = config
        self.generator = generator
        self.g_tx = g_tx
        self.features = features

    def loss(self, g_params, g_stats, batch):
        """Weighted multi-scale loss; returns (loss, (new batch stats, {term: value}))."""
        outputs, updates = self.generator.apply(
            {"params": g_params, "batch_stats": g_stats},
            batch["image"],
            batch["mask"],
            train=True,
            method="multiscale",
            mutable=["batch_stats"],
        )
        terms = multiscale_terms(
            outputs, batch["image"], batch["mask"], self.config.loss, self.features
        )
        return weighted_total(terms, self.config.loss), (updates["batch_stats"], terms)

    def train_step(self, state: GANTrainState, batch):
        """One Adam update of the network on `batch`; returns (state, metrics)."""
        (loss, (g_stats, terms)), grads = jax.value_and_grad(self.loss, has_aux=True)(
            state.g_params, state.batch_stats["g"], batch
        )
        factor = learning_rate_factor(state.step, self.config)
        state = state.update_generator(_scaled_updates(self.g_tx, factor), grads, g_stats)
        metrics = {f"g_{name}": value for name, value in terms.items()}
        metrics.update(g_loss=loss, g_grad_norm=optax.tree.norm(grads), g_lr_factor=factor)
        return state.replace(step=state.step + 1), metrics

    def predict(self, state: GANTrainState, batch):
        """Eval-mode full-resolution prediction, for evaluation and inference."""
        variables = {"params": state.g_params, "batch_stats": state.batch_stats["g"]}
        return self.generator.apply(variables, batch["image"], batch["mask"], train=False)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> GANTrainState:
    """Trains DFNet per `config` in `workdir`, resuming from its last checkpoint."""
    check_config(config)
    features = load_feature_extractor(config)  # fails before any work without VGG weights.
    workdir = common.prepare_workdir(workdir)
    mesh = parallel.create_mesh()
    data = common.create_datasets(config, mesh)
    return common.train_generator_only(config, workdir, mesh, data, sys.modules[__name__], features)
