"""Two-stage high-resolution inpainting (Moskalenko, Erofeev & Vatolin, 2021): the refinement network.

A trained coarse model (GLCIC, PGGAN, DFNet, ... of this project; its
workdir in --config.coarse_workdir) completes each training image at 512 px;
the result, scaled up and merged with the known pixels, is cached once per
image and mask. The refinement network learns from random patches of the
full-resolution 20-channel input (merged image, four copies shifted by 20%
of the image size, their masks) whose hole covers 10-90% of the patch, with
L1 + perceptual + style (VGG-16) + TV, non-adversarially, with Adam. From
the paper: the 512 px coarse stage, 20% shifts with invalid in-shifted
pixels, the 20-channel input, the 10-90% patch rule, the loss terms. Not
stated (marked so below): the refinement U-Net's layers (here DFNet's
8-level U-Net without fusion blocks, which matches the 256 px padding of
the authors' released inference script), the loss weights (DFNet's released
ones), the patch size, masks, optimizer settings, batch size and length.

The perceptual and style terms need VGG-16 ImageNet weights (nothing is
downloaded): convert torchvision's vgg16-397923af.pth once with
`python -m launch.convert_vgg --input=vgg16-397923af.pth --output=DIR` and
pass --config.vgg_path=DIR/vgg16.npz.

Run (a DFNet trained on Places365 as the coarse model; Places365-Standard
high-resolution photos in MANUAL_DIR):

  python -m launch.train --config=configs/two_stage.py --workdir=/tmp/refine \
      --config.coarse_workdir=/tmp/dfnet --config.data.manual_dir=/path/to/places365 \
      --config.vgg_path=DIR/vgg16.npz

Cost: the cache stores 7 bytes per pixel per (image, mask), and building it
runs the coarse model once per entry. XLA cost analysis: the U-Net's forward
pass is 22 GFLOP per 256x256 patch, a whole training step (U-Net, VGG-16 to
pool3 on prediction and target, backward, Adam) 162 GFLOP per patch, so the
default 200,000 steps of 16 patches are 5.2e17 FLOP. Inference at full
resolution: 357 GFLOP at 1024x1024, 5.7 TFLOP at 4096x4096.

Laptop variant (minutes on 2 CPU cores, offline): the coarse model is the
GLCIC that `make demo` trains into /tmp/inpaint_jax_demo, photos shipped with
the installed packages scaled to 256 px, 64 px coarse stage and patches, a
6-level quarter-width U-Net, L1 + TV only (no VGG weights needed; add
--config.vgg_path=... --config.loss.perceptual_weight=0.1
--config.loss.style_weight=240 to include them):

  make demo
  python -m launch.train --config=configs/two_stage.py:runlocal --workdir=/tmp/two_stage
  python -m launch.inpaint --method=two_stage --refine=/tmp/two_stage \
      --image=photo.jpg --mask=mask.png --output=filled.png
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the two-stage refinement config; `arg` may name a variant: 'runlocal'."""
    config = common.base_config("two_stage")
    config.data.name = "places365_hr"  # Places365-Standard, high resolution (not stated).
    config.data.eval_split = "validation"  # places365_hr's held-out split.
    config.data.crop_size = 256  # side of the training patches (not stated; a U-Net multiple).
    config.data.max_side = 0  # longer side images are scaled down to first (0 = full resolution).
    config.mask.kind = "free_form"  # holes drawn at each image's full size (not stated).

    config.coarse_workdir = ""  # workdir (or checkpoint) of the trained coarse model (required).
    config.patch_hole_range = (0.1, 0.9)  # hole fraction every training patch has (paper).
    config.masks_per_image = 1  # cached masks (and coarse completions) per image (not stated).
    config.cache_dir = ""  # where coarse completions are cached ("" = WORKDIR/coarse_cache).

    config.model = common.model_config("refinement")
    config.model.encoder_kernels = (7, 5, 5, 3, 3, 3, 3, 3)  # U-Net levels (not stated: DFNet's).
    config.model.width_multiplier = 1.0  # channel multiplier of the U-Net.
    config.model.coarse_size = 512  # longer side the coarse model works at (paper: 512).
    config.model.shift_fraction = 0.2  # shift of the four copies, fraction of the side (paper).

    config.vgg_path = ""  # VGG-16 weights (.npz/.pth/.h5) for the perceptual and style terms.

    config.loss = ml_collections.ConfigDict()
    config.loss.l1_hole_weight = 6.0  # weight of L1 in the hole (not stated: DFNet's 6).
    config.loss.l1_valid_weight = 6.0  # weight of L1 on known pixels (not stated: DFNet's 6).
    config.loss.perceptual_weight = 0.1  # weight of the VGG feature L1 (not stated: DFNet's).
    config.loss.style_weight = 240.0  # weight of the Gram-matrix L1 (not stated: DFNet's).
    config.loss.tv_weight = 0.1  # weight of TV over pixel pairs touching the hole (DFNet's).
    config.loss.vgg_taps = ("pool1", "pool2", "pool3")  # VGG-16 features compared (DFNet's).

    config.g_optimizer = common.adam(learning_rate=2e-4, b1=0.9)  # not stated.

    config.global_batch_size = 16  # patches per step over all devices (not stated).
    config.total_steps = 200_000  # training steps (not stated).
    config.eval.global_batch_size = 16  # patches per evaluation step over all devices.

    if arg == "runlocal":
        common.runlocal(config, crop_size=64, total_steps=300, width_multiplier=0.25)
        config.data.max_side = 256
        config.coarse_workdir = "/tmp/inpaint_jax_demo"  # where `make demo` trains GLCIC.
        config.model.coarse_size = 64
        config.masks_per_image = 4
        config.model.encoder_kernels = (7, 5, 5, 3, 3, 3)  # 6 levels: 64 px patches.
        config.loss.perceptual_weight = 0.0  # offline: no VGG weights, see the docstring.
        config.loss.style_weight = 0.0
    elif arg:
        raise ValueError(
            f"Unknown config variant {arg!r} for two_stage.py; use 'runlocal' or nothing."
        )
    return config
