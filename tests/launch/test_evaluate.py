"""Tests of `python -m launch.evaluate`, run in-process (tests/launch/conftest.py)."""

import csv
import json

import pytest
from absl import app

from tests.launch.conftest import launch_command
from tests.test_legacy import tiny_glcic_config
from tests.test_two_stage import write_generator_workdir, write_refinement_workdir

pytestmark = pytest.mark.fast_compile  # tiny networks: compiling dominates


@pytest.fixture(scope="module")
def evaluate():
    """The launch.evaluate module, with its flags."""
    with launch_command("evaluate") as module:
        yield module


@pytest.fixture
def run_evaluate(evaluate, parsed_flags, capsys):
    """run(*flags): `python -m launch.evaluate FLAGS` in this process; returns what it printed."""
    def run(*arguments):
        evaluate.main(parsed_flags("evaluate", *arguments))
        return capsys.readouterr().out
    return run


def test_checkpoint_and_baselines_on_the_checkpoints_eval_split(glcic_workdir, tmp_path,
                                                                 run_evaluate):
    output = tmp_path / "eval"
    stdout = run_evaluate(
        f"--workdir={glcic_workdir}",
        "--baselines=telea,biharmonic",
        f"--output={output}",
        "--num_images=3",
    )

    results = json.loads((output / "results.json").read_text())
    model_name = results["methods"][0]
    assert model_name == "glcic"
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
    table_rows = [line.split()[:2] for line in stdout.splitlines()]
    assert ["all", model_name] in table_rows and ["all", "biharmonic"] in table_rows
    assert f"wrote {output / 'results.json'}" in stdout


def test_a_fixed_size_context_encoder_is_scored_at_any_size(ce_workdir, photo_dir, tmp_path,
                                                            run_evaluate):
    output = tmp_path / "eval"
    run_evaluate(f"--workdir={ce_workdir}", f"--images={photo_dir}", "--num_images=2",
                 "--masks=center", "--resolution=96,160", f"--output={output}")
    results = json.loads((output / "results.json").read_text())
    assert results["methods"] == ["context_encoder"] and results["sizes"] == [96, 160]
    rows = [row for row in results["summary"] if row["bin"] == "all"]
    assert [row["size"] for row in rows] == [96, 160]
    assert all(0 < row["hole_l1"] < 1 for row in rows)


def test_an_imported_model_without_a_training_config(photo_dir, tmp_path, run_evaluate):
    imported = write_generator_workdir(tmp_path / "imported", tiny_glcic_config().model, 0)
    with pytest.raises(app.UsageError, match="pass --data"):
        run_evaluate(f"--workdir={imported}", f"--output={tmp_path / 'no_data'}")
    output = tmp_path / "eval"
    run_evaluate(f"--workdir={imported}", f"--images={photo_dir}", "--num_images=2",
                 "--masks=glcic", "--size=16", f"--output={output}")
    results = json.loads((output / "results.json").read_text())
    assert results["methods"] == ["glcic"] and results["sizes"] == [16]
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["masks"] == {"generator": "glcic", "params": {}, "seed": 0}


@pytest.mark.parametrize(
    "flags, message",
    [
        ((), "nothing to evaluate"),
        (("--baselines=telea", "--resolution=512,abc"), "whole numbers of pixels"),
        (("--workdir=a", "--checkpoint=b"), "pass --workdir or --checkpoint, not both"),
        (("--baselines=telea",), "pass --output"),
    ],
)
def test_bad_command_lines_fail_with_a_clear_message(flags, message, tmp_path, run_evaluate):
    output = () if message == "pass --output" else (f"--output={tmp_path / 'eval'}",)
    with pytest.raises(app.UsageError, match=message):
        run_evaluate(*flags, *output)
    assert not (tmp_path / "eval").exists()


@pytest.fixture(scope="module")
def refine_workdir(photo_dir, glcic_workdir, tmp_path_factory):
    """A tiny refinement network (random weights) trained, says its config, with the tiny GLCIC."""
    return write_refinement_workdir(tmp_path_factory.mktemp("refine") / "work", photo_dir,
                                    glcic_workdir)


def test_two_stage_at_several_resolutions_with_the_coarse_row(refine_workdir, photo_dir,
                                                              tmp_path, run_evaluate):
    output = tmp_path / "eval"
    run_evaluate(f"--workdir={refine_workdir}", f"--images={photo_dir}", "--num_images=2",
                 "--masks=glcic", "--resolution=32,48", f"--output={output}")
    results = json.loads((output / "results.json").read_text())
    assert results["methods"] == ["two_stage", "glcic_upsampled"]
    assert results["sizes"] == [32, 48]
    overall = {(row["method"], row["size"]) for row in results["summary"] if row["bin"] == "all"}
    assert overall == {(m, s) for m in ("two_stage", "glcic_upsampled") for s in (32, 48)}


def test_coarse_flag_is_for_refinement_workdirs(refine_workdir, glcic_workdir, photo_dir,
                                                tmp_path, run_evaluate):
    with pytest.raises(app.UsageError, match="--coarse is for two-stage refinement workdirs"):
        run_evaluate(f"--workdir={glcic_workdir}", f"--coarse={glcic_workdir}",
                     f"--output={tmp_path / 'eval'}")
    output = tmp_path / "with_coarse"
    run_evaluate(f"--workdir={refine_workdir}", f"--coarse={glcic_workdir}",
                 f"--images={photo_dir}", "--num_images=1", "--masks=glcic", "--size=32",
                 f"--output={output}")
    results = json.loads((output / "results.json").read_text())
    assert results["methods"] == ["two_stage", "glcic_upsampled"]
