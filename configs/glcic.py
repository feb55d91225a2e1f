"""GLCIC (Iizuka et al., SIGGRAPH 2017) training configuration.

The default reproduces the paper: Places365 photos, shortest side resized to a
random size in [256, 384], random 256x256 crops, one rectangular hole with
sides in [96, 128], local discriminator on the 128x128 window around the hole,
MSE on the hole, GAN weight alpha = 0.0004, Adadelta, batch 96,
T_C = 90,000 completion-only steps, T_D = 10,000 discriminator-only steps,
joint training up to 500,000 steps.

Run (the paper's recipe; Places365-Standard high-resolution images in
MANUAL_DIR, see inpaint_jax/data/builders):

  python -m launch.train --config=configs/glcic.py --workdir=/tmp/glcic \
      --config.data.manual_dir=/path/to/places365

Cost: the paper reports two months on 4 K80 GPUs; roughly a week on 8
modern accelerators.

Laptop variant (the built-in default of `make demo`): photos shipped with the
installed packages, 64 px crops, quarter-width networks, short phases; trains
through all three phases and writes checkpoints in a few minutes on 2 CPU
cores:

  python -m launch.train --config=configs/glcic.py:runlocal --workdir=/tmp/glcic
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the GLCIC config; `arg` may name a variant: 'runlocal'."""
    config = ml_collections.ConfigDict()
    config.trainer = "glcic"  # module of inpaint_jax.trainers that runs this recipe.
    config.seed = 0  # seeds parameter init, data order, masks and GAN noise.
    config.rng_impl = "rbg"  # JAX PRNG: rbg compiles ~3x faster than threefry2x32 on CPU.

    config.data = ml_collections.ConfigDict()
    config.data.name = "places365_hr"  # a dataset of inpaint_jax.data.sources.DATASETS.
    config.data.data_dir = "~/tensorflow_datasets"  # where TFDS datasets are built/read.
    config.data.manual_dir = (
        ""  # folder with the raw photos ("" = none; needed by manual datasets).
    )
    config.data.train_split = "train"  # split used for training.
    config.data.eval_split = "validation"  # held-out split used for periodic evaluation.
    config.data.crop_size = 256  # side of the square training crops (paper: 256).
    config.data.resize_range = (256, 384)  # shortest side resized to a random size in this range.
    config.data.worker_count = 0  # grain worker processes (0 = decode in the main process).

    config.mask = ml_collections.ConfigDict()
    config.mask.kind = "glcic"  # hole generator: glcic, center, ce_random, free_form, mixed.
    config.mask.local_size = 128  # side of the local-discriminator window (paper: 128).
    # Parameters of the generator's class in inpaint_jax.masks; empty = its defaults, which
    # for "glcic" are the paper's hole sides in [96, 128] px on a 256 px crop.
    config.mask.params = ml_collections.ConfigDict()

    config.model = ml_collections.ConfigDict()
    config.model.fill_value = (
        0.4588,
        0.4412,
        0.4078,
    )  # colour put into holes (Places365 mean RGB).
    config.model.width_multiplier = 1.0  # channel multiplier of every network (paper: 1.0).

    config.loss = ml_collections.ConfigDict()
    config.loss.reconstruction = "mse"  # reconstruction loss on the hole: mse (paper) or l1.
    config.loss.gan = "bce"  # adversarial loss: bce (paper), hinge or lsgan.
    config.loss.reconstruction_weight = 1.0  # weight of the reconstruction term (paper: 1).
    config.loss.alpha = 0.0004  # weight of the adversarial term in the joint loss (paper: 0.0004).

    config.g_optimizer = ml_collections.ConfigDict()
    config.g_optimizer.name = "adadelta"  # completion-net optimizer: adadelta (paper), adam or sgd.
    config.g_optimizer.learning_rate = 1.0  # learning rate (Adadelta's standard 1.0).
    config.g_optimizer.b1 = (
        0.9  # Adadelta rho (Torch7 default, used by GLCIC) / Adam beta1 / SGD momentum.
    )
    config.g_optimizer.b2 = 0.999  # Adam beta2 (unused by Adadelta and SGD).
    config.g_optimizer.eps = 1e-6  # numerical epsilon.
    config.d_optimizer = (
        config.g_optimizer.copy_and_resolve_references()
    )  # discriminator optimizer.

    config.global_batch_size = 96  # images per step over all devices (paper: 96).
    config.completion_steps = 90_000  # T_C: completion network alone with the reconstruction loss.
    config.discriminator_steps = 10_000  # T_D: discriminators alone, completion network frozen.
    config.total_steps = 500_000  # total steps, the rest trains both jointly.

    config.log_every_steps = 100  # how often training metrics are written.
    config.eval_every_steps = 5_000  # how often the held-out evaluation runs.
    config.checkpoint_every_steps = 5_000  # how often a checkpoint is saved.
    config.keep_checkpoints = 3  # how many recent checkpoints are kept.

    config.eval = ml_collections.ConfigDict()
    config.eval.global_batch_size = 32  # images per evaluation step over all devices.
    config.eval.mask_seed = 1234  # seed of the fixed evaluation masks.
    config.eval.max_batches = 50  # cap on evaluation batches per evaluation (0 = whole split).
    config.eval.num_samples = 8  # examples shown in the sample grid.

    if arg == "runlocal":
        config.data.name = "sample_photos"
        config.data.data_dir = "~/tensorflow_datasets"
        config.data.eval_split = "eval"
        config.data.crop_size = 64
        config.data.resize_range = (64, 96)
        config.mask.local_size = 32
        config.model.width_multiplier = 0.25
        config.global_batch_size = 8
        config.completion_steps = 300
        config.discriminator_steps = 100
        config.total_steps = 600
        config.log_every_steps = 20
        config.eval_every_steps = 200
        config.checkpoint_every_steps = 200
        config.eval.global_batch_size = 8
        config.eval.max_batches = 0
    elif arg:
        raise ValueError(f"Unknown config variant {arg!r} for glcic.py; use 'runlocal' or nothing.")
    return config
