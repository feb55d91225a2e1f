"""Tests for `python -m launch.convert_checkpoint`, run in-process (tests/launch/conftest.py)."""

import pytest
from absl import app, flags

from inpaint_jax import checkpointing, inference
from inpaint_jax.trainers import glcic as glcic_trainer
from tests.launch.conftest import launch_command
from tests.test_legacy import (
    OLD_STEP,
    assert_converted_model_is_the_state,
    directory_bytes,
    tiny_glcic_config,
    write_old_checkpoint,
)

pytestmark = pytest.mark.fast_compile  # tiny networks: compiling dominates


@pytest.fixture(scope="module")
def convert_checkpoint():
    with launch_command("convert_checkpoint") as module:
        yield module


@pytest.fixture(scope="module")
def old_workdir(tmp_path_factory):
    """(workdir, saved state, config) of an old-format tiny GLCIC checkpoint."""
    workdir = tmp_path_factory.mktemp("old") / "work"
    config = tiny_glcic_config()
    return workdir, write_old_checkpoint(workdir, glcic_trainer, config), config


def test_converts_an_old_workdir_into_a_loadable_one(convert_checkpoint, old_workdir, tmp_path,
                                                     parsed_flags, capsys):
    workdir, state, config = old_workdir
    with pytest.raises(checkpointing.NoGeneratorError, match="launch.convert_checkpoint"):
        inference.load_model(workdir)
    before = directory_bytes(workdir)
    output = tmp_path / "model"

    convert_checkpoint.main(parsed_flags("convert_checkpoint", f"--input={workdir}",
                                         f"--output={output}"))

    assert f"wrote the model of step {OLD_STEP} to {output}" in capsys.readouterr().out
    assert directory_bytes(workdir) == before
    model = inference.load_model(output)
    assert (model.name, model.step) == ("glcic", OLD_STEP)
    assert_converted_model_is_the_state(model, state, config.model)


def test_refusals_are_usage_errors(convert_checkpoint, old_workdir, tmp_path, parsed_flags):
    workdir, _, _ = old_workdir
    converted = tmp_path / "model"
    convert_checkpoint.main(parsed_flags("convert_checkpoint", f"--input={workdir}",
                                         f"--output={converted}"))
    flags.FLAGS.unparse_flags()
    with pytest.raises(app.UsageError, match="holds a generator already"):
        convert_checkpoint.main(parsed_flags("convert_checkpoint", f"--input={converted}",
                                             f"--output={tmp_path / 'again'}"))
    flags.FLAGS.unparse_flags()
    with pytest.raises(app.UsageError, match="not an empty directory"):
        convert_checkpoint.main(parsed_flags("convert_checkpoint", f"--input={workdir}",
                                             f"--output={converted}"))
    flags.FLAGS.unparse_flags()
    with pytest.raises(app.UsageError, match="no checkpoint directory"):
        convert_checkpoint.main(parsed_flags("convert_checkpoint", f"--input={tmp_path / 'none'}",
                                             f"--output={tmp_path / 'out'}"))
    flags.FLAGS.unparse_flags()
    with pytest.raises(app.UsageError, match="Unexpected arguments: extra"):
        convert_checkpoint.main(parsed_flags("convert_checkpoint", f"--input={workdir}",
                                             f"--output={tmp_path / 'out'}", "extra"))
    assert not (tmp_path / "again").exists() and not (tmp_path / "out").exists()


def test_both_paths_are_required(convert_checkpoint, tmp_path):
    for arguments, missing in (([f"--output={tmp_path}"], "input"),
                               ([f"--input={tmp_path}"], "output")):
        with pytest.raises(flags.IllegalFlagValueError, match=f"--{missing} must have a value"):
            flags.FLAGS(["convert_checkpoint", *arguments])
        flags.FLAGS.unparse_flags()
