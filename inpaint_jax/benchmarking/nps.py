"""Seconds per image of multi-scale neural patch synthesis, per pyramid level and in all."""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import skimage.data

from inpaint_jax import inference, models, nps, windows
from inpaint_jax.benchmarking import inference as benchmark_inference
from inpaint_jax.benchmarking import measure
from inpaint_jax.models import vgg

logger = logging.getLogger(__name__)


def random_vgg19(seed: int = 0) -> tuple[vgg.VGG, Any]:
    """A full-size VGG-19 with random weights and its variables (the speed is ImageNet's)."""
    module = vgg.VGG(depth=19)
    init = jax.jit(module.init, static_argnames="taps")
    deepest = vgg.relu_tap_names(19)[-1]
    return module, init(jax.random.key(seed), jnp.zeros((1, 16, 16, 3)), taps=(deepest,))


def random_content_model(
    config: ml_collections.ConfigDict, *, seed: int = 0
) -> inference.InpaintingModel:
    """The network of a Context Encoder recipe (e.g. configs/nps_content.py), randomly initialised.

    Wrapped as `inference.load_model` wraps a trained one: a fixed-size model
    that inpaints any image through a window around its holes.
    """
    generator = models.build(config.model).generator
    inputs = models.example_inputs(config.model, generator.input_size).generator
    init = jax.jit(functools.partial(generator.init, train=False))
    variables = init(jax.random.key(seed), *inputs)
    return inference.InpaintingModel(config.model, generator, variables)


def nps_inputs(size: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's astronaut at size x size, float32 RGB, and a (size, size, 1) mask.

    The hole is the centred square of half the side: the paper's setting at
    512 px (a 256 x 256 hole).
    """
    photo = skimage.data.astronaut().astype(np.float32) / 255
    _, mask = benchmark_inference.inference_inputs(size, size)
    return windows.resize_image(photo, (size, size)), mask[0]


def _timed_synthesis(model: nps.NeuralPatchSynthesis, image, mask) -> tuple[nps.Synthesis, float]:
    """(model.synthesise(image, mask), its wall-clock seconds)."""
    start = time.perf_counter()
    synthesis = model.synthesise(image, mask)
    return synthesis, time.perf_counter() - start


def benchmark_nps(
    model: nps.NeuralPatchSynthesis, size: int, *, runs: int = 1, warmup: int = 1
) -> list[dict[str, Any]]:
    """Seconds per `size` x `size` image (`nps_inputs`) of neural patch synthesis.

    The first call compiles (one function per pyramid level, and the content
    model) and is the memory probe; its time is reported as
    `first_call_seconds` per stage and in all, and the part of it spent
    tracing, lowering and compiling as `compile_seconds` (`measure.compile_time`).
    After `warmup - 1` more untimed calls, `runs` calls are timed; per stage
    (content prediction, each level) and in all, `seconds` summarises them.
    """
    measure.check_counts(runs=runs, warmup=warmup)
    if not isinstance(size, int) or size < model.settings.min_size:
        raise measure.BenchmarkError(
            f"the NPS image side must be a number of pixels >= the settings' min_size "
            f"({model.settings.min_size}), got {size!r}."
        )
    image, mask = nps_inputs(size)
    with measure.compile_time() as compiling:
        (first, first_seconds), memory = measure.probe(lambda: _timed_synthesis(model, image, mask))
    for _ in range(warmup - 1):
        _timed_synthesis(model, image, mask)
    timed = [_timed_synthesis(model, image, mask) for _ in range(runs)]
    total = measure.Timing(tuple(seconds for _, seconds in timed))
    content = measure.Timing(tuple(synthesis.content_seconds for synthesis, _ in timed))
    levels = []
    for index, level in enumerate(timed[-1][0].levels):
        timing = measure.Timing(tuple(synthesis.levels[index].seconds for synthesis, _ in timed))
        levels.append(
            {
                "size": level.size,
                "iterations": level.iterations,
                "texture_layers": list(level.taps),
                "seconds": timing.to_json(),
                "first_call_seconds": first.levels[index].seconds,
                "energy": level.energy._asdict(),
            }
        )
        logger.info("NPS level %d (%d px): %.2f s", index + 1, level.size, timing.median)
    logger.info("NPS %dx%d: %.2f s per image", size, size, total.median)
    return [
        {
            "image_size": size,
            "hole_size": size // 2,
            "window_side": first.window.side,
            "settings": dataclasses.asdict(model.settings),
            "content": {
                "size": model.settings.content_size,
                "seconds": content.to_json(),
                "first_call_seconds": first.content_seconds,
            },
            "levels": levels,
            "seconds": total.to_json(),
            "first_call_seconds": first_seconds,
            "compile_seconds": compiling["compile_seconds"],
            "memory": memory,
        }
    ]
