"""Content network of Multi-scale Neural Patch Synthesis (Yang et al., CVPR 2017).

The Context Encoder recipe (configs/context_encoder.py, trained by the same
trainer) with the paper's two changes to the network: ELU activations in
place of (Leaky)ReLU everywhere, and a standard fully connected bottleneck
(4x4x512 -> 4x4x512) in place of the channel-wise one. NPS inpaints 512x512
images with a 256x256 hole and runs the content network on the image
downsampled to 128x128, so the training photos are resized whole to 128 px
(not cropped from 350 px, as for the Context Encoder) and the hole is the
64x64 centre less the 4 px border that the released NPS code keeps from the
Context Encoder (overlapPred=4). Not stated by the paper, hence the Context
Encoder's: loss 0.999 * L2 + 0.001 * adversarial, the DCGAN discriminator,
Adam settings, batch size and schedule.

Run (Paris StreetView in MANUAL_DIR, the Context Encoder layout
paris_train_original/ + paris_eval_gt/):

  python -m launch.train --config=configs/nps_content.py --workdir=/tmp/nps_content \
      --config.data.manual_dir=/path/to/paris

Cost: the generator's forward pass is 0.64 GFLOP per 128x128 image (XLA cost
analysis); it has 73M parameters, 67M of them in the fully connected layer
(Adam keeps two more copies), so it needs far more memory than the Context
Encoder but about the same time per step.

Laptop variant (a few minutes on 2 CPU cores, photos shipped with the
installed packages, the 128 px geometry, quarter-width networks):

  python -m launch.train --config=configs/nps_content.py:runlocal --workdir=/tmp/nps_content
"""

import ml_collections

from configs import context_encoder


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the NPS content-network config; `arg` may name a variant: 'runlocal'."""
    if arg not in (None, "", "runlocal"):
        raise ValueError(
            f"Unknown config variant {arg!r} for nps_content.py; use 'runlocal' or nothing."
        )
    config = context_encoder.get_config(arg)
    config.data.resize_range = (128, 128)  # whole photos scaled to 128 px, as NPS downsamples them.
    config.model.bottleneck = "dense"  # a standard fully connected layer (paper).
    config.model.encoder_activation = "elu"  # ELU in the encoder and bottleneck (paper).
    config.model.decoder_activation = "elu"  # ELU in the decoder (paper).
    return config
