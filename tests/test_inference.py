"""Tests for inpaint_jax.inference with the tiny trained GLCIC of the `glcic_workdir` fixture."""

import ast
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import jax
import numpy as np
import pytest
import skimage.data
from PIL import Image

from configs import glcic as glcic_config
from configs import pggan as pggan_config
from inpaint_jax import checkpointing, image_io, inference, models, windows
from inpaint_jax.models import glcic

pytestmark = pytest.mark.fast_compile  # tiny networks: compiling dominates

REPO = Path(__file__).resolve().parents[1]


def photo(height: int, width: int) -> np.ndarray:
    """scikit-image's astronaut resized to height x width, float32 RGB from 8-bit values."""
    pixels = cv2.resize(skimage.data.astronaut(), (width, height), interpolation=cv2.INTER_AREA)
    return pixels.astype(np.float32) / 255


def two_holes(height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width, 1), np.float32)
    mask[height // 8: height // 3, width // 8: width // 3] = 1
    mask[height // 2: height - height // 6, width // 2: width - width // 5] = 1
    return mask


@pytest.fixture(scope="module")
def model(glcic_workdir):
    return inference.load_model(glcic_workdir)


def assert_known_pixels_kept_and_holes_filled(result, image, mask):
    known = mask[..., 0] == 0
    assert result.shape == image.shape and result.dtype == np.float32
    np.testing.assert_array_equal(result[known], image[known])
    assert np.abs(result[~known] - image[~known]).mean() > 0.01


def test_odd_sized_photo_round_trips_with_known_pixels_exact(model):
    image, mask = photo(333, 517), two_holes(333, 517)
    result = inference.inpaint(model, image, mask)
    assert_known_pixels_kept_and_holes_filled(result, image, mask)


def test_8bit_file_written_back_keeps_the_bytes_of_known_pixels(model, tmp_path):
    pixels = cv2.resize(skimage.data.astronaut(), (61, 45), interpolation=cv2.INTER_AREA)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    mask = two_holes(45, 61)

    result = inference.inpaint(model, image_io.read_image(tmp_path / "photo.png"), mask)
    image_io.write_image(tmp_path / "result.png", result)

    written = np.asarray(Image.open(tmp_path / "result.png"))
    known = mask[..., 0] == 0
    np.testing.assert_array_equal(written[known], pixels[known])
    assert np.any(written[~known] != pixels[~known])


def test_load_model_takes_a_workdir_its_checkpoints_or_one_step(model, glcic_workdir):
    assert (model.name, model.step) == ("glcic", 6)
    assert model.size_multiple == glcic.COMPLETION_SIZE_MULTIPLE
    assert model.training_config.trainer == "glcic"
    assert model.model_config.family == "glcic"
    assert model.model_config.width_multiplier == model.training_config.model.width_multiplier
    checkpoints = Path(glcic_workdir) / "checkpoints"
    assert inference.load_model(checkpoints).step == 6
    older = inference.load_model(checkpoints / "3")
    assert older.step == 3

    image, mask = photo(24, 32), two_holes(24, 32)
    assert not np.array_equal(older(image, mask), model(image, mask))  # other parameters


def test_one_compilation_per_padded_shape_bucket(glcic_workdir):
    model = inference.load_model(glcic_workdir)  # fresh: nothing compiled yet
    sizes = [(20, 30), (19, 29), (17, 31), (40, 40), (37, 38), (65, 70), (18, 32)]
    for height, width in sizes:
        prediction = model(photo(height, width), two_holes(height, width))
        assert prediction.shape == (height, width, 3)
        assert np.all((prediction >= 0) & (prediction <= 1))

    buckets = [inference.padded_shape(h, w, model.size_multiple) for h, w in sizes]
    assert model.compiled_shapes == tuple(dict.fromkeys(buckets))
    assert len(model.compiled_shapes) == 3


def test_padded_shape_buckets_are_few_and_tight():
    sides = range(1, 4097)
    buckets = [inference.padded_shape(side, side, 4)[0] for side in sides]
    for side, bucket in zip(sides, buckets):
        assert bucket % 4 == 0 and side <= bucket < side + side / 8 + 4
    for octave in range(5, 12):  # sides in (2**octave, 2**(octave + 1)]
        assert len({b for s, b in zip(sides, buckets) if 2**octave < s <= 2**(octave + 1)}) == 8
    assert inference.padded_shape(333, 517, 4) == (352, 576)


def test_empty_mask_returns_the_image_with_a_warning(model, caplog):
    image = photo(20, 24)
    with caplog.at_level(logging.WARNING):
        result = inference.inpaint(model, image, np.zeros((20, 24, 1), np.float32))
    np.testing.assert_array_equal(result, image)
    assert "no hole" in caplog.text


def test_large_hole_warns_that_the_mask_may_be_inverted(model, caplog):
    mask = np.ones((20, 24, 1), np.float32)
    mask[:6] = 0
    with caplog.at_level(logging.WARNING):
        inference.inpaint(model, photo(20, 24), mask)
    assert "70%" in caplog.text and "invert" in caplog.text


def test_mask_errors_are_explained(model):
    with pytest.raises(image_io.MaskError, match="every pixel"):
        inference.inpaint(model, photo(20, 24), np.ones((20, 24, 1), np.float32))
    with pytest.raises(image_io.MaskError, match=r"21x24 .* 20x24"):
        inference.inpaint(model, photo(20, 24), np.zeros((21, 24, 1), np.float32))


@pytest.mark.parametrize("image, message", [
    (np.zeros((8, 8, 3), np.uint8), "divide 8-bit images by 255"),
    (np.zeros((8, 8), np.float32), r"shape \(height, width, 3\)"),
    (np.zeros((8, 8, 4), np.float32), "image_io.read_image converts"),
    (np.full((8, 8, 3), 255.0, np.float32), r"in \[0, 1\]"),
], ids=["uint8", "grey", "rgba", "0-255 floats"])
def test_bad_image_arrays_are_explained(model, image, message):
    mask = np.zeros((8, 8, 1), np.float32)
    mask[2:4, 2:4] = 1
    with pytest.raises(inference.InvalidImageError, match=message):
        inference.inpaint(model, image, mask)


class ConstantModel:
    """Predicts one grey level everywhere; records the sizes it is called with."""

    def __init__(self, value):
        self.value = value
        self.sizes = []

    def __call__(self, image, mask):
        self.sizes.append(image.shape[:2])
        return np.full(image.shape, self.value, np.float32)


def test_max_size_runs_small_and_no_colour_from_under_the_holes_leaks():
    height, width = 97, 131
    image = np.full((height, width, 3), 0.5, np.float32)
    mask = np.zeros((height, width), np.uint8)
    cv2.circle(mask, (40, 50), 15, 1, thickness=-1)
    mask[10, 60:120] = 1  # one pixel thin: shrinks below one pixel
    mask[70:73, 90:93] = 1
    image[mask == 1] = (1.0, 0.0, 1.0)  # magenta under the holes must not show
    network = ConstantModel(0.25)  # grey, like the known pixels

    hole = mask == 1
    result = inference.inpaint(network, image, hole, max_size=40)

    assert network.sizes == [(30, 40)]
    np.testing.assert_array_equal(result[~hole], image[~hole])
    # Hole pixels mix the grey prediction and grey known neighbours only: no magenta.
    np.testing.assert_array_equal(result[..., 0], result[..., 1])
    assert result[hole].mean() < 0.4


def test_max_size_with_the_model_keeps_known_pixels(model):
    image, mask = photo(60, 90), two_holes(60, 90)
    result = inference.inpaint(model, image, mask, max_size=32)
    assert_known_pixels_kept_and_holes_filled(result, image, mask)


def test_max_size_errors_are_explained():
    image = np.full((40, 40, 3), 0.5, np.float32)
    stripes = np.zeros((40, 40), np.float32)
    stripes[:, ::3] = 1  # a third of the pixels, but every downscaled pixel touches one
    with pytest.raises(image_io.MaskError, match="larger max_size"):
        inference.inpaint(ConstantModel(0.2), image, stripes, max_size=10)
    with pytest.raises(ValueError, match="max_size must be a positive"):
        inference.inpaint(ConstantModel(0.2), image, stripes, max_size=0)


def test_postprocess_option_blends_the_holes(model):
    image, mask = photo(48, 64), two_holes(48, 64)
    raw = inference.inpaint(model, image, mask)
    blended = inference.inpaint(model, image, mask, postprocess=True)
    assert_known_pixels_kept_and_holes_filled(blended, image, mask)
    assert np.abs(blended - raw)[mask[..., 0] == 1].mean() > 0.01


def write_generator_checkpoint(workdir: Path, model_config, step: int, config=None, seed=0):
    """A checkpoint of a randomly initialised `models.build(model_config)` generator alone.

    What importing released weights writes: the generator's variables and its
    model config (plus `config`, a training config, if given). Returns
    (generator module, its variables).
    """
    generator = models.build(model_config).generator
    inputs = models.example_inputs(model_config, 32).generator
    variables = jax.jit(lambda rng: generator.init(rng, *inputs, train=False))(
        jax.random.key(seed))
    variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    with checkpointing.Checkpointer(workdir / "checkpoints", async_save=False) as checkpointer:
        checkpointer.save(step, generator=variables, model_config=model_config.to_dict(),
                          config=config, force=True)
    return generator, variables


def test_generators_declaring_their_size_multiple_load_without_a_table_entry(tmp_path):
    config = pggan_config.get_config("runlocal")
    config.model.update(preset="PGGAN-Res", num_blocks=1, width_multiplier=0.125)
    generator, _ = write_generator_checkpoint(tmp_path, config.model, 1, config=config.to_dict())

    model = inference.load_model(tmp_path)

    assert not hasattr(inference, "FAMILY_SIZE_MULTIPLES")  # no table: the generator says
    assert (model.name, model.size_multiple) == ("pggan", generator.size_multiple)
    assert model.size_multiple == 8  # three down-samplings: not GLCIC's 4
    assert model.training_config.trainer == "pggan"
    image, mask = photo(37, 53), two_holes(37, 53)
    assert_known_pixels_kept_and_holes_filled(inference.inpaint(model, image, mask), image, mask)
    assert model.compiled_shapes == ((40, 56),)


def test_imported_generator_alone_loads_without_a_training_config(tmp_path):
    model_config = glcic_config.get_config("runlocal").model
    model_config.width_multiplier = 0.125
    generator, variables = write_generator_checkpoint(tmp_path / "imported", model_config, 0,
                                                      seed=3)
    assert not (tmp_path / "imported" / "checkpoints" / "0" / "state").exists()

    model = inference.load_model(tmp_path / "imported")

    assert (model.name, model.step, model.training_config) == ("glcic", 0, None)
    assert model.model_config.to_dict() == json.loads(json.dumps(model_config.to_dict()))
    image, mask = photo(24, 32), two_holes(24, 32)
    expected = generator.apply(variables, image[None], mask[None], train=False)[0]
    np.testing.assert_allclose(model(image, mask), expected, atol=1e-6)
    assert_known_pixels_kept_and_holes_filled(inference.inpaint(model, image, mask), image, mask)


def copy_of_checkpoint(glcic_workdir, destination: Path, item: str, edit) -> Path:
    """A copy of checkpoint step 6 whose <item>/<item>.json text is replaced by edit(text)."""
    step = destination / "checkpoints" / "6"
    shutil.copytree(Path(glcic_workdir) / "checkpoints" / "6", step)
    json_file = step / item / f"{item}.json"
    json_file.write_text(edit(json_file.read_text()))
    return destination


def edit_json(**changes):
    def edit(text):
        config = json.loads(text)
        for key, value in changes.items():
            *parents, leaf = key.split(".")
            node = config
            for parent in parents:
                node = node[parent]
            if value is None:
                del node[leaf]
            else:
                node[leaf] = value
        return json.dumps(config)
    return edit


def truncate(text):
    return text[: len(text) // 2]


@pytest.mark.parametrize("item, edit, message", [
    ("model_config", edit_json(family="pix2pix"), "model family 'pix2pix' is not one of"),
    ("model_config", edit_json(family=None), "model family None is not one of"),
    ("model_config", truncate, "cannot read the model config .* damaged"),
    ("config", truncate, "cannot read the config .* damaged"),
    ("model_config", edit_json(width_multiplier=None),
     "cannot build the model .* glcic model config lacks a field"),
    ("model_config", edit_json(width_multiplier=0.25), "does not fit the glcic model"),
], ids=["unknown family", "no family", "truncated model config", "truncated config",
        "missing field", "other architecture"])
def test_checkpoints_that_do_not_make_a_model_are_explained(glcic_workdir, tmp_path, item, edit,
                                                             message):
    workdir = copy_of_checkpoint(glcic_workdir, tmp_path, item, edit)
    with pytest.raises(inference.ModelLoadError, match=message):
        inference.load_model(workdir)


def test_the_training_config_does_not_decide_the_model(glcic_workdir, tmp_path):
    workdir = copy_of_checkpoint(glcic_workdir, tmp_path, "config",
                                 edit_json(trainer="pix2pix", model=None))
    model = inference.load_model(workdir)
    assert (model.name, model.training_config.trainer) == ("glcic", "pix2pix")


def test_old_checkpoints_without_a_generator_name_the_conversion_command(glcic_workdir,
                                                                        tmp_path):
    step = tmp_path / "old" / "checkpoints" / "6"
    shutil.copytree(Path(glcic_workdir) / "checkpoints" / "6", step)
    for item in ("generator", "model_config"):  # what checkpoints held before generators
        shutil.rmtree(step / item)
    with pytest.raises(checkpointing.NoGeneratorError, match="python -m launch.convert_checkpoint"):
        inference.load_model(tmp_path / "old")


def test_paths_without_checkpoints_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such workdir or checkpoint"):
        inference.load_model(tmp_path / "missing")
    with pytest.raises(checkpointing.CheckpointNotFoundError, match="no complete checkpoint"):
        inference.load_model(tmp_path)


class CentreGrey:
    """A fixed-size stand-in network: paints its input's central half grey; records its inputs."""

    def __init__(self, input_size=16):
        self.input_size = input_size
        self.inputs = []

    def apply(self, variables, image, mask, *, train):
        jax.debug.callback(lambda i, m: self.inputs.append((np.asarray(i), np.asarray(m))),
                           image, mask)
        return image.at[:, 4:12, 4:12].set(0.25)


STUB_MODEL_CONFIG = {"family": "context_encoder"}


def test_fixed_size_networks_see_the_window_around_the_holes_at_their_input_size():
    network = CentreGrey()
    model = inference.InpaintingModel(STUB_MODEL_CONFIG, network, {}, step=3)
    assert (model.name, model.step, model.training_config) == ("context_encoder", 3, None)
    assert (model.input_size, model.size_multiple) == (16, 16)
    image = photo(50, 70)
    mask = np.zeros((50, 70, 1), np.float32)
    mask[20:26, 60:70] = 1  # 6 x 10, touching the right border

    result = inference.inpaint(model, image, mask)

    window = windows.hole_window(mask[..., 0] > 0, 16)
    assert window == windows.Window(top=13, left=55, side=20)  # reaches 5 px past the border
    (seen_image, seen_mask), = network.inputs
    expected = windows.resize_image(windows.crop(image, window), (16, 16))
    np.testing.assert_array_equal(seen_image[0], expected)
    seen_hole = seen_mask[0, ..., 0] > 0
    np.testing.assert_array_equal(
        seen_hole, windows.resize_hole(windows.crop(mask[..., 0] > 0, window), (16, 16)))
    assert seen_hole[4:12, 4:12].any() and seen_hole[:, 12:].any()  # the hole and its mirror
    hole = mask[..., 0] > 0
    np.testing.assert_array_equal(result[~hole], image[~hole])
    # The grey centre is scaled back over every hole pixel, border included; nothing else leaks.
    np.testing.assert_allclose(result[hole], 0.25, atol=1e-6)
    assert model.compiled_shapes == ((16, 16),)


def test_fixed_size_networks_need_an_input_size_divisible_by_four():
    with pytest.raises(inference.ModelLoadError, match="takes 18x18 inputs.*multiple of 4"):
        inference.InpaintingModel(STUB_MODEL_CONFIG, CentreGrey(input_size=18), {})


@pytest.fixture(scope="module")
def context_encoder(ce_workdir):
    return inference.load_model(ce_workdir)


def test_context_encoder_checkpoints_load_as_fixed_size_models(context_encoder):
    assert (context_encoder.name, context_encoder.step) == ("context_encoder", 2)
    assert context_encoder.input_size == 128


@pytest.mark.parametrize("boxes", [
    [(30, 120, 62, 170)],  # off-centre
    [(0, 10, 40, 50), (100, 150, 150, 200)],  # two holes, at the top and bottom-right borders
    [(70, 80, 74, 86)],  # small: the window is 128 px of the photo at full resolution
], ids=["off-centre", "at borders", "small"])
def test_context_encoder_inpaints_any_photo_size(context_encoder, boxes):
    image = photo(150, 200)
    mask = np.zeros((150, 200, 1), np.float32)
    for top, left, bottom, right in boxes:
        mask[top:bottom, left:right] = 1
    result = inference.inpaint(context_encoder, image, mask)
    assert_known_pixels_kept_and_holes_filled(result, image, mask)
    assert np.isfinite(result).all() and result.min() >= 0 and result.max() <= 1
    assert context_encoder.compiled_shapes == ((128, 128),)


# --------------------------------------------------------------------------- no trainer imports


def _imported_modules(path: Path, package: str) -> set[str]:
    """Every module `path` (a module of `package`) imports, as absolute dotted names.

    `import a.b` gives a.b; `from a import b` gives a and a.b (b may be a
    submodule); relative imports are resolved against `package`;
    `importlib.import_module("a.b")` with a literal name gives a.b.
    """
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(
                node.func, "id", None)) in ("import_module", "__import__") and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names.add(node.args[0].value)
    return names


def _imports_trainers(path: Path, package: str) -> bool:
    return any(name == "inpaint_jax.trainers" or name.startswith("inpaint_jax.trainers.")
               for name in _imported_modules(path, package))


def test_the_detector_sees_every_spelling_of_a_trainers_import(tmp_path):
    spellings = ["import inpaint_jax.trainers.glcic", "from inpaint_jax import trainers",
                 "from inpaint_jax.trainers import loop", "from ..trainers import state",
                 "from .. import trainers",
                 "def f():\n    from inpaint_jax.trainers import gan",
                 "importlib.import_module('inpaint_jax.trainers.dfnet')"]
    for index, source in enumerate(spellings):
        module = tmp_path / f"m{index}.py"
        module.write_text(source + "\n")
        assert _imports_trainers(module, "inpaint_jax.data"), source
    clean = tmp_path / "clean.py"
    clean.write_text("from inpaint_jax import models, two_stage\nimport inpaint_jax.trainerless\n"
                     "from . import trainers_notes\n")
    assert not _imports_trainers(clean, "inpaint_jax.data")


def test_only_the_trainers_train_py_and_benchmark_py_import_the_trainers():
    library = REPO / "inpaint_jax"
    offenders = []
    for path in sorted(library.rglob("*.py")):
        relative = path.relative_to(REPO)
        if relative.parts[1] == "trainers":
            continue
        package = ".".join(relative.with_suffix("").parts)
        if path.name != "__init__.py":
            package = package.rsplit(".", 1)[0]
        if _imports_trainers(path, package):
            offenders.append(str(relative))
    assert offenders == []
    assert len(list(library.rglob("*.py"))) > 40  # the walk saw the library
    launchers = sorted(path.name for path in (REPO / "launch").glob("*.py")
                       if _imports_trainers(path, "launch"))
    assert launchers == ["benchmark.py", "train.py"]


_INPAINT_IN_PROCESS = textwrap.dedent("""
    import sys
    from absl import flags
    from launch import inpaint

    flags.FLAGS(["inpaint", *sys.argv[1:]])
    inpaint.main(["inpaint"])
    prefixes = ("tensorflow", "tensorflow_datasets", "inpaint_jax.trainers")
    loaded = sorted(name for name in sys.modules
                    if any(name == p or name.startswith(p + ".") for p in prefixes))
    print("LOADED", ",".join(loaded))
""")


def test_inpaint_command_needs_no_tensorflow_and_no_trainer(glcic_workdir, tmp_path):
    pixels = cv2.resize(skimage.data.astronaut(), (40, 30), interpolation=cv2.INTER_AREA)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    mask = two_holes(30, 40)
    Image.fromarray((mask[..., 0] * 255).astype(np.uint8)).save(tmp_path / "mask.png")
    output = tmp_path / "result.png"
    env = dict(os.environ, PYTHONPATH=str(REPO), XLA_FLAGS="", JAX_PLATFORMS="cpu")
    run = subprocess.run(
        [sys.executable, "-c", _INPAINT_IN_PROCESS, f"--workdir={glcic_workdir}",
         f"--image={tmp_path / 'photo.png'}", f"--mask={tmp_path / 'mask.png'}",
         f"--output={output}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    (line,) = [line for line in run.stdout.splitlines() if line.startswith("LOADED")]
    assert line == "LOADED ", line  # nothing of TensorFlow, TFDS or the trainers
    written = np.asarray(Image.open(output))
    known = mask[..., 0] == 0
    np.testing.assert_array_equal(written[known], pixels[known])
    assert np.any(written[~known] != pixels[~known])
