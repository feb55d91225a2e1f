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
matrices normalised by C * H * W); `losses.completion_terms` computes them.
Deviations from the released code, on purpose: VGG sees its inputs with the
input normalisation of its weights (the released code feeds it raw [0, 1]
images), and TV is taken over the output's pixel pairs that touch the hole
(the released code applies it to the target, where it has no gradient). The
released recipe decays the learning rate 10x every 5 epochs of 37,500 steps
(`g_optimizer.decay_every_steps`).

The perceptual and style terms need VGG-16 weights (`config.vgg_path`; see
`weights.vgg.require_weights`). With both weights 0 no VGG is loaded (the
`:runlocal` variant trains offline on L1 + TV this way).
"""

from __future__ import annotations

import jax
import ml_collections

from inpaint_jax import losses, parallel
from inpaint_jax.data import datasets
from inpaint_jax.models import dfnet, vgg
from inpaint_jax.trainers import loop, supervised
from inpaint_jax.trainers import state as train_state



def _mean_over_levels(per_level: list[dict[str, jax.Array]]) -> dict[str, jax.Array]:
    if not per_level:
        return {}
    return {name: sum(terms[name] for terms in per_level) / len(per_level) for name in per_level[0]}


def multiscale_terms(outputs: dfnet.DFNetOutputs, image, mask, loss_config: ml_collections.ConfigDict,
                     features: vgg.Features | None) -> dict[str, jax.Array]:
    """Every loss term of DFNet's outputs, each averaged over the levels it applies to.

    The L1 terms over `loss_config.reconstruction_levels`; TV, perceptual and
    style over `loss_config.texture_levels`; each level's output against the
    image down-scaled to its size.
    """
    scaled = {
        level: (output, dfnet.downscale(image, level), dfnet.downscale(mask, level))
        for level, output in zip(outputs.levels, outputs.images)
    }
    reconstruction = [losses.l1_terms(*scaled[level]) for level in loss_config.reconstruction_levels]
    texture = [losses.texture_terms(*scaled[level], features) for level in loss_config.texture_levels]
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


def loss(generator: dfnet.DFNet, config: ml_collections.ConfigDict, features, g_params, g_stats,
         batch):
    """Weighted multi-scale loss; returns (loss, (new batch stats, {term: value}))."""
    outputs, g_stats = train_state.apply_model(generator, g_params, g_stats, batch["image"],
                                               batch["mask"], train=True, method="multiscale")
    terms = multiscale_terms(outputs, batch["image"], batch["mask"], config.loss, features)
    return losses.weighted_sum(terms, config.loss), (g_stats, terms)


def predict(generator: dfnet.DFNet, state: train_state.TrainState, batch):
    """Eval-mode full-resolution prediction, for evaluation."""
    return generator.apply(train_state.generator_variables(state), batch["image"], batch["mask"],
                           train=False)


def build(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> loop.Training:
    """DFNet, its state and training step (VGG-16 features: `supervised.loss_features`)."""
    check_config(config)
    return supervised.build(config, mesh, loss, predict)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> train_state.TrainState:
    """Trains DFNet per `config` in `workdir`, resuming from its last checkpoint."""
    workdir = loop.prepare_workdir(workdir)
    mesh = parallel.create_mesh()
    training = build(config, mesh)  # before the data: a bad config or missing VGG weights stop here.
    data = datasets.create(config, mesh)
    return loop.restore_and_run(config, workdir, mesh, data, training)
