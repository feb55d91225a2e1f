"""A reference implementation of GLCIC's completion network in another framework.

`launch.benchmark --compare-torch` times it beside JAX on the same weights
and input (`torch_glcic.TorchReference`, loaded by `torch_reference`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

# Above this max |JAX - reference| the two outputs are flagged as disagreeing.
AGREEMENT_TOLERANCE = 1e-3


class ReferenceFramework(Protocol):
    """GLCIC's completion network in another framework (`torch_glcic`).

    Both methods take the Flax variables ({'params', 'batch_stats'}) of a
    GLCIC CompletionNetwork, copy them into the other framework's network and
    return a no-argument function ready to be timed.
    """

    name: str  # e.g. "torch 2.13.0"
    num_threads: int  # intra-op threads it runs with
    families: tuple[str, ...]  # model families it implements: ("glcic",)
    phase: str  # the training phase `completion_train_step` runs: "completion"

    def completion_forward(
        self, variables, *, width_multiplier, fill_value, image, mask
    ) -> Callable[[], np.ndarray]:
        """Eval-mode forward pass on NHWC numpy inputs; the function returns the NHWC output."""

    def completion_train_step(
        self, variables, *, width_multiplier, fill_value, optimizer_config, image, mask
    ) -> tuple[Callable[[], float], Any]:
        """GLCIC's completion-phase step (masked MSE, the config's Adadelta).

        Returns (step function returning the loss, the network being trained).
        """


def torch_reference(threads: int | None = None) -> ReferenceFramework:
    """The PyTorch reference (`torch_glcic.TorchReference`) on `threads` CPU threads (default all).

    Raises ImportError naming the extra to install when torch is missing.
    """
    if importlib.util.find_spec("torch") is None:
        raise ImportError("the PyTorch reference needs torch, a test extra: "
                          "pip install -e '.[test]'")
    from inpaint_jax.benchmarking import torch_glcic  # noqa: PLC0415  (torch is optional)

    return torch_glcic.TorchReference(threads)
