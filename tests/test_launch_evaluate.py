"""End-to-end tests of `python -m launch.evaluate` in a subprocess."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _evaluate(*flags):
    return subprocess.run(
        [sys.executable, "-m", "launch.evaluate", *flags],
        cwd=REPO,
        capture_output=True,
        check=False,
        text=True,
        timeout=600,
    )


def test_checkpoint_and_baselines_on_the_checkpoints_eval_split(glcic_workdir, tmp_path):
    output = tmp_path / "eval"
    run = _evaluate(
        f"--workdir={glcic_workdir}",
        "--baselines=telea,biharmonic",
        f"--output={output}",
        "--num_images=3",
    )
    assert run.returncode == 0, run.stderr[-3000:]

    results = json.loads((output / "results.json").read_text())
    model_name = results["methods"][0]
    assert results["methods"][1:] == ["telea", "biharmonic"]
    assert results["sizes"] == [16]  # the tiny config's crop size
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["images"] == {"dataset": "image_folder", "split": "eval"}
    assert manifest["masks"] == {"generator": "glcic", "params": {}, "seed": 1234}
    assert results["mask_sha256"] == manifest["mask_sha256"]
    with open(output / "results.csv", newline="") as file:
        overall = {row["method"] for row in csv.DictReader(file) if row["bin"] == "all"}
    assert overall == {model_name, "telea", "biharmonic"}
    assert (output / "samples_16.png").is_file()
    table_rows = [line.split()[:2] for line in run.stdout.splitlines()]
    assert ["all", model_name] in table_rows and ["all", "biharmonic"] in table_rows


def test_a_fixed_size_context_encoder_is_scored_at_any_size(ce_workdir, photo_dir, tmp_path):
    output = tmp_path / "eval"
    run = _evaluate(f"--workdir={ce_workdir}", f"--images={photo_dir}", "--num_images=2",
                    "--masks=center", "--resolution=96,160", f"--output={output}")
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((output / "results.json").read_text())
    assert results["methods"] == ["context_encoder"] and results["sizes"] == [96, 160]
    rows = [row for row in results["summary"] if row["bin"] == "all"]
    assert [row["size"] for row in rows] == [96, 160]
    assert all(0 < row["hole_l1"] < 1 for row in rows)


@pytest.mark.parametrize(
    "flags, message",
    [
        ((), "nothing to evaluate"),
        (("--baselines=telea", "--resolution=512,abc"), "whole numbers of pixels"),
    ],
)
def test_bad_command_lines_fail_with_a_clear_message(flags, message, tmp_path):
    run = _evaluate(*flags, f"--output={tmp_path / 'eval'}")
    assert run.returncode != 0
    assert message in run.stderr + run.stdout
    assert not (tmp_path / "eval").exists()
