"""Makes a workdir written before checkpoints held the generator alone loadable again.

  python -m launch.convert_checkpoint --input=OLD_WORKDIR --output=NEW_DIR

Reads the newest checkpoint of --input (never modifying it) and writes a
model workdir at --output that launch.inpaint, launch.evaluate and
launch.benchmark accept like a training run (see inpaint_jax/legacy.py).
"""

from absl import app, flags

from inpaint_jax import checkpointing, legacy

_INPUT = flags.DEFINE_string("input", None, "Workdir (or its checkpoints directory) to convert.")
_OUTPUT = flags.DEFINE_string("output", None, "New model workdir to write (must not exist).")
flags.mark_flags_as_required(["input", "output"])


def main(argv):
    """Converts --input's newest checkpoint into the model workdir --output."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        step = legacy.convert(_INPUT.value, _OUTPUT.value)
    except (legacy.LegacyCheckpointError, checkpointing.CheckpointNotFoundError) as error:
        raise app.UsageError(str(error)) from error
    print(f"wrote the model of step {step} to {_OUTPUT.value}")


if __name__ == "__main__":
    app.run(main)
