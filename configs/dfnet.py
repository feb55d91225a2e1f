"""DFNet (Hong et al., "Deep Fusion Network for Image Completion", ACM MM 2019) training config.

The default follows the authors' released `config.yaml` and `loss.py`
(github.com/hughplay/DFNet): 512x512 inputs, the 8-level U-Net with fusion
blocks at levels 0-5 and 3-channel alpha maps, BatchNorm; loss
6 * L1 on all six outputs + 0.1 * perceptual + 240 * style + 0.1 * TV on the
three finest, perceptual and style on VGG-16 pool1-3; Adam(2e-4), the
learning rate divided by 10 every 5 epochs of 37,500 steps, 20 epochs. Where
the release is silent or differs in kind, marked "not stated": the masks
(the paper trains on irregular holes; here free-form strokes), the batch
size (released: 6 on an 8-GPU job, read as 6 per GPU), the hole fill colour
(released: 0; here the ImageNet mean, as for every model of this project).

The perceptual and style terms need VGG-16 ImageNet weights (nothing is
downloaded): get torchvision's vgg16-397923af.pth, convert it once with
`python -m launch.convert_vgg --input=vgg16-397923af.pth --output=DIR`, and
pass --config.vgg_path=DIR/vgg16.npz. Without it the run stops at once and
says so.

Run (Places365-Standard high-resolution images in MANUAL_DIR):

  python -m launch.train --config=configs/dfnet.py --workdir=/tmp/dfnet \
      --config.data.manual_dir=/path/to/places365 --config.vgg_path=DIR/vgg16.npz

Cost (XLA cost analysis): the network's forward pass is 76 GFLOP per 512x512
image; a whole training step (network, VGG-16 to pool3 on output and target
at three scales, both backward passes, Adam) 0.75 TFLOP per image, so the
released schedule (750,000 steps of 48 images) is 2.7e19 FLOP. Not timed on
an accelerator.

Laptop variant (minutes on 2 CPU cores, offline: photos shipped with the
installed packages, 64 px crops, a 6-level quarter-width network). It sets
the perceptual and style weights to 0, so it needs no VGG weights and trains
on L1 + TV only: a smoke test of the machinery, not of the paper's loss. Add
--config.vgg_path=... --config.loss.perceptual_weight=0.1
--config.loss.style_weight=240 to include them:

  python -m launch.train --config=configs/dfnet.py:runlocal --workdir=/tmp/dfnet
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the DFNet config; `arg` may name a variant: 'runlocal'."""
    config = common.base_config("dfnet")
    config.data.name = "places365_hr"  # Places365-Standard, high resolution (paper: Places2).
    config.data.eval_split = "validation"  # places365_hr's held-out split.
    config.data.crop_size = 512  # side of the square training crops (released: 512).
    config.data.resize_range = (512, 512)  # shortest side resized to 512, then cropped.
    config.mask.kind = "free_form"  # irregular holes (not stated: paper's irregular mask set).

    config.model = common.model_config("dfnet")
    config.model.encoder_kernels = (7, 5, 5, 3, 3, 3, 3, 3)  # one stride-2 conv each (released).
    config.model.fusion_levels = (0, 1, 2, 3, 4, 5)  # decoder levels with a fusion block.
    config.model.alpha_channels = 3  # alpha maps per fusion block: 3 (released) or 1.
    config.model.fill_value = (0.485, 0.456, 0.406)  # colour put into holes (ImageNet mean RGB).
    config.model.width_multiplier = 1.0  # channel multiplier of the network (paper: 1.0).

    config.vgg_path = ""  # VGG-16 weights (.npz/.pth/.h5) for the perceptual and style terms.

    config.loss = ml_collections.ConfigDict()
    config.loss.l1_hole_weight = 6.0  # weight of L1 in the hole (released: 6 on the whole L1).
    config.loss.l1_valid_weight = 6.0  # weight of L1 on known pixels (released: 6).
    config.loss.perceptual_weight = 0.1  # weight of the VGG feature L1 (released: 0.1).
    config.loss.style_weight = 240.0  # weight of the Gram-matrix L1 (released: 240).
    config.loss.tv_weight = 0.1  # weight of TV over pixel pairs touching the hole (released: 0.1).
    config.loss.reconstruction_levels = (0, 1, 2, 3, 4, 5)  # outputs with the L1 terms.
    config.loss.texture_levels = (0, 1, 2)  # outputs with perceptual, style and TV terms.
    config.loss.vgg_taps = ("pool1", "pool2", "pool3")  # VGG-16 features compared (released).

    # Released: Adam(2e-4), the rate divided by 10 every 5 epochs of 37,500 steps.
    config.g_optimizer = common.adam(learning_rate=2e-4, b1=0.9, decay_every_steps=187_500,
                                     decay_factor=0.1)

    config.global_batch_size = 48  # images per step over all devices (not stated, see above).
    config.total_steps = 750_000  # 20 epochs of 37,500 steps (released).
    config.eval.global_batch_size = 16  # images per evaluation step over all devices.

    if arg == "runlocal":
        common.runlocal(config, crop_size=64, total_steps=300, width_multiplier=0.25)
        config.model.encoder_kernels = (7, 5, 5, 3, 3, 3)  # 6 levels: 64 px crops.
        config.loss.perceptual_weight = 0.0  # offline: no VGG weights, see the docstring.
        config.loss.style_weight = 0.0
        config.g_optimizer.decay_every_steps = 0
    elif arg:
        raise ValueError(f"Unknown config variant {arg!r} for dfnet.py; use 'runlocal' or nothing.")
    return config
