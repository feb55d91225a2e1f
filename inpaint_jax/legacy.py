"""Checkpoints written before they held the generator alone, made loadable again.

Until generator checkpoints existed, a checkpoint held only the training
state and the run's config, whose vocabulary differed: the recipe's trainer
name stood for the model family (`two_stage` for the refinement network),
`compute_dtype` sat at the top of the config, and the two-stage pipeline
settings were `coarse.workdir`, `coarse.size` and `shift_fraction`.
`convert` reads the newest such checkpoint of a workdir and writes a model
workdir that `inference.load_model` (and everything built on it) reads: the
generator's variables taken from the training state, the model config
translated from the old config, and the old config beside them (with the
coarse workdir under its new name). The input is never modified.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from inpaint_jax import checkpointing

logger = logging.getLogger(__name__)

# Old `config.trainer` -> model family.
_FAMILIES = {"glcic": "glcic", "pggan": "pggan", "context_encoder": "context_encoder",
             "dfnet": "dfnet", "two_stage": "refinement"}


class LegacyCheckpointError(ValueError):
    """A checkpoint that is not an old inpaint_jax training checkpoint this module can convert."""


def model_config(old_config: dict) -> dict:
    """The model config of an old checkpoint's training config."""
    trainer = old_config.get("trainer")
    if trainer not in _FAMILIES or "model" not in old_config:
        raise LegacyCheckpointError(
            f"the saved config names trainer {trainer!r} and has "
            f"{'a' if 'model' in old_config else 'no'} model section; convertible checkpoints "
            f"come from the trainers {', '.join(_FAMILIES)}."
        )
    model = {**copy.deepcopy(old_config["model"]), "family": _FAMILIES[trainer],
             "compute_dtype": old_config.get("compute_dtype", "auto")}
    if trainer == "two_stage":
        model.update(coarse_size=old_config["coarse"]["size"],
                     shift_fraction=old_config["shift_fraction"])
    return model


def training_config(old_config: dict) -> dict:
    """The old training config with the coarse workdir where `two_stage.from_refinement` reads it."""
    config = copy.deepcopy(old_config)
    if config.get("trainer") == "two_stage":
        config["coarse_workdir"] = config["coarse"]["workdir"]
    return config


def convert(source, output) -> int:
    """Writes a model workdir at `output` from the newest checkpoint of the workdir `source`.

    Returns the converted step. `output` must not exist yet (or be an empty
    directory). Raises LegacyCheckpointError when the checkpoint already
    holds a generator (nothing to convert) or is not an inpaint_jax training
    checkpoint.
    """
    source, output = Path(source).expanduser(), Path(output).expanduser()
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise LegacyCheckpointError(f"{output} exists and is not an empty directory; choose a "
                                    "new --output for the converted model.")
    directory = source / "checkpoints" if (source / "checkpoints").is_dir() else source
    with checkpointing.Checkpointer(directory, read_only=True) as reader:
        step = reader.latest_step()
        if step is None:
            raise checkpointing.CheckpointNotFoundError(f"{source} holds no complete checkpoint.")
        try:
            reader.read_model_config(step)
        except checkpointing.NoGeneratorError:
            pass
        else:
            raise LegacyCheckpointError(f"the checkpoint for step {step} in {directory} holds a "
                                        "generator already; load it as it is.")
        old_config = reader.read_config(step)
        if old_config is None:
            raise LegacyCheckpointError(f"the checkpoint for step {step} in {directory} holds no "
                                        "config; it was not written by an inpaint_jax trainer.")
        state = reader.read_saved_state(step)
    try:
        generator = {"params": state["g_params"], "batch_stats": state["batch_stats"]["g"]}
    except (KeyError, TypeError) as error:
        raise LegacyCheckpointError(
            f"the training state of step {step} in {directory} has no g_params or "
            f"batch_stats.g ({error}); it was not written by an inpaint_jax trainer.") from error
    with checkpointing.Checkpointer(output / "checkpoints", max_to_keep=None,
                                    async_save=False) as writer:
        writer.save(step, generator=generator, model_config=model_config(old_config),
                    config=training_config(old_config), force=True)
    logger.info("Converted the %s checkpoint of step %d into %s.", old_config["trainer"], step,
                output)
    return step
