"""`make demo`'s last step: inpaint a held-out sample photo and write a before/after image."""

import os
import subprocess
import sys

import numpy as np

from inpaint_jax import image_io

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_inpaint_writes_a_before_after_image(glcic_workdir):
    result = subprocess.run(
        [sys.executable, "-m", "launch.demo_inpaint", f"--workdir={glcic_workdir}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    demo = os.path.join(glcic_workdir, "demo")
    original_mask = image_io.read_mask(os.path.join(demo, "mask.png"))
    inpainted = image_io.read_image(os.path.join(demo, "inpainted.png"))
    pair = image_io.read_image(os.path.join(demo, "before_after.png"))
    height, width = inpainted.shape[:2]
    assert pair.shape == (height, 3 * width, 3)
    original = pair[:, 2 * width :]
    known = original_mask[..., 0] == 0
    np.testing.assert_array_equal(inpainted[known], original[known])
    assert not np.array_equal(inpainted[~known], original[~known])
