"""Multi-scale Neural Patch Synthesis (Yang et al., CVPR 2017): the texture optimisation.

    content_model = inference.load_model("/tmp/nps_content")     # any project model
    texture_net, vgg_variables = weights.vgg.load_vgg("vgg19.npz", depth=19)
    nps_model = nps.NeuralPatchSynthesis(content_model, texture_net, vgg_variables)
    result = inference.inpaint(nps_model, image, mask)          # known pixels bit-exact

`NeuralPatchSynthesis` is a callable (image, mask) -> prediction like
`inference.InpaintingModel`, so `inference.inpaint` validates, composites and
post-processes its output as for any network.

What happens to one image (the paper's 512x512 image with a 256x256 hole is
the running example):

* Working window. One bounding box covers every hole. A square window
  centred on it, with twice the box's longer side (at least
  `NPSSettings.min_size` pixels, rounded up to a multiple of 4:
  `windows.hole_window`), is cropped; where it leaves the image it is
  padded by mirror reflection, holes included (the paper centres the hole and
  pads). The hole's box thus fills at most the central half of the window, the
  region a Context Encoder-style content network predicts. Scattered holes
  give one large window rather than one per hole: simple and exact, but the
  work grows with the holes' spread (see `max_working_size`).
* Pyramid. `num_scales` levels, each twice the side of the one before, the
  finest being the window (512 -> 128, 256, 512). Levels smaller than
  `min_size` are left out. A window larger than `max_working_size` is worked
  on at that size and its filled hole scaled up (bicubic) at the end. At
  each level the known pixels are the window scaled down (area averaging)
  and the hole is every pixel that overlaps a hole at all.
* Content. The content network sees the window scaled to `content_size`
  (128) with the scaled mask (a fixed-size content network, such as the NPS
  content net loaded by `inference.load_model`, then predicts the central
  half, where the hole is); its prediction, scaled to the coarsest level,
  initialises the hole there and is the content target. At each finer level
  the previous level's result, scaled up (bilinear), is both the
  initialisation and the content target, as in the paper.
* Energy at each level, for the image x whose hole pixels are optimised:
    E(x) = content(x) + texture_weight * texture(x) + tv_weight * TV(x)
  - content: mean squared difference to the content target over the hole
    (`losses.masked_mse`, pixel values in [0, 1]);
  - texture: for each layer of `texture_layers` (VGG relu3_1 and relu4_1),
    every 3x3xC feature patch centred in the hole (the pixel hole max-pooled
    like the network, so any overlap counts) is matched to the most similar
    patch (cosine similarity, i.e. normalised cross-correlation) among the
    patches lying entirely outside it, and the mean over hole patches of the
    squared distance to that match is taken (the paper's texture term; the
    match is a constant target, as in CNNMRF and the released code). Each
    layer's term is divided by the mean squared norm of its outside patches
    in the level's initial image, so that it is a relative error whatever
    the VGG weights' scale (torchvision's and Caffe's features differ by
    orders of magnitude) and `texture_weight` is a plain number; the layers'
    terms are summed. Matches are recomputed at every evaluation, as one
    batched matrix product of hole patches against outside patches (in
    chunks of `chunk_size` hole patches);
  - TV: `losses.total_variation` over the pixel pairs touching the hole.
  Outside patches are sampled every `source_stride` positions, as the
  released code does (stride 2; 1 searches all of them).
* Optimiser. Adam (`optax.adam`, step size `learning_rate` in pixel units)
  for `iterations` steps per level (the released code: 100 at each of 3
  levels), all steps in one `jax.lax.fori_loop` inside one jitted function
  per level, compiled once per window and hole size: one energy gradient per
  step. The paper uses L-BFGS, but `optax.lbfgs` with its zoom line search
  was slow and unreliable here: nearest-neighbour switches make the energy
  jump, so the Wolfe conditions failed at most trial steps (4 evaluations per
  step with the search capped at 5) and a 128 px level once ended above its
  starting energy. Fixed-step L-BFGS (the released code's) and Adam both cost
  one evaluation per step; Adam reached the lower energy in each comparison
  (64 and 128 px levels, flat and Telea initialisations, 100 steps).

Weights. The paper's alpha and beta could not be checked here, and the released
code (github.com/leehomyc/Faster-High-Res-Neural-Inpainting, built on CNNMRF)
weights gradients of Caffe-scale features (1e-4 per texture layer, TV 1e-4 on
0-255 pixels, content on VGG relu4_2 features), which does not carry over to
the pixel-space energy above. The defaults were chosen by looking at results
with a random-weight VGG-19, as no ImageNet weights were at hand: the texture
term visibly reshapes a flat content prediction while the content term keeps
its layout, and TV damps single-pixel noise. Tune them with real weights; each
level's log line gives the three terms.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from typing import NamedTuple

import cv2
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from inpaint_jax import image_io, inference, losses, windows
from inpaint_jax.models import layers, vgg

logger = logging.getLogger(__name__)

# Side, in feature positions, of the patches the texture term compares.
PATCH_SIZE = 3
# Guards divisions by a patch norm or a feature energy that may be zero.
_EPSILON = 1e-8


class NPSSettingsError(ValueError):
    """NPSSettings with values the optimisation cannot use."""


@dataclasses.dataclass(frozen=True)
class NPSSettings:
    """How `NeuralPatchSynthesis` fills a hole; see the module docstring.

    Attributes:
      num_scales: levels of the pyramid, coarsest first, each twice the side
        of the one before (the paper: 3, 128 -> 256 -> 512 px).
      iterations: optimiser steps at each level: one number for every level,
        or one per level from the coarsest (the released code: 100 each).
      learning_rate: Adam's step size, in pixel values ([0, 1] scale).
      texture_weight: alpha, the weight of the (relative) texture term.
      tv_weight: beta, the weight of the total variation term.
      texture_layers: VGG taps whose patches the texture term matches.
      source_stride: outside patches are taken every this many positions.
      content_size: side of the square image the content model is given.
      min_size: smallest working side, in pixels; also the smallest window.
      max_working_size: largest working side; larger windows are worked on at
        this size and their result scaled up.
      chunk_size: hole patches per nearest-neighbour matrix product.
    """

    num_scales: int = 3
    iterations: int | tuple[int, ...] = 100
    learning_rate: float = 0.03
    texture_weight: float = 0.05
    tv_weight: float = 0.05
    texture_layers: tuple[str, ...] = ("relu3_1", "relu4_1")
    source_stride: int = 2
    content_size: int = 128
    min_size: int = 64
    max_working_size: int = 1024
    chunk_size: int = 4096

    def __post_init__(self):
        problems = []
        integers = {
            "num_scales": 1, "source_stride": 1, "content_size": 1, "chunk_size": 1,
            "min_size": 4 * PATCH_SIZE,
        }
        for name, least in integers.items():
            value = getattr(self, name)
            if not isinstance(value, int) or value < least:
                problems.append(f"{name} must be an integer >= {least}, got {value!r}")
        if not isinstance(self.max_working_size, int) or (
                isinstance(self.min_size, int) and self.max_working_size < self.min_size):
            problems.append(f"max_working_size must be an integer >= min_size ({self.min_size}), "
                            f"got {self.max_working_size!r}")
        counts = self.iterations if isinstance(self.iterations, tuple) else (self.iterations,)
        if (not all(isinstance(n, int) and n >= 0 for n in counts)
                or (isinstance(self.iterations, tuple) and len(counts) != self.num_scales)):
            problems.append(f"iterations must be an integer >= 0 or a tuple of num_scales "
                            f"({self.num_scales}) of them, got {self.iterations!r}")
        for name in ("texture_weight", "tv_weight", "learning_rate"):
            if not np.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                problems.append(f"{name} must be a finite number >= 0, got {getattr(self, name)!r}")
        if isinstance(self.texture_layers, str) or not self.texture_layers:
            problems.append(f"texture_layers must be a non-empty tuple of VGG tap names such as "
                            f"('relu3_1', 'relu4_1'), got {self.texture_layers!r}")
        if problems:
            raise NPSSettingsError("Invalid NPS settings: " + "; ".join(problems) + ".")

    def iterations_per_level(self) -> tuple[int, ...]:
        """Iterations at each of the `num_scales` levels, coarsest first."""
        if isinstance(self.iterations, tuple):
            return self.iterations
        return (self.iterations,) * self.num_scales


# --------------------------------------------------------------------------- geometry


def pyramid_sizes(side: int, settings: NPSSettings) -> list[int]:
    """Working sides of the pyramid levels for a `side`-pixel window, coarsest first."""
    sizes = [round(side / 2 ** level) for level in reversed(range(settings.num_scales))]
    return [size for size in sizes if size >= settings.min_size] or [side]


# --------------------------------------------------------------------------- texture term


def pooled_hole(hole: np.ndarray, texture_net: vgg.VGG, tap: str) -> np.ndarray:
    """The (H, W) pixel hole at the resolution of `tap`: pooled (any overlap) like the network."""
    layer_names = vgg.tap_names(texture_net.depth)
    pools = sum(layer.kind == "pool" for layer in vgg.vgg_layers(texture_net.depth)
                [:layer_names.index(tap)])
    for _ in range(pools):
        height, width = hole.shape[0] // 2 * 2, hole.shape[1] // 2 * 2
        hole = hole[:height, :width].reshape(height // 2, 2, width // 2, 2).any(axis=(1, 3))
    return hole


def patch_positions(hole: np.ndarray, source_stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat positions (row * w + column) of the 3x3 patches of an (h, w) feature map.

    Returns (hole positions: every patch centred in the hole, source
    positions: patches lying entirely inside the map and outside the hole,
    every `source_stride` rows and columns), as int32 arrays.
    """
    height, width = hole.shape
    radius = PATCH_SIZE // 2
    touches_hole = cv2.dilate(hole.astype(np.uint8), np.ones((PATCH_SIZE,) * 2, np.uint8)) > 0
    rows, columns = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    sampled = ((rows - radius) % source_stride == 0) & ((columns - radius) % source_stride == 0)
    inside = ((rows >= radius) & (rows < height - radius)
              & (columns >= radius) & (columns < width - radius))
    source = inside & sampled & ~touches_hole
    return (np.flatnonzero(hole).astype(np.int32), np.flatnonzero(source).astype(np.int32))


# --------------------------------------------------------------------------- one level


@flax.struct.dataclass
class ScaleProblem:
    """One pyramid level: what is known, where the hole is, what the content says.

    Images are (1, S, S, 3) and the mask (1, S, S, 1), 1 = hole. `taps` are
    the texture layers that have both hole and outside patches at this size;
    `hole_positions` and `source_positions` hold their patch positions.
    """

    known: jax.Array
    mask: jax.Array
    content: jax.Array
    hole_positions: tuple[jax.Array, ...]
    source_positions: tuple[jax.Array, ...]
    taps: tuple[str, ...] = flax.struct.field(pytree_node=False)


def build_scale_problem(known: np.ndarray, hole: np.ndarray, content: np.ndarray,
                        texture_net: vgg.VGG, settings: NPSSettings) -> ScaleProblem:
    """The ScaleProblem for (S, S, 3) `known` and `content` images and an (S, S) boolean hole."""
    taps, holes, sources = [], [], []
    for tap in settings.texture_layers:
        hole_positions, source_positions = patch_positions(
            pooled_hole(hole, texture_net, tap), settings.source_stride)
        if hole_positions.size and source_positions.size:
            taps.append(tap)
            holes.append(jnp.asarray(hole_positions))
            sources.append(jnp.asarray(source_positions))
        else:
            logger.debug("No %s patches %s at %d px; the texture term leaves %s out.", tap,
                         "in the hole" if source_positions.size else "outside the hole",
                         hole.shape[0], tap)
    mask = hole.astype(np.float32)[None, ..., None]
    return ScaleProblem(known=jnp.asarray(known[None]), mask=jnp.asarray(mask),
                        content=jnp.asarray(content[None]), hole_positions=tuple(holes),
                        source_positions=tuple(sources), taps=tuple(taps))


def _texture_features(image, problem: ScaleProblem, texture_net: vgg.VGG, variables):
    """The (H, W, C) feature map of each texture layer of `problem`, for an (1, S, S, 3) image."""
    if not problem.taps:
        return ()
    features = texture_net.apply(variables, image, problem.taps)
    return tuple(features[tap][0] for tap in problem.taps)


def texture_scales(image, problem: ScaleProblem, texture_net: vgg.VGG, variables) -> jax.Array:
    """Per texture layer, the mean squared norm of the outside patches of `image`.

    The texture term of `scale_energy` divides each layer's loss by this
    (taken from the level's initial image) to make it a relative error.
    """
    features = _texture_features(image, problem, texture_net, variables)
    return jnp.stack([
        jnp.mean(jnp.sum(jnp.square(losses.extract_patches(feature, PATCH_SIZE)[positions]),
                         axis=1)) + _EPSILON
        for feature, positions in zip(features, problem.source_positions)
    ] or [jnp.ones(())])


class Energy(NamedTuple):
    """The terms of the energy of one image (each already a mean, unweighted)."""

    total: jax.Array
    content: jax.Array
    texture: jax.Array
    tv: jax.Array


def scale_energy(image, problem: ScaleProblem, texture_net: vgg.VGG, variables,
                 scales: jax.Array, texture_weight, tv_weight, chunk_size: int = 4096) -> Energy:
    """E = content + texture_weight * texture + tv_weight * TV for a (1, S, S, 3) image.

    Only the hole pixels of `image` count: the known pixels are taken from
    `problem.known`. `scales` comes from `texture_scales`.
    """
    image = layers.composite(problem.known, image, problem.mask)
    content = losses.masked_mse(image, problem.content, problem.mask)
    tv = losses.total_variation(image, problem.mask)
    features = _texture_features(image, problem, texture_net, variables)
    texture = sum((losses.patch_texture_loss(feature, holes, sources, chunk_size, PATCH_SIZE) / scale
                   for feature, holes, sources, scale in zip(
                       features, problem.hole_positions, problem.source_positions, scales)),
                  start=jnp.zeros(()))
    total = content + texture_weight * texture + tv_weight * tv
    return Energy(total, content, texture, tv)


class ScaleResult(NamedTuple):
    """`optimise_scale`'s result: the (1, S, S, 3) image and its Energy."""

    image: jax.Array
    energy: Energy


@functools.partial(jax.jit, static_argnames=("texture_net", "chunk_size"))
def optimise_scale(problem: ScaleProblem, init, texture_net: vgg.VGG, variables, texture_weight,
                   tv_weight, learning_rate, iterations, chunk_size: int = 4096) -> ScaleResult:
    """Minimises `scale_energy` over the hole pixels with Adam, starting from `init`.

    One compiled function runs all `iterations` steps (`jax.lax.fori_loop`);
    the texture scales are taken from `init`. The result is composited with
    the known pixels and clipped to [0, 1]; its energy costs one more evaluation.
    """
    scales = texture_scales(init, problem, texture_net, variables)
    terms = functools.partial(scale_energy, problem=problem, texture_net=texture_net,
                              variables=variables, scales=scales, texture_weight=texture_weight,
                              tv_weight=tv_weight, chunk_size=chunk_size)
    gradient = jax.grad(lambda image: terms(image).total)
    solver = optax.adam(learning_rate)

    def step(_, carry):
        image, state = carry
        updates, state = solver.update(gradient(image), state)
        return optax.apply_updates(image, updates), state

    image, _ = jax.lax.fori_loop(0, iterations, step, (init, solver.init(init)))
    final = jnp.clip(layers.composite(problem.known, image, problem.mask), 0, 1)
    return ScaleResult(final, terms(final))


# --------------------------------------------------------------------------- the method


class ContentPredictionError(ValueError):
    """The content model returned something other than an image of its input's size."""


class LevelReport(NamedTuple):
    """What one pyramid level of `NeuralPatchSynthesis.synthesise` did.

    `seconds` is the level's wall-clock time, from scaling its inputs to its
    result on the host (on the first image of a window size, XLA compilation
    included); `energy` holds plain floats.
    """

    size: int
    iterations: int
    taps: tuple[str, ...]
    seconds: float
    energy: Energy


class Synthesis(NamedTuple):
    """`NeuralPatchSynthesis.synthesise`'s result.

    `image` is what calling the model returns; `window` the working window
    (None when the mask has no hole); `content_seconds` the time of the
    content model's prediction; `levels` one LevelReport per level, coarsest first.
    """

    image: np.ndarray
    window: windows.Window | None
    content_seconds: float
    levels: tuple[LevelReport, ...]


class NeuralPatchSynthesis:
    """Inpainting by multi-scale neural patch synthesis; callable like an InpaintingModel.

    Args:
      content_model: a callable (image (S, S, 3), mask (S, S, 1)) -> raw
        prediction (S, S, 3), run at S = `settings.content_size`: the NPS
        content network (`inference.load_model` of a `configs/nps_content.py`
        workdir), or any other project model (GLCIC, PGGAN, ...).
      texture_net: the VGG module (`weights.vgg.load_vgg`; the paper uses VGG-19).
      vgg_variables: its variables.
      settings: see NPSSettings.
    """

    def __init__(self, content_model: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 texture_net: vgg.VGG, vgg_variables, settings: NPSSettings = NPSSettings()):
        unknown = set(settings.texture_layers) - set(vgg.tap_names(texture_net.depth))
        if unknown:
            raise NPSSettingsError(
                f"texture_layers {sorted(unknown)} are not VGG-{texture_net.depth} taps; "
                f"choose from {', '.join(vgg.relu_tap_names(texture_net.depth))}.")
        self.content_model = content_model
        self.texture_net = texture_net
        self.vgg_variables = vgg_variables
        self.settings = settings

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The image (H, W, 3) with its holes synthesised; known pixels are `image`'s.

        `image` is float RGB in [0, 1]; `mask` (H, W, 1) or (H, W), 1 = hole,
        validated like `image_io.validate_mask`.
        """
        return self.synthesise(image, mask).image

    def synthesise(self, image: np.ndarray, mask: np.ndarray) -> Synthesis:
        """Like calling the model, but also reports the time and energy of each stage."""
        image = inference.check_image(image)
        hole = image_io.validate_mask(mask, "mask", expected_shape=image.shape[:2])[..., 0] > 0
        if not hole.any():
            return Synthesis(image.copy(), None, 0.0, ())
        window = windows.hole_window(hole, self.settings.min_size)
        window_image, window_hole = windows.crop(image, window), windows.crop(hole, window)
        working_side = min(window.side, self.settings.max_working_size)
        sizes = pyramid_sizes(working_side, self.settings)
        iterations = self.settings.iterations_per_level()[-len(sizes):]
        start = time.perf_counter()
        result = self._predict_content(window_image, window_hole)
        content_seconds = time.perf_counter() - start
        levels = []
        for size, steps in zip(sizes, iterations):
            start = time.perf_counter()
            known = windows.resize_image(window_image, (size, size))
            level_hole = windows.resize_hole(window_hole, (size, size))
            init = layers.composite(known, windows.resize_image(result, (size, size)),
                                    level_hole[..., None].astype(np.float32))
            problem = build_scale_problem(known, level_hole, init, self.texture_net,
                                          self.settings)
            outcome = optimise_scale(problem, jnp.asarray(init[None]), self.texture_net,
                                     self.vgg_variables, self.settings.texture_weight,
                                     self.settings.tv_weight, self.settings.learning_rate, steps,
                                     self.settings.chunk_size)
            result = np.asarray(outcome.image[0])
            levels.append(LevelReport(size, steps, problem.taps, time.perf_counter() - start,
                                      Energy(*(float(term) for term in outcome.energy))))
            self._log_level(len(levels), len(sizes), levels[-1])
        if working_side != window.side:
            result = windows.resize_image(result, (window.side, window.side),
                                          upsample=cv2.INTER_CUBIC)
        return Synthesis(windows.paste(image, window, result), window, content_seconds,
                         tuple(levels))

    def _log_level(self, level: int, count: int, report: LevelReport) -> None:
        """Logs one level's time and energy terms."""
        energy = report.energy
        logger.info("NPS level %d/%d (%d px, texture layers %s): %d iterations in %.1f s; "
                    "energy %.4g = content %.4g + texture %.4g x %g + TV %.4g x %g.", level,
                    count, report.size, ", ".join(report.taps) or "none", report.iterations,
                    report.seconds, energy.total, energy.content, energy.texture,
                    self.settings.texture_weight, energy.tv, self.settings.tv_weight)

    def _predict_content(self, window_image: np.ndarray, window_hole: np.ndarray) -> np.ndarray:
        """The content model's completion of the window, at `content_size`."""
        size = self.settings.content_size
        small_image = windows.resize_image(window_image, (size, size))
        small_mask = windows.resize_hole(window_hole, (size, size))[..., None].astype(np.float32)
        prediction = np.asarray(self.content_model(small_image, small_mask), np.float32)
        if prediction.shape != small_image.shape or not np.all(np.isfinite(prediction)):
            raise ContentPredictionError(
                f"the content model must return a finite ({size}, {size}, 3) image for a "
                f"{size}x{size} input, got shape {prediction.shape}"
                + ("" if prediction.shape != small_image.shape else " with NaN or Inf values")
                + "; pass a model loaded with inference.load_model, or fix the callable.")
        return layers.composite(small_image, np.clip(prediction, 0, 1), small_mask)
