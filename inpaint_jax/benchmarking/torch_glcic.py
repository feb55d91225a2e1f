"""A PyTorch implementation of GLCIC's completion network, for side-by-side checks and timing.

Torch is a test/benchmark extra: nothing imports this module unless asked
(`reference.torch_reference`, `launch.benchmark --compare-torch`, the tests).

The network is built from the same layer table as the Flax model
(`inpaint_jax.models.glcic.COMPLETION_LAYERS`) with the same conventions:
NCHW inside, but NHWC float32 numpy in and out at the boundary; Torch-style
padding (`dilation * (kernel - 1) // 2`; transposed 4x4 stride-2
convolutions with padding 1); BatchNorm (eps 1e-5) + ReLU after every layer
but the last, which has a bias and a sigmoid; holes filled with
`fill_value`, then the mask appended as a 4th channel.
`load_flax_variables` copies a Flax CompletionNetwork's parameters and batch
statistics into it, so both frameworks compute the same function.

`TorchReference` is what the benchmarks expect of a reference framework
(`reference.ReferenceFramework`): a forward pass and a
reconstruction-phase training step (masked MSE on the hole, Adadelta) as
no-argument callables ready to be timed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence

import numpy as np

# The reference runs on the CPU and never needs Triton. CUDA builds of torch
# (what pip installs on Python 3.12) import Triton when the first optimizer is
# made, and Triton's LLVM segfaults in a process that has loaded TensorFlow
# (tensorflow-datasets does). A `None` entry makes `import triton` fail cleanly,
# so torch runs without it.
sys.modules.setdefault("triton", None)

import torch  # noqa: E402  (after Triton is ruled out)
from torch import nn

from inpaint_jax.models import glcic, layers


class ReferenceMismatchError(ValueError):
    """Flax variables that do not fit the Torch network they are loaded into."""


def _torch_layer(spec: layers.LayerSpec, in_channels: int, out_channels: int, last: bool):
    """The Torch convolution of one COMPLETION_LAYERS entry, padded like the Flax one."""
    if spec.kind == "deconv":
        if (spec.kernel, spec.stride) != (4, 2):
            raise NotImplementedError("Only 4x4 stride-2 transposed convolutions are mirrored.")
        return nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=last)
    padding = spec.dilation * (spec.kernel - 1) // 2
    return nn.Conv2d(
        in_channels,
        out_channels,
        spec.kernel,
        stride=spec.stride,
        padding=padding,
        dilation=spec.dilation,
        bias=last,
    )


class CompletionNetwork(nn.Module):
    """GLCIC's completion network (paper Table 1) in Torch; see the module docstring."""

    def __init__(
        self,
        width_multiplier: float = 1.0,
        fill_value: Sequence[float] = layers.IMAGENET_MEAN_RGB,
    ):
        super().__init__()
        self.register_buffer("fill_value", torch.tensor(fill_value, dtype=torch.float32))
        blocks, in_channels = [], 4
        for index, spec in enumerate(glcic.COMPLETION_LAYERS, start=1):
            last = index == len(glcic.COMPLETION_LAYERS)
            out_channels = (
                spec.features if last else layers.scaled_width(spec.features, width_multiplier)
            )
            conv = _torch_layer(spec, in_channels, out_channels, last)
            if last:
                blocks.append(nn.Sequential(conv, nn.Sigmoid()))
            else:
                norm = nn.BatchNorm2d(out_channels, eps=1e-5, momentum=0.1)
                blocks.append(nn.Sequential(conv, norm, nn.ReLU(inplace=True)))
            in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """image (N, 3, H, W), mask (N, 1, H, W), 1 = hole -> prediction (N, 3, H, W)."""
        filled = image * (1 - mask) + self.fill_value.view(1, 3, 1, 1) * mask
        return self.blocks(torch.cat([filled, mask], dim=1))


def _copy(target: torch.Tensor, value: np.ndarray, name: str) -> None:
    """Copies `value` into `target`, or raises ReferenceMismatchError naming the layer."""
    value = np.array(value, dtype=np.float32, order="C")  # a writable, positive-stride copy
    if tuple(target.shape) != value.shape:
        raise ReferenceMismatchError(
            f"{name}: the Flax value has shape {value.shape}, the Torch layer expects "
            f"{tuple(target.shape)}; build the Torch network with the Flax model's "
            "width_multiplier."
        )
    with torch.no_grad():
        target.copy_(torch.from_numpy(value))


def load_flax_variables(network: CompletionNetwork, variables: Mapping) -> CompletionNetwork:
    """Copies a Flax CompletionNetwork's {'params', 'batch_stats'} into `network`; returns it.

    Flax kernels are (kh, kw, in, out); Torch convolutions want (out, in, kh,
    kw) and transposed convolutions (in, out, kh, kw) with the kernel flipped
    in space (Flax's ConvTranspose does not flip it, Torch's does).
    """
    params, stats = variables["params"], variables.get("batch_stats", {})
    for index, (spec, block) in enumerate(zip(glcic.COMPLETION_LAYERS, network.blocks), start=1):
        name = f"layer{index:02d}"
        if name not in params:
            raise ReferenceMismatchError(f"The Flax variables have no {name}; is this GLCIC?")
        conv, norm = block[0], block[1]
        kernel = np.asarray(params[name]["conv"]["kernel"])
        if spec.kind == "deconv":
            kernel = kernel[::-1, ::-1].transpose(2, 3, 0, 1)
        else:
            kernel = kernel.transpose(3, 2, 0, 1)
        _copy(conv.weight, kernel, f"{name}/conv/kernel")
        if conv.bias is not None:
            _copy(conv.bias, params[name]["conv"]["bias"], f"{name}/conv/bias")
        if isinstance(norm, nn.BatchNorm2d):
            _copy(norm.weight, params[name]["norm"]["scale"], f"{name}/norm/scale")
            _copy(norm.bias, params[name]["norm"]["bias"], f"{name}/norm/bias")
            _copy(norm.running_mean, stats[name]["norm"]["mean"], f"{name}/norm/mean")
            _copy(norm.running_var, stats[name]["norm"]["var"], f"{name}/norm/var")
    return network


def to_nchw(array: np.ndarray) -> torch.Tensor:
    """NHWC numpy -> contiguous NCHW float32 tensor."""
    return torch.from_numpy(
        np.ascontiguousarray(np.asarray(array, np.float32).transpose(0, 3, 1, 2))
    )


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum((p - t)**2 * mask) / (sum(mask) * C): `inpaint_jax.losses.masked_mse` in Torch."""
    weights = mask.expand_as(prediction)
    return (torch.square(prediction - target) * weights).sum() / weights.sum().clamp_min(1.0)


def adadelta(network: nn.Module, optimizer_config: Mapping) -> torch.optim.Adadelta:
    """Torch's Adadelta with a GLCIC `config.g_optimizer` (learning_rate, rho, eps)."""
    if optimizer_config["name"] != "adadelta":
        raise ValueError(
            f"The Torch reference mirrors GLCIC's Adadelta only, got optimizer "
            f"{optimizer_config['name']!r}."
        )
    return torch.optim.Adadelta(
        network.parameters(),
        lr=optimizer_config["learning_rate"],
        rho=optimizer_config["rho"],
        eps=optimizer_config["eps"],
    )


class TorchReference:
    """GLCIC's completion network in Torch, as `reference.ReferenceFramework` wants it.

    `num_threads` (default: every core) sets Torch's intra-op threads once.
    """

    families = ("glcic",)
    phase = "completion"

    def __init__(self, num_threads: int | None = None):
        torch.set_num_threads(num_threads or os.cpu_count() or 1)
        self.name = f"torch {torch.__version__}"
        self.num_threads = torch.get_num_threads()

    def completion_forward(
        self,
        variables: Mapping,
        *,
        width_multiplier: float,
        fill_value: Sequence[float],
        image: np.ndarray,
        mask: np.ndarray,
    ) -> Callable[[], np.ndarray]:
        """An eval-mode forward pass on NHWC `image`, `mask`; returns the NHWC prediction.

        The returned array is a view of Torch's output (no copy is timed).
        """
        network = load_flax_variables(CompletionNetwork(width_multiplier, fill_value), variables)
        network.eval()
        image_t, mask_t = to_nchw(image), to_nchw(mask)

        def forward() -> np.ndarray:
            with torch.inference_mode():
                return network(image_t, mask_t).permute(0, 2, 3, 1).numpy()

        return forward

    def completion_train_step(
        self,
        variables: Mapping,
        *,
        width_multiplier: float,
        fill_value: Sequence[float],
        optimizer_config: Mapping,
        image: np.ndarray,
        mask: np.ndarray,
    ) -> tuple[Callable[[], float], CompletionNetwork]:
        """GLCIC's completion phase: one Adadelta step on the masked MSE; returns the loss.

        Also returns the network being trained, so callers can read its weights.
        """
        network = load_flax_variables(CompletionNetwork(width_multiplier, fill_value), variables)
        network.train()
        optimizer = adadelta(network, optimizer_config)
        image_t, mask_t = to_nchw(image), to_nchw(mask)

        def train_step() -> float:
            optimizer.zero_grad(set_to_none=True)
            loss = masked_mse(network(image_t, mask_t), image_t, mask_t)
            loss.backward()
            optimizer.step()
            return loss.item()

        return train_step, network
