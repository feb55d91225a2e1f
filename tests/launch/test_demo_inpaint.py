"""`make demo`'s last step, `launch.demo_inpaint`: a before/after image of a held-out photo.

It runs in-process (tests/launch/conftest.py) on a copy of the tiny GLCIC of
the `glcic_workdir` fixture instead of the runlocal GLCIC `make demo` trains:
the command is the same, the training a thousand times shorter.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
from absl import app

from inpaint_jax import image_io
from tests.launch.conftest import launch_command

pytestmark = pytest.mark.fast_compile  # a tiny network: compiling dominates


@pytest.fixture(scope="module")
def demo_inpaint():
    with launch_command("demo_inpaint") as module:
        yield module


@pytest.fixture
def workdir(glcic_workdir, tmp_path):
    """A workdir holding the tiny GLCIC's checkpoints (the demo writes into its workdir)."""
    shutil.copytree(Path(glcic_workdir) / "checkpoints", tmp_path / "work" / "checkpoints")
    return tmp_path / "work"


def test_demo_inpaint_writes_a_before_after_image(demo_inpaint, workdir, parsed_flags):
    demo_inpaint.main(parsed_flags("demo_inpaint", f"--workdir={workdir}"))

    demo = workdir / "demo"
    assert sorted(path.name for path in demo.iterdir()) == [
        "before_after.png", "inpainted.png", "input.png", "mask.png"]
    original_mask = image_io.read_mask(demo / "mask.png")
    inpainted = image_io.read_image(demo / "inpainted.png")
    pair = image_io.read_image(demo / "before_after.png")
    height, width = inpainted.shape[:2]
    assert pair.shape == (height, 3 * width, 3)
    original = pair[:, 2 * width :]
    known = original_mask[..., 0] == 0
    assert 0 < original_mask.mean() < 0.5
    np.testing.assert_array_equal(inpainted[known], original[known])
    assert not np.array_equal(inpainted[~known], original[~known])
    np.testing.assert_array_equal(pair[:, width : 2 * width], inpainted)
    masked = pair[:, :width]
    np.testing.assert_array_equal(masked[~known], 1.0)  # holes shown in white


def test_unknown_photo_lists_the_sample_photos(demo_inpaint, workdir, parsed_flags):
    with pytest.raises(app.UsageError, match="--photo must be one of .*skimage/chelsea"):
        demo_inpaint.main(parsed_flags("demo_inpaint", f"--workdir={workdir}",
                                       "--photo=skimage/nothing"))
    assert not (workdir / "demo").exists()
