"""Checkpoints and preemption: the one module that talks to orbax.

A checkpoint step directory holds these items:

* ``state``: the whole training-state pytree (parameters, optimiser states,
  BatchNorm statistics, step, typed PRNG key), written by orbax's
  ``StandardCheckpointHandler``. Typed keys (``jax.random.key``) are stored as
  their key data and re-wrapped on restore.
* ``generator`` and ``model_config``: the generator alone (its variables
  ``{"params", "batch_stats"}``) and the model config that rebuilds it
  (``model_config/model_config.json``, see ``inpaint_jax.models.build``).
  This is all that inference, export and the editor read; a model imported
  from another framework's weights is a checkpoint with only these two.
* ``config``: the run's config as JSON (``config/config.json``, written by
  process 0).
* ``data_state``: the data iterator's position. Every process reads its own
  shard of the data, so every process writes its own file
  ``data_state/process_{i}-of-{n}.json`` and restores only its own. A run
  with a different number of processes resumes the model and optimizers
  exactly and restarts the data order from its seed (with a warning).

Saves are atomic: orbax writes into ``<step>.orbax-checkpoint-tmp-*`` and
renames it to ``<step>`` only once every item on every process is complete, so
a crash mid-save leaves nothing that :meth:`Checkpointer.latest_step` reports
(left-over temporary directories are deleted the next time a
:class:`Checkpointer` opens the directory).

:class:`PreemptionWatcher` turns SIGTERM (the usual preemption notice) into a
stop request that every process sees at the same step.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import logging
import re
import signal
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

_STATE = "state"
_CONFIG = "config"
_DATA_STATE = "data_state"
_GENERATOR = "generator"
_MODEL_CONFIG = "model_config"
_MAX_LISTED_DIFFERENCES = 8


class CheckpointMismatchError(ValueError):
    """The saved state does not fit the state being restored (other model or config)."""


class CheckpointNotFoundError(FileNotFoundError):
    """The requested checkpoint step, or this process's part of it, does not exist."""


class CheckpointDirectoryError(ValueError):
    """The checkpoint directory cannot be created or written to."""


class NoGeneratorError(CheckpointNotFoundError):
    """The checkpoint predates generator checkpoints: it holds no generator of its own."""


@dataclasses.dataclass(frozen=True)
class RestoredCheckpoint:
    """What :meth:`Checkpointer.restore` returns.

    Attributes:
      step: the checkpoint step that was restored.
      state: the training state, with the template's structure, dtypes and shardings.
      data_state: this process's data-iterator state (bytes or a dict, as it was
        saved), or None if the checkpoint holds none.
      config: the saved config as a dict, or None if the checkpoint holds none.
    """

    step: int
    state: Any
    data_state: bytes | dict | None
    config: dict | None


class Checkpointer:
    """Saves and restores training checkpoints in one directory (an orbax CheckpointManager).

    Args:
      directory: where the step directories go; created if missing. Every process
        must be able to write there (checked now with a probe file).
      max_to_keep: how many of the newest checkpoints to keep (None keeps all).
      save_interval_steps: :meth:`should_save` is True on multiples of this.
      async_save: write in a background thread; call :meth:`wait_until_finished`
        (or :meth:`close`) before reading the files or exiting.
      read_only: open an existing directory only to read it (inference): nothing
        is created, probed or cleaned up, so it is safe while a training run
        writes there; :meth:`save` raises and :meth:`restore` skips the data
        state (so any process count can read it). The other options are unused.

    Use it as a context manager or call :meth:`close` when done. Every method
    must be called by all processes.
    """

    def __init__(self, directory, *, max_to_keep: int | None = 3,
                 save_interval_steps: int = 1000, async_save: bool = True,
                 read_only: bool = False):
        self._read_only = read_only
        if read_only:
            self._directory = epath.Path(directory)
            self._manager = _read_only_manager(self._directory)
            return
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep must be at least 1 (or None to keep every "
                             f"checkpoint); got {max_to_keep}.")
        if save_interval_steps < 1:
            raise ValueError(
                f"save_interval_steps must be at least 1; got {save_interval_steps}.")
        self._directory = epath.Path(directory)
        _check_writable(self._directory)
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(
                save_interval_steps),
            preservation_policy=ocp.checkpoint_managers.LatestN(n=max_to_keep),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
        )
        self._manager = ocp.CheckpointManager(self._directory, options=options,
                                              handler_registry=_handler_registry())

    @property
    def directory(self) -> epath.Path:
        """The directory holding the step directories."""
        return self._directory

    def all_steps(self) -> list[int]:
        """The steps of all complete checkpoints, ascending."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None if there is none."""
        return self._manager.latest_step()

    def should_save(self, step: int) -> bool:
        """True if `step` is on the save interval and newer than the latest checkpoint."""
        return self._manager.should_save(int(step))

    def save(self, step: int, state=None, *, generator: Mapping | None = None,
             model_config: Mapping | None = None, data_state: bytes | Mapping | None = None,
             config: Mapping | None = None, force: bool = False) -> bool:
        """Saves a checkpoint for `step` if :meth:`should_save` says so or `force` is set.

        All items of one step are written together and appear at once (see
        the module docstring).

        Args:
          step: the training step the checkpoint belongs to.
          state: the training-state pytree, or None for a checkpoint of the
            generator alone (an imported model).
          generator: the generator's variables ``{"params", "batch_stats"}``.
          model_config: the model config that rebuilds the generator, as a
            JSON-serialisable dict; required with `generator`.
          data_state: this process's data-iterator state (``iterator.get_state()``):
            bytes or a JSON-serialisable dict.
          config: the run's config as a JSON-serialisable dict (``config.to_dict()``).
          force: save even off the interval (final step, preemption).

        Returns:
          True if a save was started; False if it was skipped (off the interval, or
          a checkpoint for `step` exists already: it is never overwritten).
        """
        if self._read_only:
            raise RuntimeError(f"This Checkpointer opened {self._directory} read-only; "
                               "open it without read_only=True to save.")
        step = int(step)
        if step in self._manager.all_steps():
            logging.info("A checkpoint for step %d exists already; not saving it again.", step)
            return False
        if not force and not self.should_save(step):
            return False
        if (generator is None) != (model_config is None):
            raise ValueError("save the generator together with its model config (both or neither).")
        if state is None and generator is None:
            raise ValueError("a checkpoint needs a training state, a generator or both.")
        items = {}
        if state is not None:
            items[_STATE] = ocp.args.StandardSave(state)
        if generator is not None:
            items[_GENERATOR] = ocp.args.StandardSave(generator)
            items[_MODEL_CONFIG] = ocp.args.JsonSave(_json_copy(model_config, "model config"))
        if config is not None:
            items[_CONFIG] = ocp.args.JsonSave(_json_copy(config, "config"))
        if data_state is not None:
            items[_DATA_STATE] = ocp.args.JsonSave(_encode_data_state(data_state))
        return self._manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, template, step: int | None = None) -> RestoredCheckpoint:
        """Restores the checkpoint at `step` (default: the latest) into `template`'s layout.

        Args:
          template: a pytree shaped like the saved state, e.g. the freshly
            initialised state: jax.Arrays (restored with their shardings),
            ShapeDtypeStructs (restored with their ``sharding``), numpy arrays or
            Python scalars.
          step: which checkpoint; None means the latest.

        Raises:
          CheckpointNotFoundError: no such step, or no data state for this process.
          CheckpointMismatchError: the saved tree differs from `template` in
            structure, shapes or dtypes. This is checked on the saved metadata
            before any array is read; the checkpoint is left untouched.
        """
        step = self._resolve_step(step)
        where = self._where(step)
        saved_items = self._manager.item_metadata(step)
        if saved_items.get(_STATE) is None:
            raise CheckpointMismatchError(
                f"The {where} holds no training state; inpaint_jax did not write it. "
                "Start a fresh run with a new --workdir.")
        _check_matches(saved_items[_STATE].tree, template, where)
        # Read-only checkpointers serve inference, which has no data iterator to resume.
        wanted = [_CONFIG]
        if not self._read_only and _DATA_STATE in saved_items:
            writers = self._data_state_writers(step)
            if writers == jax.process_count():
                wanted.append(_DATA_STATE)
            else:
                logging.warning(
                    "The %s was written by %s processes, this run has %d: the model and "
                    "optimizer resume exactly, the data order restarts from its seed.",
                    where, writers, jax.process_count())
        json_names = [name for name in wanted if name in saved_items]
        json_values = self._restore_json(step, json_names, where) if json_names else {}
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        restored = self._manager.restore(
            step, args=ocp.args.Composite(**{_STATE: ocp.args.StandardRestore(target)}))
        data_state = json_values.get(_DATA_STATE)
        return RestoredCheckpoint(
            step=step, state=restored[_STATE], config=json_values.get(_CONFIG),
            data_state=None if data_state is None else _decode_data_state(data_state))

    def read_config(self, step: int | None = None) -> dict | None:
        """The training config saved with the checkpoint at `step` (default: the latest).

        A dict, or None for a checkpoint without one (an imported model).
        Reads only the JSON, not the state.

        Raises:
          CheckpointNotFoundError: no such step.
        """
        step = self._resolve_step(step)
        if _CONFIG not in self._saved_items(step):
            return None
        return self._restore_json(step, [_CONFIG], self._where(step))[_CONFIG]

    def read_model_config(self, step: int | None = None) -> dict:
        """The model config saved with the generator of checkpoint `step` (default: the latest).

        Raises:
          CheckpointNotFoundError: no such step.
          NoGeneratorError: the checkpoint holds no generator (written before
            generator checkpoints existed).
        """
        step = self._check_generator(step)
        return self._restore_json(step, [_MODEL_CONFIG], self._where(step))[_MODEL_CONFIG]

    def restore_generator(self, template, step: int | None = None):
        """The generator's variables of checkpoint `step` (default: the latest), in `template`'s layout.

        `template` is shaped like ``{"params", "batch_stats"}`` of the network
        its model config builds (arrays or ShapeDtypeStructs, with shardings).

        Raises:
          CheckpointNotFoundError, NoGeneratorError: as `read_model_config`.
          CheckpointMismatchError: the saved variables differ from `template`
            in structure, shapes or dtypes (checked before any array is read).
        """
        step = self._check_generator(step)
        where = self._where(step)
        _check_matches(self._manager.item_metadata(step)[_GENERATOR].tree, template,
                       f"generator of the {where}")
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        restored = self._manager.restore(
            step, args=ocp.args.Composite(**{_GENERATOR: ocp.args.StandardRestore(target)}))
        return restored[_GENERATOR]

    def read_saved_state(self, step: int | None = None):
        """The training state of checkpoint `step` as saved, without a template.

        For reading checkpoints whose code is gone (`legacy.convert`): the
        tree and shapes come from the saved metadata, every array lands on
        the first local device, a typed PRNG key comes back as its key data.
        """
        step = self._resolve_step(step)
        if _STATE not in self._saved_items(step):
            raise CheckpointNotFoundError(f"The {self._where(step)} holds no training state.")
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(
            lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
            self._manager.item_metadata(step)[_STATE].tree)
        restored = self._manager.restore(
            step, args=ocp.args.Composite(**{_STATE: ocp.args.StandardRestore(target)}))
        return restored[_STATE]

    def _check_generator(self, step: int | None) -> int:
        step = self._resolve_step(step)
        if _GENERATOR not in self._saved_items(step):
            raise NoGeneratorError(
                f"The {self._where(step)} holds no generator of its own: it was written by "
                "inpaint_jax before checkpoints held one. Convert the run once with `python -m "
                f"launch.convert_checkpoint --input={self._directory.parent} --output=NEW_DIR` "
                "and use NEW_DIR.")
        return step

    def _saved_items(self, step: int) -> set[str]:
        """Names of the items saved in checkpoint `step` (its item subdirectories)."""
        return {path.name for path in (self._directory / str(step)).iterdir() if path.is_dir()}

    def _where(self, step: int) -> str:
        return f"checkpoint for step {step} in {self._directory}"

    def wait_until_finished(self) -> None:
        """Blocks until a background save has been written and committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves and deletions and releases orbax's resources."""
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _resolve_step(self, step: int | None) -> int:
        available = self.all_steps()
        if step is None and available:
            return available[-1]
        if step is not None and int(step) in available:
            return int(step)
        wanted = "any checkpoint" if step is None else f"a checkpoint for step {step}"
        raise CheckpointNotFoundError(
            f"There is no {wanted} in {self._directory} (complete checkpoints: "
            f"{available or 'none'}). Pass one of the listed steps, or check --workdir.")

    def _data_state_writers(self, step: int) -> int | None:
        """How many processes wrote the data state of `step` (from its file names)."""
        names = [path.name for path in (self._directory / str(step) / _DATA_STATE).iterdir()]
        counts = {int(m.group(1)) for m in map(_DATA_STATE_FILE.fullmatch, names) if m}
        return counts.pop() if len(counts) == 1 else None

    def _restore_json(self, step: int, names: list[str], where: str) -> Mapping[str, Any]:
        items = {name: ocp.args.JsonRestore() for name in names}
        try:
            return self._manager.restore(step, args=ocp.args.Composite(**items))
        except FileNotFoundError as error:
            raise CheckpointNotFoundError(
                f"The {where} has no data-iterator state for process {jax.process_index()} "
                f"of {jax.process_count()} ({error}). Resume with as many processes as "
                "wrote it, or start a fresh run with a new --workdir.") from error


_DATA_STATE_FILE = re.compile(r"process_\d+-of-(\d+)\.json")


def _handler_registry() -> ocp.handlers.CheckpointHandlerRegistry:
    """How each item of a checkpoint step is written and read."""
    process_file = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    every_process_writes = ocp.options.MultiprocessingOptions(primary_host=None)
    return ocp.handlers.create_default_handler_registry(**{
        _STATE: ocp.handlers.StandardCheckpointHandler(),
        _CONFIG: ocp.handlers.JsonCheckpointHandler("config.json"),
        _GENERATOR: ocp.handlers.StandardCheckpointHandler(),
        _MODEL_CONFIG: ocp.handlers.JsonCheckpointHandler("model_config.json"),
        _DATA_STATE: ocp.handlers.JsonCheckpointHandler(
            process_file, multiprocessing_options=every_process_writes),
    })


def _read_only_manager(directory: epath.Path) -> ocp.CheckpointManager:
    """An orbax manager that only reads the existing checkpoints in `directory`."""
    if not directory.is_dir():
        raise CheckpointNotFoundError(
            f"There is no checkpoint directory {directory}. Check the path: it should be "
            "a run's checkpoints directory, the one training wrote into <workdir>/checkpoints.")
    options = ocp.CheckpointManagerOptions(
        read_only=True, create=False, save_interval_steps=0,
        enable_async_checkpointing=False)
    return ocp.CheckpointManager(directory, options=options, handler_registry=_handler_registry())


def _check_writable(directory: epath.Path) -> None:
    """Creates `directory` and proves it writable with a probe file (CheckpointDirectoryError)."""
    probe = directory / f".write_probe_process_{jax.process_index()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_text("probe")
        probe.unlink()
    except OSError as error:
        raise CheckpointDirectoryError(
            f"Cannot write checkpoints to {directory}: {type(error).__name__}: "
            f"{error.strerror or error}. Choose a --workdir you can write to, or fix the "
            "permissions of that path.") from error


def _json_copy(value: Mapping, what: str) -> dict:
    """A JSON round-trip copy of `value`: validates it now, and later mutation cannot leak in."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as error:
        raise TypeError(f"The {what} to checkpoint must be JSON-serialisable (dicts, lists, "
                        f"strings, numbers, bools, None): {error}") from error


def _encode_data_state(data_state: bytes | Mapping) -> dict:
    """Wraps an iterator state (bytes or a JSON dict) in a JSON object recording which it was."""
    if isinstance(data_state, bytes):
        return {"format": "bytes", "base64": base64.b64encode(data_state).decode("ascii")}
    if isinstance(data_state, Mapping):
        return {"format": "json", "value": _json_copy(data_state, "data-iterator state")}
    raise TypeError(f"data_state must be bytes or a dict (an iterator's get_state()); "
                    f"got {type(data_state).__name__}.")


def _decode_data_state(stored: Mapping) -> bytes | dict:
    """Inverse of :func:`_encode_data_state`."""
    if stored["format"] == "bytes":
        return base64.b64decode(stored["base64"])
    return stored["value"]


def _leaf_signature(leaf) -> tuple[tuple[int, ...] | None, np.dtype | None]:
    """(shape, dtype) of a template leaf or saved-metadata leaf; typed keys count as key data."""
    dtype = getattr(leaf, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        leaf = jax.eval_shape(jax.random.key_data, leaf)
        dtype = leaf.dtype
    if hasattr(leaf, "shape"):
        return tuple(leaf.shape), None if dtype is None else np.dtype(dtype)
    if isinstance(leaf, (bool, int, float, complex)):
        return (), np.asarray(leaf).dtype
    return None, None


def _format_signature(signature) -> str:
    shape, dtype = signature
    return f"shape {shape} dtype {dtype}"


def _check_matches(saved_tree, template, where: str) -> None:
    """Raises CheckpointMismatchError naming the leaves where `saved_tree` and `template` differ."""
    saved = {path: _leaf_signature(leaf)
             for path, leaf in ocp.tree.to_flat_dict(saved_tree, sep=".").items()}
    expected = {path: _leaf_signature(leaf)
                for path, leaf in ocp.tree.to_flat_dict(template, sep=".").items()}
    differences = []
    # The template's order (state fields as declared) puts parameters before optimiser states.
    for path in [*expected, *(path for path in saved if path not in expected)]:
        if path not in saved:
            differences.append(f"{path}: missing from the checkpoint "
                               f"(expected {_format_signature(expected[path])})")
        elif path not in expected:
            differences.append(f"{path}: saved ({_format_signature(saved[path])}) but "
                               "absent from the state being restored")
        elif saved[path] != expected[path]:
            differences.append(f"{path}: saved {_format_signature(saved[path])}, "
                               f"expected {_format_signature(expected[path])}")
    if not differences:
        return
    listed = differences[:_MAX_LISTED_DIFFERENCES]
    if len(differences) > len(listed):
        listed.append(f"... and {len(differences) - len(listed)} more")
    raise CheckpointMismatchError(
        f"The {where} does not match the state being restored ({len(differences)} "
        "differing leaves; a different architecture or config?):\n  " + "\n  ".join(listed)
        + "\nNothing was restored and the checkpoint is unchanged. Resume with the config it "
        "was trained with (saved in its config/config.json), or start a fresh run with a "
        "new --workdir.")


class PreemptionWatcher:
    """Turns a preemption notice (SIGTERM) into a stop request the training loop polls.

    Use it as a context manager around the training loop and call
    :meth:`should_stop` once per step on every process; when it returns True,
    save a checkpoint (``force=True``) and leave the loop.

    Single process: the given signals get a handler that only sets a flag, and
    the previous handlers are put back on exit. :meth:`should_stop` is True from
    the first call after a signal arrived.

    Several processes (after ``jax.distributed.initialize()``): no Python handler
    is installed, since it would displace the SIGTERM notifier of JAX's
    preemption service. :meth:`should_stop` asks
    ``jax.experimental.multihost_utils.reached_preemption_sync_point(step)``,
    which turns True on all processes at the same step once any of them got
    SIGTERM. That needs JAX's preemption service (``jax_enable_preemption_service``,
    on by default) and every process calling :meth:`should_stop` at every step.

    Args:
      signals: the signals treated as preemption in single-process runs; add
        ``signal.SIGINT`` to make Ctrl-C save and stop cleanly.
    """

    def __init__(self, signals=(signal.SIGTERM,)):
        self._signals = tuple(signals)
        self._previous_handlers: dict[int, Any] = {}
        self._received_signal: int | None = None
        self._reported = False

    @property
    def signal_received(self) -> int | None:
        """The number of the first signal caught (single-process mode), or None."""
        return self._received_signal

    def __enter__(self) -> PreemptionWatcher:
        if self._previous_handlers:
            raise RuntimeError("This PreemptionWatcher is active already; do not nest it.")
        if jax.process_count() == 1:
            for signum in self._signals:
                self._previous_handlers[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous_handlers.items():
            # getsignal() reports None for handlers not set from Python; SIG_DFL is the closest.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._previous_handlers.clear()

    def _on_signal(self, signum, frame) -> None:
        del frame
        if self._received_signal is None:
            self._received_signal = signum

    def should_stop(self, step: int) -> bool:
        """True once a preemption notice arrived; the same answer on every process for `step`."""
        if jax.process_count() > 1:
            return multihost_utils.reached_preemption_sync_point(int(step))
        if self._received_signal is None:
            return False
        if not self._reported:
            logging.warning("Received %s: stopping at step %d.",
                            signal.Signals(self._received_signal).name, step)
            self._reported = True
        return True
