"""Tests for `python -m launch.inpaint`, run in-process (tests/launch/conftest.py).

tests/test_inference.py runs it once in a fresh interpreter, to see what it imports.
"""

import json
import logging
import shutil
from pathlib import Path

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
from absl import app, flags
from PIL import Image

from inpaint_jax.models import vgg
from inpaint_jax.weights import vgg as vgg_weights
from tests.launch.conftest import launch_command
from tests.test_two_stage import write_refinement_workdir

# Tests of tiny networks compile without most XLA optimisations (`fast_compile`); the NPS
# tests keep them: their optimisation loops run far slower unoptimised.
FAST_COMPILE = pytest.mark.fast_compile


@pytest.fixture(scope="module")
def inpaint():
    """The launch.inpaint module, with its flags."""
    with launch_command("inpaint") as module:
        yield module


@pytest.fixture
def run_inpaint(inpaint, parsed_flags):
    """run(*arguments): `python -m launch.inpaint ARGUMENTS` in this process."""
    def run(*arguments):
        inpaint.main(parsed_flags("inpaint", *arguments))
    return run


def astronaut(height: int, width: int) -> np.ndarray:
    """scikit-image's astronaut photo resized to height x width, uint8 RGB."""
    return cv2.resize(skimage.data.astronaut(), (width, height), interpolation=cv2.INTER_AREA)


def hole_mask(height: int, width: int, boxes) -> np.ndarray:
    """Boolean (H, W) mask, True inside each (top, left, bottom, right) box."""
    mask = np.zeros((height, width), bool)
    for top, left, bottom, right in boxes:
        mask[top:bottom, left:right] = True
    return mask


def read_rgb(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGB"
        return np.asarray(image)


@FAST_COMPILE
def test_alpha_channel_as_mask_with_checkpoint_and_postprocess(glcic_workdir, tmp_path,
                                                              run_inpaint):
    pixels = astronaut(72, 101)
    hole = hole_mask(72, 101, [(8, 10, 30, 40), (40, 60, 66, 95)])
    alpha = np.where(hole, 0, 255).astype(np.uint8)
    Image.fromarray(np.dstack([pixels, alpha]), "RGBA").save(tmp_path / "photo.png")
    output = tmp_path / "result.png"

    run_inpaint(f"--checkpoint={glcic_workdir}/checkpoints/6", f"--image={tmp_path}/photo.png",
                f"--output={output}", "--postprocess")

    written = read_rgb(output)
    np.testing.assert_array_equal(written[~hole], pixels[~hole])
    assert np.abs(written[hole].astype(int) - pixels[hole]).mean() > 3


@FAST_COMPILE
def test_folder_mode_pairs_by_name_and_reports_the_rest(glcic_workdir, tmp_path, run_inpaint,
                                                        caplog):
    images, masks, outputs = tmp_path / "images", tmp_path / "masks", tmp_path / "outputs"
    for folder in (images, masks, outputs):
        folder.mkdir()
    colour = astronaut(50, 64)
    grey = cv2.cvtColor(astronaut(41, 33), cv2.COLOR_RGB2GRAY)
    translucent = np.dstack([astronaut(36, 48), np.full((36, 48), 90, np.uint8)])
    Image.fromarray(colour).save(images / "colour.jpg")
    Image.fromarray(grey, "L").save(images / "grey.png")
    Image.fromarray(translucent, "RGBA").save(images / "translucent.png")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.fromarray(colour).save(images / "lonely.png")
    (images / "notes.txt").write_text("not an image")
    holes = {
        "colour": hole_mask(50, 64, [(5, 5, 20, 30), (30, 40, 45, 60)]),
        "grey": hole_mask(41, 33, [(10, 8, 25, 20)]),
        "translucent": hole_mask(36, 48, [(0, 20, 12, 40)]),
        "broken": hole_mask(8, 8, [(2, 2, 4, 4)]),
        "orphan": hole_mask(8, 8, [(2, 2, 4, 4)]),
    }
    for name, hole in holes.items():
        Image.fromarray(hole.astype(np.uint8) * 255).save(masks / f"{name}.png")

    with caplog.at_level(logging.WARNING), pytest.raises(SystemExit) as failed:
        run_inpaint(f"--workdir={glcic_workdir}", f"--image={images}", f"--mask={masks}",
                    f"--output={outputs}", "--max_size=40")

    # The broken image is the one failure...
    assert "1 of 4 images failed" in str(failed.value) and "broken.png" in str(failed.value)
    assert "lonely.png" in caplog.text and "orphan.png" in caplog.text
    # ...the others are done.
    assert sorted(path.name for path in outputs.iterdir()) == [
        "colour.png", "grey.png", "translucent.png"]
    known_pixels = {
        "colour": np.asarray(Image.open(images / "colour.jpg").convert("RGB")),
        "grey": np.repeat(grey[..., None], 3, axis=-1),
        "translucent": translucent[..., :3],  # alpha ignored: the mask file decides
    }
    for name, original in known_pixels.items():
        written, hole = read_rgb(outputs / f"{name}.png"), holes[name]
        np.testing.assert_array_equal(written[~hole], original[~hole])
        assert np.any(written[hole] != original[hole])


def write_pngs(folder: Path, *names: str) -> None:
    folder.mkdir(exist_ok=True)
    for name in names:
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / name)


def test_pairing_lists_unmatched_files(inpaint, tmp_path, caplog):
    write_pngs(tmp_path / "images", "a.png", "b.png", "c.png")
    write_pngs(tmp_path / "masks", "a.png", "b.png", "d.png")
    (tmp_path / "out").mkdir()
    with caplog.at_level(logging.WARNING):
        jobs = inpaint.plan_jobs(str(tmp_path / "images"), str(tmp_path / "masks"),
                                 str(tmp_path / "out"))
    assert [(job.image.name, job.mask.name, job.output.name) for job in jobs] == [
        ("a.png", "a.png", "a.png"), ("b.png", "b.png", "b.png")]
    assert "2 files" in caplog.text and "c.png" in caplog.text and "d.png" in caplog.text


def test_folder_without_masks_uses_alpha_channels(inpaint, tmp_path):
    write_pngs(tmp_path / "images", "a.png", "b.png")
    (tmp_path / "out").mkdir()
    jobs = inpaint.plan_jobs(str(tmp_path / "images"), None, str(tmp_path / "out"))
    assert [(job.image.name, job.mask) for job in jobs] == [("a.png", None), ("b.png", None)]


@pytest.mark.parametrize("layout, arguments, message", [
    ({"images": ["a.png"], "masks": ["b.png"], "out": []}, ("images", "masks", "out"),
     "no image in .* has a mask of the same name"),
    ({"images": ["a.png", "a.jpg"], "masks": ["a.png"], "out": []}, ("images", "masks", "out"),
     "differ only in extension"),
    ({"images": ["a.png"], "masks": ["a.png"]}, ("images", "masks", "out"),
     "--output must be an existing folder"),
    ({"images": ["a.png"], "masks": ["a.png"]}, ("images", "masks", "images"),
     "would overwrite inputs"),
    ({"images": ["a.png"], "out": []}, ("images/a.png", None, "missing/result.png"),
     "the folder of --output .* does not exist"),
    ({"images": ["a.png"], "out": []}, ("images/a.png", None, "out"), "is a folder"),
    ({"out": []}, ("images/a.png", None, "out/a.png"), "--image .* is not a file"),
], ids=["no pairs", "name clash", "no output folder", "output is input", "missing output dir",
        "output is a folder", "missing image"])
def test_unusable_paths_are_refused_before_any_work(inpaint, tmp_path, layout, arguments,
                                                    message):
    for folder, names in layout.items():
        write_pngs(tmp_path / folder, *names)
    image, mask, output = (None if part is None else str(tmp_path / part) for part in arguments)
    with pytest.raises(app.UsageError, match=message):
        inpaint.plan_jobs(image, mask, output)


def test_checkpoint_of_another_model_gives_a_clear_error(glcic_workdir, tmp_path, run_inpaint):
    step = tmp_path / "other" / "checkpoints" / "6"
    shutil.copytree(Path(glcic_workdir) / "checkpoints" / "6", step)
    config_file = step / "model_config" / "model_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "family": "lama"}))
    Image.fromarray(astronaut(16, 16)).save(tmp_path / "photo.png")
    Image.fromarray(np.eye(16, dtype=np.uint8) * 255).save(tmp_path / "mask.png")

    with pytest.raises(SystemExit, match="model family 'lama' is not one of"):
        run_inpaint(f"--workdir={tmp_path / 'other'}", f"--image={tmp_path}/photo.png",
                    f"--mask={tmp_path}/mask.png", f"--output={tmp_path}/result.png")
    assert not (tmp_path / "result.png").exists()


def test_old_checkpoint_names_the_conversion_command(glcic_workdir, tmp_path, run_inpaint):
    step = tmp_path / "old" / "checkpoints" / "6"
    shutil.copytree(Path(glcic_workdir) / "checkpoints" / "6", step)
    for item in ("generator", "model_config"):  # what checkpoints held before generators
        shutil.rmtree(step / item)
    Image.fromarray(astronaut(16, 16)).save(tmp_path / "photo.png")
    Image.fromarray(np.eye(16, dtype=np.uint8) * 255).save(tmp_path / "mask.png")

    with pytest.raises(SystemExit, match="python -m launch.convert_checkpoint"):
        run_inpaint(f"--workdir={tmp_path / 'old'}", f"--image={tmp_path}/photo.png",
                    f"--mask={tmp_path}/mask.png", f"--output={tmp_path}/result.png")
    assert not (tmp_path / "result.png").exists()


@pytest.fixture(scope="module")
def random_vgg19(tmp_path_factory):
    """A VGG-19 weight file (.npz, as launch.convert_vgg writes) with random weights."""
    variables = vgg.VGG(depth=19).init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)),
                                       taps=("relu5_4",))
    path = tmp_path_factory.mktemp("vgg") / "vgg19.npz"
    weights = vgg_weights.VGGWeights(jax.tree.map(np.asarray, variables),
                                     vgg.TORCHVISION_NORMALIZATION, 19)
    vgg_weights.save_converted(path, weights)
    return path


def test_nps_method_fills_a_hole(glcic_workdir, random_vgg19, tmp_path, run_inpaint, caplog):
    pixels = astronaut(40, 52)
    hole = hole_mask(40, 52, [(14, 20, 26, 34)])
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    Image.fromarray(hole.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    output = tmp_path / "result.png"

    with caplog.at_level(logging.INFO):
        run_inpaint("--method=nps", f"--content={glcic_workdir}", f"--vgg={random_vgg19}",
                    "--nps_iterations=2", f"--image={tmp_path}/photo.png",
                    f"--mask={tmp_path}/mask.png", f"--output={output}")

    assert "neural patch synthesis over the glcic model of step 6" in caplog.text
    written = read_rgb(output)
    np.testing.assert_array_equal(written[~hole], pixels[~hole])
    assert np.abs(written[hole].astype(int) - pixels[hole]).mean() > 3


def write_photo_and_mask(folder: Path, pixels: np.ndarray, hole: np.ndarray) -> None:
    """folder/photo.png and folder/mask.png (white = hole)."""
    Image.fromarray(pixels).save(folder / "photo.png")
    Image.fromarray(hole.astype(np.uint8) * 255).save(folder / "mask.png")


def assert_hole_filled(written: np.ndarray, pixels: np.ndarray, hole: np.ndarray) -> None:
    """Same size, known pixels exact, and the hole neither its old content nor white/fill colour."""
    assert written.shape == pixels.shape
    np.testing.assert_array_equal(written[~hole], pixels[~hole])
    filled = written[hole].astype(int)
    assert np.abs(filled - pixels[hole]).mean() > 3
    for flat in ((255, 255, 255), (117, 104, 123)):  # white, the Context Encoder's fill colour
        assert np.mean(np.abs(filled - flat).max(axis=1) <= 2) < 0.5


@FAST_COMPILE
def test_context_encoder_workdir_inpaints_a_photo(ce_workdir, tmp_path, run_inpaint):
    pixels = astronaut(90, 140)
    hole = hole_mask(90, 140, [(20, 90, 50, 140)])  # off-centre, touching the right border
    write_photo_and_mask(tmp_path, pixels, hole)
    run_inpaint(f"--workdir={ce_workdir}", f"--image={tmp_path}/photo.png",
                f"--mask={tmp_path}/mask.png", f"--output={tmp_path}/result.png")

    assert_hole_filled(read_rgb(tmp_path / "result.png"), pixels, hole)


def test_nps_over_the_nps_content_network_fills_a_photo(nps_content_workdir, random_vgg19,
                                                        tmp_path, run_inpaint):
    pixels = astronaut(128, 160)
    hole = hole_mask(128, 160, [(30, 50, 94, 110)])  # 64 px: a 128 px window, levels 64 and 128
    write_photo_and_mask(tmp_path, pixels, hole)
    run_inpaint("--method=nps", f"--content={nps_content_workdir}", f"--vgg={random_vgg19}",
                "--nps_iterations=2", f"--image={tmp_path}/photo.png",
                f"--mask={tmp_path}/mask.png", f"--output={tmp_path}/result.png")

    written = read_rgb(tmp_path / "result.png")
    assert_hole_filled(written, pixels, hole)
    assert written[hole].std(axis=0).mean() > 1  # the texture term adds structure


@pytest.mark.parametrize("arguments, message", [
    ([], "--method=model needs --workdir or --checkpoint"),
    (["--workdir=w", "--vgg=v.npz"], "--vgg cannot be used with --method=model"),
    (["--method=nps"], "--method=nps needs --content"),
    (["--method=nps", "--content=c", "--checkpoint=k"],
     "--checkpoint cannot be used with --method=nps"),
    (["--method=two_stage"], "--method=two_stage needs --refine"),
    (["--method=two_stage", "--refine=r", "--workdir=w"],
     "--workdir cannot be used with --method=two_stage"),
    (["--refine=r", "--workdir=w"], "--refine cannot be used with --method=model"),
], ids=["no model", "vgg without nps", "nps without content", "nps with a checkpoint",
        "two_stage without refine", "two_stage with a workdir", "refine without two_stage"])
def test_each_method_takes_its_own_flags(inpaint, arguments, message):
    with pytest.raises(flags.IllegalFlagValueError, match=message):
        flags.FLAGS(["inpaint", "--image=a.png", "--output=b.png", *arguments])
    flags.FLAGS.unparse_flags()


def test_nps_without_vgg_weights_says_which_file_to_get(tmp_path, run_inpaint):
    Image.fromarray(astronaut(16, 16)).save(tmp_path / "photo.png")
    Image.fromarray(np.eye(16, dtype=np.uint8) * 255).save(tmp_path / "mask.png")

    with pytest.raises(SystemExit, match="No VGG-19 weights: --vgg is not set") as error:
        run_inpaint("--method=nps", f"--content={tmp_path}", f"--image={tmp_path}/photo.png",
                    f"--mask={tmp_path}/mask.png", f"--output={tmp_path}/result.png")
    assert "vgg19-dcbb9e9d.pth" in str(error.value)
    assert not (tmp_path / "result.png").exists()


@pytest.fixture(scope="module")
def refine_workdir(photo_dir, glcic_workdir, tmp_path_factory):
    """A tiny refinement network (random weights) trained, says its config, with the tiny GLCIC."""
    return write_refinement_workdir(tmp_path_factory.mktemp("refine") / "work", photo_dir,
                                    glcic_workdir)


@FAST_COMPILE
def test_two_stage_method_fills_a_photo(refine_workdir, glcic_workdir, tmp_path, run_inpaint,
                                        caplog):
    photo = cv2.resize(skimage.data.chelsea(), (120, 90), interpolation=cv2.INTER_AREA)
    hole = np.zeros((90, 120), bool)
    hole[20:50, 30:80] = True
    write_photo_and_mask(tmp_path, photo, hole)
    output = tmp_path / "filled.png"
    with caplog.at_level(logging.INFO):
        run_inpaint("--method=two_stage", f"--refine={refine_workdir}", f"--coarse={glcic_workdir}",
                    f"--image={tmp_path / 'photo.png'}", f"--mask={tmp_path / 'mask.png'}",
                    f"--output={output}")
    filled = read_rgb(output)
    np.testing.assert_array_equal(filled[~hole], photo[~hole])
    assert np.abs(filled[hole].astype(int) - photo[hole]).mean() > 1
    assert "two-stage inpainting: the glcic model of step 6, refinement of step 4" in caplog.text


def test_two_stage_without_refine_is_refused_before_any_work(inpaint, tmp_path):
    with pytest.raises(flags.IllegalFlagValueError, match="--method=two_stage needs --refine"):
        flags.FLAGS(["inpaint", "--method=two_stage", f"--image={tmp_path / 'cat.png'}",
                     f"--output={tmp_path / 'other.png'}"])
    flags.FLAGS.unparse_flags()
    assert not (tmp_path / "other.png").exists()
