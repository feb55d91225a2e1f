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

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the GLCIC config; `arg` may name a variant: 'runlocal'."""
    config = common.base_config("glcic")
    config.data.name = "places365_hr"  # Places365-Standard, high resolution (paper: Places2).
    config.data.eval_split = "validation"  # places365_hr's held-out split.
    config.data.crop_size = 256  # side of the square training crops (paper: 256).
    config.data.resize_range = (256, 384)  # shortest side resized into this range (paper).
    config.mask.kind = "glcic"  # one rectangle, sides in [96, 128] px on a 256 px crop (paper).
    config.mask.local_size = 128  # side of the local-discriminator window (paper: 128).

    config.model = common.model_config("glcic")
    config.model.fill_value = (
        0.4588,
        0.4412,
        0.4078,
    )  # colour put into holes (Places365 mean RGB).
    config.model.width_multiplier = 1.0  # channel multiplier of every network (paper: 1.0).

    config.loss = ml_collections.ConfigDict()
    config.loss.reconstruction = "mse"  # reconstruction loss on the hole: mse (paper) or l1.
    config.loss.reconstruction_weight = 1.0  # weight of the reconstruction term (paper: 1).
    config.loss.adversarial_weight = 0.0004  # the paper's alpha: GAN term's weight (0.0004).
    config.loss.gan = "bce"  # adversarial loss: bce (paper), hinge or lsgan.

    # Adadelta (paper) with Torch7's defaults, which GLCIC used: rho 0.9, eps 1e-6.
    config.g_optimizer = common.adadelta(learning_rate=1.0, rho=0.9, eps=1e-6)
    config.d_optimizer = common.adadelta(learning_rate=1.0, rho=0.9, eps=1e-6)

    config.global_batch_size = 96  # images per step over all devices (paper: 96).
    config.completion_steps = 90_000  # T_C: completion network alone with the reconstruction loss.
    config.discriminator_steps = 10_000  # T_D: discriminators alone, completion network frozen.
    config.total_steps = 500_000  # total steps, the rest trains both jointly.

    if arg == "runlocal":
        common.runlocal(config, crop_size=64, total_steps=600, width_multiplier=0.25)
        config.completion_steps = 300
        config.discriminator_steps = 100
    elif arg:
        raise ValueError(f"Unknown config variant {arg!r} for glcic.py; use 'runlocal' or nothing.")
    return config
