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


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the PGGAN config; `arg` may name a variant: 'runlocal'."""
    config = ml_collections.ConfigDict()
    config.trainer = "pggan"  # module of inpaint_jax.trainers that runs this recipe.
    config.seed = 0  # seeds parameter init, data order, masks and GAN noise.
    config.rng_impl = "rbg"  # JAX PRNG: rbg compiles ~3x faster than threefry2x32 on CPU.

    config.data = ml_collections.ConfigDict()
    config.data.name = "paris_street_view"  # a dataset of inpaint_jax.data.sources.DATASETS.
    config.data.data_dir = "~/tensorflow_datasets"  # where TFDS datasets are built/read.
    config.data.manual_dir = ""  # folder with the raw photos ("" = none; needed by manual datasets).
    config.data.train_split = "train"  # split used for training.
    config.data.eval_split = "eval"  # held-out split used for periodic evaluation.
    config.data.crop_size = 256  # side of the square training crops (paper: 256x256 images).
    config.data.resize_range = (256, 256)  # shortest side resized into this range, then cropped.
    config.data.worker_count = 0  # grain worker processes (0 = decode in the main process).

    config.mask = ml_collections.ConfigDict()
    config.mask.kind = "glcic"  # hole generator: one random rectangle, sides 3/8-1/2 of the crop.
    config.mask.local_size = 128  # side of the window masks report (unused by PGGAN's discriminator).
    config.mask.params = ml_collections.ConfigDict()  # generator parameters; empty = its defaults.

    config.model = ml_collections.ConfigDict()
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
    config.loss.global_weight = 0.0025  # weight of the G-GAN adversarial term (paper: 0.0025).
    config.loss.patch_weight = 0.0025  # weight of the PatchGAN adversarial term (paper: 0.0025).
    config.loss.gan = "bce"  # adversarial loss: bce (paper), hinge or lsgan.

    config.g_optimizer = ml_collections.ConfigDict()
    config.g_optimizer.name = "adam"  # generator optimizer (not stated; pix2pix's Adam).
    config.g_optimizer.learning_rate = 2e-4  # learning rate (pix2pix's 2e-4).
    config.g_optimizer.b1 = 0.5  # Adam beta1 (pix2pix's 0.5).
    config.g_optimizer.b2 = 0.999  # Adam beta2.
    config.g_optimizer.eps = 1e-8  # numerical epsilon.
    config.d_optimizer = config.g_optimizer.copy_and_resolve_references()  # discriminator optimizer.

    config.global_batch_size = 16  # images per step over all devices (not stated).
    config.completion_steps = 0  # reconstruction-only warm-up steps (paper: none).
    config.discriminator_steps = 0  # discriminator-only steps (unused by PGGAN's schedule).
    config.total_steps = 200_000  # total steps (not stated).

    config.log_every_steps = 100  # how often training metrics are written.
    config.eval_every_steps = 5_000  # how often the held-out evaluation runs.
    config.checkpoint_every_steps = 5_000  # how often a checkpoint is saved.
    config.keep_checkpoints = 3  # how many recent checkpoints are kept.

    config.eval = ml_collections.ConfigDict()
    config.eval.global_batch_size = 16  # images per evaluation step over all devices.
    config.eval.mask_seed = 1234  # seed of the fixed evaluation masks.
    config.eval.max_batches = 50  # cap on evaluation batches per evaluation (0 = whole split).
    config.eval.num_samples = 8  # examples shown in the sample grid.

    if arg == "runlocal":
        config.data.name = "sample_photos"
        config.data.crop_size = 128  # instance norm in the G-GAN head needs >= 128 px.
        config.data.resize_range = (128, 160)
        config.mask.local_size = 64
        config.model.num_blocks = 4
        config.model.width_multiplier = 0.25
        config.global_batch_size = 8
        config.total_steps = 300
        config.log_every_steps = 20
        config.eval_every_steps = 150
        config.checkpoint_every_steps = 150
        config.eval.global_batch_size = 8
        config.eval.max_batches = 0
    elif arg:
        raise ValueError(f"Unknown config variant {arg!r} for pggan.py; use 'runlocal' or nothing.")
    return config
