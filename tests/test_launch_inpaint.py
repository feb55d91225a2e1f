"""Tests for `python -m launch.inpaint`: two end-to-end runs, the rest in-process."""

import json
import logging
import shutil
import subprocess
import sys
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
from launch import inpaint

REPO = Path(__file__).resolve().parents[1]


def run_cli(*arguments):
    return subprocess.run([sys.executable, "-m", "launch.inpaint", *arguments], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


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


def test_alpha_channel_as_mask_with_checkpoint_and_postprocess(glcic_workdir, tmp_path):
    pixels = astronaut(72, 101)
    hole = hole_mask(72, 101, [(8, 10, 30, 40), (40, 60, 66, 95)])
    alpha = np.where(hole, 0, 255).astype(np.uint8)
    Image.fromarray(np.dstack([pixels, alpha]), "RGBA").save(tmp_path / "photo.png")
    output = tmp_path / "result.png"

    result = run_cli(f"--checkpoint={glcic_workdir}/checkpoints/6", f"--image={tmp_path}/photo.png",
                     f"--output={output}", "--postprocess")

    assert result.returncode == 0, result.stderr
    written = read_rgb(output)
    np.testing.assert_array_equal(written[~hole], pixels[~hole])
    assert np.abs(written[hole].astype(int) - pixels[hole]).mean() > 3


def test_folder_mode_pairs_by_name_and_reports_the_rest(glcic_workdir, tmp_path):
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

    result = run_cli(f"--workdir={glcic_workdir}", f"--image={images}", f"--mask={masks}",
                     f"--output={outputs}", "--max_size=40")

    assert result.returncode != 0  # the broken image is the one failure...
    assert "1 of 4 images failed" in result.stderr and "broken.png" in result.stderr
    assert "lonely.png" in result.stderr and "orphan.png" in result.stderr
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


def test_pairing_lists_unmatched_files(tmp_path, caplog):
    write_pngs(tmp_path / "images", "a.png", "b.png", "c.png")
    write_pngs(tmp_path / "masks", "a.png", "b.png", "d.png")
    (tmp_path / "out").mkdir()
    with caplog.at_level(logging.WARNING):
        jobs = inpaint.plan_jobs(str(tmp_path / "images"), str(tmp_path / "masks"),
                                 str(tmp_path / "out"))
    assert [(job.image.name, job.mask.name, job.output.name) for job in jobs] == [
        ("a.png", "a.png", "a.png"), ("b.png", "b.png", "b.png")]
    assert "2 files" in caplog.text and "c.png" in caplog.text and "d.png" in caplog.text


def test_folder_without_masks_uses_alpha_channels(tmp_path):
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
def test_unusable_paths_are_refused_before_any_work(tmp_path, layout, arguments, message):
    for folder, names in layout.items():
        write_pngs(tmp_path / folder, *names)
    image, mask, output = (None if part is None else str(tmp_path / part) for part in arguments)
    with pytest.raises(app.UsageError, match=message):
        inpaint.plan_jobs(image, mask, output)


@pytest.fixture
def parsed_flags():
    """Parses command-line flags for an in-process `inpaint.main` call; resets them after."""
    def parse(*arguments):
        flags.FLAGS(["inpaint", *arguments])
    yield parse
    flags.FLAGS.unparse_flags()


def test_checkpoint_of_another_model_gives_a_clear_error(glcic_workdir, tmp_path, parsed_flags):
    step = tmp_path / "other" / "checkpoints" / "6"
    shutil.copytree(Path(glcic_workdir) / "checkpoints" / "6", step)
    config_file = step / "config" / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "trainer": "lama"}))
    Image.fromarray(astronaut(16, 16)).save(tmp_path / "photo.png")
    Image.fromarray(np.eye(16, dtype=np.uint8) * 255).save(tmp_path / "mask.png")
    parsed_flags(f"--workdir={tmp_path / 'other'}", f"--image={tmp_path}/photo.png",
                 f"--mask={tmp_path}/mask.png", f"--output={tmp_path}/result.png")

    with pytest.raises(SystemExit, match="trainer 'lama', which is not a model trainer"):
        inpaint.main(["inpaint"])
    assert not (tmp_path / "result.png").exists()


@pytest.fixture(scope="module")
def random_vgg19(tmp_path_factory):
    """A VGG-19 weight file (.npz, as launch.convert_vgg writes) with random weights."""
    variables = vgg.VGG(depth=19).init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)),
                                       taps=("relu5_4",))
    path = tmp_path_factory.mktemp("vgg") / "vgg19.npz"
    weights = vgg.VGGWeights(jax.tree.map(np.asarray, variables), vgg.TORCHVISION_NORMALIZATION, 19)
    vgg.save_converted(path, weights)
    return path


def test_nps_method_fills_a_hole(glcic_workdir, random_vgg19, tmp_path):
    pixels = astronaut(40, 52)
    hole = hole_mask(40, 52, [(14, 20, 26, 34)])
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    Image.fromarray(hole.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    output = tmp_path / "result.png"

    result = run_cli("--method=nps", f"--content={glcic_workdir}", f"--vgg={random_vgg19}",
                     "--nps_iterations=2", f"--image={tmp_path}/photo.png",
                     f"--mask={tmp_path}/mask.png", f"--output={output}")

    assert result.returncode == 0, result.stderr
    assert "neural patch synthesis over the glcic model of step 6" in result.stderr
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


def test_context_encoder_workdir_inpaints_a_photo(ce_workdir, tmp_path, parsed_flags):
    pixels = astronaut(90, 140)
    hole = hole_mask(90, 140, [(20, 90, 50, 140)])  # off-centre, touching the right border
    write_photo_and_mask(tmp_path, pixels, hole)
    parsed_flags(f"--workdir={ce_workdir}", f"--image={tmp_path}/photo.png",
                 f"--mask={tmp_path}/mask.png", f"--output={tmp_path}/result.png")

    inpaint.main(["inpaint"])

    assert_hole_filled(read_rgb(tmp_path / "result.png"), pixels, hole)


def test_nps_over_the_nps_content_network_fills_a_photo(nps_content_workdir, random_vgg19,
                                                        tmp_path, parsed_flags):
    pixels = astronaut(128, 160)
    hole = hole_mask(128, 160, [(30, 50, 94, 110)])  # 64 px: a 128 px window, levels 64 and 128
    write_photo_and_mask(tmp_path, pixels, hole)
    parsed_flags("--method=nps", f"--content={nps_content_workdir}", f"--vgg={random_vgg19}",
                 "--nps_iterations=2", f"--image={tmp_path}/photo.png",
                 f"--mask={tmp_path}/mask.png", f"--output={tmp_path}/result.png")

    inpaint.main(["inpaint"])

    written = read_rgb(tmp_path / "result.png")
    assert_hole_filled(written, pixels, hole)
    assert written[hole].std(axis=0).mean() > 1  # the texture term adds structure


@pytest.mark.parametrize("arguments, message", [
    ([], "--method=model needs --workdir or --checkpoint"),
    (["--workdir=w", "--vgg=v.npz"], "--vgg cannot be used with --method=model"),
    (["--method=nps"], "--method=nps needs --content"),
    (["--method=nps", "--content=c", "--checkpoint=k"],
     "--checkpoint cannot be used with --method=nps"),
], ids=["no model", "vgg without nps", "nps without content", "nps with a checkpoint"])
def test_each_method_takes_its_own_flags(arguments, message):
    with pytest.raises(flags.IllegalFlagValueError, match=message):
        flags.FLAGS(["inpaint", "--image=a.png", "--output=b.png", *arguments])
    flags.FLAGS.unparse_flags()


def test_nps_without_vgg_weights_says_which_file_to_get(tmp_path, parsed_flags):
    Image.fromarray(astronaut(16, 16)).save(tmp_path / "photo.png")
    Image.fromarray(np.eye(16, dtype=np.uint8) * 255).save(tmp_path / "mask.png")
    parsed_flags("--method=nps", f"--content={tmp_path}", f"--image={tmp_path}/photo.png",
                 f"--mask={tmp_path}/mask.png", f"--output={tmp_path}/result.png")

    with pytest.raises(SystemExit, match="No VGG-19 weights: --vgg is not set") as error:
        inpaint.main(["inpaint"])
    assert "vgg19-dcbb9e9d.pth" in str(error.value)
    assert not (tmp_path / "result.png").exists()
