"""Tests for inpaint_jax.legacy: checkpoints written before they held the generator alone.

The old checkpoints are written here as the old code wrote them: a real
training state of a tiny recipe and the run's config in the old vocabulary
(`trainer` naming the family, a top-level `compute_dtype`, a model section
without `family`; two_stage's `coarse` section and top-level
`shift_fraction`), and no generator item.
"""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from inpaint_jax import checkpointing, inference, legacy, models, parallel, two_stage
from inpaint_jax.trainers import glcic as glcic_trainer
from inpaint_jax.trainers import two_stage as two_stage_trainer
from tests.helpers import tiny_config
from tests.test_two_stage import refine_config, write_generator_workdir

pytestmark = pytest.mark.fast_compile  # tiny networks: compiling dominates

OLD_STEP = 6


def old_config_dict(config) -> dict:
    """`config` (a ConfigDict of today) as a dict in the vocabulary of old checkpoints."""
    old = json.loads(json.dumps(config.to_dict()))  # as the checkpoint stores it
    model = old["model"]
    del model["family"]
    old["compute_dtype"] = model.pop("compute_dtype")
    if old["trainer"] == "two_stage":
        old["coarse"] = {"workdir": old.pop("coarse_workdir"), "size": model.pop("coarse_size")}
        old["shift_fraction"] = model.pop("shift_fraction")
    return old


def perturbed(state):
    """`state` with every parameter and BatchNorm statistic moved by seeded noise."""
    leaves, tree = jax.tree.flatten((state.g_params, state.batch_stats))
    rng = np.random.default_rng(0)
    moved = [leaf + rng.normal(0, 0.1, leaf.shape).astype(leaf.dtype) for leaf in leaves]
    g_params, batch_stats = jax.tree.unflatten(tree, moved)
    return state.replace(g_params=g_params, batch_stats=batch_stats)


def write_old_checkpoint(workdir: Path, recipe, config, step: int = OLD_STEP):
    """An old-format workdir: the recipe's state (perturbed) and the old config, no generator.

    Returns the state that was saved.
    """
    state = perturbed(recipe.build(config, parallel.create_mesh(jax.devices()[:1])).state)
    with checkpointing.Checkpointer(workdir / "checkpoints", async_save=False) as writer:
        writer.save(step, state, config=old_config_dict(config),
                    data_state={"next_index": 48}, force=True)
    return state


def tiny_glcic_config():
    """The tiny GLCIC config (no data is read: only the networks are built)."""
    return tiny_config("unused", "unused")


@pytest.fixture(scope="module")
def old_glcic(tmp_path_factory):
    """(workdir, saved state, config) of an old-format tiny GLCIC checkpoint."""
    workdir = tmp_path_factory.mktemp("old_glcic") / "work"
    config = tiny_glcic_config()
    state = write_old_checkpoint(workdir, glcic_trainer, config)
    return workdir, state, config


def directory_bytes(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its bytes (None for directories) and mtime."""
    return {str(path.relative_to(root)): (path.stat().st_mtime_ns,
                                          path.read_bytes() if path.is_file() else None)
            for path in sorted(root.rglob("*"))}


def assert_converted_model_is_the_state(model, state, model_config):
    """`model`'s variables are the state's generator exactly, and so is its prediction."""
    expected = {"params": state.g_params, "batch_stats": state.batch_stats["g"]}
    assert jax.tree.structure(model.variables) == jax.tree.structure(expected)
    for got, want in zip(jax.tree.leaves(model.variables), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    generator = models.build(model_config).generator
    rng = np.random.default_rng(1)
    image = rng.uniform(size=(32, 32, 3)).astype(np.float32)
    mask = np.zeros((32, 32, 1), np.float32)
    mask[8:20, 10:24] = 1
    direct = jax.jit(lambda v, i, m: generator.apply(v, i, m, train=False))(
        expected, image[None], mask[None])
    np.testing.assert_array_equal(model(image, mask), np.asarray(direct[0]))


def test_old_checkpoints_do_not_load_and_name_the_conversion_command(old_glcic):
    workdir, _, _ = old_glcic
    with pytest.raises(checkpointing.NoGeneratorError) as raised:
        inference.load_model(workdir)
    message = str(raised.value)
    assert "python -m launch.convert_checkpoint" in message
    assert f"--input={workdir}" in message and "--output=" in message


def test_convert_writes_a_model_workdir_of_the_states_generator(old_glcic, tmp_path):
    workdir, state, config = old_glcic
    before = directory_bytes(workdir)

    assert legacy.convert(workdir, tmp_path / "model") == OLD_STEP

    assert directory_bytes(workdir) == before  # the input is never modified
    model = inference.load_model(tmp_path / "model")
    assert (model.name, model.step) == ("glcic", OLD_STEP)
    assert model.model_config.to_dict() == {**old_config_dict(config)["model"],
                                            "family": "glcic", "compute_dtype": "auto"}
    assert model.training_config.to_dict() == old_config_dict(config)
    assert_converted_model_is_the_state(model, state, config.model)
    with checkpointing.Checkpointer(tmp_path / "model" / "checkpoints", read_only=True) as reader:
        assert reader.all_steps() == [OLD_STEP]
        items = {path.name for path in (reader.directory / str(OLD_STEP)).iterdir()
                 if path.is_dir()}
        assert items == {"generator", "model_config", "config"}  # no optimizer state, no data


def test_convert_refuses_new_checkpoints_and_used_outputs(old_glcic, tmp_path):
    workdir, _, _ = old_glcic
    converted = tmp_path / "model"
    legacy.convert(workdir, converted)
    with pytest.raises(legacy.LegacyCheckpointError, match="holds a generator already"):
        legacy.convert(converted, tmp_path / "again")
    assert not (tmp_path / "again").exists()

    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("something")
    with pytest.raises(legacy.LegacyCheckpointError, match="not an empty directory"):
        legacy.convert(workdir, used)
    assert sorted(path.name for path in used.iterdir()) == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    assert legacy.convert(workdir / "checkpoints", tmp_path / "empty") == OLD_STEP  # empty is fine
    (tmp_path / "empty_run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(checkpointing.CheckpointNotFoundError, match="no complete checkpoint"):
        legacy.convert(tmp_path / "empty_run", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_convert_refuses_checkpoints_inpaint_jax_did_not_write(tmp_path):
    with checkpointing.Checkpointer(tmp_path / "foreign" / "checkpoints",
                                    async_save=False) as writer:
        writer.save(1, {"weights": np.ones(3, np.float32)}, force=True)  # no config
        writer.save(2, {"weights": np.ones(3, np.float32)}, config={"trainer": "glcic",
                                                                     "model": {}}, force=True)
    with pytest.raises(legacy.LegacyCheckpointError, match="no g_params or batch_stats"):
        legacy.convert(tmp_path / "foreign", tmp_path / "out")
    with checkpointing.Checkpointer(tmp_path / "bare" / "checkpoints", async_save=False) as writer:
        writer.save(1, {"weights": np.ones(3, np.float32)}, force=True)
    with pytest.raises(legacy.LegacyCheckpointError, match="holds no config"):
        legacy.convert(tmp_path / "bare", tmp_path / "out")


def test_two_stage_settings_get_their_new_names(photo_dir, tmp_path):
    coarse = write_generator_workdir(tmp_path / "coarse", tiny_glcic_config().model, 3)
    config = refine_config(photo_dir, "unused", coarse, **{"model.coarse_size": 24,
                                                           "model.shift_fraction": 0.25})
    state = write_old_checkpoint(tmp_path / "old", two_stage_trainer, config, step=4)
    old = old_config_dict(config)
    assert "coarse_workdir" not in old and "coarse_size" not in old["model"]
    assert old["coarse"] == {"workdir": coarse, "size": 24} and old["shift_fraction"] == 0.25

    legacy.convert(tmp_path / "old", tmp_path / "model")

    with checkpointing.Checkpointer(tmp_path / "model" / "checkpoints", read_only=True) as reader:
        model_config, training_config = reader.read_model_config(), reader.read_config()
    assert model_config["family"] == "refinement"
    assert (model_config["coarse_size"], model_config["shift_fraction"]) == (24, 0.25)
    assert training_config["coarse_workdir"] == coarse
    model = inference.load_model(tmp_path / "model")
    assert isinstance(model, two_stage.TwoStageModel)
    assert (model.coarse_size, model.shift_fraction, model.step) == (24, 0.25, 4)
    assert (model.coarse.name, model.coarse.step) == ("glcic", 3)
    expected = {"params": state.g_params, "batch_stats": state.batch_stats["g"]}
    for got, want in zip(jax.tree.leaves(model.refinement.variables), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("trainer, family", [
    ("glcic", "glcic"), ("pggan", "pggan"), ("context_encoder", "context_encoder"),
    ("dfnet", "dfnet"), ("two_stage", "refinement"),
])
def test_model_config_names_the_family_of_each_old_trainer(trainer, family):
    old = {"trainer": trainer, "compute_dtype": "bfloat16", "model": {"width_multiplier": 0.5}}
    if trainer == "two_stage":
        old.update(coarse={"workdir": "/runs/dfnet", "size": 256}, shift_fraction=0.1)
    model_config = legacy.model_config(old)
    expected = {"width_multiplier": 0.5, "family": family, "compute_dtype": "bfloat16"}
    if trainer == "two_stage":
        expected.update(coarse_size=256, shift_fraction=0.1)
        assert legacy.training_config(old)["coarse_workdir"] == "/runs/dfnet"
    else:
        assert legacy.training_config(old) == old
    assert model_config == expected
    assert old["model"] == {"width_multiplier": 0.5}  # the input is not modified


def test_model_config_without_a_compute_dtype_is_auto():
    assert legacy.model_config({"trainer": "glcic", "model": {"width_multiplier": 1.0}}) == {
        "width_multiplier": 1.0, "family": "glcic", "compute_dtype": "auto"}


@pytest.mark.parametrize("old", [
    {"trainer": "pix2pix", "model": {}}, {"trainer": "glcic"}, {"model": {"width_multiplier": 1}},
], ids=["unknown trainer", "no model", "no trainer"])
def test_model_config_refuses_configs_of_no_known_trainer(old):
    with pytest.raises(legacy.LegacyCheckpointError, match="convertible checkpoints come from"):
        legacy.model_config(old)
