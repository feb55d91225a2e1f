"""Config fields every training recipe shares; each recipe file sets its own values."""

import ml_collections


def base_config(trainer: str) -> ml_collections.ConfigDict:
    """Data, masks, logging, checkpointing and evaluation fields with neutral defaults."""
    config = ml_collections.ConfigDict()
    config.trainer = trainer  # module of inpaint_jax.trainers that runs this recipe.
    config.seed = 0  # seeds parameter init, data order, masks and GAN noise.
    config.rng_impl = "rbg"  # JAX PRNG: rbg compiles ~3x faster than threefry2x32 on CPU.

    config.data = ml_collections.ConfigDict()
    config.data.name = "sample_photos"  # a dataset of inpaint_jax.data.sources.DATASETS.
    config.data.data_dir = "~/tensorflow_datasets"  # where TFDS datasets are built/read.
    config.data.manual_dir = (
        ""  # folder with the raw photos ("" = none; needed by manual datasets).
    )
    config.data.train_split = "train"  # split used for training.
    config.data.eval_split = "eval"  # held-out split used for periodic evaluation.
    config.data.crop_size = 256  # side of the square training crops.
    config.data.worker_count = 0  # grain worker processes (0 = decode in the main process).

    config.mask = ml_collections.ConfigDict()
    config.mask.kind = "glcic"  # hole generator: glcic, center, ce_random, free_form, mixed.
    # Parameters of the generator's class in inpaint_jax.masks; empty = its defaults.
    config.mask.params = ml_collections.ConfigDict()

    config.log_every_steps = 100  # how often training metrics are written.
    config.eval_every_steps = 5_000  # how often the held-out evaluation runs.
    config.checkpoint_every_steps = 5_000  # how often a checkpoint is saved.
    config.keep_checkpoints = 3  # how many recent checkpoints are kept.

    config.eval = ml_collections.ConfigDict()
    config.eval.global_batch_size = 32  # images per evaluation step over all devices.
    config.eval.mask_seed = 1234  # seed of the fixed evaluation masks.
    config.eval.max_batches = 50  # cap on evaluation batches per evaluation (0 = whole split).
    config.eval.num_samples = 8  # examples shown in the sample grid.
    return config


def model_config(family: str) -> ml_collections.ConfigDict:
    """A model section: `family` (inpaint_jax.models.FAMILIES) and the compute dtype.

    The recipe adds its family's fields; the section is saved with every
    checkpoint and is all `inpaint_jax.models.build` needs.
    """
    config = ml_collections.ConfigDict()
    config.family = family  # network family, see inpaint_jax/models/registry.py.
    config.compute_dtype = "auto"  # auto (bfloat16 on GPU/TPU, float32 on CPU), float32, bfloat16.
    return config


def _optimizer(name: str, learning_rate: float, decay_every_steps: int, decay_factor: float,
               **fields) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = name  # optax optimizer: adadelta or adam.
    config.learning_rate = learning_rate  # initial learning rate.
    config.decay_every_steps = decay_every_steps  # steps between decays (0 = constant rate).
    config.decay_factor = decay_factor  # learning rate multiplier at every decay.
    config.update(fields)
    return config


def adadelta(learning_rate: float, *, rho: float, eps: float, decay_every_steps: int = 0,
             decay_factor: float = 0.1) -> ml_collections.ConfigDict:
    """An Adadelta section (inpaint_jax.trainers.optimizers.create reads it)."""
    config = _optimizer("adadelta", learning_rate, decay_every_steps, decay_factor)
    config.rho = rho  # decay of the running averages of squared gradients and updates.
    config.eps = eps  # numerical epsilon.
    return config


def adam(learning_rate: float, *, b1: float, b2: float = 0.999, eps: float = 1e-8,
         decay_every_steps: int = 0, decay_factor: float = 0.1) -> ml_collections.ConfigDict:
    """An Adam section (inpaint_jax.trainers.optimizers.create reads it)."""
    config = _optimizer("adam", learning_rate, decay_every_steps, decay_factor)
    config.b1 = b1  # decay of the first-moment average.
    config.b2 = b2  # decay of the second-moment average.
    config.eps = eps  # numerical epsilon.
    return config


def runlocal(
    config: ml_collections.ConfigDict, *, crop_size: int, total_steps: int, width_multiplier: float
) -> ml_collections.ConfigDict:
    """Shrinks `config` to a few CPU minutes on the photos shipped with installed packages."""
    config.data.name = "sample_photos"
    config.data.eval_split = "eval"
    config.data.crop_size = crop_size
    if "resize_range" in config.data:
        config.data.resize_range = (crop_size, crop_size + crop_size // 2)
    if "local_size" in config.mask:
        config.mask.local_size = crop_size // 2
    config.model.width_multiplier = width_multiplier
    config.global_batch_size = 8
    config.total_steps = total_steps
    config.log_every_steps = 20
    config.eval_every_steps = total_steps // 2
    config.checkpoint_every_steps = total_steps // 2
    config.eval.global_batch_size = 8
    config.eval.max_batches = 0
    return config
