"""Training the refinement network of two-stage high-resolution inpainting (Moskalenko et al., 2021).

The coarse model (any trained model of the project, `config.coarse_workdir`)
is frozen. Its completions of the training images are computed once and
cached (`data.coarse_cache`); the refinement network (`models.refinement`)
then learns from random patches of the 20-channel input of whole images
(`two_stage.refinement_input`) whose hole covers 10-90% of the patch:

  l1_hole_weight * L_hole + l1_valid_weight * L_valid
  + perceptual_weight * perceptual + style_weight * style + tv_weight * TV

on the network's prediction for the patch (DFNet's loss terms,
`losses.completion_terms`: Liu et al.'s hole/valid L1, VGG-16 feature and
Gram-matrix L1, TV over the pixel pairs that touch the hole),
non-adversarial, with Adam. The paper names the terms but not their weights;
the defaults are DFNet's released ones (the coarse model of the paper's
pipeline).
"""

from __future__ import annotations

import os

import jax
import ml_collections

from inpaint_jax import inference, losses, parallel
from inpaint_jax.data import coarse_cache
from inpaint_jax.models import refinement
from inpaint_jax.trainers import loop, supervised
from inpaint_jax.trainers import state as train_state



class TwoStageConfigError(ValueError):
    """A two_stage config that cannot be trained."""


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises TwoStageConfigError for settings that cannot train; names the field to fix."""
    if not config.coarse_workdir:
        raise TwoStageConfigError(
            "config.coarse_workdir is empty: the refinement network needs a trained coarse model. "
            "Train one (e.g. `make demo`, or launch.train with configs/glcic.py or "
            "configs/dfnet.py) and pass --config.coarse_workdir=THAT_WORKDIR."
        )
    multiple = 2 ** len(config.model.encoder_kernels)
    if config.data.crop_size % multiple:
        raise TwoStageConfigError(
            f"config.data.crop_size={config.data.crop_size} (the patch side) must be a multiple "
            f"of {multiple}, the refinement U-Net's stride with "
            f"{len(config.model.encoder_kernels)} levels (config.model.encoder_kernels)."
        )
    low, high = config.patch_hole_range
    if not 0 <= low <= high <= 1:
        raise TwoStageConfigError(
            f"config.patch_hole_range={tuple(config.patch_hole_range)} must be (low, high) with "
            "0 <= low <= high <= 1 (the paper: (0.1, 0.9))."
        )
    if config.masks_per_image < 1:
        raise TwoStageConfigError(
            f"config.masks_per_image must be at least 1, got {config.masks_per_image}."
        )


def loss(network: refinement.RefinementNetwork, config: ml_collections.ConfigDict, features,
         g_params, g_stats, batch):
    """Weighted loss of the prediction for the patch; (loss, (new batch stats, {term: value}))."""
    prediction, g_stats = train_state.apply_model(network, g_params, g_stats, batch["inputs"],
                                                  train=True)
    terms = losses.completion_terms(prediction, batch["image"], batch["mask"], features)
    return losses.weighted_sum(terms, config.loss), (g_stats, terms)


def predict(network: refinement.RefinementNetwork, state: train_state.TrainState, batch):
    """Eval-mode prediction for the patches of `batch`."""
    return network.apply(train_state.generator_variables(state), batch["inputs"], train=False)


def build(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> loop.Training:
    """The refinement network, its state and training step (VGG-16 features: `supervised.loss_features`)."""
    check_config(config)
    return supervised.build(config, mesh, loss, predict)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> train_state.TrainState:
    """Trains the refinement network per `config` in `workdir`, resuming from its last checkpoint."""
    mesh = parallel.create_mesh()
    training = build(config, mesh)  # first: a bad config or missing VGG weights stop here.
    workdir = loop.prepare_workdir(workdir)
    coarse = inference.load_model(config.coarse_workdir)
    cache_root = config.cache_dir or os.path.join(workdir, "coarse_cache")
    data = coarse_cache.create_datasets(config, mesh, coarse, cache_root)
    return loop.restore_and_run(config, workdir, mesh, data, training)
