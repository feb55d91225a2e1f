"""Tests for inpaint_jax.checkpointing: round trips, retention, mismatches, crashes, SIGTERM."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from inpaint_jax import checkpointing

REPO_ROOT = Path(__file__).resolve().parents[1]


@struct.dataclass
class TrainState:
    step: jax.Array
    g_params: dict
    d_params: dict
    g_opt_state: optax.OptState
    d_opt_state: optax.OptState
    batch_stats: dict
    rng: jax.Array


class TinyNet(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(self.features)(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        return nn.Dense(1)(x)


def _trained_variables(features: int, key: jax.Array):
    """Params, Adam state after one update, and BatchNorm stats: all with non-trivial values."""
    inputs = jax.random.normal(key, (4, 3))
    variables = TinyNet(features).init(key, inputs)
    tx = optax.adam(1e-2)
    params = variables["params"]
    opt_state = tx.init(params)
    updates, opt_state = tx.update(params, opt_state, params)
    batch_stats = jax.tree.map(lambda x: x + jax.random.uniform(key), variables["batch_stats"])
    return optax.apply_updates(params, updates), opt_state, batch_stats


def make_state(seed: int = 0, g_features: int = 4) -> TrainState:
    """A small GAN training state shaped like the trainers' one."""
    g_key, d_key = jax.random.split(jax.random.key(seed))
    g_params, g_opt_state, g_stats = _trained_variables(g_features, g_key)
    d_params, d_opt_state, d_stats = _trained_variables(2, d_key)
    return TrainState(step=jnp.asarray(seed + 7, jnp.int32), g_params=g_params,
                      d_params=d_params, g_opt_state=g_opt_state, d_opt_state=d_opt_state,
                      batch_stats={"generator": g_stats, "discriminator": d_stats},
                      rng=jax.random.key(seed + 100))


def _comparable(leaf):
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(leaf))
    return np.asarray(leaf)


def assert_states_equal(actual, expected):
    """Same pytree structure and node types, same leaf dtypes, bit-identical values."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for got, want in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(_comparable(got), _comparable(want))


def directory_snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under `root` with its mtime and (for files) its bytes."""
    return {str(path.relative_to(root)): (path.stat().st_mtime_ns,
                                          path.read_bytes() if path.is_file() else None)
            for path in sorted(root.rglob("*"))}


def step_directories(root: Path) -> list[str]:
    return sorted(path.name for path in root.iterdir() if path.is_dir())


@pytest.fixture
def checkpointer(tmp_path):
    with checkpointing.Checkpointer(tmp_path / "checkpoints", max_to_keep=3,
                                    save_interval_steps=1) as ckpt:
        yield ckpt


def test_round_trip_restores_state_exactly(checkpointer):
    state = make_state(seed=0)
    config = {"model": {"width": 4}, "lr": 0.01, "phases": [1, 2]}
    assert checkpointer.save(7, state, data_state=b"\x00\xffgrain-position", config=config)
    checkpointer.wait_until_finished()

    restored = checkpointer.restore(make_state(seed=5))

    assert restored.step == 7
    assert_states_equal(restored.state, state)
    assert isinstance(restored.state, TrainState)
    assert isinstance(restored.state.g_opt_state[0], optax.ScaleByAdamState)
    assert jax.random.key_impl(restored.state.rng) == jax.random.key_impl(state.rng)
    assert restored.config == config
    assert restored.data_state == b"\x00\xffgrain-position"


@pytest.mark.parametrize("data_state", [
    b"\x00\x01\xfe\xffnot utf-8",
    {"next_index": 12, "worker": {"seeds": [1, 2]}, "done": False},
], ids=["bytes", "dict"])
def test_data_state_round_trips_in_its_own_type(checkpointer, data_state):
    checkpointer.save(1, make_state(), data_state=data_state)
    checkpointer.wait_until_finished()
    restored = checkpointer.restore(make_state())
    assert type(restored.data_state) is type(data_state)
    assert restored.data_state == data_state
    assert restored.config is None


def test_data_state_is_stored_per_process(checkpointer):
    checkpointer.save(1, make_state(), data_state={"position": 3})
    checkpointer.wait_until_finished()
    files = list((checkpointer.directory / "1" / "data_state").glob("process_*.json"))
    assert [file.name for file in files] == ["process_0-of-1.json"]


def test_restore_with_another_process_count_restarts_only_the_data(checkpointer, caplog):
    checkpointer.save(1, make_state(), data_state={"position": 3})
    checkpointer.wait_until_finished()
    data_dir = checkpointer.directory / "1" / "data_state"
    (data_dir / "process_0-of-1.json").rename(data_dir / "process_0-of-2.json")
    (data_dir / "process_1-of-2.json").write_text((data_dir / "process_0-of-2.json").read_text())
    restored = checkpointer.restore(make_state())
    assert restored.data_state is None
    assert int(restored.state.step) == int(make_state().step)
    assert "written by 2 processes, this run has 1" in caplog.text


def test_restore_without_data_state_for_this_process_explains(checkpointer):
    checkpointer.save(1, make_state(), data_state={"position": 3})
    checkpointer.wait_until_finished()
    data_dir = checkpointer.directory / "1" / "data_state"
    (data_dir / "process_0-of-1.json").rename(data_dir / "process_7-of-1.json")
    with pytest.raises(checkpointing.CheckpointNotFoundError, match="process 0 of 1"):
        checkpointer.restore(make_state())


def test_python_scalars_and_numpy_leaves_round_trip(checkpointer):
    checkpointer.save(2, {"count": 5, "scale": 0.25, "table": np.arange(4, dtype=np.int16)})
    checkpointer.wait_until_finished()
    restored = checkpointer.restore({"count": 0, "scale": 0.0, "table": np.zeros(4, np.int16)})
    assert restored.state["count"] == 5 and type(restored.state["count"]) is int
    assert restored.state["scale"] == 0.25 and type(restored.state["scale"]) is float
    np.testing.assert_array_equal(restored.state["table"], np.arange(4, dtype=np.int16))


def test_saves_on_the_interval_or_when_forced(tmp_path):
    with checkpointing.Checkpointer(tmp_path, max_to_keep=None, save_interval_steps=3) as ckpt:
        state = make_state()
        saved = [step for step in range(1, 11) if ckpt.save(step, state)]
        assert saved == [3, 6, 9]
        assert ckpt.should_save(12) and not ckpt.should_save(13)
        assert not ckpt.should_save(6)  # older than the latest checkpoint.
        assert ckpt.save(10, state, force=True)
        assert not ckpt.save(10, state, force=True)  # never overwrites a step.
        ckpt.wait_until_finished()
        assert ckpt.all_steps() == [3, 6, 9, 10]
        assert ckpt.latest_step() == 10


def test_keeps_only_the_newest_checkpoints(tmp_path):
    with checkpointing.Checkpointer(tmp_path, max_to_keep=2, save_interval_steps=1) as ckpt:
        for step in range(1, 6):
            ckpt.save(step, make_state())
        ckpt.wait_until_finished()
        assert ckpt.all_steps() == [4, 5]
    assert step_directories(tmp_path) == ["4", "5"]
    with checkpointing.Checkpointer(tmp_path, max_to_keep=2) as reopened:
        assert reopened.latest_step() == 5


def _wider_generator(state):
    return make_state(g_features=8)


def _bfloat16_discriminator(state):
    return state.replace(d_params=jax.tree.map(lambda x: x.astype(jnp.bfloat16), state.d_params))


def _extra_generator_layer(state):
    g_params = dict(state.g_params, Dense_2={"kernel": jnp.zeros((1, 1))})
    return state.replace(g_params=g_params)


@pytest.mark.parametrize("change_template, expected_fragments", [
    (_wider_generator, ["g_params.Dense_0.kernel", "saved shape (3, 4)", "expected shape (3, 8)"]),
    (_bfloat16_discriminator, ["d_params.Dense_0.kernel", "dtype float32", "dtype bfloat16"]),
    (_extra_generator_layer, ["g_params.Dense_2.kernel", "missing from the checkpoint"]),
], ids=["shape", "dtype", "structure"])
def test_mismatched_template_raises_and_leaves_checkpoint_untouched(
        tmp_path, change_template, expected_fragments):
    with checkpointing.Checkpointer(tmp_path, save_interval_steps=1) as ckpt:
        ckpt.save(4, make_state(), data_state=b"position", config={"width": 4})
    with checkpointing.Checkpointer(tmp_path, save_interval_steps=1) as ckpt:
        before = directory_snapshot(tmp_path)
        with pytest.raises(checkpointing.CheckpointMismatchError) as raised:
            ckpt.restore(change_template(make_state()))
        assert directory_snapshot(tmp_path) == before
        assert ckpt.latest_step() == 4
    message = str(raised.value)
    for fragment in expected_fragments + ["step 4", "--workdir"]:
        assert fragment in message


def test_restore_onto_sharded_template_uses_its_sharding(checkpointer):
    state = make_state(seed=1)
    checkpointer.save(3, state)
    checkpointer.wait_until_finished()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    replicated = NamedSharding(mesh, PartitionSpec())
    assert len(jax.devices()) == 8

    for template in (jax.device_put(make_state(seed=2), replicated),
                     jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                                 sharding=replicated),
                                  make_state(seed=2))):
        restored = checkpointer.restore(template).state
        assert_states_equal(restored, state)
        for leaf in jax.tree.leaves(restored):
            assert leaf.sharding == replicated


def test_restore_of_a_missing_step_lists_the_available_ones(checkpointer):
    with pytest.raises(checkpointing.CheckpointNotFoundError, match="none"):
        checkpointer.restore(make_state())
    checkpointer.save(3, make_state())
    checkpointer.wait_until_finished()
    with pytest.raises(checkpointing.CheckpointNotFoundError, match=r"step 5 .*\[3\]"):
        checkpointer.restore(make_state(), step=5)


def test_directory_under_a_regular_file_is_reported(tmp_path):
    blocker = tmp_path / "workdir"
    blocker.write_text("not a directory")
    with pytest.raises(checkpointing.CheckpointDirectoryError, match=str(blocker / "checkpoints")):
        checkpointing.Checkpointer(blocker / "checkpoints")


def test_read_only_directory_is_reported(tmp_path):
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        if os.access(read_only, os.W_OK):
            pytest.skip("permissions are not enforced for this user (root)")
        with pytest.raises(checkpointing.CheckpointDirectoryError, match="read_only"):
            checkpointing.Checkpointer(read_only / "checkpoints")
    finally:
        read_only.chmod(0o700)


def test_rejects_bad_arguments(checkpointer, tmp_path):
    with pytest.raises(ValueError, match="max_to_keep"):
        checkpointing.Checkpointer(tmp_path / "other", max_to_keep=0)
    with pytest.raises(ValueError, match="save_interval_steps"):
        checkpointing.Checkpointer(tmp_path / "other", save_interval_steps=0)
    with pytest.raises(TypeError, match="data_state must be bytes or a dict"):
        checkpointer.save(1, make_state(), data_state=[1, 2])
    with pytest.raises(TypeError, match="config to checkpoint must be JSON-serialisable"):
        checkpointer.save(1, make_state(), config={"mean": np.zeros(3)})
    assert checkpointer.all_steps() == []


_CRASHING_SAVE = textwrap.dedent("""
    import os, sys
    import jax.numpy as jnp
    from inpaint_jax import checkpointing

    ckpt = checkpointing.Checkpointer(sys.argv[1], save_interval_steps=1, async_save=False)
    ckpt.save(1, {"w": jnp.ones(3)}, data_state=b"one")
    real_rename = os.rename

    def die_before_commit(src, dst, **kwargs):
        if ".orbax-checkpoint-tmp" in os.fspath(src):
            os._exit(17)  # the process dies with every file written but nothing committed.
        return real_rename(src, dst, **kwargs)

    os.rename = die_before_commit
    ckpt.save(2, {"w": jnp.full(3, 2.0)}, data_state=b"two")
    print("the save finished although it should have crashed")
""")


def test_crash_during_save_leaves_no_checkpoint_behind(tmp_path):
    directory = tmp_path / "checkpoints"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", _CRASHING_SAVE, str(directory)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 17, result.stdout + result.stderr
    assert any(".orbax-checkpoint-tmp" in name for name in os.listdir(directory))

    with checkpointing.Checkpointer(directory, save_interval_steps=1) as ckpt:
        assert ckpt.all_steps() == [1]
        restored = ckpt.restore({"w": jnp.zeros(3)})
        np.testing.assert_array_equal(restored.state["w"], np.ones(3))
        assert restored.data_state == b"one"
        assert ckpt.save(2, {"w": jnp.full(3, 2.0)})
        ckpt.wait_until_finished()
        assert ckpt.all_steps() == [1, 2]
    assert not any(".orbax-checkpoint-tmp" in name for name in os.listdir(directory))


def test_sigterm_sets_the_flag_and_the_previous_handler_comes_back():
    received = []

    def previous_handler(signum, frame):
        received.append(signum)

    original = signal.signal(signal.SIGTERM, previous_handler)
    try:
        with checkpointing.PreemptionWatcher() as watcher:
            assert not watcher.should_stop(1)
            os.kill(os.getpid(), signal.SIGTERM)
            assert watcher.should_stop(2)
            assert watcher.signal_received == signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is previous_handler
        assert received == []  # the watcher took the signal instead of the old handler.
    finally:
        signal.signal(signal.SIGTERM, original)


def test_multiple_processes_defer_to_jax_preemption_sync(monkeypatch):
    asked = []
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(checkpointing.multihost_utils, "reached_preemption_sync_point",
                        lambda step: asked.append(step) or step == 5)
    handler_before = signal.getsignal(signal.SIGTERM)
    with checkpointing.PreemptionWatcher() as watcher:
        assert signal.getsignal(signal.SIGTERM) is handler_before
        assert [watcher.should_stop(step) for step in (4, 5)] == [False, True]
    assert asked == [4, 5]


def test_read_only_checkpointer_restores_without_touching_the_directory(checkpointer):
    state, config = make_state(seed=1), {"trainer": "glcic", "size": [16, 20]}
    checkpointer.save(4, state, data_state={"position": 9}, config=config)
    checkpointer.close()
    directory = Path(checkpointer.directory)
    (directory / "5.orbax-checkpoint-tmp-1").mkdir()  # a save still running elsewhere
    before = directory_snapshot(directory)

    with checkpointing.Checkpointer(directory, read_only=True) as reader:
        assert reader.read_config() == config
        restored = reader.restore(make_state(seed=2))
        with pytest.raises(RuntimeError, match="read-only"):
            reader.save(8, state, force=True)

    assert_states_equal(restored.state, state)
    assert restored.config == config
    assert restored.data_state is None  # inference has no data iterator to resume
    assert directory_snapshot(directory) == before


def test_read_only_restore_ignores_data_states_of_other_process_counts(checkpointer):
    checkpointer.save(1, make_state(), data_state={"position": 3})
    checkpointer.close()
    data_dir = checkpointer.directory / "1" / "data_state"
    (data_dir / "process_0-of-1.json").rename(data_dir / "process_0-of-8.json")
    with checkpointing.Checkpointer(checkpointer.directory, read_only=True) as reader:
        assert_states_equal(reader.restore(make_state()).state, make_state())


def test_read_only_checkpointer_needs_an_existing_directory(tmp_path):
    missing = tmp_path / "no_such_run" / "checkpoints"
    with pytest.raises(checkpointing.CheckpointNotFoundError, match="no_such_run"):
        checkpointing.Checkpointer(missing, read_only=True)
    assert not missing.parent.exists()


def test_read_config_reports_missing_config_or_step(checkpointer):
    checkpointer.save(2, make_state())
    checkpointer.wait_until_finished()
    assert checkpointer.read_config() is None  # saved without a config
    with pytest.raises(checkpointing.CheckpointNotFoundError, match="step 5"):
        checkpointer.read_config(5)


# --------------------------------------------------------------------------- generator item

MODEL_CONFIG = {"family": "glcic", "width_multiplier": 0.25, "fill_value": [0.5, 0.4, 0.3],
                "compute_dtype": "auto"}


def generator_of(state: TrainState) -> dict:
    """The generator item of `state`: its parameters and BatchNorm statistics."""
    return {"params": state.g_params, "batch_stats": state.batch_stats["generator"]}


def zeros_like_tree(tree):
    return jax.tree.map(jnp.zeros_like, tree)


def test_state_generator_and_model_config_are_saved_together(checkpointer):
    state = make_state(seed=3)
    config = {"trainer": "glcic", "model": MODEL_CONFIG}
    assert checkpointer.save(5, state, generator=generator_of(state), model_config=MODEL_CONFIG,
                             data_state={"position": 2}, config=config)
    checkpointer.wait_until_finished()
    items = {path.name for path in (checkpointer.directory / "5").iterdir() if path.is_dir()}
    assert {"state", "generator", "model_config", "config", "data_state"} <= items

    generator = checkpointer.restore_generator(zeros_like_tree(generator_of(state)))
    assert_states_equal(generator, generator_of(state))  # exact values, same structure
    assert checkpointer.read_model_config() == MODEL_CONFIG
    assert checkpointer.read_model_config(5) == MODEL_CONFIG
    restored = checkpointer.restore(make_state(seed=4))
    assert_states_equal(restored.state, state)
    assert restored.config == config and restored.data_state == {"position": 2}


def test_restore_generator_onto_another_architecture_names_the_leaf(tmp_path):
    state = make_state()
    with checkpointing.Checkpointer(tmp_path, save_interval_steps=1) as ckpt:
        ckpt.save(2, state, generator=generator_of(state), model_config=MODEL_CONFIG)
    wider = generator_of(make_state(g_features=8))
    with checkpointing.Checkpointer(tmp_path, read_only=True) as reader:
        before = directory_snapshot(tmp_path)
        with pytest.raises(checkpointing.CheckpointMismatchError) as raised:
            reader.restore_generator(wider)
        assert directory_snapshot(tmp_path) == before
    message = str(raised.value)
    for fragment in ["params.Dense_0.kernel", "saved shape (3, 4)", "expected shape (3, 8)",
                     "generator of the checkpoint for step 2", "Nothing was restored"]:
        assert fragment in message


def test_generator_only_checkpoint_has_no_training_config_or_state(checkpointer):
    state = make_state(seed=2)
    assert checkpointer.save(1, generator=generator_of(state), model_config=MODEL_CONFIG)
    checkpointer.wait_until_finished()
    items = {path.name for path in (checkpointer.directory / "1").iterdir() if path.is_dir()}
    assert items == {"generator", "model_config"}
    assert checkpointer.read_config() is None
    assert checkpointer.read_model_config() == MODEL_CONFIG
    assert_states_equal(checkpointer.restore_generator(zeros_like_tree(generator_of(state))),
                        generator_of(state))
    with pytest.raises(checkpointing.CheckpointMismatchError, match="holds no training state"):
        checkpointer.restore(make_state())
    with pytest.raises(checkpointing.CheckpointNotFoundError, match="holds no training state"):
        checkpointer.read_saved_state()


def test_a_generator_needs_its_model_config_and_a_checkpoint_needs_something(checkpointer):
    state = make_state()
    with pytest.raises(ValueError, match="together with its model config"):
        checkpointer.save(1, state, generator=generator_of(state))
    with pytest.raises(ValueError, match="together with its model config"):
        checkpointer.save(1, state, model_config=MODEL_CONFIG)
    with pytest.raises(ValueError, match="a training state, a generator or both"):
        checkpointer.save(1, config={"trainer": "glcic"})
    with pytest.raises(TypeError, match="model config to checkpoint must be JSON-serialisable"):
        checkpointer.save(1, generator=generator_of(state), model_config={"mean": np.zeros(3)})
    checkpointer.wait_until_finished()
    assert checkpointer.all_steps() == []


def test_old_checkpoints_without_a_generator_name_the_conversion_command(checkpointer):
    state = make_state()
    checkpointer.save(3, state, config={"trainer": "glcic"})  # the format before generators
    checkpointer.wait_until_finished()
    for read in (checkpointer.read_model_config,
                 lambda: checkpointer.restore_generator(generator_of(state))):
        with pytest.raises(checkpointing.NoGeneratorError) as raised:
            read()
        assert isinstance(raised.value, checkpointing.CheckpointNotFoundError)
        message = str(raised.value)
        assert "python -m launch.convert_checkpoint" in message and "step 3" in message
        assert f"--input={checkpointer.directory.parent}" in message
    assert checkpointer.read_config() == {"trainer": "glcic"}  # the rest is still readable


def test_read_saved_state_needs_no_template(checkpointer):
    state = make_state(seed=6)
    checkpointer.save(4, state, config={"trainer": "glcic"})
    checkpointer.save(8, make_state(seed=9))
    checkpointer.wait_until_finished()

    saved = checkpointer.read_saved_state(4)
    assert set(saved) == {"step", "g_params", "d_params", "g_opt_state", "d_opt_state",
                          "batch_stats", "rng"}
    for name in ("step", "g_params", "d_params", "batch_stats"):
        saved_leaves, leaves = jax.tree.leaves(saved[name]), jax.tree.leaves(getattr(state, name))
        assert len(saved_leaves) == len(leaves)
        for got, want in zip(saved_leaves, leaves):
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(_comparable(saved["rng"]), _comparable(state.rng))
    assert saved["g_params"]["Dense_0"]["kernel"].sharding == jax.sharding.SingleDeviceSharding(
        jax.local_devices()[0])
    assert int(checkpointer.read_saved_state()["step"]) == int(make_state(seed=9).step)  # latest
    with pytest.raises(checkpointing.CheckpointNotFoundError, match="step 5"):
        checkpointer.read_saved_state(5)
