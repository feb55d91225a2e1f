"""PGGAN (Demir & Unal, "Patch-Based Image Inpainting with GANs", 2018) training configuration.

The default follows the paper: PGGAN-DRes generator (2 down-samplings,
dilated residual blocks, interpolated-convolution up-sampling), one
discriminator with a shared trunk, a G-GAN head and a PatchGAN head, joint
loss 0.995 * L1 + 0.0025 * G-GAN + 0.0025 * PatchGAN, 256x256 crops of Paris
StreetView. Where the paper is silent the choices of its base architectures
(CycleGAN / pix2pix) are used and marked "not stated": 9 residual blocks,
instance norm, Adam(2e-4, beta1 0.5), batch size, number of steps.

Run (Paris StreetView in MANUAL_DIR, the Context Encoder layout
paris_train_original/ + paris_eval_gt/):

  python -m launch.train --config=configs/pggan.py --workdir=/tmp/pggan \
      --config.data.manual_dir=/path/to/paris

Cost: the generator's forward pass is 99 GFLOP per 256x256 image (XLA cost
analysis; GLCIC's completion network: 62 GFLOP), so a training step costs
roughly 3x that per image plus the discriminator.

Ablations: --config.model.preset=PGGAN-Res (3 down-samplings, plain residual
blocks), --config.model.discriminator=global|patch (one head only),
--config.model.upsampling=transposed, --config.model.dilation_position=second.

Laptop variant (minutes on 2 CPU cores, photos shipped with the installed
packages, 128 px crops, quarter-width networks, 4 residual blocks):

  python -m launch.train --config=configs/pggan.py:runlocal --workdir=/tmp/pggan
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the PGGAN config; `arg` may name a variant: 'runlocal'."""
    config = common.base_config("pggan")
    config.data.name = "paris_street_view"  # one of the paper's datasets.
    config.data.crop_size = 256  # side of the square training crops (paper: 256x256 images).
    config.data.resize_range = (256, 256)  # shortest side resized to 256, then cropped.
    config.mask.kind = "glcic"  # one random rectangle, sides 3/8-1/2 of the crop.

    config.model = common.model_config("pggan")
    config.model.preset = "PGGAN-DRes"  # generator: PGGAN-DRes (paper's best) or PGGAN-Res.
    config.model.num_blocks = 9  # residual blocks (not stated; CycleGAN's 9).
    config.model.dilation_position = "first"  # dilated conv first or second in each residual block.
    config.model.upsampling = "interpolated"  # bilinear resize + conv (paper) or transposed.
    config.model.norm = "instance"  # instance (not stated; CycleGAN's), batch or none.
    config.model.discriminator = "pggan"  # pggan (both heads), global or patch (ablations).
    config.model.fill_value = (0.485, 0.456, 0.406)  # colour put into holes (ImageNet mean RGB).
    config.model.width_multiplier = 1.0  # channel multiplier of every network (paper: 1.0).

    config.loss = ml_collections.ConfigDict()
    config.loss.reconstruction = "l1"  # reconstruction loss on the hole (paper: L1).
    config.loss.reconstruction_weight = 0.995  # weight of the L1 term (paper: 0.995).
    config.loss.global_adversarial_weight = 0.0025  # weight of the G-GAN term (paper: 0.0025).
    config.loss.patch_adversarial_weight = 0.0025  # weight of the PatchGAN term (paper: 0.0025).
    config.loss.gan = "bce"  # adversarial loss: bce (paper), hinge or lsgan.

    # Not stated by the paper: pix2pix's Adam(2e-4, beta1 0.5).
    config.g_optimizer = common.adam(learning_rate=2e-4, b1=0.5)
    config.d_optimizer = common.adam(learning_rate=2e-4, b1=0.5)

    config.global_batch_size = 16  # images per step over all devices (not stated).
    config.completion_steps = 0  # reconstruction-only warm-up steps (paper: none).
    config.total_steps = 200_000  # total steps (not stated).
    config.eval.global_batch_size = 16  # images per evaluation step over all devices.

    if arg == "runlocal":
        # Instance norm in the G-GAN head needs crops of at least 128 px.
        common.runlocal(config, crop_size=128, total_steps=300, width_multiplier=0.25)
        config.model.num_blocks = 4
    elif arg:
        raise ValueError(f"Unknown config variant {arg!r} for pggan.py; use 'runlocal' or nothing.")
    return config
