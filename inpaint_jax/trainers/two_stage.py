"""Training the refinement network of two-stage high-resolution inpainting (Moskalenko et al., 2021).

The coarse model (any trained model of the project, `config.coarse.workdir`)
is frozen. Its completions of the training images are computed once and
cached (`data.coarse_cache`); the refinement network (`models.refinement`)
then learns from random patches of the 20-channel input of whole images
(`two_stage.refinement_input`) whose hole covers 10-90% of the patch:

  l1_hole_weight * L_hole + l1_valid_weight * L_valid
  + perceptual_weight * perceptual + style_weight * style + tv_weight * TV

on the network's prediction for the patch (the DFNet loss helpers of
`trainers.dfnet`: Liu et al.'s hole/valid L1, VGG-16 feature and Gram-matrix
L1, TV over the pixel pairs that touch the hole), non-adversarial, with
Adam. The paper names the terms but not their weights; the defaults are
DFNet's released ones (the coarse model of the paper's pipeline).

The state is the project's `GANTrainState` with an empty discriminator, so
the shared loop (`common.run`: sharding, checkpoints, exact resume,
evaluation on fixed patches, logging) runs it unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections

from inpaint_jax import inference, parallel, two_stage
from inpaint_jax.data import coarse_cache
from inpaint_jax.models import refinement
from inpaint_jax.trainers import common, dfnet
from inpaint_jax.trainers.common import GANTrainState

CACHE_FORMAT_VERSION = 1  # bump when what a cache entry holds changes.


class TwoStageConfigError(ValueError):
    """A two_stage config that cannot be trained."""


def build_models(config: ml_collections.ConfigDict) -> tuple[refinement.RefinementNetwork, None]:
    """The refinement network of `config.model`, and no discriminator.

    It computes in `common.resolve_compute_dtype(config)`, with float32 parameters.
    """
    generator = refinement.RefinementNetwork(
        encoder_kernels=tuple(config.model.encoder_kernels),
        width_multiplier=config.model.width_multiplier,
        dtype=common.resolve_compute_dtype(config),
    )
    return generator, None


def example_inputs(config: ml_collections.ConfigDict) -> tuple[jax.Array]:
    """A zero 20-channel input of one training patch, to initialise the network."""
    size = config.data.crop_size
    return (jnp.zeros((1, size, size, refinement.INPUT_CHANNELS), jnp.float32),)


create_train_state = common.generator_only_recipe_state(example_inputs)


class Steps(dfnet.Steps):
    """The refinement network's training step (`dfnet.Steps.train_step`) and prediction."""

    def loss(self, g_params, g_stats, batch):
        """Weighted loss of the prediction for the patch; (loss, (new batch stats, {term: value}))."""
        prediction, updates = self.generator.apply(
            {"params": g_params, "batch_stats": g_stats},
            batch["inputs"],
            train=True,
            mutable=["batch_stats"],
        )
        image, mask = batch["image"], batch["mask"]
        terms = {
            **dfnet.reconstruction_terms(prediction, image, mask),
            **dfnet.texture_terms(prediction, image, mask, self.features),
        }
        return dfnet.weighted_total(terms, self.config.loss), (updates["batch_stats"], terms)

    def predict(self, state: GANTrainState, batch):
        """Eval-mode prediction for the patches of `batch`."""
        variables = {"params": state.g_params, "batch_stats": state.batch_stats["g"]}
        return self.generator.apply(variables, batch["inputs"], train=False)


def inference_model(network: inference.InpaintingModel) -> two_stage.TwoStageModel:
    """What `inference.load_model` gives for a refinement checkpoint: it with its coarse model."""
    return two_stage.from_refinement(network)


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises TwoStageConfigError for settings that cannot train; names the field to fix."""
    if not config.coarse.workdir:
        raise TwoStageConfigError(
            "config.coarse.workdir is empty: the refinement network needs a trained coarse model. "
            "Train one (e.g. `make demo`, or launch.train with configs/glcic.py or "
            "configs/dfnet.py) and pass --config.coarse.workdir=THAT_WORKDIR."
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


def cache_fingerprint(config: ml_collections.ConfigDict, coarse: inference.InpaintingModel) -> str:
    """A short hash of everything that determines the cache entries (not the patch settings)."""
    data = config.data
    identity = {
        "version": CACHE_FORMAT_VERSION,
        "coarse": {"name": coarse.name, "step": coarse.step, "config": coarse.config.to_dict(),
                   "workdir": os.path.abspath(os.path.expanduser(config.coarse.workdir)),
                   "size": config.coarse.size},
        "data": {"name": data.name, "data_dir": os.path.abspath(os.path.expanduser(data.data_dir)),
                 "manual_dir": data.manual_dir, "max_side": data.max_side},
        "mask": {"kind": config.mask.kind, "params": config.mask.params.to_dict(),
                 "local_size": config.mask.local_size},
        "seeds": [config.seed, config.eval.mask_seed],
        "masks_per_image": config.masks_per_image,
    }
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def create_datasets(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                    cache_root: str) -> common.Datasets:
    """Builds (or reuses) the coarse cache of both splits; returns the patch iterators."""
    coarse = inference.load_model(config.coarse.workdir)
    root = os.path.join(cache_root, cache_fingerprint(config, coarse))
    data = config.data
    split_sources = common.data_sources(config)
    mask_fn = common.make_mask_fn(config)
    patch = dict(patch_size=data.crop_size, shift_fraction=config.shift_fraction,
                 hole_range=tuple(config.patch_hole_range))
    train_cache, eval_cache = (
        coarse_cache.build_cache(
            source,
            os.path.join(root, split),
            coarse_model=coarse,
            coarse_size=config.coarse.size,
            mask_fn=mask_fn,
            seed=seed,
            masks_per_image=config.masks_per_image,
            max_side=data.max_side,
            patch_size=patch["patch_size"],
            hole_range=patch["hole_range"],
        )
        for source, split, seed in zip(split_sources, (data.train_split, data.eval_split),
                                       (config.seed, config.eval.mask_seed))
    )
    train = coarse_cache.create_train_iterator(
        train_cache,
        batch_size=parallel.per_process_batch_size(config.global_batch_size, mesh),
        seed=config.seed,
        worker_count=data.worker_count,
        **patch,
    )
    eval_batch_size = parallel.per_process_batch_size(config.eval.global_batch_size, mesh)

    def eval_batches():
        batches = coarse_cache.create_eval_iterator(
            eval_cache, batch_size=eval_batch_size, seed=config.eval.mask_seed, **patch)
        return common.first_batches(batches, config.eval.max_batches)

    return common.Datasets(train=train, eval_batches=eval_batches)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> GANTrainState:
    """Trains the refinement network per `config` in `workdir`, resuming from its last checkpoint."""
    check_config(config)
    features = dfnet.load_feature_extractor(config)  # fails before any work without VGG weights.
    workdir = common.prepare_workdir(workdir)
    mesh = parallel.create_mesh()
    data = create_datasets(config, mesh, config.cache_dir or os.path.join(workdir, "coarse_cache"))
    return common.train_generator_only(config, workdir, mesh, data, sys.modules[__name__], features)
