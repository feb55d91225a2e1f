"""Context Encoder (Pathak et al., CVPR 2016) training configuration.

The default follows the released code's centre-region recipe (`train.lua`
with `overlapPred=4 wtl2=0.999 nBottleneck=4000 niter=500 loadSize=350
fineSize=128`), with the paper's channel-wise fully connected bottleneck in
place of the released 4000-d one: Paris StreetView, shortest side resized to
350 px, random 128x128 crops; the centre 64x64 square less a 4 px border is
the hole (56x56); the network predicts the whole 64x64 centre; loss 0.999 *
L2 (border weighted 10x) + 0.001 * adversarial; Adam with beta1 0.5, the
discriminator at 2e-4 and the generator at 10x that (train.lua raises the
generator's rate tenfold when 0 < wtl2 < 1); batch 64; 500 epochs of the
14,900 training photos (233 steps each). Evaluation (inpaint_jax's shared
pipeline) sees whole photos resized to 128 px, like the released test.lua
with loadSize=129. Not reproduced: the released code's random horizontal
flips.

Run (Paris StreetView in MANUAL_DIR, the Context Encoder layout
paris_train_original/ + paris_eval_gt/):

  python -m launch.train --config=configs/context_encoder.py --workdir=/tmp/ce \
      --config.data.manual_dir=/path/to/paris

Cost: the generator's forward pass is 0.52 GFLOP per 128x128 image (XLA cost
analysis), 6M parameters; a training step costs roughly 3x that per image
plus the discriminator on 64x64 patches. The whole recipe (7.5M images) is
hours on one modern GPU.

Ablations: --config.loss.adversarial_weight=0 (the paper's L2-only
encoder), --config.loss.overlap=0 --config.mask.params.hole_size=0.5 (no
overlap border), --config.model.bottleneck=dense (a standard FC bottleneck).

Laptop variant (a few minutes on 2 CPU cores, photos shipped with the
installed packages, the paper's 128 px geometry, quarter-width networks):

  python -m launch.train --config=configs/context_encoder.py:runlocal --workdir=/tmp/ce
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the Context Encoder config; `arg` may name a variant: 'runlocal'."""
    config = common.base_config("context_encoder")
    config.data.name = "paris_street_view"  # the paper's inpainting dataset.
    config.data.crop_size = 128  # side of the square training crops (fixed by the network: 128).
    config.data.resize_range = (350, 350)  # shortest side resized to 350 (loadSize=350).
    config.mask.kind = "center"  # the centred square hole.
    config.mask.params.hole_size = 56 / 128  # the 64 px centre less the 4 px overlap border.

    config.model = common.model_config("context_encoder")
    config.model.bottleneck = "channelwise"  # channelwise (paper) or dense (standard FC, NPS).
    config.model.encoder_activation = "leaky_relu"  # encoder and bottleneck (paper: LeakyReLU 0.2).
    config.model.decoder_activation = "relu"  # decoder (paper: ReLU); leaky_relu, relu or elu.
    config.model.fill_value = (117 / 255, 104 / 255, 123 / 255)  # hole colour (train.lua's mean).
    config.model.width_multiplier = 1.0  # channel multiplier of every network (paper: 1.0).

    config.loss = ml_collections.ConfigDict()
    config.loss.reconstruction_weight = 0.999  # weight of the L2 term (train.lua's wtl2).
    config.loss.adversarial_weight = 0.001  # weight of the adversarial term (1 - wtl2).
    config.loss.overlap = 4  # width in px of the known border the net also predicts (overlapPred).
    config.loss.overlap_weight = 10.0  # L2 weight of that border relative to the hole (train.lua).
    config.loss.gan = "bce"  # adversarial loss: bce (paper), hinge or lsgan.

    # train.lua: Adam with beta1 0.5; lr 2e-4, times 10 for the generator when 0 < wtl2 < 1.
    config.g_optimizer = common.adam(learning_rate=2e-3, b1=0.5)
    config.d_optimizer = common.adam(learning_rate=2e-4, b1=0.5)

    config.global_batch_size = 64  # images per step over all devices (train.lua: 64).
    config.completion_steps = 0  # reconstruction-only warm-up steps (paper: none).
    config.total_steps = 116_500  # 500 epochs x 233 steps of the 14,900 Paris photos (niter=500).
    config.eval.global_batch_size = 64  # images per evaluation step over all devices.
    config.eval.max_batches = 0  # evaluate the whole split (Paris StreetView's is 100 photos).

    if arg == "runlocal":
        common.runlocal(config, crop_size=128, total_steps=300, width_multiplier=0.25)
    elif arg:
        raise ValueError(
            f"Unknown config variant {arg!r} for context_encoder.py; use 'runlocal' or nothing."
        )
    return config
