"""Trains an inpainting model: `python -m launch.train --config=configs/glcic.py:runlocal --workdir=DIR`.

Any config field can be overridden with `--config.a.b=value`; the config is
locked, so a misspelt field is an error. Re-running the same command on the
same workdir resumes from the last checkpoint.
"""

import logging

import jax
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from inpaint_jax import parallel, trainers

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file, e.g. configs/glcic.py:runlocal.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and logs.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed",
    False,
    "Start jax.distributed even if no cluster launcher is detected (e.g. a TPU pod slice "
    "on plain VMs). SLURM, Open MPI and JAX_COORDINATOR_ADDRESS are detected anyway.",
)
flags.mark_flags_as_required(["config", "workdir"])


def _hide_orbax_info(record: logging.LogRecord) -> bool:
    """Keeps orbax's many per-save INFO lines off the console (warnings still show)."""
    return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


def main(argv):
    """Trains the --config model in --workdir, resuming from its last checkpoint."""
    absl_logging.get_absl_handler().addFilter(_hide_orbax_info)
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    parallel.initialize_distributed(force=_DISTRIBUTED.value)  # before any other JAX call.
    logging.info(
        "Process %d of %d, local devices %s, global devices %d.",
        jax.process_index(),
        jax.process_count(),
        jax.local_devices(),
        jax.device_count(),
    )
    config = _CONFIG.value
    try:
        recipe = trainers.recipe_module(config.trainer)
    except trainers.UnknownRecipeError as error:
        raise app.UsageError(str(error)) from error
    recipe.train_and_evaluate(config, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
